// Signatures with cell keys. Signing hashes the input in the server and
// sends the digest to the cell, or for EdDSA the whole message. Verification
// needs only the public half, so it runs in-process through another
// provider.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include <string>

#include "provider/key.h"
#include "provider/params.h"
#include "provider/provider.h"

namespace kc::provider {
namespace {

using protocol::KeyType;

struct SignatureCtx {
  explicit SignatureCtx(OSSL_LIB_CTX *context) : libctx(context) {}
  SignatureCtx(const SignatureCtx &) = delete;
  SignatureCtx &operator=(const SignatureCtx &) = delete;
  ~SignatureCtx() { Reset(); }

  void Reset() {
    EVP_MD_free(md);
    md = nullptr;
    EVP_MD_CTX_free(hash);
    hash = nullptr;
    EVP_MD_CTX_free(verify_md);
    verify_md = nullptr;
    EVP_PKEY_CTX_free(verify_pkey);
    verify_pkey = nullptr;
  }

  bool eddsa() const {
    return key->type == KeyType::kEd25519 || key->type == KeyType::kEd448;
  }

  // The context that verification parameters go to.
  EVP_PKEY_CTX *VerifyContext() const {
    return verify_md != nullptr ? EVP_MD_CTX_get_pkey_ctx(verify_md)
                                : verify_pkey;
  }

  OSSL_LIB_CTX *libctx;
  ProviderKey *key = nullptr;  // Kept alive by the EVP_PKEY_CTX.
  int operation = 0;

  // Signing state.
  EVP_MD *md = nullptr;
  int padding = protocol::kPaddingNone;
  int salt_length = RSA_PSS_SALTLEN_AUTO;
  std::string mgf1_digest;
  EVP_MD_CTX *hash = nullptr;  // Streaming digest of EVP_DigestSignUpdate.

  // Verification runs in one of these, created by the init call.
  EVP_MD_CTX *verify_md = nullptr;
  EVP_PKEY_CTX *verify_pkey = nullptr;
};

void Fail(Code code, const std::string &message) {
  RaiseError(Status(code, message));
}

void *NewCtx(void *provctx, const char *propq) {
  return new SignatureCtx(static_cast<ProviderContext *>(provctx)->libctx);
}

void FreeCtx(void *vctx) {
  delete static_cast<SignatureCtx *>(vctx);
}

void *DupCtx(void *vctx) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  auto *copy = new SignatureCtx(ctx->libctx);
  copy->key = ctx->key;
  copy->operation = ctx->operation;
  copy->padding = ctx->padding;
  copy->salt_length = ctx->salt_length;
  copy->mgf1_digest = ctx->mgf1_digest;
  bool ok = true;
  if (ctx->md != nullptr) {
    ok = EVP_MD_up_ref(ctx->md) == 1;
    copy->md = ctx->md;
  }
  if (ok && ctx->hash != nullptr) {
    copy->hash = EVP_MD_CTX_new();
    ok = copy->hash != nullptr && EVP_MD_CTX_copy_ex(copy->hash, ctx->hash);
  }
  if (ok && ctx->verify_md != nullptr) {
    copy->verify_md = EVP_MD_CTX_new();
    ok = copy->verify_md != nullptr &&
         EVP_MD_CTX_copy_ex(copy->verify_md, ctx->verify_md);
  }
  if (ok && ctx->verify_pkey != nullptr) {
    copy->verify_pkey = EVP_PKEY_CTX_dup(ctx->verify_pkey);
    ok = copy->verify_pkey != nullptr;
  }
  if (!ok) {
    delete copy;
    return nullptr;
  }
  return copy;
}

bool SetDigest(SignatureCtx *ctx, const char *name, const char *properties) {
  if (ctx->eddsa()) {
    if (name == nullptr || name[0] == '\0') {
      return true;
    }
    Fail(Code::kInvalidArgument,
         "EdDSA signs the message itself and takes "
         "no digest, but got " +
             std::string(name));
    return false;
  }
  if (ctx->hash != nullptr) {
    Fail(Code::kInvalidArgument,
         "the digest cannot change once hashing has started");
    return false;
  }
  EVP_MD *md = EVP_MD_fetch(ctx->libctx, name, properties);
  if (md == nullptr) {
    Fail(Code::kInvalidArgument, std::string("unknown digest ") + name);
    return false;
  }
  EVP_MD_free(ctx->md);
  ctx->md = md;
  return true;
}

int SetSignParams(SignatureCtx *ctx, const OSSL_PARAM params[]) {
  if (params == nullptr) {
    return 1;
  }
  const OSSL_PARAM *p =
      OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
  if (p != nullptr) {
    const char *name = nullptr;
    const char *properties = nullptr;
    const OSSL_PARAM *props =
        OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PROPERTIES);
    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name) ||
        (props != nullptr &&
         !OSSL_PARAM_get_utf8_string_ptr(props, &properties)) ||
        !SetDigest(ctx, name, properties)) {
      return 0;
    }
  }
  p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
  if (p != nullptr) {
    int padding = 0;
    if (ctx->key->type != KeyType::kRsa || !GetPadding(p, &padding) ||
        (padding != RSA_PKCS1_PADDING && padding != RSA_PKCS1_PSS_PADDING)) {
      Fail(Code::kInvalidArgument,
           "cell keys sign with PKCS#1 v1.5 or PSS padding only");
      return 0;
    }
    ctx->padding = padding;
  }
  p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
  if (p != nullptr) {
    int salt_length = 0;
    if (ctx->key->type != KeyType::kRsa || !GetSaltLength(p, &salt_length)) {
      Fail(Code::kInvalidArgument, "invalid PSS salt length");
      return 0;
    }
    ctx->salt_length = salt_length;
  }
  p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
  if (p != nullptr) {
    const char *name = nullptr;
    EVP_MD *md = nullptr;
    if (ctx->key->type != KeyType::kRsa ||
        !OSSL_PARAM_get_utf8_string_ptr(p, &name) ||
        (md = EVP_MD_fetch(ctx->libctx, name, nullptr)) == nullptr) {
      Fail(Code::kInvalidArgument, "invalid MGF1 digest");
      return 0;
    }
    ctx->mgf1_digest = EVP_MD_get0_name(md);
    EVP_MD_free(md);
  }
  return 1;
}

int SetCtxParams(void *vctx, const OSSL_PARAM params[]) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (ctx->key == nullptr) {
    return 0;
  }
  if (ctx->operation == EVP_PKEY_OP_VERIFY) {
    return params == nullptr ||
           EVP_PKEY_CTX_set_params(ctx->VerifyContext(), params) == 1;
  }
  return SetSignParams(ctx, params);
}

// Computes the DER AlgorithmIdentifier of the signature being made, which
// X.509 and CMS signing embed, with a verification context of another
// provider set up the same way.
bool AlgorithmId(SignatureCtx *ctx, OSSL_PARAM *out) {
  EVP_PKEY_CTX *verify = EVP_PKEY_CTX_new_from_pkey(
      ctx->libctx, ctx->key->public_key, kOtherProviders);
  std::string digest = ctx->md != nullptr ? EVP_MD_get0_name(ctx->md) : "";
  int padding = ctx->padding;
  // For verification, AUTO means "any length"; the signer's AUTO is MAX.
  int salt_length = ctx->salt_length == RSA_PSS_SALTLEN_AUTO
                        ? RSA_PSS_SALTLEN_MAX
                        : ctx->salt_length;
  std::string mgf1 = ctx->mgf1_digest;
  OSSL_PARAM params[5];
  OSSL_PARAM *p = params;
  if (!digest.empty()) {
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST,
                                            digest.data(), 0);
  }
  if (ctx->key->type == KeyType::kRsa && padding != protocol::kPaddingNone) {
    *p++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &padding);
    if (padding == RSA_PKCS1_PSS_PADDING) {
      *p++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN,
                                      &salt_length);
      if (!mgf1.empty()) {
        *p++ = OSSL_PARAM_construct_utf8_string(
            OSSL_SIGNATURE_PARAM_MGF1_DIGEST, mgf1.data(), 0);
      }
    }
  }
  *p = OSSL_PARAM_construct_end();
  OSSL_PARAM request[] = {*out, OSSL_PARAM_construct_end()};
  bool ok = false;
  if (ctx->eddsa()) {
    // OpenSSL's EdDSA supports only the digest-verify form.
    EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = nullptr;
    ok = md_ctx != nullptr &&
         EVP_DigestVerifyInit_ex(md_ctx, &pctx, nullptr, ctx->libctx,
                                 kOtherProviders, ctx->key->public_key,
                                 nullptr) == 1 &&
         EVP_PKEY_CTX_get_params(pctx, request) == 1;
    EVP_MD_CTX_free(md_ctx);
  } else {
    ok = verify != nullptr && EVP_PKEY_verify_init_ex(verify, params) == 1 &&
         EVP_PKEY_CTX_get_params(verify, request) == 1;
  }
  EVP_PKEY_CTX_free(verify);
  out->return_size = request[0].return_size;
  return ok;
}

int GetCtxParams(void *vctx, OSSL_PARAM params[]) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (ctx->key == nullptr) {
    return 0;
  }
  if (ctx->operation == EVP_PKEY_OP_VERIFY) {
    return EVP_PKEY_CTX_get_params(ctx->VerifyContext(), params) == 1;
  }
  OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);
  if (p != nullptr && !AlgorithmId(ctx, p)) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST);
  if (p != nullptr &&
      !OSSL_PARAM_set_utf8_string(
          p, ctx->md != nullptr ? EVP_MD_get0_name(ctx->md) : "")) {
    return 0;
  }
  if (ctx->key->type == KeyType::kRsa) {
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p != nullptr && !SetPadding(p, ctx->padding)) {
      return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p != nullptr && !SetSaltLength(p, ctx->salt_length)) {
      return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
    if (p != nullptr) {
      const char *mgf1 =
          ctx->mgf1_digest.empty()
              ? (ctx->md != nullptr ? EVP_MD_get0_name(ctx->md) : "")
              : ctx->mgf1_digest.c_str();
      if (!OSSL_PARAM_set_utf8_string(p, mgf1)) {
        return 0;
      }
    }
  }
  return 1;
}

const OSSL_PARAM *SettableCtxParams(void *vctx, void *provctx) {
  static const OSSL_PARAM kSettable[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kSettable;
}

const OSSL_PARAM *GettableCtxParams(void *vctx, void *provctx) {
  static const OSSL_PARAM kGettable[] = {
      OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kGettable;
}

// Common start of every operation on |keydata|.
bool Begin(SignatureCtx *ctx, void *keydata, int operation) {
  auto *key = static_cast<ProviderKey *>(keydata);
  ctx->Reset();
  ctx->key = key;
  ctx->operation = operation;
  ctx->padding =
      key->type == KeyType::kRsa ? RSA_PKCS1_PADDING : protocol::kPaddingNone;
  ctx->salt_length = RSA_PSS_SALTLEN_AUTO;
  ctx->mgf1_digest.clear();
  if (key->public_key == nullptr) {
    Fail(Code::kInvalidArgument, "the key object is empty");
    return false;
  }
  if (operation == EVP_PKEY_OP_SIGN && key->handle == nullptr) {
    Fail(Code::kInvalidArgument,
         "the key is a public key; signing needs a cell private key");
    return false;
  }
  return true;
}

// Sends |input|, a digest or for EdDSA the message, to the cell.
int SignInCell(SignatureCtx *ctx, unsigned char *sig, size_t *siglen,
               size_t sigsize, const unsigned char *input, size_t length) {
  protocol::SignRequest request;
  std::string digest;
  if (ctx->md != nullptr) {
    digest = EVP_MD_get0_name(ctx->md);
  }
  request.digest = digest;
  request.padding = static_cast<uint8_t>(
      ctx->key->type == KeyType::kRsa ? ctx->padding : protocol::kPaddingNone);
  request.salt_length = ctx->salt_length;
  request.mgf1_digest = ctx->mgf1_digest;
  request.input = {input, length};
  return ctx->key->handle->Sign(request, sig, siglen, sigsize) ? 1 : 0;
}

int SignatureSize(SignatureCtx *ctx, size_t *siglen) {
  int size = EVP_PKEY_get_size(ctx->key->public_key);
  if (size <= 0) {
    Fail(Code::kInvalidArgument, "cannot tell the signature size");
    return 0;
  }
  *siglen = static_cast<size_t>(size);
  return 1;
}

int SignInit(void *vctx, void *keydata, const OSSL_PARAM params[]) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  return Begin(ctx, keydata, EVP_PKEY_OP_SIGN) && SetSignParams(ctx, params);
}

int Sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
         const unsigned char *tbs, size_t tbslen) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (sig == nullptr) {
    return SignatureSize(ctx, siglen);
  }
  if (ctx->md != nullptr &&
      tbslen != static_cast<size_t>(EVP_MD_get_size(ctx->md))) {
    Fail(Code::kInvalidArgument,
         "the input is not a digest of the signature's digest type");
    return 0;
  }
  return SignInCell(ctx, sig, siglen, sigsize, tbs, tbslen);
}

int VerifyInit(void *vctx, void *keydata, const OSSL_PARAM params[]) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (!Begin(ctx, keydata, EVP_PKEY_OP_VERIFY)) {
    return 0;
  }
  ctx->verify_pkey = EVP_PKEY_CTX_new_from_pkey(
      ctx->libctx, ctx->key->public_key, kOtherProviders);
  return ctx->verify_pkey != nullptr &&
         EVP_PKEY_verify_init_ex(ctx->verify_pkey, params) == 1;
}

int Verify(void *vctx, const unsigned char *sig, size_t siglen,
           const unsigned char *tbs, size_t tbslen) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  return EVP_PKEY_verify(ctx->verify_pkey, sig, siglen, tbs, tbslen);
}

int DigestSignInit(void *vctx, const char *mdname, void *keydata,
                   const OSSL_PARAM params[]) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (!Begin(ctx, keydata, EVP_PKEY_OP_SIGN)) {
    return 0;
  }
  // RSA and ECDSA default to SHA-256, as OpenSSL's own keys do.
  if (!ctx->eddsa() && (mdname == nullptr || mdname[0] == '\0')) {
    mdname = "SHA256";
  }
  return SetDigest(ctx, mdname, nullptr) && SetSignParams(ctx, params);
}

bool StartHash(SignatureCtx *ctx) {
  if (ctx->hash != nullptr) {
    return true;
  }
  ctx->hash = EVP_MD_CTX_new();
  if (ctx->hash == nullptr ||
      EVP_DigestInit_ex2(ctx->hash, ctx->md, nullptr) != 1) {
    Fail(Code::kOperationFailed, "cannot start the digest");
    return false;
  }
  return true;
}

int DigestSignUpdate(void *vctx, const unsigned char *data, size_t length) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (ctx->eddsa()) {
    Fail(Code::kInvalidArgument,
         "EdDSA signs a whole message in one EVP_DigestSign call");
    return 0;
  }
  return StartHash(ctx) && EVP_DigestUpdate(ctx->hash, data, length) == 1;
}

int DigestSignFinal(void *vctx, unsigned char *sig, size_t *siglen,
                    size_t sigsize) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (sig == nullptr) {
    return SignatureSize(ctx, siglen);
  }
  if (ctx->eddsa()) {
    Fail(Code::kInvalidArgument,
         "EdDSA signs a whole message in one EVP_DigestSign call");
    return 0;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!StartHash(ctx) || EVP_DigestFinal_ex(ctx->hash, digest, &length) != 1) {
    return 0;
  }
  return SignInCell(ctx, sig, siglen, sigsize, digest, length);
}

int DigestSign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
               const unsigned char *tbs, size_t tbslen) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (sig == nullptr) {
    return SignatureSize(ctx, siglen);
  }
  if (ctx->eddsa()) {
    return SignInCell(ctx, sig, siglen, sigsize, tbs, tbslen);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(tbs, tbslen, digest, &length, ctx->md, nullptr) != 1) {
    Fail(Code::kOperationFailed, "hashing the message failed");
    return 0;
  }
  return SignInCell(ctx, sig, siglen, sigsize, digest, length);
}

int DigestVerifyInit(void *vctx, const char *mdname, void *keydata,
                     const OSSL_PARAM params[]) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  if (!Begin(ctx, keydata, EVP_PKEY_OP_VERIFY)) {
    return 0;
  }
  ctx->verify_md = EVP_MD_CTX_new();
  if (mdname != nullptr && mdname[0] == '\0') {
    mdname = nullptr;
  }
  return ctx->verify_md != nullptr &&
         EVP_DigestVerifyInit_ex(ctx->verify_md, nullptr, mdname, ctx->libctx,
                                 kOtherProviders, ctx->key->public_key,
                                 params) == 1;
}

int DigestVerifyUpdate(void *vctx, const unsigned char *data, size_t length) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  return EVP_DigestVerifyUpdate(ctx->verify_md, data, length);
}

int DigestVerifyFinal(void *vctx, const unsigned char *sig, size_t siglen) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  return EVP_DigestVerifyFinal(ctx->verify_md, sig, siglen);
}

int DigestVerify(void *vctx, const unsigned char *sig, size_t siglen,
                 const unsigned char *tbs, size_t tbslen) {
  auto *ctx = static_cast<SignatureCtx *>(vctx);
  return EVP_DigestVerify(ctx->verify_md, sig, siglen, tbs, tbslen);
}

template <typename Function>
OSSL_DISPATCH Entry(int id, Function *function) {
  return {id, reinterpret_cast<void (*)()>(function)};
}

}  // namespace

const OSSL_DISPATCH kSignatureFunctions[] = {
    Entry(OSSL_FUNC_SIGNATURE_NEWCTX, NewCtx),
    Entry(OSSL_FUNC_SIGNATURE_FREECTX, FreeCtx),
    Entry(OSSL_FUNC_SIGNATURE_DUPCTX, DupCtx),
    Entry(OSSL_FUNC_SIGNATURE_SIGN_INIT, SignInit),
    Entry(OSSL_FUNC_SIGNATURE_SIGN, Sign),
    Entry(OSSL_FUNC_SIGNATURE_VERIFY_INIT, VerifyInit),
    Entry(OSSL_FUNC_SIGNATURE_VERIFY, Verify),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, DigestSignInit),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, DigestSignUpdate),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, DigestSignFinal),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, DigestSign),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, DigestVerifyInit),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, DigestVerifyUpdate),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, DigestVerifyFinal),
    Entry(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, DigestVerify),
    Entry(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, GetCtxParams),
    Entry(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, GettableCtxParams),
    Entry(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, SetCtxParams),
    Entry(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, SettableCtxParams),
    {0, nullptr},
};

}  // namespace kc::provider
