#include "client/daemon_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include "client/async_channel.h"
#include "protocol/frame.h"

namespace kc::client {

// A connection belongs to the process that opened it. A child forked later
// has a different pid and connects again, so parent and child never share
// a stream.
struct DaemonConnection {
  uint64_t serial = 0;
  pid_t pid = 0;
  int fd = -1;
  uint64_t next_id = 1;
  // The ids that the daemon gave to the keys opened on this connection.
  std::map<std::string, uint32_t, std::less<>> key_ids;
};

// A pipelined connection, shared by the operations in flight on it so that
// it outlives its removal from the thread's list while they wait.
struct DaemonChannel {
  uint64_t serial = 0;
  pid_t pid = 0;
  std::unique_ptr<AsyncChannel> channel;
  std::map<std::string, uint32_t, std::less<>> key_ids;

  ~DaemonChannel() {
    // A forked child has no reader thread to join, so it leaves its
    // inherited copies alone.
    if (pid != getpid()) {
      (void)channel.release();
    }
  }
};

namespace {

struct ThreadChannels {
  std::vector<std::shared_ptr<DaemonChannel>> list;
};

thread_local ThreadChannels thread_channels;

struct ThreadConnections {
  std::vector<std::unique_ptr<DaemonConnection>> list;
  ~ThreadConnections() {
    pid_t self = getpid();
    for (const auto &connection : list) {
      if (connection->pid == self) {
        ::close(connection->fd);
      }
    }
  }
};

thread_local ThreadConnections thread_connections;

std::atomic<uint64_t> next_serial{1};

std::mutex clients_mutex;
std::map<std::string, std::weak_ptr<DaemonClient>> clients;

// Milliseconds that a request waits for the daemon's reply.
constexpr unsigned kTimeoutMs = 30000;

}  // namespace

std::shared_ptr<DaemonClient> DaemonClient::ForSocket(
    const std::string &socket_path) {
  std::lock_guard lock(clients_mutex);
  std::weak_ptr<DaemonClient> &slot = clients[socket_path];
  std::shared_ptr<DaemonClient> client = slot.lock();
  if (client == nullptr) {
    client = std::make_shared<DaemonClient>(socket_path, kTimeoutMs);
    slot = client;
  }
  return client;
}

DaemonClient::DaemonClient(std::string socket_path, unsigned timeout_ms)
    : socket_path_(std::move(socket_path)),
      timeout_ms_(timeout_ms),
      serial_(next_serial.fetch_add(1)) {}

Status DaemonClient::Connect(int &fd) const {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.empty() || socket_path_.size() >= sizeof(address.sun_path)) {
    return Status(Code::kInvalidArgument,
                  "invalid keycelld socket path '" + socket_path_ + "'");
  }
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  int socket_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (socket_fd < 0) {
    return Status(Code::kInternal,
                  std::string("socket failed: ") + std::strerror(errno));
  }
  int result;
  do {
    result = connect(socket_fd, reinterpret_cast<sockaddr *>(&address),
                     sizeof(address));
  } while (result != 0 && errno == EINTR);
  if (result != 0) {
    int error = errno;
    ::close(socket_fd);
    return Status(Code::kCellGone, "keycelld is not running at " +
                                       socket_path_ + ": " +
                                       std::strerror(error));
  }
  fd = socket_fd;
  return Status::Ok();
}

Status DaemonClient::ConnectionLost() const {
  return Status(Code::kCellGone,
                "keycelld at " + socket_path_ + " closed the connection");
}

void DaemonClient::Drop(Connection &connection) {
  auto &list = thread_connections.list;
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->get() == &connection) {
      if (connection.pid == getpid()) {
        ::close(connection.fd);
      }
      list.erase(it);
      return;
    }
  }
}

Result<DaemonConnection *> DaemonClient::ConnectionForThisThread(bool &reused) {
  pid_t self = getpid();
  auto &list = thread_connections.list;
  for (auto it = list.begin(); it != list.end();) {
    if ((*it)->pid != self) {
      // Inherited through fork: the descriptor is the parent's stream.
      ::close((*it)->fd);
      it = list.erase(it);
      continue;
    }
    if ((*it)->serial == serial_) {
      reused = true;
      return it->get();
    }
    ++it;
  }
  reused = false;
  int fd = -1;
  Status status = Connect(fd);
  if (!status.ok()) {
    return status;
  }
  auto connection = std::make_unique<DaemonConnection>();
  connection->serial = serial_;
  connection->pid = self;
  connection->fd = fd;
  list.push_back(std::move(connection));
  return list.back().get();
}

template <typename Message>
Status DaemonClient::Exchange(Connection &connection, uint8_t type,
                              const Message &message, Reply &reply) {
  uint64_t id = connection.next_id++;
  protocol::WipingBuffer frame;
  protocol::AppendFrame(frame, type, 0, id, message);
  size_t sent = 0;
  while (sent < frame.size()) {
    ssize_t n = send(connection.fd, frame.data() + sent, frame.size() - sent,
                     MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      if (errno == EPIPE || errno == ECONNRESET) {
        return ConnectionLost();
      }
      return Status(Code::kInternal, "sending to keycelld at " + socket_path_ +
                                         " failed: " + std::strerror(errno));
    }
    sent += static_cast<size_t>(n);
  }
  return ReadReply(connection.fd, id, reply);
}

Status DaemonClient::ReadReply(int fd, uint64_t id, Reply &reply) const {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline =
      Clock::now() + std::chrono::milliseconds(timeout_ms_);
  protocol::WipingBuffer &buffer = reply.buffer;
  buffer.Clear();
  for (;;) {
    protocol::Frame frame;
    protocol::SplitResult split = protocol::SplitFrame(buffer.span(), frame);
    if (split == protocol::SplitResult::kTooLarge) {
      return Status(Code::kProtocol, "keycelld at " + socket_path_ +
                                         " sent a frame above the maximum "
                                         "size");
    }
    if (split == protocol::SplitResult::kFrame) {
      // One request at a time is in flight on a connection.
      if (frame.header.id != id || frame.size() != buffer.size()) {
        return Status(Code::kProtocol, "keycelld at " + socket_path_ +
                                           " sent a reply to a request that "
                                           "was not made");
      }
      reply.header = frame.header;
      reply.payload = frame.payload;
      return ReplyStatus(frame);
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - Clock::now());
    if (left.count() <= 0) {
      return Status(Code::kTimedOut, "keycelld at " + socket_path_ +
                                         " did not reply within " +
                                         std::to_string(timeout_ms_) + " ms");
    }
    pollfd readable{fd, POLLIN, 0};
    int ready = poll(&readable, 1, static_cast<int>(left.count()));
    if (ready <= 0) {
      continue;  // EINTR, or the deadline check above reports the timeout.
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
      return ConnectionLost();
    }
    return Status(Code::kInternal, "reading from keycelld at " + socket_path_ +
                                       " failed: " + std::strerror(errno));
  }
}

Result<OpenedKey> DaemonClient::OpenOn(Connection &connection,
                                       std::string_view key_name) {
  Reply reply;
  Status status = Exchange(
      connection, static_cast<uint8_t>(protocol::MessageType::kOpenKey),
      protocol::OpenKeyRequest{key_name}, reply);
  if (!status.ok()) {
    if (status.code() == Code::kCellGone) {
      return status;
    }
    return Status(status.code(),
                  "keycelld at " + socket_path_ + " did not open key '" +
                      std::string(key_name) + "': " + status.message());
  }
  protocol::OpenKeyReply message;
  if (!protocol::Decode(reply.payload, message)) {
    return Status(Code::kProtocol, "keycelld at " + socket_path_ +
                                       " sent a malformed reply to opening "
                                       "key '" +
                                       std::string(key_name) + "'");
  }
  OpenedKey opened;
  opened.key_id = message.key_id;
  opened.type = message.type;
  opened.public_key.assign(message.public_key.begin(),
                           message.public_key.end());
  connection.key_ids[std::string(key_name)] = opened.key_id;
  return opened;
}

Result<OpenedKey> DaemonClient::Open(std::string_view key_name) {
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    Result<Connection *> connection = ConnectionForThisThread(reused);
    if (!connection.ok()) {
      return connection.status();
    }
    Result<OpenedKey> opened = OpenOn(**connection, key_name);
    if (opened.ok()) {
      return opened;
    }
    if (opened.status().code() >= Code::kCellGone) {
      Drop(**connection);
    }
    // A connection made before the daemon restarted fails at once; the
    // request goes once more over a new connection.
    if (!(reused && attempt == 0 &&
          opened.status().code() == Code::kCellGone)) {
      return opened.status();
    }
  }
}

template <typename Message>
Status DaemonClient::Run(std::string_view key_name,
                         std::span<const uint8_t> public_key,
                         protocol::MessageType type, Message &request,
                         Reply &reply) {
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    Result<Connection *> connection = ConnectionForThisThread(reused);
    if (!connection.ok()) {
      return connection.status();
    }
    Connection &open = **connection;
    Status status;
    auto known = open.key_ids.find(key_name);
    if (known != open.key_ids.end()) {
      request.key_id = known->second;
    } else {
      Result<OpenedKey> opened = OpenOn(open, key_name);
      if (!opened.ok()) {
        status = opened.status();
      } else if (!public_key.empty() &&
                 !std::equal(public_key.begin(), public_key.end(),
                             opened->public_key.begin(),
                             opened->public_key.end())) {
        open.key_ids.erase(std::string(key_name));
        return Status(Code::kForbidden,
                      "key '" + std::string(key_name) + "' of keycelld at " +
                          socket_path_ +
                          " has a different public key than the reference");
      } else {
        request.key_id = opened->key_id;
      }
    }
    if (status.ok()) {
      status = Exchange(open, static_cast<uint8_t>(type), request, reply);
    }
    if (status.ok()) {
      return status;
    }
    if (status.code() >= Code::kCellGone ||
        status.code() == Code::kBadRequest) {
      Drop(open);
    }
    if (!(reused && attempt == 0 && status.code() == Code::kCellGone)) {
      return status;
    }
  }
}

Status DaemonClient::Call(std::string_view key_name,
                          std::span<const uint8_t> public_key,
                          protocol::SignRequest request, Reply &reply) {
  return Run(key_name, public_key, protocol::MessageType::kSign, request,
             reply);
}

Status DaemonClient::Call(std::string_view key_name,
                          std::span<const uint8_t> public_key,
                          protocol::DecryptRequest request, Reply &reply) {
  return Run(key_name, public_key, protocol::MessageType::kDecrypt, request,
             reply);
}

Result<std::shared_ptr<DaemonChannel>> DaemonClient::ChannelForThisThread(
    bool &reused) {
  pid_t self = getpid();
  auto &list = thread_channels.list;
  for (auto it = list.begin(); it != list.end();) {
    bool inherited = (*it)->pid != self;
    bool mine = (*it)->serial == serial_;
    if (inherited || (mine && !(*it)->channel->healthy())) {
      it = list.erase(it);
      continue;
    }
    if (mine) {
      reused = true;
      return *it;
    }
    ++it;
  }
  reused = false;
  int fd = -1;
  Status status = Connect(fd);
  if (!status.ok()) {
    return status;
  }
  auto channel = std::make_shared<DaemonChannel>();
  channel->serial = serial_;
  channel->pid = self;
  channel->channel = std::make_unique<AsyncChannel>(
      UniqueFd(fd), 0, timeout_ms_, "keycelld at " + socket_path_);
  list.push_back(channel);
  return channel;
}

Result<uint32_t> DaemonClient::KeyIdFromOpenReply(
    std::string_view key_name, std::span<const uint8_t> public_key,
    const Reply &reply) const {
  protocol::OpenKeyReply message;
  if (!protocol::Decode(reply.payload, message)) {
    return Status(Code::kProtocol, "keycelld at " + socket_path_ +
                                       " sent a malformed reply to opening "
                                       "key '" +
                                       std::string(key_name) + "'");
  }
  if (!public_key.empty() &&
      !std::equal(public_key.begin(), public_key.end(),
                  message.public_key.begin(), message.public_key.end())) {
    return Status(Code::kForbidden,
                  "key '" + std::string(key_name) + "' of keycelld at " +
                      socket_path_ +
                      " has a different public key than the reference");
  }
  return message.key_id;
}

template <typename Message>
Status DaemonClient::RunPipelined(std::string_view key_name,
                                  std::span<const uint8_t> public_key,
                                  protocol::MessageType type, Message &request,
                                  Reply &reply, Wait wait) {
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    Result<std::shared_ptr<DaemonChannel>> found = ChannelForThisThread(reused);
    if (!found.ok()) {
      return found.status();
    }
    // Other operations of this thread may run while this one waits and
    // replace the channel; this reference keeps it alive meanwhile.
    std::shared_ptr<DaemonChannel> open = std::move(found.value());
    Status status;
    protocol::WipingBuffer frame;
    auto known = open->key_ids.find(key_name);
    if (known != open->key_ids.end()) {
      request.key_id = known->second;
    } else {
      protocol::AppendFrame(
          frame, static_cast<uint8_t>(protocol::MessageType::kOpenKey), 0, 0,
          protocol::OpenKeyRequest{key_name});
      Reply opened;
      status = wait(open->channel->Submit(frame), opened);
      if (status.ok()) {
        Result<uint32_t> key_id =
            KeyIdFromOpenReply(key_name, public_key, opened);
        if (key_id.ok()) {
          request.key_id = *key_id;
          open->key_ids[std::string(key_name)] = *key_id;
        } else {
          status = key_id.status();
        }
      } else if (status.code() != Code::kCellGone) {
        status = Status(status.code(),
                        "keycelld at " + socket_path_ + " did not open key '" +
                            std::string(key_name) + "': " + status.message());
      }
    }
    if (status.ok()) {
      frame.Clear();
      protocol::AppendFrame(frame, static_cast<uint8_t>(type), 0, 0, request);
      status = wait(open->channel->Submit(frame), reply);
    }
    if (status.ok()) {
      return status;
    }
    // A connection made before the daemon restarted fails at once; the
    // request goes once more over a new connection.
    if (!(reused && attempt == 0 && status.code() == Code::kCellGone)) {
      return status;
    }
  }
}

Status DaemonClient::CallPipelined(std::string_view key_name,
                                   std::span<const uint8_t> public_key,
                                   protocol::SignRequest request, Reply &reply,
                                   Wait wait) {
  return RunPipelined(key_name, public_key, protocol::MessageType::kSign,
                      request, reply, wait);
}

Status DaemonClient::CallPipelined(std::string_view key_name,
                                   std::span<const uint8_t> public_key,
                                   protocol::DecryptRequest request,
                                   Reply &reply, Wait wait) {
  return RunPipelined(key_name, public_key, protocol::MessageType::kDecrypt,
                      request, reply, wait);
}

}  // namespace kc::client
