// Reading private key files inside the cell.
#ifndef KEYCELL_CELL_KEY_LOADER_H
#define KEYCELL_CELL_KEY_LOADER_H

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocol/messages.h"

namespace kc::cell {

// Property query for every OpenSSL fetch in the cell. A cell forked after
// the server loaded the keycell provider inherits it; its keys must still
// use OpenSSL's own implementations.
inline constexpr const char *kCellProperties = "provider!=keycell";

struct PkeyDeleter {
  void operator()(EVP_PKEY *pkey) const { EVP_PKEY_free(pkey); }
};
using UniquePkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

struct LoadedKey {
  UniquePkey pkey;
  protocol::KeyType type = protocol::KeyType::kRsa;
  std::vector<uint8_t> public_key;  // DER SubjectPublicKeyInfo.
};

// The source of the passphrase of an encrypted key. With neither set, an
// encrypted key fails with Code::kPassphraseRequired.
struct PassphraseSource {
  std::string_view file;           // Read by the cell; first line only.
  std::span<const uint8_t> bytes;  // Sent by the client.
  bool has_bytes = false;
};

// Reads and parses the private key at |path|. Errors carry a message of the
// form "<path>: <reason>" and never contain key or passphrase bytes.
Result<LoadedKey> LoadKeyFile(std::string_view path,
                              const PassphraseSource &passphrase);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_KEY_LOADER_H
