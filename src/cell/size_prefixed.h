// Requests on a size-prefixed connection (docs/PROTOCOL.md, "Size-prefixed
// framing"), handled one at a time without a socket, so that the server and
// the fuzzer run the same code.
#ifndef KEYCELL_CELL_SIZE_PREFIXED_H
#define KEYCELL_CELL_SIZE_PREFIXED_H

#include <cstddef>
#include <cstdint>
#include <span>

#include "cell/dispatcher.h"
#include "protocol/codec.h"

namespace kc::cell {

enum class PrefixedStep {
  kNeedMore,  // |input| contains no complete request yet; nothing was done.
  kReplied,   // One request was handled; the connection stays open.
  kClose,     // Send |out|, then close the connection.
};

// Handles the first size-prefixed request at the start of |input| with
// |dispatcher| and appends its reply, preceded by the reply's size, to
// |out|. A key release gets no reply. A prefix above the maximum frame or
// one that disagrees with the frame's header gets an error reply and
// kClose. |consumed| receives the bytes of |input| taken, the prefix
// included; it is 0 for kNeedMore and for a rejected prefix.
PrefixedStep HandleSizePrefixedRequest(Dispatcher &dispatcher,
                                       std::span<const uint8_t> input,
                                       ConnectionContext *context,
                                       protocol::WipingBuffer &out,
                                       size_t &consumed);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_SIZE_PREFIXED_H
