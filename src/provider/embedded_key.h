// The backend of keys held by a cell that this process started.
#ifndef KEYCELL_PROVIDER_EMBEDDED_KEY_H
#define KEYCELL_PROVIDER_EMBEDDED_KEY_H

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>

#include "client/cell_client.h"
#include "provider/key.h"

namespace kc::provider {

// Carries one request of a key in place of CellClient::Call and Send. It
// receives the message type and the encoded request payload. It returns
// false when it does not carry the request, which then goes over the
// cell's per-thread connection. Otherwise it stores the outcome in
// |status| and, unless |reply| is nullptr, the reply in |reply|. A nullptr
// |reply| marks a request whose reply is never read.
using Transport = bool (*)(protocol::MessageType type,
                           std::span<const uint8_t> payload,
                           client::Reply *reply, Status &status);

// Key |key_id| of |cell|. The last handle to go tells the cell to release
// the key.
class EmbeddedKey : public KeyBackend {
 public:
  EmbeddedKey(std::shared_ptr<client::CellClient> cell, uint32_t key_id,
              Transport transport);
  ~EmbeddedKey() override;

  Status Call(protocol::SignRequest request, client::Reply &reply) override;
  Status Call(protocol::DecryptRequest request, client::Reply &reply) override;
  Result<std::shared_ptr<client::PendingOperation>> Submit(
      protocol::SignRequest request) override;
  Result<std::shared_ptr<client::PendingOperation>> Submit(
      protocol::DecryptRequest request) override;

 private:
  template <typename Message>
  Status Run(protocol::MessageType type, Message &request,
             client::Reply &reply);

  std::shared_ptr<client::CellClient> cell_;
  uint32_t key_id_;
  pid_t loader_pid_;
  Transport transport_;
};

}  // namespace kc::provider

#endif  // KEYCELL_PROVIDER_EMBEDDED_KEY_H
