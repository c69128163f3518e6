// Turns request frames into reply frames. One Dispatcher serves every
// connection of a cell and is safe to call from many threads at once.
#ifndef KEYCELL_CELL_DISPATCHER_H
#define KEYCELL_CELL_DISPATCHER_H

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "cell/key_store.h"
#include "protocol/frame.h"

namespace kc::cell {

// Counters of what a cell did.
struct CellCounters {
  std::atomic<uint64_t> signatures{0};
  std::atomic<uint64_t> decryptions{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> bad_frames{0};
};

class Dispatcher {
 public:
  // |log| receives one line per rejected or failed request; it may be
  // empty. Lines never contain key material, passphrases or signed data.
  Dispatcher(KeyStore &keys, std::function<void(const std::string &)> log);

  enum class Outcome { kReplied, kClose };

  // Handles one request and appends exactly one reply frame to |out|. On
  // kClose the request was malformed: the reply says so and the caller
  // closes the connection after sending it.
  Outcome Handle(const protocol::Frame &request, protocol::WipingBuffer &out);

  // Appends the reply to a frame whose header announced a payload above
  // protocol::kMaxPayload; the caller then closes the connection.
  void RejectOversized(protocol::WipingBuffer &out);

  // Appends the reply to a size prefix that disagrees with the frame after
  // it; the caller then closes the connection.
  void RejectSizePrefix(const std::string &reason, protocol::WipingBuffer &out);

  const CellCounters &counters() const { return counters_; }

 private:
  Outcome HandleLoadKey(const protocol::Frame &request,
                        protocol::WipingBuffer &out);
  Outcome HandleSign(const protocol::Frame &request,
                     protocol::WipingBuffer &out);
  Outcome HandleDecrypt(const protocol::Frame &request,
                        protocol::WipingBuffer &out);
  Outcome HandleReleaseKey(const protocol::Frame &request,
                           protocol::WipingBuffer &out);
  Outcome HandleDropPrivileges(const protocol::Frame &request,
                               protocol::WipingBuffer &out);
  Outcome Reject(const protocol::Frame &request, const std::string &reason,
                 protocol::WipingBuffer &out);
  void ReplyError(const protocol::Frame &request, const Status &status,
                  protocol::WipingBuffer &out);

  KeyStore &keys_;
  std::function<void(const std::string &)> log_;
  CellCounters counters_;
};

}  // namespace kc::cell

#endif  // KEYCELL_CELL_DISPATCHER_H
