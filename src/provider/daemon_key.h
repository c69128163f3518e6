// Keys held by a keycelld daemon, as the decoder and the store loader of
// the loadable module create them.
#ifndef KEYCELL_PROVIDER_DAEMON_KEY_H
#define KEYCELL_PROVIDER_DAEMON_KEY_H

#include <openssl/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "client/daemon_client.h"
#include "provider/key.h"

namespace kc::provider {

// Key |key_name| of |client|'s daemon. A key id is valid only on the
// connection that opened it and ends with it, so this backend sends no
// release.
class DaemonKey : public KeyBackend {
 public:
  DaemonKey(std::shared_ptr<client::DaemonClient> client, std::string key_name,
            std::vector<uint8_t> public_key);

  // Inside an ASYNC_JOB, the request travels on the thread's pipelined
  // connection, and the job pauses until the reply is in. Elsewhere the
  // request blocks the calling thread.
  Status Call(protocol::SignRequest request, client::Reply &reply) override;
  Status Call(protocol::DecryptRequest request, client::Reply &reply) override;
  // Return an error, because the start/finish API of libkeycell does not
  // take daemon keys.
  Result<std::shared_ptr<client::PendingOperation>> Submit(
      protocol::SignRequest request) override;
  Result<std::shared_ptr<client::PendingOperation>> Submit(
      protocol::DecryptRequest request) override;

 private:
  std::shared_ptr<client::DaemonClient> client_;
  std::string key_name_;
  std::vector<uint8_t> public_key_;
};

// Returns the type of the key whose DER SubjectPublicKeyInfo is
// |public_key|, and stores the key in |*pkey| unless |pkey| is nullptr.
// |key_name| appears in the error message.
Result<protocol::KeyType> ParsePublicKey(OSSL_LIB_CTX *libctx,
                                         const std::string &key_name,
                                         std::span<const uint8_t> public_key,
                                         EVP_PKEY **pkey);

// Returns new keydata for this provider's keymgmt: key |key_name| of the
// daemon at |socket_path|, whose public key is the DER SubjectPublicKeyInfo
// |public_key|. The caller owns the result.
Result<ProviderKey *> NewDaemonKey(OSSL_LIB_CTX *libctx,
                                   const std::string &socket_path,
                                   const std::string &key_name,
                                   std::span<const uint8_t> public_key);

// Returns the OSSL_OBJECT parameters that hand |*key| to keymgmt's load
// function by reference. |key| must outlive the parameters.
void ObjectParams(ProviderKey **key, OSSL_PARAM params[4]);

}  // namespace kc::provider

#endif  // KEYCELL_PROVIDER_DAEMON_KEY_H
