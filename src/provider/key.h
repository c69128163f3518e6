// The key object of the keycell provider: the keydata behind an EVP_PKEY
// whose private operations run in a cell.
#ifndef KEYCELL_PROVIDER_KEY_H
#define KEYCELL_PROVIDER_KEY_H

#include <openssl/evp.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>

#include "client/cell_client.h"
#include "protocol/messages.h"

namespace kc::provider {

// Property query that selects OpenSSL's own implementations for the public
// half of a key, never this provider's.
inline constexpr const char *kOtherProviders = "provider!=keycell";

// Carries one request of a key in place of CellClient::Call and Send. It
// receives the message type and the encoded request payload. It returns
// false when it does not carry the request, which then goes over the
// cell's per-thread connection. Otherwise it stores the outcome in
// |status| and, unless |reply| is nullptr, the reply in |reply|. A nullptr
// |reply| marks a request whose reply is never read.
using Transport = bool (*)(protocol::MessageType type,
                           std::span<const uint8_t> payload,
                           client::Reply *reply, Status &status);

// A private key held by a cell. Shared by every ProviderKey that refers to
// it; the last one to go tells the cell to release the key.
class CellKeyHandle {
 public:
  CellKeyHandle(std::shared_ptr<client::CellClient> cell, uint32_t key_id,
                Transport transport = nullptr);
  CellKeyHandle(const CellKeyHandle &) = delete;
  CellKeyHandle &operator=(const CellKeyHandle &) = delete;
  ~CellKeyHandle();

  client::CellClient &cell() const { return *cell_; }
  uint32_t key_id() const { return key_id_; }

  // Run one operation in the cell and copy its result to |out|, which holds
  // |out_size| bytes. On failure they push an error onto OpenSSL's queue
  // and return false.
  bool Sign(protocol::SignRequest request, unsigned char *out,
            size_t *out_length, size_t out_size) const;
  bool Decrypt(protocol::DecryptRequest request, unsigned char *out,
               size_t *out_length, size_t out_size) const;

 private:
  template <typename Message>
  Status Call(protocol::MessageType type, const Message &request,
              client::Reply &reply) const;

  std::shared_ptr<client::CellClient> cell_;
  uint32_t key_id_;
  pid_t loader_pid_;
  Transport transport_;
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
