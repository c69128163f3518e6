// The public C API. Every entry point catches what it can fail with and
// reports it through the caller's error buffer; no C++ exception crosses it.
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <limits.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "client/cell_client.h"
#include "keycell/keycell.h"
#include "protocol/key_policy.h"
#include "provider/key.h"
#include "provider/provider.h"

using kc::Code;
using kc::Result;
using kc::Status;
namespace client = kc::client;
namespace protocol = kc::protocol;
namespace provider = kc::provider;

struct keycell {
  std::shared_ptr<client::CellClient> cell;
};

struct keycell_options {
  client::StartOptions start;
};

struct keycell_operation {
  // Keeps the cell alive while the operation is pending.
  std::shared_ptr<provider::CellKeyHandle> handle;
  std::shared_ptr<client::PendingOperation> pending;
  protocol::MessageType type;
};

struct keycell_key_options {
  pem_password_cb *passphrase_callback = nullptr;
  void *passphrase_userdata = nullptr;
  std::string passphrase_file;
  protocol::KeyPolicy policy;
};

namespace {

// The maximum length of a passphrase from a callback, in bytes.
constexpr int kMaxPassphrase = 1024;

void WriteError(char *err, size_t err_len, const std::string &message) {
  if (err == nullptr || err_len == 0) {
    return;
  }
  std::snprintf(err, err_len, "keycell: %s", message.c_str());
}

std::string OpenSslReason() {
  unsigned long error = ERR_peek_last_error();
  const char *reason = error != 0 ? ERR_reason_error_string(error) : nullptr;
  return reason != nullptr ? reason : "unknown error";
}

std::string AbsolutePath(const std::string &path) {
  if (path.empty() || path.front() == '/') {
    return path;
  }
  char directory[PATH_MAX];
  if (getcwd(directory, sizeof(directory)) == nullptr) {
    return path;
  }
  return std::string(directory) + "/" + path;
}

// Asks the cell to load |path|, calling the passphrase callback if the cell
// reports that the key is encrypted.
Result<EVP_PKEY *> LoadKey(keycell *cell, const char *path,
                           const keycell_key_options *options) {
  Status loaded = provider::EnsureLoaded();
  if (!loaded.ok()) {
    return loaded;
  }
  keycell_key_options defaults;
  if (options == nullptr) {
    options = &defaults;
  }
  // The cell resolves paths against the working directory the server had at
  // keycell_start. Absolute paths keep a later chdir in the server from
  // changing which file is read.
  std::string absolute_path = AbsolutePath(path);
  std::string passphrase_file = options->passphrase_file.empty()
                                    ? std::string()
                                    : AbsolutePath(options->passphrase_file);
  if (absolute_path.size() > protocol::kMaxStringLength ||
      passphrase_file.size() > protocol::kMaxStringLength) {
    return Status(Code::kInvalidArgument,
                  "the key or passphrase file path is longer than " +
                      std::to_string(protocol::kMaxStringLength) + " bytes");
  }
  protocol::LoadKeyRequest request;
  request.path = absolute_path;
  request.passphrase_file = passphrase_file;
  request.policy = options->policy;

  client::Reply reply;
  Status status =
      cell->cell->Call(protocol::MessageType::kLoadKey, request, reply);
  if (status.code() == Code::kPassphraseRequired &&
      options->passphrase_callback != nullptr &&
      options->passphrase_file.empty()) {
    char passphrase[kMaxPassphrase];
    int length = options->passphrase_callback(passphrase, sizeof(passphrase), 0,
                                              options->passphrase_userdata);
    if (length < 0 || length > kMaxPassphrase) {
      OPENSSL_cleanse(passphrase, sizeof(passphrase));
      return Status(Code::kKeyLoadFailed,
                    std::string(path) +
                        ": passphrase required: the passphrase callback "
                        "returned no passphrase");
    }
    request.has_passphrase = true;
    request.passphrase = {reinterpret_cast<const uint8_t *>(passphrase),
                          static_cast<size_t>(length)};
    status = cell->cell->Call(protocol::MessageType::kLoadKey, request, reply);
    OPENSSL_cleanse(passphrase, sizeof(passphrase));
  }
  if (status.code() == Code::kPassphraseRequired) {
    return Status(status.code(),
                  status.message() + "; set a passphrase callback or file");
  }
  if (!status.ok()) {
    return status;
  }
  protocol::LoadKeyReply message;
  if (!protocol::Decode(reply.payload, message)) {
    return Status(Code::kProtocol, "the cell sent a malformed key reply");
  }
  Result<EVP_PKEY *> pkey = provider::NewCellKey(
      cell->cell, message.key_id, message.type, message.public_key);
  if (!pkey.ok()) {
    return Status(pkey.status().code(),
                  std::string(path) + ": " + pkey.status().message());
  }
  return pkey;
}

// Returns the cell key behind |pkey| or writes why there is none.
std::shared_ptr<provider::CellKeyHandle> CellHandle(EVP_PKEY *pkey,
                                                    const char *function,
                                                    char *err, size_t err_len) {
  if (pkey == nullptr) {
    WriteError(err, err_len, std::string(function) + ": the key is NULL");
    return nullptr;
  }
  std::shared_ptr<provider::CellKeyHandle> handle = provider::HandleOf(pkey);
  if (handle == nullptr) {
    WriteError(err, err_len,
               std::string(function) +
                   ": the key is not a private key served by a cell");
  }
  return handle;
}

template <typename Message>
keycell_operation *StartOperation(
    std::shared_ptr<provider::CellKeyHandle> handle, protocol::MessageType type,
    const Message &request, char *err, size_t err_len) {
  Result<std::shared_ptr<client::PendingOperation>> pending =
      handle->backend().Submit(request);
  if (!pending.ok()) {
    WriteError(err, err_len, pending.status().message());
    return nullptr;
  }
  auto *operation = new (std::nothrow) keycell_operation;
  if (operation == nullptr) {
    WriteError(err, err_len, "out of memory");
    return nullptr;
  }
  operation->handle = std::move(handle);
  operation->pending = std::move(pending.value());
  operation->type = type;
  return operation;
}

}  // namespace

extern "C" {

keycell_options *keycell_options_new(void) {
  return new (std::nothrow) keycell_options;
}

void keycell_options_free(keycell_options *options) {
  delete options;
}

int keycell_options_set_workers(keycell_options *options, unsigned workers) {
  if (options == nullptr || workers > 1024) {
    return 0;
  }
  options->start.workers = workers;
  return 1;
}

int keycell_options_set_timeout(keycell_options *options,
                                unsigned milliseconds) {
  if (options == nullptr) {
    return 0;
  }
  options->start.timeout_ms = milliseconds;
  return 1;
}

keycell *keycell_start(const keycell_options *options, char *err,
                       size_t err_len) {
  client::StartOptions start;
  if (options != nullptr) {
    start = options->start;
  }
  auto *handle = new (std::nothrow) keycell;
  if (handle == nullptr) {
    WriteError(err, err_len, "out of memory");
    return nullptr;
  }
  Result<std::shared_ptr<client::CellClient>> cell =
      client::CellClient::Start(start);
  if (!cell.ok()) {
    delete handle;
    WriteError(err, err_len,
               "cannot start the cell: " + cell.status().message());
    return nullptr;
  }
  handle->cell = std::move(cell.value());
  return handle;
}

void keycell_free(keycell *cell) {
  if (cell == nullptr) {
    return;
  }
  cell->cell->Stop();
  delete cell;
}

pid_t keycell_cell_pid(const keycell *cell) {
  return cell == nullptr ? -1 : cell->cell->pid();
}

int keycell_key_memory_locked(const keycell *cell) {
  return cell != nullptr &&
         cell->cell->key_memory() == kc::cell::KeyMemoryState::kLocked;
}

int keycell_landlock_abi(const keycell *cell) {
  return cell == nullptr ? 0 : cell->cell->landlock_abi();
}

int keycell_drop_privileges(keycell *cell, const char *user, char *err,
                            size_t err_len) {
  if (cell == nullptr || user == nullptr || user[0] == '\0') {
    WriteError(err, err_len,
               "keycell_drop_privileges: the cell and a user name are "
               "required");
    return 0;
  }
  if (std::strlen(user) > protocol::kMaxStringLength) {
    WriteError(err, err_len,
               "keycell_drop_privileges: the user name is longer than " +
                   std::to_string(protocol::kMaxStringLength) + " bytes");
    return 0;
  }
  protocol::DropPrivilegesRequest request{user};
  client::Reply reply;
  Status status =
      cell->cell->Call(protocol::MessageType::kDropPrivileges, request, reply);
  if (!status.ok()) {
    WriteError(err, err_len, status.message());
    return 0;
  }
  return 1;
}

int keycell_seal(keycell *cell, char *err, size_t err_len) {
  if (cell == nullptr) {
    WriteError(err, err_len, "keycell_seal: the cell is required");
    return 0;
  }
  client::Reply reply;
  Status status = cell->cell->Call(protocol::MessageType::kSeal,
                                   protocol::SealRequest{}, reply);
  if (!status.ok()) {
    WriteError(err, err_len, "keycell_seal: " + status.message());
    return 0;
  }
  return 1;
}

keycell_key_options *keycell_key_options_new(void) {
  return new (std::nothrow) keycell_key_options;
}

void keycell_key_options_free(keycell_key_options *options) {
  delete options;
}

int keycell_key_options_set_passphrase_cb(keycell_key_options *options,
                                          pem_password_cb *callback,
                                          void *userdata) {
  if (options == nullptr) {
    return 0;
  }
  options->passphrase_callback = callback;
  options->passphrase_userdata = userdata;
  return 1;
}

int keycell_key_options_set_passphrase_file(keycell_key_options *options,
                                            const char *path) {
  if (options == nullptr || path == nullptr || path[0] == '\0') {
    return 0;
  }
  options->passphrase_file = path;
  return 1;
}

int keycell_key_options_allow_rsa_decryption(keycell_key_options *options,
                                             int allow) {
  if (options == nullptr) {
    return 0;
  }
  options->policy.allow_decrypt = allow != 0;
  return 1;
}

int keycell_key_options_allow_signing(keycell_key_options *options, int allow) {
  if (options == nullptr) {
    return 0;
  }
  options->policy.allow_sign = allow != 0;
  return 1;
}

int keycell_key_options_set_digests(keycell_key_options *options,
                                    const char *digests, char *err,
                                    size_t err_len) {
  if (options == nullptr || digests == nullptr) {
    WriteError(err, err_len,
               "keycell_key_options_set_digests: the options and a digest "
               "list are required");
    return 0;
  }
  Result<uint32_t> parsed = protocol::ParseDigestList(digests, ": ");
  if (!parsed.ok()) {
    WriteError(err, err_len,
               "keycell_key_options_set_digests: " + parsed.status().message());
    return 0;
  }
  options->policy.digests = parsed.value();
  return 1;
}

int keycell_key_options_set_rsa_paddings(keycell_key_options *options,
                                         unsigned paddings) {
  static_assert(KEYCELL_RSA_PADDING_PKCS1 == protocol::kSignPaddingPkcs1 &&
                KEYCELL_RSA_PADDING_PSS == protocol::kSignPaddingPss);
  if (options == nullptr || paddings == 0 ||
      (paddings & ~unsigned{protocol::kAllSignPaddings}) != 0) {
    return 0;
  }
  options->policy.rsa_sign_paddings = static_cast<uint8_t>(paddings);
  return 1;
}

EVP_PKEY *keycell_load_private_key(keycell *cell, const char *path,
                                   const keycell_key_options *options,
                                   char *err, size_t err_len) {
  if (cell == nullptr || path == nullptr || path[0] == '\0') {
    WriteError(err, err_len,
               "keycell_load_private_key: the cell and a key file path are "
               "required");
    return nullptr;
  }
  Result<EVP_PKEY *> pkey = LoadKey(cell, path, options);
  if (!pkey.ok()) {
    WriteError(err, err_len, pkey.status().message());
    return nullptr;
  }
  return pkey.value();
}

int keycell_use_private_key_file(keycell *cell, SSL_CTX *ctx, const char *path,
                                 const keycell_key_options *options, char *err,
                                 size_t err_len) {
  if (cell == nullptr || ctx == nullptr || path == nullptr || path[0] == '\0') {
    WriteError(err, err_len,
               "keycell_use_private_key_file: the cell, an SSL_CTX and a key "
               "file path are required");
    return 0;
  }
  Result<EVP_PKEY *> pkey = LoadKey(cell, path, options);
  if (!pkey.ok()) {
    WriteError(err, err_len, pkey.status().message());
    return 0;
  }
  ERR_clear_error();
  int used = SSL_CTX_use_PrivateKey(ctx, pkey.value());
  EVP_PKEY_free(pkey.value());
  if (used != 1) {
    unsigned long error = ERR_peek_last_error();
    if (ERR_GET_LIB(error) == ERR_LIB_X509 &&
        ERR_GET_REASON(error) == X509_R_KEY_VALUES_MISMATCH) {
      WriteError(err, err_len,
                 std::string(path) +
                     ": the key does not match the "
                     "certificate already set in the "
                     "SSL_CTX (OpenSSL: " +
                     OpenSslReason() + ")");
    } else {
      WriteError(err, err_len,
                 std::string(path) +
                     ": SSL_CTX_use_PrivateKey failed "
                     "(OpenSSL: " +
                     OpenSslReason() + ")");
    }
    ERR_clear_error();
    return 0;
  }
  return 1;
}

int keycell_is_cell_key(const EVP_PKEY *pkey) {
  return provider::IsCellKey(pkey) ? 1 : 0;
}

keycell_operation *keycell_sign_start(EVP_PKEY *pkey, const char *digest,
                                      int rsa_padding,
                                      const unsigned char *message,
                                      size_t message_len, char *err,
                                      size_t err_len) {
  std::shared_ptr<provider::CellKeyHandle> handle =
      CellHandle(pkey, "keycell_sign_start", err, err_len);
  if (handle == nullptr) {
    return nullptr;
  }
  if (message == nullptr && message_len != 0) {
    WriteError(err, err_len, "keycell_sign_start: the message is NULL");
    return nullptr;
  }
  bool eddsa = EVP_PKEY_is_a(pkey, "ED25519") || EVP_PKEY_is_a(pkey, "ED448");
  bool rsa = EVP_PKEY_is_a(pkey, "RSA");
  if (eddsa != (digest == nullptr)) {
    WriteError(err, err_len,
               eddsa ? "keycell_sign_start: EdDSA keys take no digest"
                     : "keycell_sign_start: RSA and ECDSA keys need a "
                       "digest");
    return nullptr;
  }
  if (rsa_padding != 0 && (!rsa || (rsa_padding != RSA_PKCS1_PADDING &&
                                    rsa_padding != RSA_PKCS1_PSS_PADDING))) {
    WriteError(err, err_len,
               "keycell_sign_start: invalid padding " +
                   std::to_string(rsa_padding) +
                   "; RSA keys take RSA_PKCS1_PADDING or "
                   "RSA_PKCS1_PSS_PADDING, other keys 0");
    return nullptr;
  }

  protocol::SignRequest request;
  unsigned char hash[EVP_MAX_MD_SIZE];
  std::string digest_name;
  if (eddsa) {
    request.input = {message, message_len};
  } else {
    EVP_MD *md = EVP_MD_fetch(nullptr, digest, nullptr);
    unsigned int hash_len = 0;
    bool hashed = md != nullptr && EVP_Digest(message, message_len, hash,
                                              &hash_len, md, nullptr) == 1;
    if (md != nullptr) {
      digest_name = EVP_MD_get0_name(md);
    }
    EVP_MD_free(md);
    if (!hashed) {
      WriteError(err, err_len,
                 std::string("keycell_sign_start: unknown digest ") + digest);
      ERR_clear_error();
      return nullptr;
    }
    request.digest = digest_name;
    request.input = {hash, hash_len};
    if (rsa) {
      request.padding = static_cast<uint8_t>(
          rsa_padding == 0 ? RSA_PKCS1_PADDING : rsa_padding);
      request.salt_length = RSA_PSS_SALTLEN_DIGEST;
    }
  }
  return StartOperation(std::move(handle), protocol::MessageType::kSign,
                        request, err, err_len);
}

keycell_operation *keycell_decrypt_start(EVP_PKEY *pkey, int rsa_padding,
                                         const unsigned char *ciphertext,
                                         size_t ciphertext_len, char *err,
                                         size_t err_len) {
  std::shared_ptr<provider::CellKeyHandle> handle =
      CellHandle(pkey, "keycell_decrypt_start", err, err_len);
  if (handle == nullptr) {
    return nullptr;
  }
  if (ciphertext == nullptr || ciphertext_len == 0) {
    WriteError(err, err_len, "keycell_decrypt_start: the ciphertext is empty");
    return nullptr;
  }
  if (rsa_padding != RSA_PKCS1_PADDING &&
      rsa_padding != RSA_PKCS1_OAEP_PADDING) {
    WriteError(err, err_len,
               "keycell_decrypt_start: invalid padding " +
                   std::to_string(rsa_padding) +
                   "; use RSA_PKCS1_PADDING or RSA_PKCS1_OAEP_PADDING");
    return nullptr;
  }
  protocol::DecryptRequest request;
  request.padding = static_cast<uint8_t>(rsa_padding);
  request.ciphertext = {ciphertext, ciphertext_len};
  return StartOperation(std::move(handle), protocol::MessageType::kDecrypt,
                        request, err, err_len);
}

int keycell_operation_fd(const keycell_operation *operation) {
  return operation == nullptr ? -1 : operation->pending->fd();
}

int keycell_operation_finish(keycell_operation *operation, unsigned char *out,
                             size_t *out_len, char *err, size_t err_len) {
  if (operation == nullptr || out_len == nullptr ||
      (out == nullptr && *out_len != 0)) {
    WriteError(err, err_len,
               "keycell_operation_finish: the operation, the output buffer "
               "and its length are required");
    return 0;
  }
  const client::PendingOperation &pending = *operation->pending;
  if (!pending.done()) {
    return -1;
  }
  if (!pending.status().ok()) {
    WriteError(err, err_len, pending.status().message());
    return 0;
  }
  std::span<const uint8_t> result;
  bool decoded = false;
  if (operation->type == protocol::MessageType::kSign) {
    protocol::SignReply reply;
    decoded = protocol::Decode(pending.payload(), reply);
    result = reply.signature;
  } else {
    protocol::DecryptReply reply;
    decoded = protocol::Decode(pending.payload(), reply);
    result = reply.plaintext;
  }
  if (!decoded) {
    WriteError(err, err_len, "the cell sent a malformed reply");
    return 0;
  }
  if (result.size() > *out_len) {
    WriteError(err, err_len,
               "keycell_operation_finish: the output buffer has room for " +
                   std::to_string(*out_len) + " bytes but the result needs " +
                   std::to_string(result.size()));
    return 0;
  }
  std::memcpy(out, result.data(), result.size());
  *out_len = result.size();
  return 1;
}

void keycell_operation_free(keycell_operation *operation) {
  delete operation;
}

}  // extern "C"
