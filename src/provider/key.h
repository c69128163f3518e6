// The key object of the keycell provider: the keydata behind an EVP_PKEY
// whose private operations run in a cell.
#ifndef KEYCELL_PROVIDER_KEY_H
#define KEYCELL_PROVIDER_KEY_H

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <span>

#include "base/status.h"
#include "client/async_channel.h"
#include "client/cell_client.h"
#include "protocol/messages.h"

namespace kc::provider {

// Property query that selects OpenSSL's own implementations for the public
// half of a key, never this provider's.
inline constexpr const char *kOtherProviders = "provider!=keycell";

// The backend of a key's private operations: a cell that this process
// started, or a keycelld daemon. Each request's key id is ignored and set
// by the backend, because a daemon numbers keys per connection.
class KeyBackend {
 public:
  virtual ~KeyBackend() = default;

  // Run one request and wait for its reply. A reply whose status is not
  // zero is returned as a Status with the message of the cell or daemon.
  virtual Status Call(protocol::SignRequest request, client::Reply &reply) = 0;
  virtual Status Call(protocol::DecryptRequest request,
                      client::Reply &reply) = 0;

  // Send one request and return at once. The operation's descriptor becomes
  // readable once the reply has arrived.
  virtual Result<std::shared_ptr<client::PendingOperation>> Submit(
      protocol::SignRequest request) = 0;
  virtual Result<std::shared_ptr<client::PendingOperation>> Submit(
      protocol::DecryptRequest request) = 0;
};

// Waits for |submitted| inside the calling ASYNC_JOB, which pauses until the
// operation's descriptor is readable, and copies the reply to |reply|.
Status WaitInJob(Result<std::shared_ptr<client::PendingOperation>> submitted,
                 client::Reply &reply);

// A private key held by a cell or a daemon. Shared by every ProviderKey that
// refers to it.
class CellKeyHandle {
 public:
  explicit CellKeyHandle(std::unique_ptr<KeyBackend> backend)
      : backend_(std::move(backend)) {}
  CellKeyHandle(const CellKeyHandle &) = delete;
  CellKeyHandle &operator=(const CellKeyHandle &) = delete;

  KeyBackend &backend() const { return *backend_; }

  // Run one operation and copy its result to |out|, which has room for
  // |out_size| bytes. On failure they push an error onto OpenSSL's queue and
  // return false.
  bool Sign(protocol::SignRequest request, unsigned char *out,
            size_t *out_length, size_t out_size) const;
  bool Decrypt(protocol::DecryptRequest request, unsigned char *out,
               size_t *out_length, size_t out_size) const;

 private:
  std::unique_ptr<KeyBackend> backend_;
};

struct ProviderKey {
  ProviderKey(protocol::KeyType key_type, OSSL_LIB_CTX *context)
      : type(key_type), libctx(context) {}
  ProviderKey(const ProviderKey &) = delete;
  ProviderKey &operator=(const ProviderKey &) = delete;
  ~ProviderKey() { EVP_PKEY_free(public_key); }

  protocol::KeyType type;
  OSSL_LIB_CTX *libctx;
  // The public half as an ordinary key of another provider, used for every
  // public operation and parameter; nullptr while the object is empty.
  EVP_PKEY *public_key = nullptr;
  // The cell's key; nullptr for a public key imported into this provider.
  std::shared_ptr<CellKeyHandle> handle;
};

// Makes |handle| available to one keymgmt import through the returned
// token, until Withdraw.
uint64_t OfferHandle(std::shared_ptr<CellKeyHandle> handle);
std::shared_ptr<CellKeyHandle> ClaimHandle(uint64_t token);
void WithdrawHandle(uint64_t token);

// OSSL_PARAM names that carry a cell key into EVP_PKEY_fromdata.
inline constexpr const char *kParamHandleToken = "keycell-handle-token";
inline constexpr const char *kParamPublicKey = "keycell-public-key";

}  // namespace kc::provider

#endif  // KEYCELL_PROVIDER_KEY_H
