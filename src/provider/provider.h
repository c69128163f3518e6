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
#include "provider/embedded_key.h"
#include "provider/key.h"

namespace kc::provider {

// The name under which libkeycell registers its built-in provider. The
// loadable module gets the name that openssl.cnf gives it, "keycell" in
// the documented configuration, so the two never take each other's place.
inline constexpr const char *kEmbeddedProviderName = "keycell-embedded";

// Property definitions of the algorithms. Both contain "provider=keycell",
// so the query kOtherProviders excludes both. Only the built-in provider
// has "keycell.embedded=yes", which selects it when the module is loaded in
// the same process.
inline constexpr const char *kEmbeddedProperties =
    "provider=keycell,keycell.embedded=yes";
inline constexpr const char *kModuleProperties = "provider=keycell";

// The provctx of every implementation.
struct ProviderContext {
  const OSSL_CORE_HANDLE *handle = nullptr;
  OSSL_LIB_CTX *libctx = nullptr;
  bool owns_libctx = false;  // True for a child context of a loaded module.
};

// Settings of one provider instance, for InitProvider.
struct ProviderSetup {
  const char *properties = kModuleProperties;
  // True: work in a child library context of the core's context, as a
  // loadable module does. False: use the core's context, as a built-in.
  bool child_libctx = false;
  // Returns the algorithms of operations beyond keymgmt, signature and
  // asym_cipher; nullptr for none.
  const OSSL_ALGORITHM *(*extra_algorithms)(int operation_id) = nullptr;
};

// The OSSL_provider_init_fn of both the built-in provider and the module.
int InitProvider(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                 const OSSL_DISPATCH **out, void **provctx,
                 const ProviderSetup &setup);

// Registers the built-in provider in the default library context and loads
// it, once per process. OpenSSL's fallback providers stay available.
Status EnsureLoaded();

// Returns a new EVP_PKEY for key |key_id| of |cell|, whose public half is the
// DER SubjectPublicKeyInfo |public_key|. The caller owns the result.
// |transport|, when not nullptr, carries the key's requests as
// CellKeyHandle describes.
Result<EVP_PKEY *> NewCellKey(std::shared_ptr<client::CellClient> cell,
                              uint32_t key_id, protocol::KeyType type,
                              std::span<const uint8_t> public_key,
                              Transport transport = nullptr);

// True if |pkey| belongs to the built-in provider of this library.
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
