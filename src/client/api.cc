// The public C API. Every entry point catches what it can fail with and
// reports it through the caller's error buffer; no C++ exception crosses it.
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <limits.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <new>
#include <string>

#include "client/cell_client.h"
#include "keycell/keycell.h"
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

struct keycell_key_options {
  pem_password_cb *passphrase_callback = nullptr;
  void *passphrase_userdata = nullptr;
  std::string passphrase_file;
  bool allow_rsa_decryption = false;
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
  protocol::LoadKeyRequest request;
  request.path = absolute_path;
  request.passphrase_file = passphrase_file;
  request.flags =
      options->allow_rsa_decryption ? protocol::kLoadAllowDecrypt : 0;

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

int keycell_drop_privileges(keycell *cell, const char *user, char *err,
                            size_t err_len) {
  if (cell == nullptr || user == nullptr || user[0] == '\0') {
    WriteError(err, err_len,
               "keycell_drop_privileges: the cell and a user name are "
               "required");
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
  options->allow_rsa_decryption = allow != 0;
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

}  // extern "C"
