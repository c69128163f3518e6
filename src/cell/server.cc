#include "cell/server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace kc::cell {
namespace {

// A connection whose unsent replies exceed this stops being read until its
// peer catches up, so a peer that never reads cannot grow the cell's memory.
constexpr size_t kMaxPendingOutput = 1024 * 1024;
constexpr size_t kReadChunk = 64 * 1024;

}  // namespace

// Both kinds of epoll entries start with a tag, so a worker can tell them
// apart from the pointer alone.
enum class EntryKind { kConnection, kWatcher };

struct Server::Connection {
  EntryKind kind = EntryKind::kConnection;
  UniqueFd fd;
  protocol::Framing framing = protocol::Framing::kPlain;
  protocol::WipingBuffer input;
  protocol::WipingBuffer output;
  bool peer_closed = false;
  bool closing = false;
};

struct Server::Watcher {
  EntryKind kind = EntryKind::kWatcher;
  int fd = -1;
  std::function<void()> on_ready;
};

Server::Server(Dispatcher &dispatcher) : dispatcher_(dispatcher) {}

Server::~Server() {
  std::lock_guard lock(mutex_);
  for (Connection *connection : connections_) {
    delete connection;
  }
}

Status Server::Init() {
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) {
    return Status(Code::kInternal,
                  std::string("epoll_create1 failed: ") + std::strerror(errno));
  }
  return Status::Ok();
}

size_t Server::connection_count() const {
  std::lock_guard lock(mutex_);
  return connections_.size();
}

Status Server::AddConnection(UniqueFd fd, protocol::Framing framing) {
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return Status(Code::kInternal,
                  std::string("fcntl failed: ") + std::strerror(errno));
  }
  auto *connection = new Connection;
  connection->fd = std::move(fd);
  connection->framing = framing;
  {
    std::lock_guard lock(mutex_);
    connections_.insert(connection);
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.ptr = connection;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, connection->fd.get(), &event) !=
      0) {
    int error = errno;
    Close(connection);
    return Status(Code::kInternal,
                  std::string("epoll_ctl failed: ") + std::strerror(error));
  }
  return Status::Ok();
}

Status Server::Watch(int fd, std::function<void()> on_ready) {
  auto *watcher = new Watcher;
  watcher->fd = fd;
  watcher->on_ready = std::move(on_ready);
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.ptr = watcher;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    int error = errno;
    delete watcher;
    return Status(Code::kInternal,
                  std::string("epoll_ctl failed: ") + std::strerror(error));
  }
  return Status::Ok();
}

void Server::Run(unsigned workers) {
  if (workers == 0) {
    workers = 1;
  }
  for (unsigned i = 1; i < workers; ++i) {
    std::thread(&Server::WorkerLoop, this).detach();
  }
  WorkerLoop();
  _exit(1);  // WorkerLoop does not return.
}

void Server::WorkerLoop() {
  for (;;) {
    epoll_event event;
    int n = epoll_wait(epoll_.get(), &event, 1, -1);
    if (n <= 0) {
      continue;  // EINTR.
    }
    if (*static_cast<EntryKind *>(event.data.ptr) == EntryKind::kWatcher) {
      auto *watcher = static_cast<Watcher *>(event.data.ptr);
      watcher->on_ready();
      epoll_event rearm{};
      rearm.events = EPOLLIN | EPOLLONESHOT;
      rearm.data.ptr = watcher;
      epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, watcher->fd, &rearm);
      continue;
    }
    auto *connection = static_cast<Connection *>(event.data.ptr);
    if (Service(*connection, event.events)) {
      Rearm(*connection);
    } else {
      Close(connection);
    }
  }
}

bool Server::Service(Connection &connection, uint32_t events) {
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 &&
      !ReadAvailable(connection)) {
    return false;
  }
  // Handle every complete frame, unless replies are piling up unread.
  while (!connection.closing && connection.output.size() < kMaxPendingOutput) {
    bool handled = connection.framing == protocol::Framing::kSizePrefixed
                       ? HandleOneSizePrefixed(connection)
                       : HandleOne(connection);
    if (!handled) {
      break;
    }
  }
  if (!Flush(connection)) {
    return false;
  }
  if (connection.closing || connection.peer_closed) {
    // Replies that did not fit in the socket are dropped with the
    // connection; a closing peer cannot read them anyway.
    return false;
  }
  return true;
}

bool Server::HandleOne(Connection &connection) {
  protocol::Frame frame;
  protocol::SplitResult split =
      protocol::SplitFrame(connection.input.span(), frame);
  if (split == protocol::SplitResult::kNeedMore) {
    return false;
  }
  if (split == protocol::SplitResult::kTooLarge) {
    dispatcher_.RejectOversized(connection.output);
    connection.closing = true;
    return false;
  }
  size_t consumed = frame.size();
  if (dispatcher_.Handle(frame, connection.output) ==
      Dispatcher::Outcome::kClose) {
    connection.closing = true;
  }
  connection.input.Consume(consumed);
  return true;
}

bool Server::HandleOneSizePrefixed(Connection &connection) {
  std::span<const uint8_t> input = connection.input.span();
  if (input.size() < sizeof(size_t)) {
    return false;
  }
  size_t declared;
  std::memcpy(&declared, input.data(), sizeof(declared));
  protocol::WipingBuffer reply;
  bool handled = false;
  if (declared > protocol::kHeaderSize + protocol::kMaxPayload) {
    dispatcher_.RejectOversized(reply);
    connection.closing = true;
  } else if (input.size() - sizeof(size_t) < declared) {
    return false;
  } else {
    protocol::Frame frame;
    protocol::SplitResult split =
        protocol::SplitFrame(input.subspan(sizeof(size_t), declared), frame);
    if (split != protocol::SplitResult::kFrame || frame.size() != declared) {
      dispatcher_.RejectSizePrefix(
          "the size prefix " + std::to_string(declared) +
              " disagrees with the length in the frame header",
          reply);
      connection.closing = true;
    } else {
      if (dispatcher_.Handle(frame, reply) == Dispatcher::Outcome::kClose) {
        connection.closing = true;
      } else if (frame.header.type ==
                 static_cast<uint8_t>(protocol::MessageType::kReleaseKey)) {
        // neverbleed sends key releases without reading a reply.
        reply.Clear();
      }
      connection.input.Consume(sizeof(size_t) + declared);
      handled = true;
    }
  }
  if (reply.size() != 0) {
    size_t reply_size = reply.size();
    connection.output.Append(&reply_size, sizeof(reply_size));
    connection.output.Append(reply.data(), reply.size());
  }
  return handled;
}

bool Server::ReadAvailable(Connection &connection) {
  // Bytes arrive in a stack chunk and are appended, so the input buffer
  // grows only by what the peer sent. A connection that sent a header and
  // stalled holds a 16-byte buffer.
  uint8_t chunk[kReadChunk];
  // Read at most one frame's worth beyond what is buffered, so a flood of
  // requests is taken in step with the replies it produces.
  size_t limit = protocol::kHeaderSize + protocol::kMaxPayload;
  if (connection.framing == protocol::Framing::kSizePrefixed) {
    limit += sizeof(size_t);
  }
  while (connection.input.size() < limit) {
    ssize_t n = recv(connection.fd.get(), chunk, sizeof(chunk), 0);
    if (n > 0) {
      connection.input.Append(chunk, static_cast<size_t>(n));
      OPENSSL_cleanse(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      connection.peer_closed = true;
      return true;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    }
    return false;
  }
  return true;
}

bool Server::Flush(Connection &connection) {
  size_t sent = 0;
  while (sent < connection.output.size()) {
    ssize_t n = send(connection.fd.get(), connection.output.data() + sent,
                     connection.output.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    }
    return false;
  }
  connection.output.Consume(sent);
  return true;
}

void Server::Rearm(Connection &connection) {
  epoll_event event{};
  event.events = EPOLLONESHOT;
  if (connection.output.size() < kMaxPendingOutput) {
    event.events |= EPOLLIN;
  }
  if (connection.output.size() != 0) {
    event.events |= EPOLLOUT;
  }
  event.data.ptr = &connection;
  epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, connection.fd.get(), &event);
}

void Server::Close(Connection *connection) {
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, connection->fd.get(), nullptr);
  {
    std::lock_guard lock(mutex_);
    connections_.erase(connection);
  }
  delete connection;
}

}  // namespace kc::cell
