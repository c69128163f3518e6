// A blocking client of keycelld, one request at a time, for the keycell
// command and tests.
#ifndef KEYCELL_CLI_DAEMON_CLIENT_H
#define KEYCELL_CLI_DAEMON_CLIENT_H

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "protocol/messages.h"

namespace kc::cli {

class DaemonClient {
 public:
  // Connects to keycelld's socket at |path|. Errors tell whether the daemon
  // is not running or the socket denies access.
  static Result<DaemonClient> Connect(const std::string &path);

  // Sends one request and waits up to 30 seconds for its reply. A reply
  // with a nonzero status returns that status code and the reply's message.
  Result<std::vector<uint8_t>> Call(protocol::MessageType type,
                                    std::span<const uint8_t> payload);

  // Encodes |message| and calls Call.
  template <typename Message>
  Result<std::vector<uint8_t>> Call(protocol::MessageType type,
                                    const Message &message) {
    protocol::WipingBuffer payload;
    protocol::Writer writer(payload);
    protocol::Encode(writer, message);
    return Call(type, payload.span());
  }

 private:
  explicit DaemonClient(UniqueFd fd) : fd_(std::move(fd)) {}

  UniqueFd fd_;
  uint64_t next_id_ = 1;
};

}  // namespace kc::cli

#endif  // KEYCELL_CLI_DAEMON_CLIENT_H
