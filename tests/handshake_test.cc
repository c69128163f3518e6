// TLS handshakes in which the server's (or the client's) private key is a
// cell key, verified by an OpenSSL peer that trusts only the matching
// self-signed certificate.
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

class CellHandshake : public ::testing::Test {
 protected:
  void SetUp() override {
    cell_ = StartCell(nullptr, &error_);
    ASSERT_NE(cell_, nullptr) << error_;
  }

  // Creates a server context for |key_name| whose key keycell loads with
  // |options|.
  SslCtxPtr NewCellServerContext(const TlsSettings &settings,
                                 const std::string &key_name,
                                 const keycell_key_options *options) {
    SslCtxPtr ctx = NewServerContext(
        settings, CertPath(key_name),
        CellKeyInstaller(cell_.get(), KeyPath(key_name), options), &error_);
    EXPECT_NE(ctx, nullptr) << error_;
    if (ctx != nullptr) {
      EXPECT_EQ(keycell_is_cell_key(SSL_CTX_get0_privatekey(ctx.get())), 1)
          << "the server context holds an ordinary key";
    }
    return ctx;
  }

  // Runs a handshake with the cell key |key_name| on the server, |version|
  // pinned on both sides, and checks what the client saw.
  void ExpectHandshake(const std::string &key_name, int version,
                       int expected_signature_type,
                       int expected_digest = NID_undef) {
    SslCtxPtr server =
        NewCellServerContext(PinnedVersion(version), key_name, nullptr);
    ASSERT_NE(server, nullptr);
    SslCtxPtr client =
        NewClientContext(PinnedVersion(version), {CertPath(key_name)}, &error_);
    ASSERT_NE(client, nullptr) << error_;

    HandshakeResult result = RunHandshake(server.get(), client.get());
    ASSERT_TRUE(result.ok) << Describe(result);
    EXPECT_EQ(result.verify_result, X509_V_OK) << Describe(result);
    EXPECT_EQ(result.version, version) << Describe(result);
    EXPECT_EQ(result.server_signature_type, expected_signature_type)
        << Describe(result);
    if (expected_digest != NID_undef) {
      EXPECT_EQ(result.server_signature_digest, expected_digest)
          << Describe(result);
    }
  }

  CellPtr cell_;
  std::string error_;
};

TEST_F(CellHandshake, Tls12Rsa2048) {
  ExpectHandshake("rsa2048", TLS1_2_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls13Rsa2048) {
  ExpectHandshake("rsa2048", TLS1_3_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls12Rsa3072) {
  ExpectHandshake("rsa3072", TLS1_2_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls13Rsa3072) {
  ExpectHandshake("rsa3072", TLS1_3_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls12Rsa4096) {
  ExpectHandshake("rsa4096", TLS1_2_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls13Rsa4096) {
  ExpectHandshake("rsa4096", TLS1_3_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls12Rsa8192) {
  ExpectHandshake("rsa8192", TLS1_2_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls13Rsa8192) {
  ExpectHandshake("rsa8192", TLS1_3_VERSION, NID_rsassaPss);
}

TEST_F(CellHandshake, Tls12P256) {
  ExpectHandshake("p256", TLS1_2_VERSION, NID_X9_62_id_ecPublicKey);
}

// TLS 1.3 binds each curve to one digest (RFC 8446, section 4.2.3).
TEST_F(CellHandshake, Tls13P256) {
  ExpectHandshake("p256", TLS1_3_VERSION, NID_X9_62_id_ecPublicKey, NID_sha256);
}

TEST_F(CellHandshake, Tls12P384) {
  ExpectHandshake("p384", TLS1_2_VERSION, NID_X9_62_id_ecPublicKey);
}

TEST_F(CellHandshake, Tls13P384) {
  ExpectHandshake("p384", TLS1_3_VERSION, NID_X9_62_id_ecPublicKey, NID_sha384);
}

TEST_F(CellHandshake, Tls12P521) {
  ExpectHandshake("p521", TLS1_2_VERSION, NID_X9_62_id_ecPublicKey);
}

TEST_F(CellHandshake, Tls13P521) {
  ExpectHandshake("p521", TLS1_3_VERSION, NID_X9_62_id_ecPublicKey, NID_sha512);
}

TEST_F(CellHandshake, Tls12Ed25519) {
  ExpectHandshake("ed25519", TLS1_2_VERSION, NID_ED25519);
}

TEST_F(CellHandshake, Tls13Ed25519) {
  ExpectHandshake("ed25519", TLS1_3_VERSION, NID_ED25519);
}

TEST_F(CellHandshake, Tls12Ed448) {
  ExpectHandshake("ed448", TLS1_2_VERSION, NID_ED448);
}

TEST_F(CellHandshake, Tls13Ed448) {
  ExpectHandshake("ed448", TLS1_3_VERSION, NID_ED448);
}

// A client that offers only rsa_pkcs1_sha256 makes the server sign with
// PKCS#1 v1.5 padding instead of PSS, which TLS 1.2 allows.
TEST_F(CellHandshake, Tls12RsaPkcs1Signature) {
  SslCtxPtr server =
      NewCellServerContext(PinnedVersion(TLS1_2_VERSION), "rsa2048", nullptr);
  ASSERT_NE(server, nullptr);
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_2_VERSION),
                                      {CertPath("rsa2048")}, &error_);
  ASSERT_NE(client, nullptr) << error_;
  HandshakeOptions options;
  options.client_sigalgs = "RSA+SHA256";

  HandshakeResult result = RunHandshake(server.get(), client.get(), options);
  ASSERT_TRUE(result.ok) << Describe(result);
  EXPECT_EQ(result.server_signature_type, NID_rsaEncryption)
      << Describe(result);
  EXPECT_EQ(result.server_signature_digest, NID_sha256) << Describe(result);
}

// TLS 1.2 RSA key exchange: the client encrypts the premaster secret to the
// server's RSA key, so the server needs RSA decryption instead of a
// signature.
TlsSettings RsaKeyExchangeSettings() {
  TlsSettings settings = PinnedVersion(TLS1_2_VERSION);
  settings.cipher_list = "AES128-GCM-SHA256";
  return settings;
}

TEST_F(CellHandshake, Tls12RsaKeyExchange) {
  KeyOptionsPtr options = NewDecryptionKeyOptions();
  ASSERT_NE(options, nullptr);
  SslCtxPtr server =
      NewCellServerContext(RsaKeyExchangeSettings(), "rsa2048", options.get());
  ASSERT_NE(server, nullptr);
  SslCtxPtr client = NewClientContext(RsaKeyExchangeSettings(),
                                      {CertPath("rsa2048")}, &error_);
  ASSERT_NE(client, nullptr) << error_;

  HandshakeResult result = RunHandshake(server.get(), client.get());
  ASSERT_TRUE(result.ok) << Describe(result);
  EXPECT_EQ(result.verify_result, X509_V_OK) << Describe(result);
  EXPECT_EQ(result.version, TLS1_2_VERSION) << Describe(result);
  EXPECT_EQ(result.cipher, "AES128-GCM-SHA256") << Describe(result);
  EXPECT_EQ(result.server_signature_type, NID_undef)
      << "RSA key exchange involves no server signature; " << Describe(result);
}

TEST_F(CellHandshake, Tls12RsaKeyExchangeNeedsDecryption) {
  SslCtxPtr server =
      NewCellServerContext(RsaKeyExchangeSettings(), "rsa2048", nullptr);
  ASSERT_NE(server, nullptr);
  SslCtxPtr client = NewClientContext(RsaKeyExchangeSettings(),
                                      {CertPath("rsa2048")}, &error_);
  ASSERT_NE(client, nullptr) << error_;

  HandshakeResult result = RunHandshake(server.get(), client.get());
  EXPECT_FALSE(result.ok) << "RSA decryption was served without "
                             "keycell_key_options_allow_rsa_decryption; "
                          << Describe(result);
}

// The same handshake with an ordinary key shows that the cipher and
// certificate allow RSA key exchange, so the failure above comes from the
// cell.
TEST_F(CellHandshake, Tls12RsaKeyExchangeOrdinaryKey) {
  EvpPkeyPtr key = ReadPrivateKeyInProcess(KeyPath("rsa2048"), &error_);
  ASSERT_NE(key, nullptr) << error_;
  SslCtxPtr server = NewServerContext(RsaKeyExchangeSettings(),
                                      CertPath("rsa2048"), key.get(), &error_);
  ASSERT_NE(server, nullptr) << error_;
  SslCtxPtr client = NewClientContext(RsaKeyExchangeSettings(),
                                      {CertPath("rsa2048")}, &error_);
  ASSERT_NE(client, nullptr) << error_;

  HandshakeResult result = RunHandshake(server.get(), client.get());
  ASSERT_TRUE(result.ok) << Describe(result);
  EXPECT_EQ(result.cipher, "AES128-GCM-SHA256") << Describe(result);
}

// Mutual TLS: the client's certificate key is a cell key, the server's key
// is a cell key too, and the server verifies the client's certificate.
void ExpectMutualTls(keycell *cell, int version, const std::string &server_key,
                     const std::string &client_key,
                     int expected_client_signature_type) {
  std::string error;
  SslCtxPtr server =
      NewServerContext(PinnedVersion(version), CertPath(server_key),
                       CellKeyInstaller(cell, KeyPath(server_key)), &error);
  ASSERT_NE(server, nullptr) << error;
  ASSERT_TRUE(
      RequireClientCertificate(server.get(), {CertPath(client_key)}, &error))
      << error;

  SslCtxPtr client =
      NewClientContext(PinnedVersion(version), {CertPath(server_key)}, &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(UseCertificateFile(client.get(), CertPath(client_key), &error))
      << error;
  ASSERT_TRUE(CellKeyInstaller(cell, KeyPath(client_key))(client.get(), &error))
      << error;
  EXPECT_EQ(keycell_is_cell_key(SSL_CTX_get0_privatekey(client.get())), 1);

  HandshakeResult result = RunHandshake(server.get(), client.get());
  ASSERT_TRUE(result.ok) << Describe(result);
  EXPECT_EQ(result.version, version) << Describe(result);
  EXPECT_EQ(result.verify_result, X509_V_OK) << Describe(result);
  EXPECT_TRUE(result.client_certificate_received) << Describe(result);
  EXPECT_EQ(result.server_verify_result, X509_V_OK) << Describe(result);
  EXPECT_EQ(result.client_signature_type, expected_client_signature_type)
      << Describe(result);
}

TEST_F(CellHandshake, MutualTls12ClientP256) {
  ExpectMutualTls(cell_.get(), TLS1_2_VERSION, "rsa2048", "p256",
                  NID_X9_62_id_ecPublicKey);
}

TEST_F(CellHandshake, MutualTls13ClientP256) {
  ExpectMutualTls(cell_.get(), TLS1_3_VERSION, "rsa2048", "p256",
                  NID_X9_62_id_ecPublicKey);
}

TEST_F(CellHandshake, MutualTls13ClientRsa) {
  ExpectMutualTls(cell_.get(), TLS1_3_VERSION, "ed25519", "rsa3072",
                  NID_rsassaPss);
}

TEST_F(CellHandshake, MutualTls13ClientEd25519) {
  ExpectMutualTls(cell_.get(), TLS1_3_VERSION, "p384", "ed25519", NID_ED25519);
}

// Without a client certificate the server from ExpectMutualTls() rejects
// the handshake, so the checks above cannot pass without client
// authentication.
TEST_F(CellHandshake, MutualTlsRequiresClientCertificate) {
  SslCtxPtr server =
      NewCellServerContext(PinnedVersion(TLS1_3_VERSION), "rsa2048", nullptr);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(
      RequireClientCertificate(server.get(), {CertPath("p256")}, &error_))
      << error_;
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                      {CertPath("rsa2048")}, &error_);
  ASSERT_NE(client, nullptr) << error_;

  HandshakeResult result = RunHandshake(server.get(), client.get());
  EXPECT_FALSE(result.ok) << Describe(result);
}

}  // namespace
}  // namespace keycell_test
