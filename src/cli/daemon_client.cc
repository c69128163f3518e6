#include "cli/daemon_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "protocol/frame.h"

namespace kc::cli {
namespace {

constexpr int kReplyTimeoutSeconds = 30;

Status WriteAll(int fd, const uint8_t *data, size_t length) {
  while (length > 0) {
    ssize_t n = send(fd, data, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return Status(
          Code::kCellGone,
          std::string("sending to keycelld failed: ") + std::strerror(errno));
    }
    data += n;
    length -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status ReadAll(int fd, uint8_t *data, size_t length) {
  while (length > 0) {
    ssize_t n = recv(fd, data, length, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return Status(Code::kTimedOut, "keycelld did not reply within " +
                                         std::to_string(kReplyTimeoutSeconds) +
                                         " seconds");
    }
    if (n < 0) {
      return Status(
          Code::kCellGone,
          std::string("reading from keycelld failed: ") + std::strerror(errno));
    }
    if (n == 0) {
      return Status(Code::kCellGone, "keycelld closed the connection");
    }
    data += n;
    length -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Result<DaemonClient> DaemonClient::Connect(const std::string &path) {
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return Status(Code::kInvalidArgument,
                  "invalid socket path '" + path + "': expected 1 to " +
                      std::to_string(sizeof(address.sun_path) - 1) + " bytes");
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return Status(Code::kInternal,
                  std::string("socket failed: ") + std::strerror(errno));
  }
  if (connect(fd.get(), reinterpret_cast<sockaddr *>(&address),
              sizeof(address)) != 0) {
    int error = errno;
    if (error == ENOENT || error == ECONNREFUSED) {
      return Status(Code::kCellGone, "keycelld is not running on " + path +
                                         " (" + std::strerror(error) +
                                         "); start it or check --socket");
    }
    if (error == EACCES || error == EPERM) {
      return Status(Code::kForbidden,
                    "permission denied on the socket " + path +
                        "; keycelld's socket_mode and socket_group decide "
                        "who may connect");
    }
    return Status(Code::kCellGone,
                  "cannot connect to " + path + ": " + std::strerror(error));
  }
  timeval timeout{kReplyTimeoutSeconds, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  return DaemonClient(std::move(fd));
}

Result<std::vector<uint8_t>> DaemonClient::Call(
    protocol::MessageType type, std::span<const uint8_t> payload) {
  uint64_t id = next_id_++;
  protocol::FrameHeader header;
  header.length = static_cast<uint32_t>(payload.size());
  header.type = static_cast<uint8_t>(type);
  header.id = id;
  uint8_t header_bytes[protocol::kHeaderSize];
  protocol::EncodeHeader(header, header_bytes);
  Status sent = WriteAll(fd_.get(), header_bytes, sizeof(header_bytes));
  if (sent.ok()) {
    sent = WriteAll(fd_.get(), payload.data(), payload.size());
  }
  if (!sent.ok()) {
    return sent;
  }

  Status received = ReadAll(fd_.get(), header_bytes, sizeof(header_bytes));
  if (!received.ok()) {
    return received;
  }
  std::optional<protocol::FrameHeader> reply =
      protocol::DecodeHeader(header_bytes);
  if (!reply.has_value()) {
    return Status(Code::kProtocol,
                  "keycelld sent a frame larger than the "
                  "maximum payload");
  }
  std::vector<uint8_t> reply_payload(reply->length);
  received = ReadAll(fd_.get(), reply_payload.data(), reply_payload.size());
  if (!received.ok()) {
    return received;
  }
  if (reply->id != id || reply->type != header.type) {
    return Status(Code::kProtocol, "keycelld sent a reply to another request");
  }
  if (reply->status != 0) {
    protocol::ErrorReply error;
    std::string message =
        "keycelld returned status " + std::to_string(reply->status);
    if (protocol::Decode(reply_payload, error)) {
      message = std::string(error.message);
    }
    return Status(static_cast<Code>(reply->status), message);
  }
  return reply_payload;
}

}  // namespace kc::cli
