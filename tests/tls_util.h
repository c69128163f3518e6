// TLS helpers for the test suites: contexts, key and certificate files, and
// one full handshake between two SSL objects over a socketpair.
//
// The helpers use only OpenSSL, so they work with cell keys and with keys
// loaded in-process alike.
#ifndef KEYCELL_TESTS_TLS_UTIL_H
#define KEYCELL_TESTS_TLS_UTIL_H

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace keycell_test {

struct SslCtxDeleter {
  void operator()(SSL_CTX *ctx) const { SSL_CTX_free(ctx); }
};
struct EvpPkeyDeleter {
  void operator()(EVP_PKEY *pkey) const { EVP_PKEY_free(pkey); }
};
struct X509Deleter {
  void operator()(X509 *x509) const { X509_free(x509); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

// Returns the path of |name| in the test data directory.
std::string DataPath(std::string_view name);

// Returns the certificate file of a key base name, e.g. "p256" ->
// ".../p256-cert.pem".
std::string CertPath(std::string_view key_name);

// Returns the unencrypted PKCS#8 PEM key file of a key base name.
std::string KeyPath(std::string_view key_name);

// Removes every entry from this thread's OpenSSL error queue and returns them
// as text, one line per entry, or "" if the queue was empty.
std::string DrainOpenSslErrors();

// Reads a whole file. Returns false with a message in |error| on failure.
bool ReadFile(const std::string &path, std::vector<unsigned char> *contents,
              std::string *error);

// Writes |contents| to |path|, replacing the file. Returns false with a
// message in |error| on failure.
bool WriteFile(const std::string &path, const void *contents, size_t size,
               std::string *error);

// Reads the first certificate of a PEM file. Returns nullptr with a message
// in |error| on failure.
X509Ptr ReadCertificate(const std::string &path, std::string *error);

// Reads an unencrypted PEM private key into this process, bypassing keycell.
// Returns nullptr with a message in |error| on failure.
EvpPkeyPtr ReadPrivateKeyInProcess(const std::string &path, std::string *error);

// Returns the public key of the first certificate in |cert_path|, or
// nullptr with a message in |error|.
EvpPkeyPtr ReadCertificatePublicKey(const std::string &cert_path,
                                    std::string *error);

// TLS settings shared by the server and client contexts.
struct TlsSettings {
  // Lowest and highest protocol version, e.g. TLS1_3_VERSION. A context
  // pinned to one version has both set to it.
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  // TLS 1.2 cipher list for SSL_CTX_set_cipher_list(). An empty list keeps
  // the default.
  std::string cipher_list;
};

// Returns TlsSettings with min_version and max_version set to |version|.
TlsSettings PinnedVersion(int version);

// Creates a server context without certificate or key: the versions and
// ciphers of |settings|, no session tickets and no session cache, so every
// handshake is a full one. Returns nullptr with a message in |error|.
SslCtxPtr NewServerContext(const TlsSettings &settings, std::string *error);

// Creates a server context as NewServerContext() does and installs the
// certificate from |cert_path|. Then it calls |install_key|, which installs
// the private key and returns false with a message on failure.
SslCtxPtr NewServerContext(
    const TlsSettings &settings, const std::string &cert_path,
    const std::function<bool(SSL_CTX *, std::string *)> &install_key,
    std::string *error);

// Creates a server context with the certificate from |cert_path| and |key|.
SslCtxPtr NewServerContext(const TlsSettings &settings,
                           const std::string &cert_path, EVP_PKEY *key,
                           std::string *error);

// Adds the certificate in |cert_path| to the context as an additional
// certificate. A context contains one certificate per key type (RSA, EC,
// Ed25519, Ed448), and the key installed next belongs to it.
bool UseCertificateFile(SSL_CTX *ctx, const std::string &cert_path,
                        std::string *error);

// Creates a client context that trusts exactly the certificates in
// |trusted_cert_paths|, verifies the server with SSL_VERIFY_PEER and checks
// that its certificate names localhost and 127.0.0.1. No session tickets, no
// session cache. Returns nullptr with a message in |error|.
SslCtxPtr NewClientContext(const TlsSettings &settings,
                           const std::vector<std::string> &trusted_cert_paths,
                           std::string *error);

// Makes a server context request and verify a client certificate, trusting
// exactly the certificates in |trusted_cert_paths|.
bool RequireClientCertificate(
    SSL_CTX *server_ctx, const std::vector<std::string> &trusted_cert_paths,
    std::string *error);

// Per-handshake settings that do not belong to a context.
struct HandshakeOptions {
  // Client signature algorithm list for SSL_set1_sigalgs_list(), e.g.
  // "ed25519" or "ECDSA+SHA256". It selects the server certificate when the
  // server has several. An empty list keeps the default.
  std::string client_sigalgs;
  // Seconds to wait for the peer at any one step before failing.
  int step_timeout_seconds = 10;
};

// Outcome of one handshake, as seen by the client unless noted.
struct HandshakeResult {
  // True when both sides completed the handshake and exchanged one
  // application data record in each direction.
  bool ok = false;
  // SSL_get_verify_result() on the client.
  long verify_result = X509_V_ERR_UNSPECIFIED;
  // SSL_get_verify_result() on the server, which is X509_V_OK also when the
  // server did not request a client certificate.
  long server_verify_result = X509_V_ERR_UNSPECIFIED;
  // Negotiated protocol version, e.g. TLS1_3_VERSION.
  int version = 0;
  // Negotiated cipher in OpenSSL's naming, e.g. "TLS_AES_128_GCM_SHA256".
  std::string cipher;
  // SSL_get_peer_signature_type_nid() on the client: the signature scheme
  // of the server's key, e.g. NID_rsassaPss or NID_ED25519. NID_undef when
  // the server did not sign (TLS 1.2 RSA key exchange).
  int server_signature_type = NID_undef;
  // SSL_get_peer_signature_nid() on the client: the digest of the server's
  // signature, NID_undef for Ed25519 and Ed448.
  int server_signature_digest = NID_undef;
  // SSL_get_peer_signature_type_nid() on the server, for a client
  // certificate.
  int client_signature_type = NID_undef;
  // True when the server received a client certificate.
  bool client_certificate_received = false;
  // Which side failed and the OpenSSL error text, empty on success.
  std::string error;
};

// Runs one full handshake between a new server SSL from |server_ctx| and a
// new client SSL from |client_ctx| over a socketpair, in this thread with
// both ends non-blocking. Private-key operations of either side run in this
// thread, so their OpenSSL errors end up in |error| of the result.
HandshakeResult RunHandshake(SSL_CTX *server_ctx, SSL_CTX *client_ctx,
                             const HandshakeOptions &options = {});

// Returns a readable description of a result for assertion messages.
std::string Describe(const HandshakeResult &result);

}  // namespace keycell_test

#endif  // KEYCELL_TESTS_TLS_UTIL_H
