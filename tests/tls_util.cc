#include "tls_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#ifndef KEYCELL_TEST_DATA_DIR
#error "KEYCELL_TEST_DATA_DIR must name the directory of the test key files"
#endif

namespace keycell_test {
namespace {

struct SslDeleter {
  void operator()(SSL *ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

struct BioDeleter {
  void operator()(BIO *bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// Closes a file descriptor when it goes out of scope.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ScopedFd(const ScopedFd &) = delete;
  ScopedFd &operator=(const ScopedFd &) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// One end of a connection that RunHandshake() drives.
struct Endpoint {
  const char *name;
  SSL *ssl;
  int fd;
  bool done = false;
  short poll_events = 0;
};

std::string VersionName(int version) {
  switch (version) {
    case TLS1_2_VERSION:
      return "TLSv1.2";
    case TLS1_3_VERSION:
      return "TLSv1.3";
    default:
      return "protocol version " + std::to_string(version);
  }
}

std::string SslErrorName(int ssl_error) {
  switch (ssl_error) {
    case SSL_ERROR_SSL:
      return "SSL_ERROR_SSL";
    case SSL_ERROR_SYSCALL:
      return std::string("SSL_ERROR_SYSCALL (") + std::strerror(errno) + ")";
    case SSL_ERROR_ZERO_RETURN:
      return "SSL_ERROR_ZERO_RETURN (peer closed the connection)";
    default:
      return "SSL error " + std::to_string(ssl_error);
  }
}

// Calls |operation| on every endpoint that is not done until each has
// returned a positive value. Waits with poll() while an endpoint waits for
// its peer. Returns false with the failing endpoint and its OpenSSL errors
// in |error|.
bool DriveEndpoints(std::vector<Endpoint *> endpoints,
                    const std::function<int(SSL *)> &operation,
                    int timeout_seconds, std::string *error) {
  for (Endpoint *endpoint : endpoints) {
    endpoint->done = false;
  }
  for (;;) {
    std::vector<pollfd> waiting;
    for (Endpoint *endpoint : endpoints) {
      if (endpoint->done) {
        continue;
      }
      errno = 0;
      int rc = operation(endpoint->ssl);
      if (rc > 0) {
        endpoint->done = true;
        continue;
      }
      int ssl_error = SSL_get_error(endpoint->ssl, rc);
      if (ssl_error == SSL_ERROR_WANT_READ) {
        endpoint->poll_events = POLLIN;
      } else if (ssl_error == SSL_ERROR_WANT_WRITE) {
        endpoint->poll_events = POLLOUT;
      } else {
        std::string details = SslErrorName(ssl_error);
        *error = std::string(endpoint->name) + " failed: " + details + "\n" +
                 DrainOpenSslErrors();
        return false;
      }
      waiting.push_back(pollfd{endpoint->fd, endpoint->poll_events, 0});
    }
    if (waiting.empty()) {
      return true;
    }
    int ready = poll(waiting.data(), waiting.size(), timeout_seconds * 1000);
    if (ready == 0) {
      *error = "timed out after " + std::to_string(timeout_seconds) +
               " s waiting for the peer\n" + DrainOpenSslErrors();
      return false;
    }
    if (ready < 0 && errno != EINTR) {
      *error = std::string("poll failed: ") + std::strerror(errno);
      return false;
    }
  }
}

bool AddCertificatesToStore(X509_STORE *store,
                            const std::vector<std::string> &cert_paths,
                            std::string *error) {
  for (const std::string &path : cert_paths) {
    X509Ptr cert = ReadCertificate(path, error);
    if (cert == nullptr) {
      return false;
    }
    if (X509_STORE_add_cert(store, cert.get()) != 1) {
      *error = "X509_STORE_add_cert failed for " + path + ": " +
               DrainOpenSslErrors();
      return false;
    }
  }
  return true;
}

// Applies the settings that server and client contexts share.
bool ApplySettings(SSL_CTX *ctx, const TlsSettings &settings,
                   std::string *error) {
  if (SSL_CTX_set_min_proto_version(ctx, settings.min_version) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, settings.max_version) != 1) {
    *error = "setting the protocol versions failed: " + DrainOpenSslErrors();
    return false;
  }
  if (!settings.cipher_list.empty() &&
      SSL_CTX_set_cipher_list(ctx, settings.cipher_list.c_str()) != 1) {
    *error = "invalid cipher list \"" + settings.cipher_list +
             "\": " + DrainOpenSslErrors();
    return false;
  }
  // Every handshake is a full one, because a resumed session would skip the
  // private-key operation under test.
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_set_num_tickets(ctx, 0) != 1) {
    *error = "SSL_CTX_set_num_tickets failed: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

// Sends |message| from |writer| and checks that |reader| receives it.
bool ExchangeRecord(Endpoint *writer, Endpoint *reader,
                    const std::string &message, int timeout_seconds,
                    std::string *error) {
  auto write_message = [&message](SSL *ssl) {
    return SSL_write(ssl, message.data(), static_cast<int>(message.size()));
  };
  if (!DriveEndpoints({writer}, write_message, timeout_seconds, error)) {
    return false;
  }
  std::string received(message.size(), '\0');
  int received_size = 0;
  auto read_message = [&received, &received_size](SSL *ssl) {
    int rc = SSL_read(ssl, received.data(), static_cast<int>(received.size()));
    if (rc > 0) {
      received_size = rc;
    }
    return rc;
  };
  if (!DriveEndpoints({reader}, read_message, timeout_seconds, error)) {
    return false;
  }
  received.resize(received_size);
  if (received != message) {
    *error = std::string(reader->name) + " received \"" + received +
             "\" instead of \"" + message + "\"";
    return false;
  }
  return true;
}

}  // namespace

std::string DataPath(std::string_view name) {
  return std::string(KEYCELL_TEST_DATA_DIR) + "/" + std::string(name);
}

std::string CertPath(std::string_view key_name) {
  return DataPath(std::string(key_name) + "-cert.pem");
}

std::string KeyPath(std::string_view key_name) {
  return DataPath(std::string(key_name) + "-key.pem");
}

std::string DrainOpenSslErrors() {
  std::string text;
  const char *file = nullptr;
  const char *function = nullptr;
  const char *data = nullptr;
  int line = 0;
  int flags = 0;
  unsigned long code;
  while ((code = ERR_get_error_all(&file, &line, &function, &data, &flags)) !=
         0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    text += buffer;
    if (function != nullptr && function[0] != '\0') {
      text += std::string(" in ") + function;
    }
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && data[0] != '\0') {
      text += std::string(": ") + data;
    }
    text += "\n";
  }
  return text;
}

bool ReadFile(const std::string &path, std::vector<unsigned char> *contents,
              std::string *error) {
  FILE *file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    *error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  contents->clear();
  unsigned char buffer[4096];
  size_t count;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    contents->insert(contents->end(), buffer, buffer + count);
  }
  bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) {
    *error = "cannot read " + path;
    return false;
  }
  return true;
}

bool WriteFile(const std::string &path, const void *contents, size_t size,
               std::string *error) {
  FILE *file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    *error = "cannot create " + path + ": " + std::strerror(errno);
    return false;
  }
  bool written = size == 0 || std::fwrite(contents, 1, size, file) == size;
  bool closed = std::fclose(file) == 0;
  if (!written || !closed) {
    *error = "cannot write " + path;
    return false;
  }
  return true;
}

X509Ptr ReadCertificate(const std::string &path, std::string *error) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (bio == nullptr) {
    *error = "cannot open " + path + ": " + DrainOpenSslErrors();
    return nullptr;
  }
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    *error = "no certificate in " + path + ": " + DrainOpenSslErrors();
  }
  return cert;
}

EvpPkeyPtr ReadPrivateKeyInProcess(const std::string &path,
                                   std::string *error) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (bio == nullptr) {
    *error = "cannot open " + path + ": " + DrainOpenSslErrors();
    return nullptr;
  }
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    *error = "no private key in " + path + ": " + DrainOpenSslErrors();
  }
  return key;
}

EvpPkeyPtr ReadCertificatePublicKey(const std::string &cert_path,
                                    std::string *error) {
  X509Ptr cert = ReadCertificate(cert_path, error);
  if (cert == nullptr) {
    return nullptr;
  }
  EvpPkeyPtr key(X509_get_pubkey(cert.get()));
  if (key == nullptr) {
    *error = "no public key in " + cert_path + ": " + DrainOpenSslErrors();
  }
  return key;
}

TlsSettings PinnedVersion(int version) {
  TlsSettings settings;
  settings.min_version = version;
  settings.max_version = version;
  return settings;
}

SslCtxPtr NewServerContext(const TlsSettings &settings, std::string *error) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (ctx == nullptr) {
    *error = "SSL_CTX_new failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  if (!ApplySettings(ctx.get(), settings, error)) {
    return nullptr;
  }
  return ctx;
}

SslCtxPtr NewServerContext(
    const TlsSettings &settings, const std::string &cert_path,
    const std::function<bool(SSL_CTX *, std::string *)> &install_key,
    std::string *error) {
  SslCtxPtr ctx = NewServerContext(settings, error);
  if (ctx == nullptr) {
    return nullptr;
  }
  if (!UseCertificateFile(ctx.get(), cert_path, error)) {
    return nullptr;
  }
  if (!install_key(ctx.get(), error)) {
    return nullptr;
  }
  return ctx;
}

SslCtxPtr NewServerContext(const TlsSettings &settings,
                           const std::string &cert_path, EVP_PKEY *key,
                           std::string *error) {
  auto install_key = [key](SSL_CTX *ctx, std::string *install_error) {
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
      *install_error = "SSL_CTX_use_PrivateKey failed: " + DrainOpenSslErrors();
      return false;
    }
    return true;
  };
  return NewServerContext(settings, cert_path, install_key, error);
}

bool UseCertificateFile(SSL_CTX *ctx, const std::string &cert_path,
                        std::string *error) {
  if (SSL_CTX_use_certificate_file(ctx, cert_path.c_str(), SSL_FILETYPE_PEM) !=
      1) {
    *error = "SSL_CTX_use_certificate_file failed for " + cert_path + ": " +
             DrainOpenSslErrors();
    return false;
  }
  return true;
}

SslCtxPtr NewClientContext(const TlsSettings &settings,
                           const std::vector<std::string> &trusted_cert_paths,
                           std::string *error) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (ctx == nullptr) {
    *error = "SSL_CTX_new failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  if (!ApplySettings(ctx.get(), settings, error)) {
    return nullptr;
  }
  X509_STORE *store = X509_STORE_new();
  if (store == nullptr) {
    *error = "X509_STORE_new failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  SSL_CTX_set_cert_store(ctx.get(), store);  // The context owns the store.
  if (!AddCertificatesToStore(store, trusted_cert_paths, error)) {
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx.get());
  if (X509_VERIFY_PARAM_set1_host(param, "localhost", 0) != 1 ||
      X509_VERIFY_PARAM_set1_ip_asc(param, "127.0.0.1") != 1) {
    *error = "setting the expected host failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  return ctx;
}

bool RequireClientCertificate(
    SSL_CTX *server_ctx, const std::vector<std::string> &trusted_cert_paths,
    std::string *error) {
  X509_STORE *store = X509_STORE_new();
  if (store == nullptr) {
    *error = "X509_STORE_new failed: " + DrainOpenSslErrors();
    return false;
  }
  SSL_CTX_set_cert_store(server_ctx, store);  // The context owns the store.
  if (!AddCertificatesToStore(store, trusted_cert_paths, error)) {
    return false;
  }
  SSL_CTX_set_verify(
      server_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  static const unsigned char kSessionIdContext[] = "keycell-tests";
  if (SSL_CTX_set_session_id_context(server_ctx, kSessionIdContext,
                                     sizeof(kSessionIdContext) - 1) != 1) {
    *error = "SSL_CTX_set_session_id_context failed: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

HandshakeResult RunHandshake(SSL_CTX *server_ctx, SSL_CTX *client_ctx,
                             const HandshakeOptions &options) {
  HandshakeResult result;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) !=
      0) {
    result.error = std::string("socketpair failed: ") + std::strerror(errno);
    return result;
  }
  ScopedFd server_fd(fds[0]);
  ScopedFd client_fd(fds[1]);

  SslPtr server(SSL_new(server_ctx));
  SslPtr client(SSL_new(client_ctx));
  if (server == nullptr || client == nullptr) {
    result.error = "SSL_new failed: " + DrainOpenSslErrors();
    return result;
  }
  if (SSL_set_fd(server.get(), server_fd.get()) != 1 ||
      SSL_set_fd(client.get(), client_fd.get()) != 1) {
    result.error = "SSL_set_fd failed: " + DrainOpenSslErrors();
    return result;
  }
  SSL_set_accept_state(server.get());
  SSL_set_connect_state(client.get());
  if (SSL_set_tlsext_host_name(client.get(), "localhost") != 1) {
    result.error = "SSL_set_tlsext_host_name failed: " + DrainOpenSslErrors();
    return result;
  }
  if (!options.client_sigalgs.empty() &&
      SSL_set1_sigalgs_list(client.get(), options.client_sigalgs.c_str()) !=
          1) {
    result.error = "invalid signature algorithm list \"" +
                   options.client_sigalgs + "\": " + DrainOpenSslErrors();
    return result;
  }

  Endpoint server_end{"server", server.get(), server_fd.get()};
  Endpoint client_end{"client", client.get(), client_fd.get()};
  bool handshake_done =
      DriveEndpoints({&client_end, &server_end}, SSL_do_handshake,
                     options.step_timeout_seconds, &result.error);
  result.verify_result = SSL_get_verify_result(client.get());
  result.server_verify_result = SSL_get_verify_result(server.get());
  if (!handshake_done) {
    return result;
  }

  result.version = SSL_version(client.get());
  result.cipher = SSL_get_cipher_name(client.get());
  int nid = NID_undef;
  if (SSL_get_peer_signature_type_nid(client.get(), &nid) == 1) {
    result.server_signature_type = nid;
  }
  nid = NID_undef;
  if (SSL_get_peer_signature_nid(client.get(), &nid) == 1) {
    result.server_signature_digest = nid;
  }
  nid = NID_undef;
  if (SSL_get_peer_signature_type_nid(server.get(), &nid) == 1) {
    result.client_signature_type = nid;
  }
  result.client_certificate_received =
      SSL_get0_peer_certificate(server.get()) != nullptr;

  if (!ExchangeRecord(&client_end, &server_end, "ping",
                      options.step_timeout_seconds, &result.error) ||
      !ExchangeRecord(&server_end, &client_end, "pong",
                      options.step_timeout_seconds, &result.error)) {
    return result;
  }
  result.ok = true;
  return result;
}

std::string Describe(const HandshakeResult &result) {
  std::string text = result.ok ? "handshake succeeded" : "handshake failed";
  text += "; verify result: ";
  text += X509_verify_cert_error_string(result.verify_result);
  if (result.version != 0) {
    text += "; version: " + VersionName(result.version);
  }
  if (!result.cipher.empty()) {
    text += "; cipher: " + result.cipher;
  }
  if (result.server_signature_type != NID_undef) {
    text += "; server signature: ";
    text += OBJ_nid2sn(result.server_signature_type);
  }
  if (!result.error.empty()) {
    text += "\n" + result.error;
  }
  return text;
}

}  // namespace keycell_test
