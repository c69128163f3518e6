#include "protocol/reference.h"

#include <sys/un.h>

#include <cstring>

#include "protocol/codec.h"

namespace kc::protocol {
namespace {

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr size_t kPemLineLength = 64;
constexpr size_t kMaxKeyNameLength = 64;
// sun_path has room for 108 bytes including the terminating NUL.
constexpr size_t kMaxSocketPathLength = sizeof(sockaddr_un::sun_path) - 1;

Status Invalid(std::string message) {
  return Status(Code::kInvalidArgument, std::move(message));
}

std::string Base64Encode(std::span<const uint8_t> in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t group = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
    out.push_back(kBase64Alphabet[(group >> 18) & 63]);
    out.push_back(kBase64Alphabet[(group >> 12) & 63]);
    out.push_back(kBase64Alphabet[(group >> 6) & 63]);
    out.push_back(kBase64Alphabet[group & 63]);
  }
  size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t group = in[i] << 16;
    if (rest == 2) {
      group |= in[i + 1] << 8;
    }
    out.push_back(kBase64Alphabet[(group >> 18) & 63]);
    out.push_back(kBase64Alphabet[(group >> 12) & 63]);
    out.push_back(rest == 2 ? kBase64Alphabet[(group >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

// Decodes strict base64: line breaks and spaces are skipped, padding may
// appear only at the end, and the unused bits of the last group must be 0.
Result<std::vector<uint8_t>> Base64Decode(std::string_view in) {
  std::string symbols;
  symbols.reserve(in.size());
  for (char c : in) {
    if (c == '\n' || c == '\r' || c == ' ' || c == '\t') {
      continue;
    }
    symbols.push_back(c);
  }
  if (symbols.empty()) {
    return Invalid("the reference body is empty");
  }
  if (symbols.size() % 4 != 0) {
    return Invalid("the base64 body has " + std::to_string(symbols.size()) +
                   " characters, which is not a multiple of 4");
  }
  size_t padding = 0;
  if (symbols.back() == '=') {
    padding = symbols[symbols.size() - 2] == '=' ? 2 : 1;
  }
  std::vector<uint8_t> out;
  out.reserve(symbols.size() / 4 * 3);
  for (size_t i = 0; i < symbols.size(); i += 4) {
    bool last = i + 4 == symbols.size();
    uint32_t group = 0;
    for (size_t j = 0; j < 4; ++j) {
      char c = symbols[i + j];
      int value = 0;
      if (c == '=' && last && j >= 4 - padding) {
        value = 0;
      } else {
        value = Base64Value(c);
        if (value < 0) {
          return Invalid(
              "the base64 body contains an invalid character at "
              "position " +
              std::to_string(i + j));
        }
      }
      group = (group << 6) | static_cast<uint32_t>(value);
    }
    if (last && padding == 2 && (group & 0xffff) != 0) {
      return Invalid("the base64 body has nonzero padding bits");
    }
    if (last && padding == 1 && (group & 0xff) != 0) {
      return Invalid("the base64 body has nonzero padding bits");
    }
    out.push_back(static_cast<uint8_t>(group >> 16));
    if (!(last && padding == 2)) {
      out.push_back(static_cast<uint8_t>(group >> 8));
    }
    if (!(last && padding >= 1)) {
      out.push_back(static_cast<uint8_t>(group));
    }
  }
  return out;
}

// Finds |line| at the start of a line of |text| at or after |from|.
size_t FindLine(std::string_view text, std::string_view line, size_t from) {
  size_t at = text.find(line, from);
  while (at != std::string_view::npos) {
    bool starts_line = at == 0 || text[at - 1] == '\n';
    size_t end = at + line.size();
    bool ends_line =
        end == text.size() || text[end] == '\n' || text[end] == '\r';
    if (starts_line && ends_line) {
      return at;
    }
    at = text.find(line, at + 1);
  }
  return std::string_view::npos;
}

}  // namespace

bool ValidKeyName(std::string_view name) {
  if (name.empty() || name.size() > kMaxKeyNameLength) {
    return false;
  }
  if (name.front() == '.' || name.front() == '-') {
    return false;
  }
  for (char c : name) {
    bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!allowed) {
      return false;
    }
  }
  return true;
}

Status ValidateReference(const KeyReference &reference) {
  const std::string &path = reference.socket_path;
  if (path.empty()) {
    return Invalid("the socket path is empty");
  }
  if (path.front() != '/') {
    return Invalid("the socket path \"" + path + "\" is not absolute");
  }
  if (path.find('\0') != std::string::npos) {
    return Invalid("the socket path contains a NUL byte");
  }
  if (path.size() > kMaxSocketPathLength) {
    return Invalid("the socket path is " + std::to_string(path.size()) +
                   " bytes long; the maximum is " +
                   std::to_string(kMaxSocketPathLength));
  }
  if (!ValidKeyName(reference.key_name)) {
    return Invalid(
        "the key name is invalid: a key name has 1 to 64 characters from "
        "A-Z a-z 0-9 . _ - and does not start with . or -");
  }
  if (reference.public_key.empty()) {
    return Invalid("the public key is empty");
  }
  if (reference.public_key.size() > kMaxReferencePublicKey) {
    return Invalid("the public key is " +
                   std::to_string(reference.public_key.size()) +
                   " bytes long; the maximum is " +
                   std::to_string(kMaxReferencePublicKey));
  }
  return Status::Ok();
}

Result<std::string> EncodeReference(const KeyReference &reference) {
  Status valid = ValidateReference(reference);
  if (!valid.ok()) {
    return valid;
  }
  WipingBuffer body;
  Writer writer(body);
  writer.U8(kReferenceVersion);
  writer.String(reference.socket_path);
  writer.String(reference.key_name);
  writer.Bytes(reference.public_key);
  std::string base64 = Base64Encode(body.span());

  std::string pem = "-----BEGIN ";
  pem.append(kReferencePemLabel);
  pem.append("-----\n");
  for (size_t i = 0; i < base64.size(); i += kPemLineLength) {
    pem.append(base64, i, kPemLineLength);
    pem.push_back('\n');
  }
  pem.append("-----END ");
  pem.append(kReferencePemLabel);
  pem.append("-----\n");
  return pem;
}

Result<KeyReference> DecodeReferenceBody(std::span<const uint8_t> body) {
  Reader reader(body);
  uint8_t version = reader.U8();
  if (!reader.ok()) {
    return Invalid("the reference body is empty");
  }
  if (version != kReferenceVersion) {
    return Invalid("the reference has version " + std::to_string(version) +
                   "; only version 1 is supported");
  }
  KeyReference reference;
  reference.socket_path = reader.String();
  if (!reader.ok()) {
    return Invalid("the reference ends inside the socket path");
  }
  reference.key_name = reader.String();
  if (!reader.ok()) {
    return Invalid("the reference ends inside the key name");
  }
  std::span<const uint8_t> public_key = reader.Bytes();
  if (!reader.ok()) {
    return Invalid("the reference ends inside the public key");
  }
  if (!reader.Finished()) {
    return Invalid("the reference has bytes after the public key");
  }
  reference.public_key.assign(public_key.begin(), public_key.end());
  Status valid = ValidateReference(reference);
  if (!valid.ok()) {
    return valid;
  }
  return reference;
}

Result<KeyReference> DecodeReference(std::string_view pem) {
  std::string begin = "-----BEGIN " + std::string(kReferencePemLabel) + "-----";
  std::string end = "-----END " + std::string(kReferencePemLabel) + "-----";
  size_t begin_at = FindLine(pem, begin, 0);
  if (begin_at == std::string_view::npos) {
    return Invalid("no \"" + begin + "\" line found");
  }
  size_t body_start = begin_at + begin.size();
  size_t end_at = FindLine(pem, end, body_start);
  if (end_at == std::string_view::npos) {
    return Invalid("no \"" + end + "\" line found after the BEGIN line");
  }
  std::string_view base64 = pem.substr(body_start, end_at - body_start);
  if (base64.find(':') != std::string_view::npos) {
    return Invalid("the reference has PEM headers; none are allowed");
  }
  Result<std::vector<uint8_t>> body = Base64Decode(base64);
  if (!body.ok()) {
    return body.status();
  }
  return DecodeReferenceBody(*body);
}

}  // namespace kc::protocol
