#include "client/async_channel.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

namespace kc::client {

void PendingOperation::Complete(Status status, std::span<const uint8_t> frame) {
  status_ = std::move(status);
  reply_.Append(frame.data(), frame.size());
  if (frame.size() >= protocol::kHeaderSize) {
    payload_ = reply_.span().subspan(protocol::kHeaderSize);
  }
  done_.store(true, std::memory_order_release);
  uint64_t one = 1;
  // The eventfd cannot overflow with one write per operation.
  (void)::write(event_.get(), &one, sizeof(one));
}

AsyncChannel::AsyncChannel(UniqueFd connection, pid_t peer_pid,
                           unsigned timeout_ms, std::string peer)
    : connection_(std::move(connection)),
      peer_pid_(peer_pid),
      timeout_ms_(timeout_ms),
      peer_(std::move(peer)) {
  reader_ = std::thread(&AsyncChannel::ReadLoop, this);
}

AsyncChannel::~AsyncChannel() {
  closing_.store(true, std::memory_order_release);
  ::shutdown(connection_.get(), SHUT_RDWR);
  if (reader_.joinable()) {
    reader_.join();
  }
}

Result<std::shared_ptr<PendingOperation>> AsyncChannel::Submit(
    protocol::WipingBuffer &frame) {
  if (frame.size() < protocol::kHeaderSize) {
    return Status(Code::kInvalidArgument, "not a frame");
  }
  std::shared_ptr<PendingOperation> operation(new PendingOperation);
  operation->event_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!operation->event_.valid()) {
    return Status(Code::kInternal,
                  std::string("eventfd failed: ") + std::strerror(errno));
  }
  uint64_t id;
  {
    std::lock_guard lock(mutex_);
    if (broken_.load(std::memory_order_relaxed)) {
      return broken_status_;
    }
    id = next_id_++;
    operation->deadline_ = std::chrono::steady_clock::now() +
                           std::chrono::milliseconds(timeout_ms_);
    pending_.emplace(id, operation);
  }
  std::optional<protocol::FrameHeader> header =
      protocol::DecodeHeader(frame.data());
  if (!header) {
    std::lock_guard lock(mutex_);
    pending_.erase(id);
    return Status(Code::kInvalidArgument, "the frame is too large");
  }
  header->id = id;
  protocol::EncodeHeader(*header, frame.data());

  size_t sent = 0;
  while (sent < frame.size()) {
    ssize_t n = send(connection_.get(), frame.data() + sent,
                     frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      // The reader sees the same failure and fails every pending
      // operation, this one included.
      ::shutdown(connection_.get(), SHUT_RDWR);
      break;
    }
    sent += static_cast<size_t>(n);
  }
  frame.Clear();
  return operation;
}

void AsyncChannel::ReadLoop() {
  protocol::WipingBuffer buffer;
  for (;;) {
    protocol::Frame frame;
    protocol::SplitResult split = protocol::SplitFrame(buffer.span(), frame);
    if (split == protocol::SplitResult::kTooLarge) {
      FailAll(Status(Code::kProtocol,
                     peer_ + " sent a frame above the maximum size"));
      return;
    }
    if (split == protocol::SplitResult::kFrame) {
      std::shared_ptr<PendingOperation> operation;
      bool late = false;
      {
        std::lock_guard lock(mutex_);
        auto it = pending_.find(frame.header.id);
        if (it != pending_.end()) {
          operation = std::move(it->second);
          pending_.erase(it);
        } else {
          late = expired_.erase(frame.header.id) == 1;
        }
      }
      if (late) {
        buffer.Consume(frame.size());
        continue;
      }
      if (operation == nullptr) {
        FailAll(Status(Code::kProtocol, peer_ +
                                            " sent a reply to a request that "
                                            "was not made"));
        return;
      }
      operation->Complete(ReplyStatus(frame),
                          buffer.span().subspan(0, frame.size()));
      buffer.Consume(frame.size());
      continue;
    }
    int wait_ms = ExpireOperations();
    pollfd readable{connection_.get(), POLLIN, 0};
    int ready = poll(&readable, 1, wait_ms);
    if (ready <= 0) {
      continue;  // EINTR, or a deadline that has come.
    }
    uint8_t *space = buffer.Reserve(16 * 1024);
    ssize_t n = recv(connection_.get(), space, 16 * 1024, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) {
      continue;
    }
    if (n > 0) {
      buffer.Commit(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    FailAll(ConnectionLost());
    return;
  }
}

int AsyncChannel::ExpireOperations() {
  if (timeout_ms_ == 0) {
    return -1;
  }
  using Clock = std::chrono::steady_clock;
  const Clock::time_point now = Clock::now();
  std::vector<std::shared_ptr<PendingOperation>> expired;
  int wait_ms;
  {
    std::lock_guard lock(mutex_);
    // Deadlines grow with ids, so the expired operations come first.
    auto it = pending_.begin();
    while (it != pending_.end() && it->second->deadline_ <= now) {
      expired.push_back(std::move(it->second));
      expired_.insert(it->first);
      it = pending_.erase(it);
    }
    // With nothing pending, any operation sent from now on has its deadline
    // after one full timeout, so waiting that long misses none.
    Clock::time_point next = it == pending_.end()
                                 ? now + std::chrono::milliseconds(timeout_ms_)
                                 : it->second->deadline_;
    wait_ms = static_cast<int>(
        std::chrono::ceil<std::chrono::milliseconds>(next - now).count());
  }
  for (const std::shared_ptr<PendingOperation> &operation : expired) {
    operation->Complete(
        Status(Code::kTimedOut, peer_ + " did not reply within " +
                                    std::to_string(timeout_ms_) + " ms"),
        {});
  }
  return wait_ms;
}

Status AsyncChannel::ConnectionLost() const {
  if (closing_.load(std::memory_order_acquire)) {
    return Status(Code::kCellGone,
                  "the connection to " + peer_ + " was closed");
  }
  if (peer_pid_ <= 0) {
    return Status(Code::kCellGone, peer_ + " closed the connection");
  }
  // A dying process closes its descriptors a moment before it becomes a
  // zombie, so look twice before calling the cell alive.
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (!ProcessAlive(peer_pid_)) {
      return Status(Code::kCellGone, "the cell process is not running");
    }
    usleep(1000);
  }
  return Status(Code::kProtocol, "the connection to " + peer_ + " was closed");
}

Status ReplyStatus(const protocol::Frame &frame) {
  if (frame.header.status == 0) {
    return Status::Ok();
  }
  protocol::ErrorReply error;
  if (!protocol::Decode(frame.payload, error) ||
      frame.header.status >= static_cast<uint16_t>(Code::kCellGone)) {
    return Status(Code::kProtocol, "the cell sent a malformed error");
  }
  return Status(static_cast<Code>(frame.header.status),
                std::string(error.message));
}

bool ProcessAlive(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) {
    return false;
  }
  // A cell that died but has not been reaped by the server is a zombie.
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  FILE *file = std::fopen(path, "re");
  if (file == nullptr) {
    return false;
  }
  char state = '?';
  int matched = std::fscanf(file, "%*d (%*[^)]) %c", &state);
  std::fclose(file);
  return matched == 1 && state != 'Z' && state != 'X';
}

void AsyncChannel::FailAll(const Status &status) {
  std::map<uint64_t, std::shared_ptr<PendingOperation>> failed;
  {
    std::lock_guard lock(mutex_);
    broken_status_ = status;
    broken_.store(true, std::memory_order_release);
    failed.swap(pending_);
  }
  for (auto &[id, operation] : failed) {
    operation->Complete(status, {});
  }
}

}  // namespace kc::client
