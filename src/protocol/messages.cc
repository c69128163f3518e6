#include "protocol/messages.h"

namespace kc::protocol {
namespace {

bool ValidString(std::string_view value) {
  return value.size() <= kMaxStringLength &&
         value.find('\0') == std::string_view::npos;
}

// The encoded size of a KeyPolicy: flags, digests and paddings.
constexpr size_t kPolicySize = 4 + 4 + 1;

void EncodePolicy(Writer &out, const KeyPolicy &policy) {
  uint32_t flags = (policy.allow_decrypt ? kLoadAllowDecrypt : 0) |
                   (policy.allow_sign ? kLoadAllowSign : 0);
  out.U32(flags);
  out.U32(policy.digests);
  out.U8(policy.rsa_sign_paddings);
}

// Reads a policy and returns false if it sets an unknown bit.
bool DecodePolicy(Reader &reader, KeyPolicy &policy) {
  uint32_t flags = reader.U32();
  policy.digests = reader.U32();
  policy.rsa_sign_paddings = reader.U8();
  policy.allow_decrypt = (flags & kLoadAllowDecrypt) != 0;
  policy.allow_sign = (flags & kLoadAllowSign) != 0;
  return (flags & ~(kLoadAllowDecrypt | kLoadAllowSign)) == 0 &&
         (policy.digests & ~kAllDigests) == 0 &&
         (policy.rsa_sign_paddings & ~kAllSignPaddings) == 0;
}

}  // namespace

const char *KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kRsa:
      return "RSA";
    case KeyType::kEc:
      return "EC";
    case KeyType::kEd25519:
      return "ED25519";
    case KeyType::kEd448:
      return "ED448";
  }
  return nullptr;
}

void Encode(Writer &out, const LoadKeyRequest &message) {
  out.String(message.path);
  out.String(message.passphrase_file);
  out.U8(message.has_passphrase ? 1 : 0);
  out.Bytes(message.passphrase);
  EncodePolicy(out, message.policy);
}

bool Decode(std::span<const uint8_t> in, LoadKeyRequest &message) {
  Reader reader(in);
  message.path = reader.String();
  message.passphrase_file = reader.String();
  uint8_t has_passphrase = reader.U8();
  message.passphrase = reader.Bytes();
  bool valid_policy = DecodePolicy(reader, message.policy);
  message.has_passphrase = has_passphrase == 1;
  return reader.Finished() && valid_policy && has_passphrase <= 1 &&
         ValidString(message.path) && !message.path.empty() &&
         ValidString(message.passphrase_file) &&
         message.passphrase.size() <= kMaxStringLength;
}

void Encode(Writer &out, const LoadKeyReply &message) {
  out.U32(message.key_id);
  out.U8(static_cast<uint8_t>(message.type));
  out.Bytes(message.public_key);
}

bool Decode(std::span<const uint8_t> in, LoadKeyReply &message) {
  Reader reader(in);
  message.key_id = reader.U32();
  message.type = static_cast<KeyType>(reader.U8());
  message.public_key = reader.Bytes();
  return reader.Finished() && KeyTypeName(message.type) != nullptr &&
         !message.public_key.empty();
}

void Encode(Writer &out, const SignRequest &message) {
  out.U32(message.key_id);
  out.String(message.digest);
  out.U8(message.padding);
  out.I32(message.salt_length);
  out.String(message.mgf1_digest);
  out.Bytes(message.input);
}

bool Decode(std::span<const uint8_t> in, SignRequest &message) {
  Reader reader(in);
  message.key_id = reader.U32();
  message.digest = reader.String();
  message.padding = reader.U8();
  message.salt_length = reader.I32();
  message.mgf1_digest = reader.String();
  message.input = reader.Bytes();
  return reader.Finished() && ValidString(message.digest) &&
         ValidString(message.mgf1_digest);
}

void Encode(Writer &out, const SignReply &message) {
  out.Bytes(message.signature);
}

bool Decode(std::span<const uint8_t> in, SignReply &message) {
  Reader reader(in);
  message.signature = reader.Bytes();
  return reader.Finished();
}

void Encode(Writer &out, const DecryptRequest &message) {
  out.U32(message.key_id);
  out.U8(message.padding);
  out.String(message.oaep_digest);
  out.String(message.mgf1_digest);
  out.Bytes(message.oaep_label);
  out.U32(message.tls_client_version);
  out.U32(message.tls_negotiated_version);
  out.Bytes(message.ciphertext);
}

bool Decode(std::span<const uint8_t> in, DecryptRequest &message) {
  Reader reader(in);
  message.key_id = reader.U32();
  message.padding = reader.U8();
  message.oaep_digest = reader.String();
  message.mgf1_digest = reader.String();
  message.oaep_label = reader.Bytes();
  message.tls_client_version = reader.U32();
  message.tls_negotiated_version = reader.U32();
  message.ciphertext = reader.Bytes();
  return reader.Finished() && ValidString(message.oaep_digest) &&
         ValidString(message.mgf1_digest);
}

void Encode(Writer &out, const DecryptReply &message) {
  out.Bytes(message.plaintext);
}

bool Decode(std::span<const uint8_t> in, DecryptReply &message) {
  Reader reader(in);
  message.plaintext = reader.Bytes();
  return reader.Finished();
}

void Encode(Writer &out, const ReleaseKeyRequest &message) {
  out.U32(message.key_id);
}

bool Decode(std::span<const uint8_t> in, ReleaseKeyRequest &message) {
  Reader reader(in);
  message.key_id = reader.U32();
  return reader.Finished();
}

void Encode(Writer &out, const DropPrivilegesRequest &message) {
  out.String(message.user);
}

bool Decode(std::span<const uint8_t> in, DropPrivilegesRequest &message) {
  Reader reader(in);
  message.user = reader.String();
  return reader.Finished() && ValidString(message.user) &&
         !message.user.empty();
}

void Encode(Writer &out, const OpenKeyRequest &message) {
  out.String(message.name);
}

bool Decode(std::span<const uint8_t> in, OpenKeyRequest &message) {
  Reader reader(in);
  message.name = reader.String();
  return reader.Finished() && ValidString(message.name) &&
         !message.name.empty();
}

void Encode(Writer &out, const OpenKeyReply &message) {
  out.U32(message.key_id);
  out.U8(static_cast<uint8_t>(message.type));
  out.Bytes(message.public_key);
}

bool Decode(std::span<const uint8_t> in, OpenKeyReply &message) {
  Reader reader(in);
  message.key_id = reader.U32();
  message.type = static_cast<KeyType>(reader.U8());
  message.public_key = reader.Bytes();
  return reader.Finished() && KeyTypeName(message.type) != nullptr;
}

void Encode(Writer &out, const StatusReply &message) {
  out.U32(static_cast<uint32_t>(message.keys.size()));
  for (const KeyStatus &key : message.keys) {
    out.String(key.name);
    out.U8(static_cast<uint8_t>(key.type));
    out.String(key.fingerprint);
    out.U64(key.signatures);
    out.U64(key.decryptions);
    out.U64(key.failures);
    EncodePolicy(out, key.policy);
  }
}

bool Decode(std::span<const uint8_t> in, StatusReply &message) {
  // The smallest entry: two empty strings, a type byte, three counters and
  // a policy.
  constexpr size_t kMinEntrySize = 2 + 1 + 2 + 3 * 8 + kPolicySize;
  Reader reader(in);
  uint32_t count = reader.U32();
  if (!reader.ok() || count > reader.remaining() / kMinEntrySize) {
    return false;
  }
  message.keys.clear();
  message.keys.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    KeyStatus key;
    key.name = reader.String();
    key.type = static_cast<KeyType>(reader.U8());
    key.fingerprint = reader.String();
    key.signatures = reader.U64();
    key.decryptions = reader.U64();
    key.failures = reader.U64();
    bool valid_policy = DecodePolicy(reader, key.policy);
    if (!reader.ok() || !valid_policy || KeyTypeName(key.type) == nullptr ||
        !ValidString(key.name) || !ValidString(key.fingerprint)) {
      return false;
    }
    message.keys.push_back(key);
  }
  return reader.Finished();
}

void Encode(Writer &, const SealRequest &) {}

bool Decode(std::span<const uint8_t> in, SealRequest &) {
  return in.empty();
}

void Encode(Writer &out, const ErrorReply &message) {
  out.String(message.message);
}

bool Decode(std::span<const uint8_t> in, ErrorReply &message) {
  Reader reader(in);
  message.message = reader.String();
  return reader.Finished();
}

}  // namespace kc::protocol
