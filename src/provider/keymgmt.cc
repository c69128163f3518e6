// Key management for cell keys. Public parameters, matching and export come
// from the key's public half, an ordinary key of another provider. The
// private half cannot be exported, and that refusal is what makes OpenSSL
// route every private operation on the key to this provider.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include <atomic>
#include <utility>

#include "provider/key.h"
#include "provider/provider.h"

namespace kc::provider {
namespace {

using protocol::KeyType;

constexpr int kKeyTypeCount = 5;  // Indexed by KeyType's values.

OSSL_LIB_CTX *LibCtx(void *provctx) {
  return static_cast<ProviderContext *>(provctx)->libctx;
}

// Another provider's keymgmt for |type|, fetched once. It describes the
// parameters that the public half returns.
EVP_KEYMGMT *PublicKeymgmt(void *provctx, KeyType type) {
  static std::atomic<EVP_KEYMGMT *> cache[kKeyTypeCount];
  std::atomic<EVP_KEYMGMT *> &slot = cache[static_cast<int>(type)];
  EVP_KEYMGMT *keymgmt = slot.load();
  if (keymgmt != nullptr) {
    return keymgmt;
  }
  keymgmt = EVP_KEYMGMT_fetch(LibCtx(provctx), protocol::KeyTypeName(type),
                              kOtherProviders);
  EVP_KEYMGMT *expected = nullptr;
  if (keymgmt != nullptr && !slot.compare_exchange_strong(expected, keymgmt)) {
    EVP_KEYMGMT_free(keymgmt);
    keymgmt = expected;
  }
  return keymgmt;
}

template <KeyType kType>
void *NewKey(void *provctx) {
  return new ProviderKey(kType, LibCtx(provctx));
}

void FreeKey(void *keydata) {
  delete static_cast<ProviderKey *>(keydata);
}

int HasKey(const void *keydata, int selection) {
  const auto *key = static_cast<const ProviderKey *>(keydata);
  if (key == nullptr) {
    return 0;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0 &&
      key->public_key == nullptr) {
    return 0;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 &&
      key->handle == nullptr) {
    return 0;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0 &&
      key->type == KeyType::kEc && key->public_key == nullptr) {
    return 0;
  }
  return 1;
}

int MatchKeys(const void *first, const void *second, int selection) {
  const auto *a = static_cast<const ProviderKey *>(first);
  const auto *b = static_cast<const ProviderKey *>(second);
  if (a->type != b->type || a->public_key == nullptr ||
      b->public_key == nullptr) {
    return 0;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0) {
    // A private key is identified by its public half.
    return EVP_PKEY_eq(a->public_key, b->public_key) == 1;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) != 0) {
    return EVP_PKEY_parameters_eq(a->public_key, b->public_key) == 1;
  }
  return 1;
}

// Sets the public half from a DER SubjectPublicKeyInfo.
int ImportCellKey(ProviderKey *key, const OSSL_PARAM *token_param,
                  const OSSL_PARAM params[]) {
  uint64_t token = 0;
  const OSSL_PARAM *public_param =
      OSSL_PARAM_locate_const(params, kParamPublicKey);
  const void *der = nullptr;
  size_t der_length = 0;
  if (!OSSL_PARAM_get_uint64(token_param, &token) || public_param == nullptr ||
      !OSSL_PARAM_get_octet_string_ptr(public_param, &der, &der_length)) {
    RaiseError(Status(Code::kInvalidArgument,
                      "a cell key import needs a handle token and a public "
                      "key"));
    return 0;
  }
  std::shared_ptr<CellKeyHandle> handle = ClaimHandle(token);
  if (handle == nullptr) {
    RaiseError(Status(Code::kInvalidArgument, "unknown cell key handle"));
    return 0;
  }
  const auto *cursor = static_cast<const unsigned char *>(der);
  // The decoder tries several structures and leaves errors for the ones
  // that did not match; only a failure overall is worth reporting.
  ERR_set_mark();
  EVP_PKEY *public_key =
      d2i_PUBKEY_ex(nullptr, &cursor, static_cast<long>(der_length),
                    key->libctx, kOtherProviders);
  ERR_pop_to_mark();
  if (public_key == nullptr ||
      !EVP_PKEY_is_a(public_key, protocol::KeyTypeName(key->type))) {
    EVP_PKEY_free(public_key);
    RaiseError(Status(Code::kProtocol,
                      "the cell returned a public key of the wrong type"));
    return 0;
  }
  EVP_PKEY_free(key->public_key);
  key->public_key = public_key;
  key->handle = std::move(handle);
  return 1;
}

template <KeyType kType>
int ImportKey(void *keydata, int selection, const OSSL_PARAM params[]) {
  auto *key = static_cast<ProviderKey *>(keydata);
  const OSSL_PARAM *token = OSSL_PARAM_locate_const(params, kParamHandleToken);
  if (token != nullptr) {
    return ImportCellKey(key, token, params);
  }
  // Anything else must be a public key, as OpenSSL exports one when it
  // compares an ordinary key with a cell key. A private key is rejected:
  // OpenSSL also offers an ordinary private key to this keymgmt when it
  // tries this provider's operations, and must then fall back to its own.
  if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0 ||
      OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != nullptr ||
      OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != nullptr) {
    return 0;
  }
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(
      key->libctx, protocol::KeyTypeName(kType), kOtherProviders);
  EVP_PKEY *public_key = nullptr;
  int ok = ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
           EVP_PKEY_fromdata(ctx, &public_key, EVP_PKEY_PUBLIC_KEY,
                             const_cast<OSSL_PARAM *>(params)) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) {
    return 0;
  }
  EVP_PKEY_free(key->public_key);
  key->public_key = public_key;
  return 1;
}

template <KeyType kType>
const OSSL_PARAM *ImportTypes(int selection) {
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(
      nullptr, protocol::KeyTypeName(kType), kOtherProviders);
  const OSSL_PARAM *types = nullptr;
  if (ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1) {
    // The list is static in the provider that returns it.
    types = EVP_PKEY_fromdata_settable(
        ctx, selection & ~OSSL_KEYMGMT_SELECT_PRIVATE_KEY);
  }
  EVP_PKEY_CTX_free(ctx);
  return types;
}

int ExportKey(void *keydata, int selection, OSSL_CALLBACK *callback,
              void *callback_arg) {
  auto *key = static_cast<ProviderKey *>(keydata);
  // Refusing silently is part of normal operation: OpenSSL tries an export
  // to its own provider first and falls back to this provider's operations
  // when it fails.
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 ||
      key->public_key == nullptr) {
    return 0;
  }
  OSSL_PARAM *params = nullptr;
  if (EVP_PKEY_todata(key->public_key, selection, &params) != 1) {
    return 0;
  }
  int ok = callback(params, callback_arg);
  OSSL_PARAM_free(params);
  return ok;
}

int GetKeyParams(void *keydata, OSSL_PARAM params[]) {
  auto *key = static_cast<ProviderKey *>(keydata);
  if (key->public_key == nullptr) {
    return 0;
  }
  // keycell's own API reaches the cell key behind an EVP_PKEY this way;
  // the caller claims the token at once and withdraws it.
  OSSL_PARAM *token = OSSL_PARAM_locate(params, kParamHandleToken);
  if (token != nullptr && key->handle != nullptr &&
      !OSSL_PARAM_set_uint64(token, OfferHandle(key->handle))) {
    return 0;
  }
  return EVP_PKEY_get_params(key->public_key, params);
}

template <KeyType kType>
const OSSL_PARAM *GettableKeyParams(void *provctx) {
  EVP_KEYMGMT *keymgmt = PublicKeymgmt(provctx, kType);
  return keymgmt == nullptr ? nullptr : EVP_KEYMGMT_gettable_params(keymgmt);
}

template <KeyType kType>
const char *QueryOperationName(int operation_id) {
  switch (operation_id) {
    case OSSL_OP_SIGNATURE:
      return kType == KeyType::kEc ? "ECDSA" : protocol::KeyTypeName(kType);
    case OSSL_OP_ASYM_CIPHER:
      return kType == KeyType::kRsa ? "RSA" : nullptr;
    default:
      return nullptr;
  }
}

void *DupKey(const void *keydata, int selection) {
  const auto *key = static_cast<const ProviderKey *>(keydata);
  auto *copy = new ProviderKey(key->type, key->libctx);
  if (key->public_key != nullptr) {
    EVP_PKEY_up_ref(key->public_key);
    copy->public_key = key->public_key;
  }
  if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    copy->handle = key->handle;
  }
  return copy;
}

// Takes over the keydata that this provider's decoder or store loader
// passes by reference: the address of a ProviderKey pointer, which is
// cleared so that the caller does not free the key.
template <KeyType kType>
void *LoadKey(const void *reference, size_t reference_size) {
  if (reference == nullptr || reference_size != sizeof(ProviderKey *)) {
    return nullptr;
  }
  auto **slot = static_cast<ProviderKey **>(const_cast<void *>(reference));
  if (*slot == nullptr || (*slot)->type != kType) {
    return nullptr;
  }
  return std::exchange(*slot, nullptr);
}

template <KeyType kType>
const OSSL_DISPATCH kKeymgmtFunctions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, reinterpret_cast<void (*)()>(NewKey<kType>)},
    {OSSL_FUNC_KEYMGMT_FREE, reinterpret_cast<void (*)()>(FreeKey)},
    {OSSL_FUNC_KEYMGMT_HAS, reinterpret_cast<void (*)()>(HasKey)},
    {OSSL_FUNC_KEYMGMT_MATCH, reinterpret_cast<void (*)()>(MatchKeys)},
    {OSSL_FUNC_KEYMGMT_IMPORT, reinterpret_cast<void (*)()>(ImportKey<kType>)},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES,
     reinterpret_cast<void (*)()>(ImportTypes<kType>)},
    {OSSL_FUNC_KEYMGMT_EXPORT, reinterpret_cast<void (*)()>(ExportKey)},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES,
     reinterpret_cast<void (*)()>(ImportTypes<kType>)},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, reinterpret_cast<void (*)()>(GetKeyParams)},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS,
     reinterpret_cast<void (*)()>(GettableKeyParams<kType>)},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,
     reinterpret_cast<void (*)()>(QueryOperationName<kType>)},
    {OSSL_FUNC_KEYMGMT_DUP, reinterpret_cast<void (*)()>(DupKey)},
    {OSSL_FUNC_KEYMGMT_LOAD, reinterpret_cast<void (*)()>(LoadKey<kType>)},
    {0, nullptr},
};

}  // namespace

const OSSL_DISPATCH *KeymgmtFunctions(KeyType type) {
  switch (type) {
    case KeyType::kRsa:
      return kKeymgmtFunctions<KeyType::kRsa>;
    case KeyType::kEc:
      return kKeymgmtFunctions<KeyType::kEc>;
    case KeyType::kEd25519:
      return kKeymgmtFunctions<KeyType::kEd25519>;
    case KeyType::kEd448:
      return kKeymgmtFunctions<KeyType::kEd448>;
  }
  return nullptr;
}

}  // namespace kc::provider
