// Pipelined requests to a cell: many operations in flight on one connection,
// completed in whatever order the cell finishes them. A reader thread takes
// the replies off the connection and signals each operation's eventfd, so
// an event loop can wait for any number of operations without blocking.
#ifndef KEYCELL_CLIENT_ASYNC_CHANNEL_H
#define KEYCELL_CLIENT_ASYNC_CHANNEL_H

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

#include "base/status.h"
#include "base/unique_fd.h"
#include "protocol/frame.h"

namespace kc::client {

// One request sent through an AsyncChannel.
class PendingOperation {
 public:
  PendingOperation(const PendingOperation &) = delete;
  PendingOperation &operator=(const PendingOperation &) = delete;

  // An eventfd that becomes readable once the operation has completed.
  int fd() const { return event_.get(); }
  bool done() const { return done_.load(std::memory_order_acquire); }
  // The outcome and the reply's payload; valid once done() is true.
  const Status &status() const { return status_; }
  std::span<const uint8_t> payload() const { return payload_; }

 private:
  friend class AsyncChannel;
  PendingOperation() = default;
  void Complete(Status status, std::span<const uint8_t> frame);

  UniqueFd event_;
  std::chrono::steady_clock::time_point deadline_;
  std::atomic<bool> done_{false};
  Status status_;
  protocol::WipingBuffer reply_;
  std::span<const uint8_t> payload_;
};

class AsyncChannel {
 public:
  // Takes over |connection|, a plain-framed connection to |peer|, and starts
  // its reader thread. |peer| names the other end in messages ("the cell",
  // "keycelld at PATH"). When |peer_pid| is above zero, a closed connection
  // is reported as the cell's exit once that process has gone. An operation
  // whose reply has not arrived |timeout_ms| after it was sent fails with
  // Code::kTimedOut, and its reply is discarded if it comes later; zero
  // waits for ever.
  AsyncChannel(UniqueFd connection, pid_t peer_pid, unsigned timeout_ms,
               std::string peer = "the cell");
  AsyncChannel(const AsyncChannel &) = delete;
  AsyncChannel &operator=(const AsyncChannel &) = delete;
  // Shuts the connection down, fails what is still pending and joins the
  // reader. Only the process that created the channel may destroy it.
  ~AsyncChannel();

  // Sends |frame|, a complete frame whose request id is replaced by the
  // channel's own. Only one thread at a time may submit.
  Result<std::shared_ptr<PendingOperation>> Submit(
      protocol::WipingBuffer &frame);

  // False once the connection has failed; every later Submit fails.
  bool healthy() const { return !broken_.load(std::memory_order_acquire); }

 private:
  void ReadLoop();
  // Fails the operations whose deadline has passed and returns the
  // milliseconds until the next deadline, or -1 for none.
  int ExpireOperations();
  void FailAll(const Status &status);
  Status ConnectionLost() const;

  UniqueFd connection_;
  const pid_t peer_pid_;
  const unsigned timeout_ms_;
  const std::string peer_;
  std::mutex mutex_;
  // Ordered by id, which is also the order of their deadlines.
  std::map<uint64_t, std::shared_ptr<PendingOperation>> pending_;
  // Operations that timed out, whose replies may still arrive.
  std::unordered_set<uint64_t> expired_;
  uint64_t next_id_ = 1;
  std::atomic<bool> broken_{false};
  std::atomic<bool> closing_{false};
  Status broken_status_;
  std::thread reader_;
};

// Returns the outcome that the reply |frame| carries: Ok for status 0, else
// the cell's error message under its code.
Status ReplyStatus(const protocol::Frame &frame);

// Returns whether process |pid| exists and is not a zombie.
bool ProcessAlive(pid_t pid);

}  // namespace kc::client

#endif  // KEYCELL_CLIENT_ASYNC_CHANNEL_H
