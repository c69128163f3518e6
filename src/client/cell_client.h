// The server's side of a cell: starting it, and sending requests to it from
// any thread of any process forked after the start.
#ifndef KEYCELL_CLIENT_CELL_CLIENT_H
#define KEYCELL_CLIENT_CELL_CLIENT_H

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "base/status.h"
#include "base/unique_fd.h"
#include "cell/key_memory.h"
#include "client/async_channel.h"
#include "protocol/frame.h"

namespace kc::client {

struct StartOptions {
  unsigned workers = 0;         // Zero: one per online CPU.
  unsigned timeout_ms = 30000;  // Zero: wait for ever.
  // Runs in the cell process right after the fork, before the cell resets
  // its inherited state; nullptr for none.
  void (*post_fork)() = nullptr;
};

// A reply received from the cell. |payload| points into |buffer|.
struct Reply {
  protocol::WipingBuffer buffer;
  protocol::FrameHeader header;
  std::span<const uint8_t> payload;
};

class CellClient {
 public:
  // Forks a new embedded cell.
  static Result<std::shared_ptr<CellClient>> Start(const StartOptions &options);

  // Returns a client of a cell that the caller runs itself, for tests that
  // play the cell: connections are passed over |control|, a SOCK_SEQPACKET
  // socket, as the cell's control socket receives them, and |pid| is the
  // process whose exit means the cell is gone. Stop never signals |pid|.
  // Not part of the public API.
  static std::shared_ptr<CellClient> AttachForTesting(UniqueFd control,
                                                      pid_t pid,
                                                      unsigned timeout_ms);

  CellClient(const CellClient &) = delete;
  CellClient &operator=(const CellClient &) = delete;
  ~CellClient();

  // Sends |request| as a frame of |type| and waits for its reply. Each
  // thread of each process uses a connection of its own, opened on first
  // use. A reply whose status is not zero is returned as a Status with the
  // cell's message.
  template <typename Message>
  Status Call(protocol::MessageType type, const Message &request,
              Reply &reply) {
    protocol::WipingBuffer &frame = ScratchFrame();
    protocol::AppendFrame(frame, static_cast<uint8_t>(type), 0, NextRequestId(),
                          request);
    return Exchange(frame, true, reply);
  }

  // Sends |request| without waiting for a reply, which is discarded when
  // it arrives.
  template <typename Message>
  Status Send(protocol::MessageType type, const Message &request) {
    protocol::WipingBuffer &frame = ScratchFrame();
    protocol::AppendFrame(frame, static_cast<uint8_t>(type), 0, NextRequestId(),
                          request);
    Reply unused;
    return Exchange(frame, false, unused);
  }

  // Sends |request| on the calling thread's pipelined connection and
  // returns at once. The operation's descriptor becomes readable when the
  // reply has arrived, or when the timeout has passed without one.
  template <typename Message>
  Result<std::shared_ptr<PendingOperation>> Submit(protocol::MessageType type,
                                                   const Message &request) {
    protocol::WipingBuffer &frame = ScratchFrame();
    protocol::AppendFrame(frame, static_cast<uint8_t>(type), 0, 0, request);
    return SubmitFrame(frame);
  }

  // Opens a new connection to the cell that the caller owns and drives
  // itself, outside the per-thread connections that Call uses. |framing|
  // selects how frames are delimited on it in both directions.
  Result<UniqueFd> OpenDedicatedConnection(
      protocol::Framing framing = protocol::Framing::kPlain);

  // Stops the cell when called in the process that started it; in any other
  // process it only releases that process's connections. Every later call
  // fails.
  void Stop();

  pid_t pid() const { return pid_; }
  // Whether the cell keeps private keys in locked memory, as it reported
  // when it started.
  cell::KeyMemoryState key_memory() const { return key_memory_; }
  // The Landlock ABI version of the cell's domain, as it reported when it
  // started; 0 when the cell runs without Landlock.
  int landlock_abi() const { return landlock_abi_; }
  unsigned timeout_ms() const { return timeout_ms_; }
  // True once the cell has been seen to exit or has been stopped.
  bool gone() const { return gone_.load(std::memory_order_relaxed); }

 private:
  CellClient(UniqueFd control, pid_t pid, unsigned timeout_ms,
             cell::KeyMemoryState key_memory, int landlock_abi);

  static protocol::WipingBuffer &ScratchFrame();
  uint64_t NextRequestId();
  Status Exchange(protocol::WipingBuffer &frame, bool wait, Reply &reply);
  Result<std::shared_ptr<PendingOperation>> SubmitFrame(
      protocol::WipingBuffer &frame);
  Result<int> ConnectionForThisThread();
  Status OpenConnection(int &fd, protocol::Framing framing);
  Status ReadReply(int fd, uint64_t id, protocol::WipingBuffer &unread,
                   Reply &reply);
  Status MarkGone();
  bool CellStillRunning() const;

  UniqueFd control_;
  const pid_t pid_;
  const pid_t owner_pid_;
  const unsigned timeout_ms_;
  const uint64_t serial_;
  const cell::KeyMemoryState key_memory_;
  const int landlock_abi_;
  std::atomic<bool> gone_{false};
  std::atomic<bool> stopped_{false};
  bool attached_ = false;
};

}  // namespace kc::client

#endif  // KEYCELL_CLIENT_CELL_CLIENT_H
