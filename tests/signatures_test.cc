// Signatures and RSA decryption with cell keys through the EVP interfaces,
// checked against the public key of each key's certificate.
#include <ctime>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

using Bytes = std::vector<unsigned char>;

struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX *ctx) const { EVP_PKEY_CTX_free(ctx); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX *ctx) const { EVP_MD_CTX_free(ctx); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

const char *const kKeyNames[] = {"rsa2048", "rsa3072", "rsa4096",
                                 "rsa8192", "p256",    "p384",
                                 "p521",    "ed25519", "ed448"};

const Bytes &Message() {
  static const Bytes message(1000, 0x5a);
  return message;
}

// RSA padding settings for one signature. Padding 0 keeps the default.
struct Padding {
  int padding = 0;
  int pss_salt_length = RSA_PSS_SALTLEN_DIGEST;
};

bool ApplyPadding(EVP_PKEY_CTX *ctx, const Padding &padding,
                  std::string *error) {
  if (padding.padding == 0) {
    return true;
  }
  if (EVP_PKEY_CTX_set_rsa_padding(ctx, padding.padding) <= 0) {
    *error = "EVP_PKEY_CTX_set_rsa_padding failed: " + DrainOpenSslErrors();
    return false;
  }
  if (padding.padding == RSA_PKCS1_PSS_PADDING &&
      EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, padding.pss_salt_length) <= 0) {
    *error = "EVP_PKEY_CTX_set_rsa_pss_saltlen failed: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

// Signs Message() with EVP_DigestSign. Returns false with the OpenSSL
// errors in |error|.
bool DigestSign(EVP_PKEY *key, const char *digest, const Padding &padding,
                Bytes *signature, std::string *error) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX *pkey_ctx = nullptr;
  if (EVP_DigestSignInit_ex(ctx.get(), &pkey_ctx, digest, nullptr, nullptr, key,
                            nullptr) != 1) {
    *error = "EVP_DigestSignInit_ex failed: " + DrainOpenSslErrors();
    return false;
  }
  if (!ApplyPadding(pkey_ctx, padding, error)) {
    return false;
  }
  size_t size = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &size, Message().data(),
                     Message().size()) != 1) {
    *error = "EVP_DigestSign (size) failed: " + DrainOpenSslErrors();
    return false;
  }
  signature->resize(size);
  if (EVP_DigestSign(ctx.get(), signature->data(), &size, Message().data(),
                     Message().size()) != 1) {
    *error = "EVP_DigestSign failed: " + DrainOpenSslErrors();
    return false;
  }
  signature->resize(size);
  return true;
}

// Verifies a signature of Message() with EVP_DigestVerify.
bool DigestVerify(EVP_PKEY *public_key, const char *digest,
                  const Padding &padding, const Bytes &signature,
                  std::string *error) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX *pkey_ctx = nullptr;
  if (EVP_DigestVerifyInit_ex(ctx.get(), &pkey_ctx, digest, nullptr, nullptr,
                              public_key, nullptr) != 1) {
    *error = "EVP_DigestVerifyInit_ex failed: " + DrainOpenSslErrors();
    return false;
  }
  if (!ApplyPadding(pkey_ctx, padding, error)) {
    return false;
  }
  if (EVP_DigestVerify(ctx.get(), signature.data(), signature.size(),
                       Message().data(), Message().size()) != 1) {
    *error = "signature does not verify: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

Bytes Sha(const char *digest_name, const Bytes &data) {
  Bytes digest(EVP_MAX_MD_SIZE);
  unsigned int size = 0;
  EVP_MD *md = EVP_MD_fetch(nullptr, digest_name, nullptr);
  if (md == nullptr || EVP_Digest(data.data(), data.size(), digest.data(),
                                  &size, md, nullptr) != 1) {
    size = 0;
  }
  EVP_MD_free(md);
  digest.resize(size);
  return digest;
}

class CellSignature : public ::testing::Test {
 protected:
  void SetUp() override {
    cell_ = StartCell(nullptr, &error_);
    ASSERT_NE(cell_, nullptr) << error_;
  }

  // Loads the cell key and the certificate public key of |key_name|. A
  // failure is recorded and leaves the pointer empty.
  void LoadPair(const std::string &key_name, EvpPkeyPtr *key,
                EvpPkeyPtr *public_key,
                const keycell_key_options *options = nullptr) {
    *key = LoadCellKey(cell_.get(), KeyPath(key_name), options, &error_);
    EXPECT_NE(*key, nullptr) << error_;
    *public_key = ReadCertificatePublicKey(CertPath(key_name), &error_);
    EXPECT_NE(*public_key, nullptr) << error_;
  }

  // Signs with EVP_DigestSign and the cell key, verifies with the
  // certificate.
  void ExpectDigestSignVerifies(const std::string &key_name, const char *digest,
                                const Padding &padding = {}) {
    SCOPED_TRACE(key_name + " " + (digest != nullptr ? digest : "(none)"));
    EvpPkeyPtr key;
    EvpPkeyPtr public_key;
    LoadPair(key_name, &key, &public_key);
    ASSERT_NE(key, nullptr);
    ASSERT_NE(public_key, nullptr);
    Bytes signature;
    ASSERT_TRUE(DigestSign(key.get(), digest, padding, &signature, &error_))
        << error_;
    EXPECT_TRUE(
        DigestVerify(public_key.get(), digest, padding, signature, &error_))
        << error_;
  }

  CellPtr cell_;
  std::string error_;
};

TEST_F(CellSignature, RsaPkcs1) {
  for (const char *digest : {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"}) {
    ExpectDigestSignVerifies("rsa2048", digest, Padding{RSA_PKCS1_PADDING, 0});
  }
}

TEST_F(CellSignature, RsaPssSaltDigest) {
  for (const char *digest : {"SHA256", "SHA384", "SHA512"}) {
    ExpectDigestSignVerifies(
        "rsa2048", digest,
        Padding{RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_DIGEST});
  }
}

TEST_F(CellSignature, RsaPssSaltMax) {
  for (const char *digest : {"SHA256", "SHA384", "SHA512"}) {
    ExpectDigestSignVerifies(
        "rsa3072", digest, Padding{RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_MAX});
  }
}

// The verifier checks the salt length exactly, so a cell that ignored the
// requested salt length fails RsaPssSaltDigest or RsaPssSaltMax.
TEST_F(CellSignature, RsaPssSaltLengthEnforced) {
  EvpPkeyPtr key;
  EvpPkeyPtr public_key;
  LoadPair("rsa2048", &key, &public_key);
  ASSERT_NE(key, nullptr);
  ASSERT_NE(public_key, nullptr);
  Bytes signature;
  ASSERT_TRUE(DigestSign(key.get(), "SHA256",
                         Padding{RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_DIGEST},
                         &signature, &error_))
      << error_;
  EXPECT_FALSE(DigestVerify(public_key.get(), "SHA256",
                            Padding{RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_MAX},
                            signature, &error_));
  ERR_clear_error();
}

TEST_F(CellSignature, RsaLargeKeys) {
  for (const char *key_name : {"rsa4096", "rsa8192"}) {
    ExpectDigestSignVerifies(
        key_name, "SHA256",
        Padding{RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_DIGEST});
  }
}

TEST_F(CellSignature, EcdsaP256) {
  for (const char *digest : {"SHA256", "SHA384", "SHA512"}) {
    ExpectDigestSignVerifies("p256", digest);
  }
}

TEST_F(CellSignature, EcdsaP384) {
  for (const char *digest : {"SHA256", "SHA384", "SHA512"}) {
    ExpectDigestSignVerifies("p384", digest);
  }
}

TEST_F(CellSignature, EcdsaP521) {
  for (const char *digest : {"SHA256", "SHA384", "SHA512"}) {
    ExpectDigestSignVerifies("p521", digest);
  }
}

TEST_F(CellSignature, Ed25519) {
  ExpectDigestSignVerifies("ed25519", nullptr);
}

TEST_F(CellSignature, Ed448) {
  ExpectDigestSignVerifies("ed448", nullptr);
}

// A signature over a different message must not verify, so the checks above
// cannot pass with a verifier that accepts anything.
TEST_F(CellSignature, SignatureBoundToMessage) {
  EvpPkeyPtr key;
  EvpPkeyPtr public_key;
  LoadPair("p256", &key, &public_key);
  ASSERT_NE(key, nullptr);
  ASSERT_NE(public_key, nullptr);
  Bytes signature;
  ASSERT_TRUE(DigestSign(key.get(), "SHA256", {}, &signature, &error_))
      << error_;
  signature[signature.size() / 2] ^= 0x01;
  EXPECT_FALSE(
      DigestVerify(public_key.get(), "SHA256", {}, signature, &error_));
  ERR_clear_error();
}

// EVP_PKEY_sign on a digest computed by the caller.
void ExpectPkeySignVerifies(EVP_PKEY *key, EVP_PKEY *public_key,
                            const Padding &padding) {
  std::string error;
  Bytes digest = Sha("SHA256", Message());
  ASSERT_EQ(digest.size(), 32u);

  PkeyCtxPtr sign_ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
  ASSERT_NE(sign_ctx, nullptr) << DrainOpenSslErrors();
  ASSERT_EQ(EVP_PKEY_sign_init(sign_ctx.get()), 1) << DrainOpenSslErrors();
  ASSERT_TRUE(ApplyPadding(sign_ctx.get(), padding, &error)) << error;
  ASSERT_EQ(EVP_PKEY_CTX_set_signature_md(sign_ctx.get(), EVP_sha256()), 1)
      << DrainOpenSslErrors();
  size_t size = 0;
  ASSERT_EQ(EVP_PKEY_sign(sign_ctx.get(), nullptr, &size, digest.data(),
                          digest.size()),
            1)
      << DrainOpenSslErrors();
  Bytes signature(size);
  ASSERT_EQ(EVP_PKEY_sign(sign_ctx.get(), signature.data(), &size,
                          digest.data(), digest.size()),
            1)
      << DrainOpenSslErrors();
  signature.resize(size);

  PkeyCtxPtr verify_ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, public_key, nullptr));
  ASSERT_NE(verify_ctx, nullptr) << DrainOpenSslErrors();
  ASSERT_EQ(EVP_PKEY_verify_init(verify_ctx.get()), 1) << DrainOpenSslErrors();
  ASSERT_TRUE(ApplyPadding(verify_ctx.get(), padding, &error)) << error;
  ASSERT_EQ(EVP_PKEY_CTX_set_signature_md(verify_ctx.get(), EVP_sha256()), 1)
      << DrainOpenSslErrors();
  EXPECT_EQ(EVP_PKEY_verify(verify_ctx.get(), signature.data(),
                            signature.size(), digest.data(), digest.size()),
            1)
      << DrainOpenSslErrors();

  // The same signature also verifies as a signature of the whole message.
  EXPECT_TRUE(DigestVerify(public_key, "SHA256", padding, signature, &error))
      << error;
}

TEST_F(CellSignature, PkeySignRsaPkcs1Digest) {
  EvpPkeyPtr key;
  EvpPkeyPtr public_key;
  LoadPair("rsa2048", &key, &public_key);
  ASSERT_NE(key, nullptr);
  ASSERT_NE(public_key, nullptr);
  ExpectPkeySignVerifies(key.get(), public_key.get(),
                         Padding{RSA_PKCS1_PADDING, 0});
}

TEST_F(CellSignature, PkeySignRsaPssDigest) {
  EvpPkeyPtr key;
  EvpPkeyPtr public_key;
  LoadPair("rsa2048", &key, &public_key);
  ASSERT_NE(key, nullptr);
  ASSERT_NE(public_key, nullptr);
  ExpectPkeySignVerifies(
      key.get(), public_key.get(),
      Padding{RSA_PKCS1_PSS_PADDING, RSA_PSS_SALTLEN_DIGEST});
}

TEST_F(CellSignature, PkeySignEcdsaDigest) {
  for (const char *key_name : {"p256", "p384", "p521"}) {
    SCOPED_TRACE(key_name);
    EvpPkeyPtr key;
    EvpPkeyPtr public_key;
    LoadPair(key_name, &key, &public_key);
    ASSERT_NE(key, nullptr);
    ASSERT_NE(public_key, nullptr);
    ExpectPkeySignVerifies(key.get(), public_key.get(), {});
  }
}

// RSA decryption settings: padding and, for OAEP, the digest of both OAEP
// and MGF1.
struct Decryption {
  const char *name;
  int padding;
  const EVP_MD *(*oaep_digest)();
};

const Decryption kDecryptions[] = {
    {"PKCS#1 v1.5", RSA_PKCS1_PADDING, nullptr},
    {"OAEP SHA-1", RSA_PKCS1_OAEP_PADDING, EVP_sha1},
    {"OAEP SHA-256", RSA_PKCS1_OAEP_PADDING, EVP_sha256},
};

bool ApplyDecryption(EVP_PKEY_CTX *ctx, const Decryption &decryption) {
  if (EVP_PKEY_CTX_set_rsa_padding(ctx, decryption.padding) <= 0) {
    return false;
  }
  if (decryption.oaep_digest == nullptr) {
    return true;
  }
  return EVP_PKEY_CTX_set_rsa_oaep_md(ctx, decryption.oaep_digest()) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, decryption.oaep_digest()) > 0;
}

// Encrypts |plaintext| to |public_key|.
Bytes Encrypt(EVP_PKEY *public_key, const Decryption &decryption,
              const Bytes &plaintext) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, public_key, nullptr));
  size_t size = 0;
  if (ctx == nullptr || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
      !ApplyDecryption(ctx.get(), decryption) ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &size, plaintext.data(),
                       plaintext.size()) != 1) {
    return {};
  }
  Bytes ciphertext(size);
  if (EVP_PKEY_encrypt(ctx.get(), ciphertext.data(), &size, plaintext.data(),
                       plaintext.size()) != 1) {
    return {};
  }
  ciphertext.resize(size);
  return ciphertext;
}

// Decrypts with |key|. Returns false with the OpenSSL errors in |error|.
bool Decrypt(EVP_PKEY *key, const Decryption &decryption,
             const Bytes &ciphertext, Bytes *plaintext, std::string *error) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
  if (ctx == nullptr) {
    *error = "EVP_PKEY_CTX_new_from_pkey failed: " + DrainOpenSslErrors();
    return false;
  }
  if (EVP_PKEY_decrypt_init(ctx.get()) != 1) {
    *error = "EVP_PKEY_decrypt_init failed: " + DrainOpenSslErrors();
    return false;
  }
  if (!ApplyDecryption(ctx.get(), decryption)) {
    *error = "setting the padding failed: " + DrainOpenSslErrors();
    return false;
  }
  size_t size = 0;
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &size, ciphertext.data(),
                       ciphertext.size()) != 1) {
    *error = "EVP_PKEY_decrypt (size) failed: " + DrainOpenSslErrors();
    return false;
  }
  plaintext->resize(size);
  if (EVP_PKEY_decrypt(ctx.get(), plaintext->data(), &size, ciphertext.data(),
                       ciphertext.size()) != 1) {
    *error = "EVP_PKEY_decrypt failed: " + DrainOpenSslErrors();
    return false;
  }
  plaintext->resize(size);
  return true;
}

TEST_F(CellSignature, RsaDecrypt) {
  KeyOptionsPtr options = NewDecryptionKeyOptions();
  ASSERT_NE(options, nullptr);
  EvpPkeyPtr key;
  EvpPkeyPtr public_key;
  LoadPair("rsa2048", &key, &public_key, options.get());
  ASSERT_NE(key, nullptr);
  ASSERT_NE(public_key, nullptr);

  for (const Decryption &decryption : kDecryptions) {
    SCOPED_TRACE(decryption.name);
    Bytes plaintext(48);
    ASSERT_EQ(RAND_bytes(plaintext.data(), plaintext.size()), 1);
    Bytes ciphertext = Encrypt(public_key.get(), decryption, plaintext);
    ASSERT_EQ(ciphertext.size(), 256u) << DrainOpenSslErrors();

    Bytes decrypted;
    ASSERT_TRUE(Decrypt(key.get(), decryption, ciphertext, &decrypted, &error_))
        << error_;
    EXPECT_EQ(decrypted, plaintext);
  }
}

TEST_F(CellSignature, RsaDecryptRejectedByDefault) {
  EvpPkeyPtr key;
  EvpPkeyPtr public_key;
  LoadPair("rsa2048", &key, &public_key);
  ASSERT_NE(key, nullptr);
  ASSERT_NE(public_key, nullptr);

  for (const Decryption &decryption : kDecryptions) {
    SCOPED_TRACE(decryption.name);
    Bytes plaintext(48, 0x42);
    Bytes ciphertext = Encrypt(public_key.get(), decryption, plaintext);
    ASSERT_EQ(ciphertext.size(), 256u) << DrainOpenSslErrors();

    Bytes decrypted;
    EXPECT_FALSE(
        Decrypt(key.get(), decryption, ciphertext, &decrypted, &error_))
        << "the cell decrypted without keycell_key_options_allow_rsa_"
           "decryption";
    EXPECT_NE(decrypted, plaintext);
    ERR_clear_error();
  }
}

// Signs a new certificate for an unrelated subject with the cell key as
// issuer key, as a small CA would, and verifies it with the public key.
void ExpectX509SignVerifies(EVP_PKEY *key, EVP_PKEY *public_key) {
  X509Ptr cert(X509_new());
  ASSERT_NE(cert, nullptr);
  ASSERT_EQ(X509_set_version(cert.get(), X509_VERSION_3), 1);
  ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 42), 1);
  X509_NAME *name = X509_get_subject_name(cert.get());
  ASSERT_EQ(
      X509_NAME_add_entry_by_txt(
          name, "CN", MBSTRING_ASC,
          reinterpret_cast<const unsigned char *>("keycell issued"), -1, -1, 0),
      1);
  ASSERT_EQ(X509_set_issuer_name(cert.get(), name), 1);
  ASSERT_NE(X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0), nullptr);
  ASSERT_NE(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400), nullptr);
  ASSERT_EQ(X509_set_pubkey(cert.get(), public_key), 1);

  const EVP_MD *digest = DefaultDigest(key) == nullptr ? nullptr : EVP_sha256();
  ASSERT_GT(X509_sign(cert.get(), key, digest), 0) << DrainOpenSslErrors();
  EXPECT_EQ(X509_verify(cert.get(), public_key), 1) << DrainOpenSslErrors();
}

TEST_F(CellSignature, X509Sign) {
  for (const char *key_name : kKeyNames) {
    SCOPED_TRACE(key_name);
    EvpPkeyPtr key;
    EvpPkeyPtr public_key;
    LoadPair(key_name, &key, &public_key);
    if (key != nullptr && public_key != nullptr) {
      ExpectX509SignVerifies(key.get(), public_key.get());
    }
  }
}

TEST_F(CellSignature, IsCellKey) {
  EvpPkeyPtr key = LoadCellKey(cell_.get(), KeyPath("p256"), nullptr, &error_);
  ASSERT_NE(key, nullptr) << error_;
  EvpPkeyPtr ordinary_key = ReadPrivateKeyInProcess(KeyPath("p256"), &error_);
  ASSERT_NE(ordinary_key, nullptr) << error_;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error_);
  ASSERT_NE(public_key, nullptr) << error_;

  EXPECT_EQ(keycell_is_cell_key(key.get()), 1);
  EXPECT_EQ(keycell_is_cell_key(ordinary_key.get()), 0);
  EXPECT_EQ(keycell_is_cell_key(public_key.get()), 0);
}

// A cell key carries the public key of its certificate and the standard
// type name, so code that inspects keys treats it as an ordinary key.
TEST_F(CellSignature, PublicPartMatchesCertificate) {
  struct Case {
    const char *key_name;
    const char *type_name;
  };
  const Case cases[] = {
      {"rsa2048", "RSA"}, {"rsa8192", "RSA"},     {"p256", "EC"},
      {"p521", "EC"},     {"ed25519", "ED25519"}, {"ed448", "ED448"},
  };
  for (const Case &test_case : cases) {
    SCOPED_TRACE(test_case.key_name);
    EvpPkeyPtr key;
    EvpPkeyPtr public_key;
    LoadPair(test_case.key_name, &key, &public_key);
    ASSERT_NE(key, nullptr);
    ASSERT_NE(public_key, nullptr);
    EXPECT_EQ(EVP_PKEY_is_a(key.get(), test_case.type_name), 1)
        << "type name: " << EVP_PKEY_get0_type_name(key.get());
    EXPECT_EQ(EVP_PKEY_get_bits(key.get()),
              EVP_PKEY_get_bits(public_key.get()));
    EXPECT_EQ(EVP_PKEY_eq(key.get(), public_key.get()), 1)
        << DrainOpenSslErrors();
  }
}

}  // namespace
}  // namespace keycell_test
