// Reference files: PEM files that name a key held by a keycelld daemon
// instead of containing it. A reference file contains no secret. Its format
// is written down in docs/PROTOCOL.md. Encode and Decode are pure functions
// without I/O, so they can be fuzzed directly.
#ifndef KEYCELL_PROTOCOL_REFERENCE_H
#define KEYCELL_PROTOCOL_REFERENCE_H

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kc::protocol {

// The version byte at the start of a reference body.
inline constexpr uint8_t kReferenceVersion = 1;
// The PEM label, as in "-----BEGIN KEYCELL PRIVATE KEY-----".
inline constexpr std::string_view kReferencePemLabel = "KEYCELL PRIVATE KEY";
// The maximum size of a reference's public key, in bytes.
inline constexpr size_t kMaxReferencePublicKey = 64 * 1024;

struct KeyReference {
  std::string socket_path;  // Absolute path of keycelld's Unix socket.
  std::string key_name;     // The key's name in keycelld's configuration.
  std::vector<uint8_t> public_key;  // DER SubjectPublicKeyInfo.
};

// Encodes |reference| as PEM text with 64-character base64 lines and a
// final newline. Returns kInvalidArgument when a field breaks the rules
// that Decode checks.
Result<std::string> EncodeReference(const KeyReference &reference);

// Decodes a reference from PEM text. Text before the BEGIN line and after
// the END line is ignored, as OpenSSL does for other PEM files. Returns
// kInvalidArgument with a message that names the first problem found.
Result<KeyReference> DecodeReference(std::string_view pem);

// Decodes the binary body of a reference, the bytes inside the base64.
Result<KeyReference> DecodeReferenceBody(std::span<const uint8_t> body);

// Checks the fields of a reference: the socket path is absolute, has no NUL
// and fits in sun_path (107 bytes), the key name is a valid key name, and
// the public key is not empty and at most kMaxReferencePublicKey bytes.
Status ValidateReference(const KeyReference &reference);

// True if |name| is a valid key name: 1 to 64 characters from [A-Za-z0-9._-],
// not starting with '.' or '-'.
bool ValidKeyName(std::string_view name);

}  // namespace kc::protocol

#endif  // KEYCELL_PROTOCOL_REFERENCE_H
