#include "cell/key_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "base/unique_fd.h"

namespace kc::cell {
namespace {

using protocol::KeyType;

// Key files are small; anything larger is not a key file, and the bound
// keeps a hostile path (a huge log, /dev/zero) from exhausting memory.
constexpr size_t kMaxKeyFileSize = 1024 * 1024;
constexpr size_t kMaxPassphraseSize = 1024;

// Bytes that are wiped when they go out of scope.
class SecretBytes {
 public:
  SecretBytes() = default;
  SecretBytes(const SecretBytes &) = delete;
  SecretBytes &operator=(const SecretBytes &) = delete;
  ~SecretBytes() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }

  std::vector<uint8_t> &bytes() { return bytes_; }
  const std::vector<uint8_t> &bytes() const { return bytes_; }
  std::string_view view() const {
    return {reinterpret_cast<const char *>(bytes_.data()), bytes_.size()};
  }

 private:
  std::vector<uint8_t> bytes_;
};

Status FileError(std::string_view path, std::string_view reason) {
  return Status(Code::kKeyLoadFailed,
                std::string(path) + ": " + std::string(reason));
}

// Returns the reason of the most recent OpenSSL error, or an empty string,
// and clears the queue.
std::string TakeOpenSslReason() {
  unsigned long last = 0;
  unsigned long code;
  while ((code = ERR_get_error()) != 0) {
    last = code;
  }
  if (last == 0) {
    return {};
  }
  const char *reason = ERR_reason_error_string(last);
  return reason != nullptr ? reason : "unknown OpenSSL error";
}

Status WithOpenSslReason(std::string_view path, std::string_view reason) {
  std::string openssl = TakeOpenSslReason();
  if (openssl.empty()) {
    return FileError(path, reason);
  }
  return FileError(path, std::string(reason) + " (OpenSSL: " + openssl + ")");
}

Status ReadFile(std::string_view path, const char *what, SecretBytes &out) {
  std::string name(path);
  UniqueFd fd(
      ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int error = errno;
    switch (error) {
      case ENOENT:
        return FileError(path, std::string(what) + " not found");
      case EACCES:
      case EPERM:
        return FileError(path, "permission denied: the cell cannot read the " +
                                   std::string(what));
      default:
        return FileError(path, std::string("cannot open the ") + what + ": " +
                                   std::strerror(error));
    }
  }
  struct stat info;
  if (::fstat(fd.get(), &info) != 0) {
    return FileError(path, std::string("cannot stat the ") + what + ": " +
                               std::strerror(errno));
  }
  if (S_ISDIR(info.st_mode)) {
    return FileError(path, "is a directory, not a " + std::string(what));
  }
  if (!S_ISREG(info.st_mode)) {
    return FileError(path, "not a regular file");
  }
  if (static_cast<uint64_t>(info.st_size) > kMaxKeyFileSize) {
    return FileError(path, std::string(what) + " is larger than 1 MiB");
  }
  out.bytes().resize(static_cast<size_t>(info.st_size));
  size_t done = 0;
  while (done < out.bytes().size()) {
    ssize_t n =
        ::read(fd.get(), out.bytes().data() + done, out.bytes().size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      if (errno == EISDIR) {
        return FileError(path, "is a directory, not a " + std::string(what));
      }
      return FileError(path, std::string("cannot read the ") + what + ": " +
                                 std::strerror(errno));
    }
    if (n == 0) {
      break;  // The file shrank while being read.
    }
    done += static_cast<size_t>(n);
  }
  out.bytes().resize(done);
  return Status::Ok();
}

Status ReadPassphraseFile(std::string_view path, SecretBytes &out) {
  Status status = ReadFile(path, "passphrase file", out);
  if (!status.ok()) {
    return Status(status.code(), "passphrase file " + status.message());
  }
  std::vector<uint8_t> &bytes = out.bytes();
  auto end = std::find_if(bytes.begin(), bytes.end(),
                          [](uint8_t c) { return c == '\n' || c == '\r'; });
  size_t length = static_cast<size_t>(end - bytes.begin());
  OPENSSL_cleanse(bytes.data() + length, bytes.size() - length);
  bytes.resize(length);
  if (bytes.size() > kMaxPassphraseSize) {
    return FileError(path, "passphrase is longer than 1024 bytes");
  }
  return Status::Ok();
}

struct PassphraseState {
  const SecretBytes *passphrase = nullptr;
  bool requested = false;
};

// pem_password_cb that hands out the passphrase, if any, and records that
// the file turned out to be encrypted.
int SupplyPassphrase(char *buf, int size, int rwflag, void *userdata) {
  auto *state = static_cast<PassphraseState *>(userdata);
  state->requested = true;
  if (state->passphrase == nullptr) {
    return -1;
  }
  const std::vector<uint8_t> &bytes = state->passphrase->bytes();
  if (bytes.size() > static_cast<size_t>(size)) {
    return -1;
  }
  std::memcpy(buf, bytes.data(), bytes.size());
  return static_cast<int>(bytes.size());
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// A PEM key block whose BEGIN line is present but whose END line is not was
// cut short.
bool PemKeyTruncated(std::string_view text) {
  size_t begin = text.find("-----BEGIN ");
  while (begin != std::string_view::npos) {
    size_t label_end = text.find("-----", begin + 11);
    if (label_end == std::string_view::npos) {
      return true;
    }
    std::string_view label = text.substr(begin + 11, label_end - begin - 11);
    bool is_key = label.ends_with("PRIVATE KEY");
    std::string end_line = "-----END " + std::string(label) + "-----";
    size_t end = text.find(end_line, label_end);
    if (end == std::string_view::npos) {
      return is_key;
    }
    begin = text.find("-----BEGIN ", end);
  }
  return false;
}

bool PemEncrypted(std::string_view text) {
  return Contains(text, "-----BEGIN ENCRYPTED PRIVATE KEY-----") ||
         Contains(text, "Proc-Type: 4,ENCRYPTED");
}

// Checks the outer DER header: a SEQUENCE whose length fits the file.
enum class DerShape { kSequence, kTruncated, kNotDer };

DerShape InspectDer(const std::vector<uint8_t> &bytes) {
  const unsigned char *p = bytes.data();
  long length = 0;
  int tag = 0;
  int xclass = 0;
  int flags = ASN1_get_object(&p, &length, &tag, &xclass,
                              static_cast<long>(bytes.size()));
  ERR_clear_error();
  if ((flags & 0x80) != 0) {
    // ASN1_get_object sets 0x80 both for a malformed header and for a length
    // that runs past the input, and a well-formed SEQUENCE header
    // distinguishes the two.
    if (bytes.size() >= 2 && bytes[0] == 0x30 &&
        (bytes[1] < 0x80 || (bytes[1] >= 0x81 && bytes[1] <= 0x84))) {
      return DerShape::kTruncated;
    }
    return DerShape::kNotDer;
  }
  if (tag != V_ASN1_SEQUENCE || xclass != V_ASN1_UNIVERSAL) {
    return DerShape::kNotDer;
  }
  return DerShape::kSequence;
}

bool DerEncrypted(const std::vector<uint8_t> &bytes) {
  const unsigned char *p = bytes.data();
  X509_SIG *sig = d2i_X509_SIG(nullptr, &p, static_cast<long>(bytes.size()));
  ERR_clear_error();
  if (sig == nullptr) {
    return false;
  }
  X509_SIG_free(sig);
  return true;
}

bool HasPrivateHalf(EVP_PKEY *pkey) {
  BIGNUM *value = nullptr;
  bool found = false;
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    found = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &value) == 1;
  } else if (EVP_PKEY_is_a(pkey, "EC")) {
    found = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &value) == 1;
  } else {
    size_t length = 0;
    found = EVP_PKEY_get_raw_private_key(pkey, nullptr, &length) == 1;
  }
  BN_clear_free(value);
  ERR_clear_error();
  return found;
}

// Checks that the key is one the cell serves and returns its type.
Result<KeyType> ClassifyKey(std::string_view path, EVP_PKEY *pkey) {
  if (EVP_PKEY_is_a(pkey, "RSA-PSS")) {
    return FileError(path,
                     "unsupported key type RSA-PSS; use an rsaEncryption key");
  }
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < 1024 || bits > 16384) {
      return FileError(path, "unsupported key type: RSA key of " +
                                 std::to_string(bits) +
                                 " bits; 1024 to 16384 bits are supported");
    }
    return KeyType::kRsa;
  }
  if (EVP_PKEY_is_a(pkey, "EC")) {
    char group[64] = {};
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                       sizeof(group), nullptr) != 1) {
      return FileError(path,
                       "unsupported key type: EC key with explicit "
                       "curve parameters; use a named curve");
    }
    std::string_view name(group);
    if (name != "prime256v1" && name != "secp384r1" && name != "secp521r1") {
      return FileError(path, "unsupported key type: EC key on curve " +
                                 std::string(name) +
                                 "; P-256, P-384 and P-521 are supported");
    }
    return KeyType::kEc;
  }
  if (EVP_PKEY_is_a(pkey, "ED25519")) {
    return KeyType::kEd25519;
  }
  if (EVP_PKEY_is_a(pkey, "ED448")) {
    return KeyType::kEd448;
  }
  const char *name = EVP_PKEY_get0_type_name(pkey);
  return FileError(path, std::string("unsupported key type ") +
                             (name != nullptr ? name : "(unknown)") +
                             "; RSA, EC, Ed25519 and Ed448 are supported");
}

Result<UniquePkey> DecodePem(std::string_view path, const SecretBytes &file,
                             const SecretBytes *passphrase) {
  std::string_view text = file.view();
  if (!Contains(text, "-----BEGIN ")) {
    return FileError(path, "no private key found: not a PEM or DER key file");
  }
  if (PemKeyTruncated(text)) {
    return FileError(path,
                     "truncated: the PEM private key block has no END "
                     "line");
  }
  bool encrypted = PemEncrypted(text);
  if (encrypted && passphrase == nullptr) {
    return Status(Code::kPassphraseRequired,
                  std::string(path) +
                      ": passphrase required: the key is "
                      "encrypted");
  }
  BIO *bio = BIO_new_mem_buf(file.bytes().data(),
                             static_cast<int>(file.bytes().size()));
  if (bio == nullptr) {
    return Status(Code::kInternal, "out of memory");
  }
  PassphraseState state{passphrase, false};
  ERR_clear_error();
  EVP_PKEY *pkey = PEM_read_bio_PrivateKey_ex(bio, nullptr, SupplyPassphrase,
                                              &state, nullptr, kCellProperties);
  BIO_free(bio);
  if (pkey != nullptr) {
    ERR_clear_error();
    return UniquePkey(pkey);
  }
  if (encrypted || state.requested) {
    if (passphrase == nullptr) {
      return Status(Code::kPassphraseRequired,
                    std::string(path) +
                        ": passphrase required: the key is "
                        "encrypted");
    }
    return WithOpenSslReason(path, "wrong passphrase");
  }
  unsigned long error = ERR_peek_last_error();
  if (ERR_GET_LIB(error) == ERR_LIB_PEM &&
      ERR_GET_REASON(error) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return FileError(path, "no private key found in the PEM file");
  }
  if (!Contains(text, "PRIVATE KEY-----")) {
    ERR_clear_error();
    return FileError(path, "no private key found in the PEM file");
  }
  return WithOpenSslReason(path, "invalid private key: truncated or corrupt");
}

Result<UniquePkey> DecodeDer(std::string_view path, const SecretBytes &file,
                             const SecretBytes *passphrase) {
  switch (InspectDer(file.bytes())) {
    case DerShape::kNotDer:
      return FileError(path, "no private key found: not a PEM or DER key file");
    case DerShape::kTruncated:
      return FileError(path,
                       "truncated: the DER data is shorter than its "
                       "length field");
    case DerShape::kSequence:
      break;
  }
  bool encrypted = DerEncrypted(file.bytes());
  if (encrypted && passphrase == nullptr) {
    return Status(Code::kPassphraseRequired,
                  std::string(path) +
                      ": passphrase required: the key is "
                      "encrypted");
  }
  EVP_PKEY *pkey = nullptr;
  OSSL_DECODER_CTX *decoder = OSSL_DECODER_CTX_new_for_pkey(
      &pkey, "DER", nullptr, nullptr, OSSL_KEYMGMT_SELECT_KEYPAIR, nullptr,
      kCellProperties);
  if (decoder == nullptr) {
    return WithOpenSslReason(path, "cannot create a key decoder");
  }
  if (passphrase != nullptr) {
    OSSL_DECODER_CTX_set_passphrase(decoder, passphrase->bytes().data(),
                                    passphrase->bytes().size());
  }
  const unsigned char *data = file.bytes().data();
  size_t length = file.bytes().size();
  ERR_clear_error();
  int decoded = OSSL_DECODER_from_data(decoder, &data, &length);
  OSSL_DECODER_CTX_free(decoder);
  if (decoded != 1 || pkey == nullptr) {
    EVP_PKEY_free(pkey);
    if (encrypted) {
      return WithOpenSslReason(path, "wrong passphrase");
    }
    return WithOpenSslReason(path,
                             "no private key found: the DER data is not a "
                             "PKCS#8, PKCS#1 or SEC1 private key");
  }
  ERR_clear_error();
  if (length != 0) {
    EVP_PKEY_free(pkey);
    return FileError(path, "invalid key file: data follows the DER key");
  }
  return UniquePkey(pkey);
}

}  // namespace

Result<LoadedKey> LoadKeyFile(std::string_view path,
                              const PassphraseSource &source) {
  SecretBytes passphrase;
  bool have_passphrase = false;
  if (source.has_bytes) {
    passphrase.bytes().assign(source.bytes.begin(), source.bytes.end());
    have_passphrase = true;
  } else if (!source.file.empty()) {
    Status status = ReadPassphraseFile(source.file, passphrase);
    if (!status.ok()) {
      return status;
    }
    have_passphrase = true;
  }

  SecretBytes file;
  Status status = ReadFile(path, "key file", file);
  if (!status.ok()) {
    return status;
  }
  if (file.bytes().empty()) {
    return FileError(path, "the key file is empty");
  }

  const SecretBytes *pass = have_passphrase ? &passphrase : nullptr;
  bool pem = Contains(file.view(), "-----BEGIN ");
  Result<UniquePkey> decoded =
      pem ? DecodePem(path, file, pass) : DecodeDer(path, file, pass);
  if (!decoded.ok()) {
    return decoded.status();
  }
  UniquePkey pkey = std::move(decoded.value());
  Result<KeyType> type = ClassifyKey(path, pkey.get());
  if (!type.ok()) {
    return type.status();
  }
  if (!HasPrivateHalf(pkey.get())) {
    return FileError(path,
                     "no private key found: the file holds a public "
                     "key only");
  }

  LoadedKey loaded;
  unsigned char *der = nullptr;
  int der_length = i2d_PUBKEY(pkey.get(), &der);
  if (der_length <= 0) {
    return WithOpenSslReason(path, "cannot encode the public key");
  }
  loaded.public_key.assign(der, der + der_length);
  OPENSSL_free(der);
  loaded.pkey = std::move(pkey);
  loaded.type = *type;
  return loaded;
}

}  // namespace kc::cell
