// Helpers for the neverbleed suites: the key types keycell serves, a
// neverbleed_t started once per test, and one request-reply round trip on
// the descriptor of neverbleed_get_fd().
#ifndef KEYCELL_TESTS_NEVERBLEED_TEST_UTIL_H
#define KEYCELL_TESTS_NEVERBLEED_TEST_UTIL_H

#include <cstdlib>
#include <string>
#include <vector>

#include <neverbleed.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

namespace keycell_test {

// A key base name in tests/data and the digest its signatures use: nullptr
// for EdDSA, which signs the message itself.
struct NeverbleedKey {
  const char *name;
  const char *digest;
};

inline const std::vector<NeverbleedKey> &NeverbleedKeys() {
  static const std::vector<NeverbleedKey> keys = {
      {"rsa2048", "SHA256"}, {"p256", "SHA256"},   {"p384", "SHA384"},
      {"p521", "SHA512"},    {"ed25519", nullptr}, {"ed448", nullptr},
  };
  return keys;
}

// The output of neverbleed_finish_*: NULL and 0 on failure.
struct FinishedBytes {
  void *data = nullptr;
  size_t length = 0;
  FinishedBytes() = default;
  FinishedBytes(const FinishedBytes &) = delete;
  FinishedBytes &operator=(const FinishedBytes &) = delete;
  ~FinishedBytes() { std::free(data); }
  std::vector<unsigned char> bytes() const {
    const auto *begin = static_cast<const unsigned char *>(data);
    return std::vector<unsigned char>(begin, begin + length);
  }
};

// Sends the request in |buf| with neverbleed_transaction_write() and reads
// its reply into |buf| with neverbleed_transaction_read().
inline void RoundTrip(neverbleed_t *nb, neverbleed_iobuf_t *buf) {
  neverbleed_transaction_write(nb, buf);
  neverbleed_transaction_read(nb, buf);
}

// Signs |message| through the asynchronous interface in one round trip.
inline void SignOnce(neverbleed_t *nb, EVP_PKEY *pkey, const EVP_MD *md,
                     const std::string &message, int rsa_pss,
                     FinishedBytes *signature) {
  neverbleed_iobuf_t buf = {};
  neverbleed_start_digestsign(&buf, pkey, md, message.data(), message.size(),
                              rsa_pss);
  RoundTrip(nb, &buf);
  neverbleed_finish_digestsign(&buf, &signature->data, &signature->length);
}

// Verifies |signature| over |message| with |public_key| and the digest
// |md| (nullptr for EdDSA); |rsa_pss| selects RSA-PSS with a salt as long
// as the digest.
inline bool VerifySignature(EVP_PKEY *public_key, const EVP_MD *md, int rsa_pss,
                            const std::string &message, const void *signature,
                            size_t signature_length) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pkey_ctx = nullptr;
  bool ok = ctx != nullptr &&
            EVP_DigestVerifyInit(ctx, &pkey_ctx, md, nullptr, public_key) == 1;
  if (ok && rsa_pss != 0) {
    ok =
        EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pkey_ctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  }
  ok = ok &&
       EVP_DigestVerify(ctx, static_cast<const unsigned char *>(signature),
                        signature_length,
                        reinterpret_cast<const unsigned char *>(message.data()),
                        message.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

}  // namespace keycell_test

#endif  // KEYCELL_TESTS_NEVERBLEED_TEST_UTIL_H
