// The messages carried in frame payloads, written down in docs/PROTOCOL.md.
// Decoded messages hold views into the frame they came from.
#ifndef KEYCELL_PROTOCOL_MESSAGES_H
#define KEYCELL_PROTOCOL_MESSAGES_H

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "protocol/codec.h"

namespace kc::protocol {

enum class MessageType : uint8_t {
  kLoadKey = 1,
  kSign = 2,
  kDecrypt = 3,
  kReleaseKey = 4,
  kDropPrivileges = 5,
  kPing = 6,
  kOpenKey = 7,  // keycelld only.
  kStatus = 8,   // keycelld only.
  kSeal = 9,     // Embedded cell only.
};

enum class KeyType : uint8_t {
  kRsa = 1,
  kEc = 2,
  kEd25519 = 3,
  kEd448 = 4,
};

// The OpenSSL name of a key type ("RSA", "EC", "ED25519", "ED448"), or
// nullptr for a value outside the enum.
const char *KeyTypeName(KeyType type);

// Padding values match OpenSSL's RSA_*_PADDING constants.
inline constexpr uint8_t kPaddingNone = 0;  // Not RSA, or the key's default.
inline constexpr uint8_t kPaddingPkcs1 = 1;
inline constexpr uint8_t kPaddingOaep = 4;
inline constexpr uint8_t kPaddingPss = 6;
inline constexpr uint8_t kPaddingPkcs1Tls = 7;  // TLS 1.2 RSA key exchange.

// Flags of an encoded KeyPolicy.
inline constexpr uint32_t kLoadAllowDecrypt = 1u << 0;
inline constexpr uint32_t kLoadAllowSign = 1u << 1;

// Bits of KeyPolicy::rsa_sign_paddings.
inline constexpr uint8_t kSignPaddingPkcs1 = 1u << 0;
inline constexpr uint8_t kSignPaddingPss = 1u << 1;
inline constexpr uint8_t kAllSignPaddings = kSignPaddingPkcs1 | kSignPaddingPss;

// Bits of KeyPolicy::digests: one per entry of the digest table in
// protocol/key_policy.cc. kDigestNone allows a sign request that names no
// digest, whose input is signed as it is.
inline constexpr unsigned kDigestCount = 19;
inline constexpr uint32_t kDigestNone = 1u << 0;
inline constexpr uint32_t kAllDigests = (1u << kDigestCount) - 1;

// The operations the cell may perform with one key. The defaults are the
// policy of a key loaded without options: signing with every digest and
// padding, and no RSA decryption.
struct KeyPolicy {
  bool allow_sign = true;
  bool allow_decrypt = false;  // Applies to RSA keys only.
  uint32_t digests = kAllDigests;
  // Paddings of RSA signatures. Other key types ignore them.
  uint8_t rsa_sign_paddings = kAllSignPaddings;
};

// The maximum length of a path, digest name or user name in a message.
inline constexpr size_t kMaxStringLength = 4096;

struct LoadKeyRequest {
  std::string_view path;
  std::string_view passphrase_file;  // Empty: none.
  std::span<const uint8_t> passphrase;
  bool has_passphrase = false;
  KeyPolicy policy;
};

struct LoadKeyReply {
  uint32_t key_id = 0;
  KeyType type = KeyType::kRsa;
  std::span<const uint8_t> public_key;  // DER SubjectPublicKeyInfo.
};

struct SignRequest {
  uint32_t key_id = 0;
  std::string_view digest;  // Empty: none (EdDSA, or raw RSA PKCS#1).
  uint8_t padding = kPaddingNone;
  int32_t salt_length = 0;       // OpenSSL's RSA_PSS_SALTLEN_* or a length.
  std::string_view mgf1_digest;  // Empty: the signature digest.
  // The digest to sign for RSA and ECDSA; the whole message for EdDSA.
  std::span<const uint8_t> input;
};

struct SignReply {
  std::span<const uint8_t> signature;
};

struct DecryptRequest {
  uint32_t key_id = 0;
  uint8_t padding = kPaddingPkcs1;
  std::string_view oaep_digest;
  std::string_view mgf1_digest;
  std::span<const uint8_t> oaep_label;
  uint32_t tls_client_version = 0;
  uint32_t tls_negotiated_version = 0;
  std::span<const uint8_t> ciphertext;
};

struct DecryptReply {
  std::span<const uint8_t> plaintext;
};

struct ReleaseKeyRequest {
  uint32_t key_id = 0;
};

struct DropPrivilegesRequest {
  std::string_view user;
};

// Opens a key of keycelld by its configured name for the connection.
struct OpenKeyRequest {
  std::string_view name;
};

struct OpenKeyReply {
  uint32_t key_id = 0;
  KeyType type = KeyType::kRsa;
  std::span<const uint8_t> public_key;  // DER SubjectPublicKeyInfo.
};

// One key in a StatusReply.
struct KeyStatus {
  std::string_view name;
  KeyType type = KeyType::kRsa;
  std::string_view fingerprint;  // SHA-256 of the SPKI DER, lowercase hex.
  uint64_t signatures = 0;
  uint64_t decryptions = 0;
  uint64_t failures = 0;
  KeyPolicy policy;
};

// The reply to a status request, whose payload is empty.
struct StatusReply {
  std::vector<KeyStatus> keys;
};

// Makes the embedded cell reject every later load-key request. The payload
// is empty.
struct SealRequest {};

// The payload of every reply whose status is not zero.
struct ErrorReply {
  std::string_view message;
};

void Encode(Writer &out, const LoadKeyRequest &message);
void Encode(Writer &out, const LoadKeyReply &message);
void Encode(Writer &out, const SignRequest &message);
void Encode(Writer &out, const SignReply &message);
void Encode(Writer &out, const DecryptRequest &message);
void Encode(Writer &out, const DecryptReply &message);
void Encode(Writer &out, const ReleaseKeyRequest &message);
void Encode(Writer &out, const DropPrivilegesRequest &message);
void Encode(Writer &out, const OpenKeyRequest &message);
void Encode(Writer &out, const OpenKeyReply &message);
void Encode(Writer &out, const StatusReply &message);
void Encode(Writer &out, const SealRequest &message);
void Encode(Writer &out, const ErrorReply &message);

// Each Decode returns false unless |in| is exactly one valid message.
bool Decode(std::span<const uint8_t> in, LoadKeyRequest &message);
bool Decode(std::span<const uint8_t> in, LoadKeyReply &message);
bool Decode(std::span<const uint8_t> in, SignRequest &message);
bool Decode(std::span<const uint8_t> in, SignReply &message);
bool Decode(std::span<const uint8_t> in, DecryptRequest &message);
bool Decode(std::span<const uint8_t> in, DecryptReply &message);
bool Decode(std::span<const uint8_t> in, ReleaseKeyRequest &message);
bool Decode(std::span<const uint8_t> in, DropPrivilegesRequest &message);
bool Decode(std::span<const uint8_t> in, OpenKeyRequest &message);
bool Decode(std::span<const uint8_t> in, OpenKeyReply &message);
bool Decode(std::span<const uint8_t> in, StatusReply &message);
bool Decode(std::span<const uint8_t> in, SealRequest &message);
bool Decode(std::span<const uint8_t> in, ErrorReply &message);

}  // namespace kc::protocol

#endif  // KEYCELL_PROTOCOL_MESSAGES_H
