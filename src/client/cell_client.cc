#include "client/cell_client.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cell/embedded.h"
#include "client/async_channel.h"

namespace kc::client {
namespace {

// One connection of the calling thread to one cell. A connection belongs to
// the process that opened it: a child forked later finds a different pid and
// opens its own, so parent and child never share a stream.
struct ThreadConnection {
  uint64_t serial;
  pid_t pid;
  int fd;
  // Bytes received after the last awaited reply: the start of replies to
  // requests sent without waiting, which the cell may finish in any order.
  std::shared_ptr<protocol::WipingBuffer> unread;
};

struct ThreadConnections {
  std::vector<ThreadConnection> list;
  ~ThreadConnections() {
    pid_t self = getpid();
    for (const ThreadConnection &connection : list) {
      if (connection.pid == self) {
        ::close(connection.fd);
      }
    }
  }
};

// NOTE: a thread keeps its connection to a stopped cell until the thread
// exits; the descriptor is dead but counts against the process's limit.
thread_local ThreadConnections thread_connections;

// The pipelined connections of the calling thread, one per cell, for
// operations that must not block the thread.
struct ThreadChannel {
  uint64_t serial;
  pid_t pid;
  AsyncChannel *channel;
};

struct ThreadChannels {
  std::vector<ThreadChannel> list;
  ~ThreadChannels() {
    pid_t self = getpid();
    for (const ThreadChannel &entry : list) {
      // A forked child has no reader thread to join, so it leaves its
      // inherited copies alone.
      if (entry.pid == self) {
        delete entry.channel;
      }
    }
  }
};

thread_local ThreadChannels thread_channels;
thread_local uint64_t thread_request_id = 0;

std::atomic<uint64_t> next_serial{1};

Status CellGone() {
  return Status(Code::kCellGone, "the cell process is not running");
}

// The report that a new cell sends once it has hardened itself.
struct CellReport {
  cell::KeyMemoryState key_memory = cell::KeyMemoryState::kUnavailable;
  int landlock_abi = 0;
};

// Waits for the one message that a new cell sends once its secure heap
// and its Landlock domain are set up: the KeyMemoryState and the Landlock
// ABI version, one byte each. A cell that exits before it sends one has
// neither.
CellReport ReceiveCellReport(int control_fd, unsigned timeout_ms) {
  CellReport report;
  pollfd entry{control_fd, POLLIN, 0};
  int waited;
  do {
    waited =
        poll(&entry, 1, timeout_ms == 0 ? -1 : static_cast<int>(timeout_ms));
  } while (waited < 0 && errno == EINTR);
  if (waited <= 0) {
    return report;
  }
  unsigned char message[2] = {};
  ssize_t received;
  do {
    received = recv(control_fd, message, sizeof(message), MSG_DONTWAIT);
  } while (received < 0 && errno == EINTR);
  if (received != static_cast<ssize_t>(sizeof(message))) {
    return report;
  }
  if (message[0] == static_cast<unsigned char>(cell::KeyMemoryState::kLocked) ||
      message[0] ==
          static_cast<unsigned char>(cell::KeyMemoryState::kNotLocked)) {
    report.key_memory = static_cast<cell::KeyMemoryState>(message[0]);
  }
  report.landlock_abi = message[1];
  return report;
}

void DropConnection(uint64_t serial) {
  std::vector<ThreadConnection> &list = thread_connections.list;
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->serial == serial) {
      if (it->pid == getpid()) {
        ::close(it->fd);
      }
      list.erase(it);
      return;
    }
  }
}

}  // namespace

Result<std::shared_ptr<CellClient>> CellClient::Start(
    const StartOptions &options) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return Status(Code::kInternal,
                  std::string("socketpair failed: ") + std::strerror(errno));
  }
  pid_t pid = fork();
  if (pid < 0) {
    int error = errno;
    ::close(pair[0]);
    ::close(pair[1]);
    return Status(Code::kInternal,
                  std::string("fork failed: ") + std::strerror(error));
  }
  if (pid == 0) {
    ::close(pair[0]);
    if (options.post_fork != nullptr) {
      options.post_fork();
    }
    cell::RunEmbeddedCell(pair[1], options.workers);
  }
  ::close(pair[1]);
  CellReport report = ReceiveCellReport(pair[0], options.timeout_ms);
  return std::shared_ptr<CellClient>(
      new CellClient(UniqueFd(pair[0]), pid, options.timeout_ms,
                     report.key_memory, report.landlock_abi));
}

std::shared_ptr<CellClient> CellClient::AttachForTesting(UniqueFd control,
                                                         pid_t pid,
                                                         unsigned timeout_ms) {
  std::shared_ptr<CellClient> client(
      new CellClient(std::move(control), pid, timeout_ms,
                     cell::KeyMemoryState::kUnavailable, 0));
  client->attached_ = true;
  return client;
}

CellClient::CellClient(UniqueFd control, pid_t pid, unsigned timeout_ms,
                       cell::KeyMemoryState key_memory, int landlock_abi)
    : control_(std::move(control)),
      pid_(pid),
      owner_pid_(getpid()),
      timeout_ms_(timeout_ms),
      serial_(next_serial.fetch_add(1)),
      key_memory_(key_memory),
      landlock_abi_(landlock_abi) {}

CellClient::~CellClient() {
  Stop();
}

void CellClient::Stop() {
  if (stopped_.exchange(true)) {
    return;
  }
  gone_ = true;
  DropConnection(serial_);
  control_.reset();
  if (getpid() == owner_pid_ && !attached_) {
    kill(pid_, SIGTERM);
    // ECHILD means the server reaped the cell itself, which is fine.
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

protocol::WipingBuffer &CellClient::ScratchFrame() {
  thread_local protocol::WipingBuffer frame;
  frame.Clear();
  return frame;
}

uint64_t CellClient::NextRequestId() {
  return ++thread_request_id;
}

bool CellClient::CellStillRunning() const {
  // A dying process closes its descriptors before it becomes a zombie, so
  // end-of-file can arrive a moment before the exit is visible.
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (!ProcessAlive(pid_)) {
      return false;
    }
    usleep(1000);
  }
  return true;
}

Status CellClient::MarkGone() {
  gone_ = true;
  return CellGone();
}

Status CellClient::OpenConnection(int &fd, protocol::Framing framing) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return Status(Code::kInternal,
                  std::string("socketpair failed: ") + std::strerror(errno));
  }
  // The data byte selects how the connection delimits frames.
  char byte = static_cast<char>(framing);
  iovec iov{&byte, 1};
  alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = space;
  message.msg_controllen = sizeof(space);
  cmsghdr *header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &pair[1], sizeof(int));
  // A SOCK_SEQPACKET message is delivered whole, so processes that share
  // the control socket after a fork need no lock to use it.
  ssize_t sent;
  do {
    sent = sendmsg(control_.get(), &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  int error = errno;
  ::close(pair[1]);
  if (sent < 0) {
    ::close(pair[0]);
    if (error == EPIPE || error == ECONNRESET || error == ECONNREFUSED ||
        error == ENOTCONN) {
      return MarkGone();
    }
    return Status(Code::kInternal, std::string("cannot pass a connection to "
                                               "the cell: ") +
                                       std::strerror(error));
  }
  fd = pair[0];
  return Status::Ok();
}

Result<UniqueFd> CellClient::OpenDedicatedConnection(
    protocol::Framing framing) {
  if (stopped_.load(std::memory_order_relaxed)) {
    return Status(Code::kCellGone, "the cell has been stopped");
  }
  int fd = -1;
  Status status = OpenConnection(fd, framing);
  if (!status.ok()) {
    return status;
  }
  return UniqueFd(fd);
}

Result<std::shared_ptr<PendingOperation>> CellClient::SubmitFrame(
    protocol::WipingBuffer &frame) {
  if (stopped_.load(std::memory_order_relaxed)) {
    frame.Clear();
    return Status(Code::kCellGone, "the cell has been stopped");
  }
  if (gone_.load(std::memory_order_relaxed)) {
    frame.Clear();
    return CellGone();
  }
  pid_t self = getpid();
  std::vector<ThreadChannel> &list = thread_channels.list;
  AsyncChannel *channel = nullptr;
  for (auto it = list.begin(); it != list.end();) {
    bool inherited = it->pid != self;
    bool mine = it->serial == serial_;
    if (inherited || (mine && !it->channel->healthy())) {
      if (!inherited) {
        delete it->channel;
      }
      it = list.erase(it);
      continue;
    }
    if (mine) {
      channel = it->channel;
    }
    ++it;
  }
  if (channel == nullptr) {
    int fd = -1;
    Status status = OpenConnection(fd, protocol::Framing::kPlain);
    if (!status.ok()) {
      frame.Clear();
      return status;
    }
    channel = new AsyncChannel(UniqueFd(fd), pid_, timeout_ms_);
    list.push_back({serial_, self, channel});
  }
  Result<std::shared_ptr<PendingOperation>> operation = channel->Submit(frame);
  if (operation.ok() || operation.status().code() != Code::kCellGone) {
    return operation;
  }
  gone_ = true;
  return operation;
}

Result<int> CellClient::ConnectionForThisThread() {
  pid_t self = getpid();
  std::vector<ThreadConnection> &list = thread_connections.list;
  for (auto it = list.begin(); it != list.end();) {
    if (it->pid != self) {
      // Inherited through fork: the descriptor is the parent's stream.
      ::close(it->fd);
      it = list.erase(it);
      continue;
    }
    if (it->serial == serial_) {
      return it->fd;
    }
    ++it;
  }
  int fd = -1;
  Status status = OpenConnection(fd, protocol::Framing::kPlain);
  if (!status.ok()) {
    return status;
  }
  list.push_back(
      {serial_, self, fd, std::make_shared<protocol::WipingBuffer>()});
  return fd;
}

Status CellClient::Exchange(protocol::WipingBuffer &frame, bool wait,
                            Reply &reply) {
  if (stopped_.load(std::memory_order_relaxed)) {
    return Status(Code::kCellGone, "the cell has been stopped");
  }
  if (gone_.load(std::memory_order_relaxed)) {
    return CellGone();
  }
  Result<int> fd = ConnectionForThisThread();
  if (!fd.ok()) {
    return fd.status();
  }
  uint64_t id = thread_request_id;
  size_t sent = 0;
  while (sent < frame.size()) {
    ssize_t n =
        send(*fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int error = errno;
      DropConnection(serial_);
      frame.Clear();
      if (error == EPIPE || error == ECONNRESET) {
        // The cell closes a connection after a malformed request too, so
        // only a cell that has exited makes every later call fail.
        if (CellStillRunning()) {
          return Status(Code::kProtocol, "the cell closed the connection");
        }
        return MarkGone();
      }
      errno = error;
      return Status(Code::kInternal, std::string("sending to the cell "
                                                 "failed: ") +
                                         std::strerror(errno));
    }
    sent += static_cast<size_t>(n);
  }
  frame.Clear();
  if (!wait) {
    return Status::Ok();
  }
  protocol::WipingBuffer *unread = nullptr;
  for (ThreadConnection &connection : thread_connections.list) {
    if (connection.fd == *fd && connection.serial == serial_) {
      unread = connection.unread.get();
    }
  }
  Status status = ReadReply(*fd, id, *unread, reply);
  if (!status.ok() && status.code() >= Code::kCellGone) {
    DropConnection(serial_);
  }
  return status;
}

Status CellClient::ReadReply(int fd, uint64_t id,
                             protocol::WipingBuffer &unread, Reply &reply) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::milliseconds(timeout_ms_);
  protocol::WipingBuffer &buffer = reply.buffer;
  buffer.Clear();
  buffer.Append(unread.data(), unread.size());
  unread.Clear();
  for (;;) {
    protocol::Frame frame;
    protocol::SplitResult split = protocol::SplitFrame(buffer.span(), frame);
    if (split == protocol::SplitResult::kTooLarge) {
      return Status(Code::kProtocol,
                    "the cell sent a frame above the "
                    "maximum size");
    }
    if (split == protocol::SplitResult::kFrame) {
      if (frame.header.id < id) {
        // The reply to an earlier request sent with Send().
        buffer.Consume(frame.size());
        continue;
      }
      if (frame.header.id > id) {
        return Status(Code::kProtocol,
                      "the cell sent a reply to a request that was not "
                      "made");
      }
      // Replies to earlier requests sent without waiting may follow.
      unread.Append(buffer.data() + frame.size(), buffer.size() - frame.size());
      reply.header = frame.header;
      reply.payload = frame.payload;
      return ReplyStatus(frame);
    }

    int wait_ms = -1;
    if (timeout_ms_ != 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - Clock::now());
      if (left.count() <= 0) {
        return Status(Code::kTimedOut, "the cell did not reply within " +
                                           std::to_string(timeout_ms_) + " ms");
      }
      wait_ms = static_cast<int>(left.count());
    }
    pollfd readable{fd, POLLIN, 0};
    int ready = poll(&readable, 1, wait_ms);
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready == 0) {
      continue;  // The deadline check above reports the timeout.
    }
    uint8_t *space = buffer.Reserve(16 * 1024);
    ssize_t n = recv(fd, space, 16 * 1024, MSG_DONTWAIT);
    if (n > 0) {
      buffer.Commit(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      continue;
    }
    if (n == 0 || errno == ECONNRESET) {
      if (CellStillRunning()) {
        return Status(Code::kProtocol, "the cell closed the connection");
      }
      return MarkGone();
    }
    return Status(Code::kInternal, std::string("reading from the cell "
                                               "failed: ") +
                                       std::strerror(errno));
  }
}

}  // namespace kc::client
