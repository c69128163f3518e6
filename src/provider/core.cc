#include "provider/provider.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>

#include <cstdarg>

namespace kc::provider {
namespace {

// Reason codes of the errors this provider raises.
enum Reason {
  kReasonCellGone = 1,
  kReasonTimedOut,
  kReasonOperationFailed,
  kReasonInvalidArgument,
  kReasonForbidden,
  kReasonProtocol,
  kReasonNoPrivateKey,
  kReasonUnknownKey,
};

const OSSL_ITEM kReasonStrings[] = {
    {kReasonCellGone, const_cast<char *>("cell process is not running")},
    {kReasonTimedOut, const_cast<char *>("cell did not reply in time")},
    {kReasonOperationFailed, const_cast<char *>("cell key operation failed")},
    {kReasonInvalidArgument, const_cast<char *>("invalid argument")},
    {kReasonForbidden,
     const_cast<char *>("operation not allowed for this cell key")},
    {kReasonProtocol, const_cast<char *>("cell protocol error")},
    {kReasonNoPrivateKey, const_cast<char *>("not a cell private key")},
    {kReasonUnknownKey, const_cast<char *>("cell does not hold the key")},
    {0, nullptr},
};

// The core's error functions, taken from the dispatch table at init.
OSSL_FUNC_core_new_error_fn *core_new_error = nullptr;
OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug = nullptr;
OSSL_FUNC_core_vset_error_fn *core_vset_error = nullptr;
const OSSL_CORE_HANDLE *core_handle = nullptr;

// The property definition of every algorithm, chosen at initialization.
const char *properties = kModuleProperties;

// The names are those of OpenSSL's own key types, so that libssl and the
// legacy ASN.1 methods treat a cell key as the type it is.
const OSSL_ALGORITHM *KeymgmtAlgorithms() {
  static const OSSL_ALGORITHM kKeymgmt[] = {
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", properties,
       KeymgmtFunctions(protocol::KeyType::kRsa),
       "RSA key held by a keycell cell"},
      {"EC:id-ecPublicKey:1.2.840.10045.2.1", properties,
       KeymgmtFunctions(protocol::KeyType::kEc),
       "EC key held by a keycell cell"},
      {"ED25519:1.3.101.112", properties,
       KeymgmtFunctions(protocol::KeyType::kEd25519),
       "Ed25519 key held by a keycell cell"},
      {"ED448:1.3.101.113", properties,
       KeymgmtFunctions(protocol::KeyType::kEd448),
       "Ed448 key held by a keycell cell"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  return kKeymgmt;
}

const OSSL_ALGORITHM *SignatureAlgorithms() {
  static const OSSL_ALGORITHM kSignature[] = {
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", properties,
       kSignatureFunctions, "RSA signatures in a keycell cell"},
      {"ECDSA", properties, kSignatureFunctions,
       "ECDSA signatures in a keycell cell"},
      {"ED25519:1.3.101.112", properties, kSignatureFunctions,
       "Ed25519 signatures in a keycell cell"},
      {"ED448:1.3.101.113", properties, kSignatureFunctions,
       "Ed448 signatures in a keycell cell"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  return kSignature;
}

const OSSL_ALGORITHM *AsymCipherAlgorithms() {
  static const OSSL_ALGORITHM kAsymCipher[] = {
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", properties,
       kAsymCipherFunctions, "RSA decryption in a keycell cell"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  return kAsymCipher;
}

// The decoder and store algorithms, present only in the loadable module.
const OSSL_ALGORITHM *(*extra_algorithms)(int operation_id) = nullptr;

const OSSL_ALGORITHM *QueryOperation(void *provctx, int operation_id,
                                     int *no_store) {
  *no_store = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return KeymgmtAlgorithms();
    case OSSL_OP_SIGNATURE:
      return SignatureAlgorithms();
    case OSSL_OP_ASYM_CIPHER:
      return AsymCipherAlgorithms();
    default:
      return extra_algorithms != nullptr ? extra_algorithms(operation_id)
                                         : nullptr;
  }
}

const OSSL_ITEM *GetReasonStrings(void *provctx) {
  return kReasonStrings;
}

const OSSL_PARAM *GettableParams(void *provctx) {
  static const OSSL_PARAM kGettable[] = {
      OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, nullptr, 0),
      OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, nullptr, 0),
      OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kGettable;
}

int GetParams(void *provctx, OSSL_PARAM params[]) {
  OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
  if (p != nullptr && !OSSL_PARAM_set_utf8_ptr(p, "keycell")) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
  if (p != nullptr && !OSSL_PARAM_set_utf8_ptr(p, KEYCELL_VERSION)) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
  if (p != nullptr && !OSSL_PARAM_set_int(p, 1)) {
    return 0;
  }
  return 1;
}

void Teardown(void *provctx) {
  auto *context = static_cast<ProviderContext *>(provctx);
  if (context->owns_libctx) {
    OSSL_LIB_CTX_free(context->libctx);
  }
  delete context;
}

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, reinterpret_cast<void (*)()>(Teardown)},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS,
     reinterpret_cast<void (*)()>(GettableParams)},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, reinterpret_cast<void (*)()>(GetParams)},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION,
     reinterpret_cast<void (*)()>(QueryOperation)},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS,
     reinterpret_cast<void (*)()>(GetReasonStrings)},
    {0, nullptr},
};

int ReasonFor(Code code) {
  switch (code) {
    case Code::kCellGone:
      return kReasonCellGone;
    case Code::kTimedOut:
      return kReasonTimedOut;
    case Code::kForbidden:
      return kReasonForbidden;
    case Code::kProtocol:
    case Code::kBadRequest:
    case Code::kUnsupportedVersion:
      return kReasonProtocol;
    case Code::kInvalidArgument:
      return kReasonInvalidArgument;
    case Code::kUnknownKey:
      return kReasonUnknownKey;
    default:
      return kReasonOperationFailed;
  }
}

void SetError(int reason, const char *format, ...) {
  va_list args;
  va_start(args, format);
  core_vset_error(core_handle, static_cast<uint32_t>(reason), format, args);
  va_end(args);
}

}  // namespace

void RaiseError(const Status &status) {
  if (core_new_error == nullptr || core_vset_error == nullptr) {
    return;
  }
  core_new_error(core_handle);
  if (core_set_error_debug != nullptr) {
    core_set_error_debug(core_handle, __FILE__, __LINE__, "keycell");
  }
  SetError(ReasonFor(status.code()), "%s", status.message().c_str());
}

int InitProvider(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                 const OSSL_DISPATCH **out, void **provctx,
                 const ProviderSetup &setup) {
  OSSL_FUNC_core_get_libctx_fn *get_libctx = nullptr;
  for (const OSSL_DISPATCH *entry = in; entry->function_id != 0; ++entry) {
    switch (entry->function_id) {
      case OSSL_FUNC_CORE_GET_LIBCTX:
        get_libctx = OSSL_FUNC_core_get_libctx(entry);
        break;
      case OSSL_FUNC_CORE_NEW_ERROR:
        core_new_error = OSSL_FUNC_core_new_error(entry);
        break;
      case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
        core_set_error_debug = OSSL_FUNC_core_set_error_debug(entry);
        break;
      case OSSL_FUNC_CORE_VSET_ERROR:
        core_vset_error = OSSL_FUNC_core_vset_error(entry);
        break;
      default:
        break;
    }
  }
  if (get_libctx == nullptr) {
    return 0;
  }
  auto *context = new ProviderContext;
  context->handle = handle;
  if (setup.child_libctx) {
    // A loaded module's calls into libcrypto must use the library context
    // that loaded it, which need not be the default one, so it works in a
    // child of that context. The child contains the parent's providers.
    context->libctx = OSSL_LIB_CTX_new_child(handle, in);
    if (context->libctx == nullptr) {
      delete context;
      return 0;
    }
    context->owns_libctx = true;
  } else {
    // A built-in provider shares libcrypto with its core, so the core's
    // context is the library context itself.
    context->libctx = reinterpret_cast<OSSL_LIB_CTX *>(get_libctx(handle));
  }
  properties = setup.properties;
  extra_algorithms = setup.extra_algorithms;
  core_handle = handle;
  *provctx = context;
  *out = kProviderFunctions;
  return 1;
}

}  // namespace kc::provider
