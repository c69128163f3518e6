// RSA decryption with cell keys, including the padding of TLS 1.2 RSA key
// exchange, whose implicit rejection of bad padding then happens in the
// cell. Encryption needs only the public half and runs in-process.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include <string>
#include <vector>

#include "provider/key.h"
#include "provider/params.h"
#include "provider/provider.h"

namespace kc::provider {
namespace {

struct CipherCtx {
  explicit CipherCtx(OSSL_LIB_CTX *context) : libctx(context) {}
  CipherCtx(const CipherCtx &) = delete;
  CipherCtx &operator=(const CipherCtx &) = delete;
  ~CipherCtx() {
    EVP_PKEY_CTX_free(encrypt);
    OPENSSL_cleanse(label.data(), label.size());
  }

  OSSL_LIB_CTX *libctx;
  ProviderKey *key = nullptr;       // Kept alive by the EVP_PKEY_CTX.
  EVP_PKEY_CTX *encrypt = nullptr;  // Set for encryption only.

  int padding = RSA_PKCS1_PADDING;
  std::string oaep_digest;
  std::string mgf1_digest;
  std::vector<unsigned char> label;
  unsigned int tls_client_version = 0;
  unsigned int tls_negotiated_version = 0;
};

void Fail(Code code, const std::string &message) {
  RaiseError(Status(code, message));
}

void *NewCtx(void *provctx) {
  return new CipherCtx(static_cast<ProviderContext *>(provctx)->libctx);
}

void FreeCtx(void *vctx) {
  delete static_cast<CipherCtx *>(vctx);
}

void *DupCtx(void *vctx) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  auto *copy = new CipherCtx(ctx->libctx);
  copy->key = ctx->key;
  copy->padding = ctx->padding;
  copy->oaep_digest = ctx->oaep_digest;
  copy->mgf1_digest = ctx->mgf1_digest;
  copy->label = ctx->label;
  copy->tls_client_version = ctx->tls_client_version;
  copy->tls_negotiated_version = ctx->tls_negotiated_version;
  if (ctx->encrypt != nullptr) {
    copy->encrypt = EVP_PKEY_CTX_dup(ctx->encrypt);
    if (copy->encrypt == nullptr) {
      delete copy;
      return nullptr;
    }
  }
  return copy;
}

// Returns the canonical name of digest |name|, or an empty string.
std::string CanonicalDigest(OSSL_LIB_CTX *libctx, const char *name) {
  EVP_MD *md = EVP_MD_fetch(libctx, name, nullptr);
  if (md == nullptr) {
    return {};
  }
  std::string canonical = EVP_MD_get0_name(md);
  EVP_MD_free(md);
  return canonical;
}

int SetDecryptParams(CipherCtx *ctx, const OSSL_PARAM params[]) {
  if (params == nullptr) {
    return 1;
  }
  const OSSL_PARAM *p =
      OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE);
  if (p != nullptr) {
    int padding = 0;
    if (!GetPadding(p, &padding) ||
        (padding != RSA_PKCS1_PADDING && padding != RSA_PKCS1_OAEP_PADDING &&
         padding != RSA_PKCS1_WITH_TLS_PADDING)) {
      Fail(Code::kInvalidArgument,
           "cell keys decrypt with PKCS#1 v1.5, OAEP or TLS padding only");
      return 0;
    }
    ctx->padding = padding;
  }
  const char *names[] = {OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST,
                         OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST};
  std::string *targets[] = {&ctx->oaep_digest, &ctx->mgf1_digest};
  for (int i = 0; i < 2; ++i) {
    p = OSSL_PARAM_locate_const(params, names[i]);
    if (p == nullptr) {
      continue;
    }
    const char *name = nullptr;
    std::string canonical;
    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) ||
        (canonical = CanonicalDigest(ctx->libctx, name)).empty()) {
      Fail(Code::kInvalidArgument, std::string("invalid ") + names[i]);
      return 0;
    }
    *targets[i] = canonical;
  }
  p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL);
  if (p != nullptr) {
    const void *label = nullptr;
    size_t length = 0;
    if (!OSSL_PARAM_get_octet_string_ptr(p, &label, &length)) {
      Fail(Code::kInvalidArgument, "invalid OAEP label");
      return 0;
    }
    const auto *bytes = static_cast<const unsigned char *>(label);
    ctx->label.assign(bytes, bytes + length);
  }
  p = OSSL_PARAM_locate_const(params,
                              OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION);
  if (p != nullptr && !OSSL_PARAM_get_uint(p, &ctx->tls_client_version)) {
    Fail(Code::kInvalidArgument, "invalid TLS client version");
    return 0;
  }
  p = OSSL_PARAM_locate_const(params,
                              OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION);
  if (p != nullptr && !OSSL_PARAM_get_uint(p, &ctx->tls_negotiated_version)) {
    Fail(Code::kInvalidArgument, "invalid TLS negotiated version");
    return 0;
  }
  return 1;
}

int SetCtxParams(void *vctx, const OSSL_PARAM params[]) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  if (ctx->encrypt != nullptr) {
    return params == nullptr ||
           EVP_PKEY_CTX_set_params(ctx->encrypt, params) == 1;
  }
  return SetDecryptParams(ctx, params);
}

int GetCtxParams(void *vctx, OSSL_PARAM params[]) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  if (ctx->encrypt != nullptr) {
    return EVP_PKEY_CTX_get_params(ctx->encrypt, params) == 1;
  }
  OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE);
  if (p != nullptr && !SetPadding(p, ctx->padding)) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST);
  if (p != nullptr &&
      !OSSL_PARAM_set_utf8_string(
          p, ctx->oaep_digest.empty() ? "SHA1" : ctx->oaep_digest.c_str())) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST);
  if (p != nullptr) {
    const std::string &mgf1 =
        ctx->mgf1_digest.empty() ? ctx->oaep_digest : ctx->mgf1_digest;
    if (!OSSL_PARAM_set_utf8_string(p, mgf1.empty() ? "SHA1" : mgf1.c_str())) {
      return 0;
    }
  }
  p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL);
  if (p != nullptr &&
      !OSSL_PARAM_set_octet_ptr(p, ctx->label.data(), ctx->label.size())) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION);
  if (p != nullptr && !OSSL_PARAM_set_uint(p, ctx->tls_client_version)) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION);
  if (p != nullptr && !OSSL_PARAM_set_uint(p, ctx->tls_negotiated_version)) {
    return 0;
  }
  return 1;
}

const OSSL_PARAM *SettableCtxParams(void *vctx, void *provctx) {
  static const OSSL_PARAM kSettable[] = {
      OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, nullptr, 0),
      OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, nullptr),
      OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, nullptr),
      OSSL_PARAM_END,
  };
  return kSettable;
}

const OSSL_PARAM *GettableCtxParams(void *vctx, void *provctx) {
  static const OSSL_PARAM kGettable[] = {
      OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_octet_ptr(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, nullptr, 0),
      OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, nullptr),
      OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, nullptr),
      OSSL_PARAM_END,
  };
  return kGettable;
}

int EncryptInit(void *vctx, void *keydata, const OSSL_PARAM params[]) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  ctx->key = static_cast<ProviderKey *>(keydata);
  EVP_PKEY_CTX_free(ctx->encrypt);
  ctx->encrypt = nullptr;
  if (ctx->key->public_key == nullptr) {
    Fail(Code::kInvalidArgument, "the key object is empty");
    return 0;
  }
  ctx->encrypt = EVP_PKEY_CTX_new_from_pkey(ctx->libctx, ctx->key->public_key,
                                            kOtherProviders);
  return ctx->encrypt != nullptr &&
         EVP_PKEY_encrypt_init_ex(ctx->encrypt, params) == 1;
}

int Encrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
            const unsigned char *in, size_t inlen) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  *outlen = outsize;
  return EVP_PKEY_encrypt(ctx->encrypt, out, outlen, in, inlen);
}

int DecryptInit(void *vctx, void *keydata, const OSSL_PARAM params[]) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  ctx->key = static_cast<ProviderKey *>(keydata);
  EVP_PKEY_CTX_free(ctx->encrypt);
  ctx->encrypt = nullptr;
  ctx->padding = RSA_PKCS1_PADDING;
  ctx->oaep_digest.clear();
  ctx->mgf1_digest.clear();
  ctx->label.clear();
  ctx->tls_client_version = 0;
  ctx->tls_negotiated_version = 0;
  if (ctx->key->handle == nullptr) {
    Fail(Code::kInvalidArgument,
         "the key is a public key; decryption needs a cell private key");
    return 0;
  }
  return SetDecryptParams(ctx, params);
}

int Decrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
            const unsigned char *in, size_t inlen) {
  auto *ctx = static_cast<CipherCtx *>(vctx);
  if (out == nullptr) {
    int size = EVP_PKEY_get_size(ctx->key->public_key);
    if (size <= 0) {
      return 0;
    }
    *outlen = static_cast<size_t>(size);
    return 1;
  }
  protocol::DecryptRequest request;
  request.padding = static_cast<uint8_t>(ctx->padding);
  request.oaep_digest = ctx->oaep_digest;
  request.mgf1_digest = ctx->mgf1_digest;
  request.oaep_label = ctx->label;
  request.tls_client_version = ctx->tls_client_version;
  request.tls_negotiated_version = ctx->tls_negotiated_version;
  request.ciphertext = {in, inlen};
  return ctx->key->handle->Decrypt(request, out, outlen, outsize) ? 1 : 0;
}

template <typename Function>
OSSL_DISPATCH Entry(int id, Function *function) {
  return {id, reinterpret_cast<void (*)()>(function)};
}

}  // namespace

const OSSL_DISPATCH kAsymCipherFunctions[] = {
    Entry(OSSL_FUNC_ASYM_CIPHER_NEWCTX, NewCtx),
    Entry(OSSL_FUNC_ASYM_CIPHER_FREECTX, FreeCtx),
    Entry(OSSL_FUNC_ASYM_CIPHER_DUPCTX, DupCtx),
    Entry(OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, EncryptInit),
    Entry(OSSL_FUNC_ASYM_CIPHER_ENCRYPT, Encrypt),
    Entry(OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, DecryptInit),
    Entry(OSSL_FUNC_ASYM_CIPHER_DECRYPT, Decrypt),
    Entry(OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, GetCtxParams),
    Entry(OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, GettableCtxParams),
    Entry(OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, SetCtxParams),
    Entry(OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, SettableCtxParams),
    {0, nullptr},
};

}  // namespace kc::provider
