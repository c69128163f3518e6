// The descriptors of neverbleed_get_fd and the reads and writes on them.
#ifndef KEYCELL_NEVERBLEED_CONNECTION_H
#define KEYCELL_NEVERBLEED_CONNECTION_H

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "client/cell_client.h"

// The keycell state behind a neverbleed_t.
struct keycell_neverbleed_state {
  std::shared_ptr<kc::client::CellClient> cell;
  // Identifies this state in the per-thread descriptor lists.
  uint64_t serial = 0;
};

namespace kc::neverbleed {

// Returns the calling thread's size-prefixed connection to the cell of
// |state|, opening it on first use and again in a process forked later.
// Returns -1 when no connection can be opened.
int DescriptorForThisThread(keycell_neverbleed_state &state);

// Reads exactly |length| bytes from |fd|, which may be non-blocking, as an
// event loop sets it. Returns false on end of file, error, or when
// |deadline| passes; |has_deadline| false waits for ever.
bool ReadExactly(int fd, void *data, size_t length,
                 std::chrono::steady_clock::time_point deadline,
                 bool has_deadline);

// Writes |length| bytes to |fd| without raising SIGPIPE. Returns false on
// error.
bool WriteAll(int fd, const void *data, size_t length);

}  // namespace kc::neverbleed

#endif  // KEYCELL_NEVERBLEED_CONNECTION_H
