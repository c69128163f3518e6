// The keycell OpenSSL 3 provider: keymgmt, signature and asym_cipher
// implementations whose private operations go to a cell.
#ifndef KEYCELL_PROVIDER_PROVIDER_H
#define KEYCELL_PROVIDER_PROVIDER_H

#include <openssl/core.h>
#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/status.h"
#include "client/cell_client.h"
#include "protocol/messages.h"
#include "provider/key.h"

namespace kc::provider {

inline constexpr const char *kProviderName = "keycell";

// The provctx of every implementation.
struct ProviderContext {
  const OSSL_CORE_HANDLE *handle = nullptr;
  OSSL_LIB_CTX *libctx = nullptr;
};

// Registers the provider as a built-in of the default library context and
// loads it, once per process. OpenSSL's fallback providers stay available.
Status EnsureLoaded();

// Returns a new EVP_PKEY for key |key_id| of |cell|, whose public half is the
// DER SubjectPublicKeyInfo |public_key|. The caller owns the result.
// |transport|, when not nullptr, carries the key's requests as
// CellKeyHandle describes.
Result<EVP_PKEY *> NewCellKey(std::shared_ptr<client::CellClient> cell,
                              uint32_t key_id, protocol::KeyType type,
                              std::span<const uint8_t> public_key,
                              Transport transport = nullptr);

bool IsCellKey(const EVP_PKEY *pkey);

class CellKeyHandle;
// Returns the cell key behind |pkey|, or nullptr if |pkey| is not a cell
// private key.
std::shared_ptr<CellKeyHandle> HandleOf(const EVP_PKEY *pkey);

// Pushes |status| onto the calling thread's OpenSSL error queue, as an
// error of this provider with the message as its data.
void RaiseError(const Status &status);

// The dispatch tables, defined beside their implementations.
const OSSL_DISPATCH *KeymgmtFunctions(protocol::KeyType type);
extern const OSSL_DISPATCH kSignatureFunctions[];
extern const OSSL_DISPATCH kAsymCipherFunctions[];

}  // namespace kc::provider

#endif  // KEYCELL_PROVIDER_PROVIDER_H
