// The server's side of a keycelld daemon: per-thread connections to its
// Unix socket, on which keys are opened by name before they are used.
#ifndef KEYCELL_CLIENT_DAEMON_CLIENT_H
#define KEYCELL_CLIENT_DAEMON_CLIENT_H

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "client/cell_client.h"
#include "protocol/messages.h"

namespace kc::client {

// The daemon's reply to an open key request.
struct OpenedKey {
  uint32_t key_id = 0;
  protocol::KeyType type = protocol::KeyType::kRsa;
  std::vector<uint8_t> public_key;  // DER SubjectPublicKeyInfo.
};

// One connection of one thread to a daemon, defined in daemon_client.cc.
struct DaemonConnection;
// One pipelined connection of one thread to a daemon.
struct DaemonChannel;

class DaemonClient {
 public:
  // Returns the client of the daemon at |socket_path|, shared by every key
  // of that socket in this process while any of them exists.
  static std::shared_ptr<DaemonClient> ForSocket(
      const std::string &socket_path);

  DaemonClient(std::string socket_path, unsigned timeout_ms);
  DaemonClient(const DaemonClient &) = delete;
  DaemonClient &operator=(const DaemonClient &) = delete;

  const std::string &socket_path() const { return socket_path_; }

  // Opens |key_name| on the calling thread's connection and returns the
  // daemon's reply.
  Result<OpenedKey> Open(std::string_view key_name);

  // Sends |request| for key |key_name| on the calling thread's connection
  // and waits for the reply. Each thread of each process connects on first
  // use and opens a key on its connection before the key's first request,
  // because key ids belong to one connection. When the daemon has closed a
  // connection that was opened earlier, for example because it restarted,
  // the request is sent once more on a new connection. |public_key|, when
  // not empty, must equal the public key that the daemon returns for the
  // key.
  Status Call(std::string_view key_name, std::span<const uint8_t> public_key,
              protocol::SignRequest request, Reply &reply);
  Status Call(std::string_view key_name, std::span<const uint8_t> public_key,
              protocol::DecryptRequest request, Reply &reply);

  // Waits for |submitted| to complete and copies its reply's payload to
  // |reply|, or returns why it failed. The provider's waits pause the
  // calling ASYNC_JOB.
  using Wait = Status (*)(Result<std::shared_ptr<PendingOperation>> submitted,
                          Reply &reply);

  // Like Call, but on the calling thread's pipelined connection, which
  // carries many requests at once, and waiting for each reply through
  // |wait|: for the key's open request, when the key is not yet open on
  // that connection, and for |request|. Requests that time out fail, and
  // their replies are discarded when they arrive.
  Status CallPipelined(std::string_view key_name,
                       std::span<const uint8_t> public_key,
                       protocol::SignRequest request, Reply &reply, Wait wait);
  Status CallPipelined(std::string_view key_name,
                       std::span<const uint8_t> public_key,
                       protocol::DecryptRequest request, Reply &reply,
                       Wait wait);

 private:
  using Connection = DaemonConnection;

  template <typename Message>
  Status Run(std::string_view key_name, std::span<const uint8_t> public_key,
             protocol::MessageType type, Message &request, Reply &reply);
  Result<Connection *> ConnectionForThisThread(bool &reused);
  Status Connect(int &fd) const;
  Result<OpenedKey> OpenOn(Connection &connection, std::string_view key_name);
  template <typename Message>
  Status Exchange(Connection &connection, uint8_t type, const Message &message,
                  Reply &reply);
  Status ReadReply(int fd, uint64_t id, Reply &reply) const;
  Status ConnectionLost() const;
  void Drop(Connection &connection);
  template <typename Message>
  Status RunPipelined(std::string_view key_name,
                      std::span<const uint8_t> public_key,
                      protocol::MessageType type, Message &request,
                      Reply &reply, Wait wait);
  Result<std::shared_ptr<DaemonChannel>> ChannelForThisThread(bool &reused);
  Result<uint32_t> KeyIdFromOpenReply(std::string_view key_name,
                                      std::span<const uint8_t> public_key,
                                      const Reply &reply) const;

  const std::string socket_path_;
  const unsigned timeout_ms_;
  const uint64_t serial_;
};

}  // namespace kc::client

#endif  // KEYCELL_CLIENT_DAEMON_CLIENT_H
