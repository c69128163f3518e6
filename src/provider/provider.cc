#include "provider/provider.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include <cstdarg>
#include <mutex>

#include "provider/key.h"

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

const char *kProperties = "provider=keycell";

// The names are those of OpenSSL's own key types, so that libssl and the
// legacy ASN.1 methods treat a cell key as the type it is.
const OSSL_ALGORITHM *KeymgmtAlgorithms() {
  static const OSSL_ALGORITHM kKeymgmt[] = {
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProperties,
       KeymgmtFunctions(protocol::KeyType::kRsa),
       "RSA key held by a keycell cell"},
      {"EC:id-ecPublicKey:1.2.840.10045.2.1", kProperties,
       KeymgmtFunctions(protocol::KeyType::kEc),
       "EC key held by a keycell cell"},
      {"ED25519:1.3.101.112", kProperties,
       KeymgmtFunctions(protocol::KeyType::kEd25519),
       "Ed25519 key held by a keycell cell"},
      {"ED448:1.3.101.113", kProperties,
       KeymgmtFunctions(protocol::KeyType::kEd448),
       "Ed448 key held by a keycell cell"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  return kKeymgmt;
}

const OSSL_ALGORITHM kSignature[] = {
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProperties, kSignatureFunctions,
     "RSA signatures in a keycell cell"},
    {"ECDSA", kProperties, kSignatureFunctions,
     "ECDSA signatures in a keycell cell"},
    {"ED25519:1.3.101.112", kProperties, kSignatureFunctions,
     "Ed25519 signatures in a keycell cell"},
    {"ED448:1.3.101.113", kProperties, kSignatureFunctions,
     "Ed448 signatures in a keycell cell"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM kAsymCipher[] = {
    {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProperties,
     kAsymCipherFunctions, "RSA decryption in a keycell cell"},
    {nullptr, nullptr, nullptr, nullptr},
};

const OSSL_ALGORITHM *QueryOperation(void *provctx, int operation_id,
                                     int *no_store) {
  *no_store = 0;
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return KeymgmtAlgorithms();
    case OSSL_OP_SIGNATURE:
      return kSignature;
    case OSSL_OP_ASYM_CIPHER:
      return kAsymCipher;
    default:
      return nullptr;
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
  delete static_cast<ProviderContext *>(provctx);
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

int ProviderInit(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                 const OSSL_DISPATCH **out, void **provctx) {
  OSSL_FUNC_core_get_libctx_fn *get_libctx = nullptr;
  for (; in->function_id != 0; ++in) {
    switch (in->function_id) {
      case OSSL_FUNC_CORE_GET_LIBCTX:
        get_libctx = OSSL_FUNC_core_get_libctx(in);
        break;
      case OSSL_FUNC_CORE_NEW_ERROR:
        core_new_error = OSSL_FUNC_core_new_error(in);
        break;
      case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
        core_set_error_debug = OSSL_FUNC_core_set_error_debug(in);
        break;
      case OSSL_FUNC_CORE_VSET_ERROR:
        core_vset_error = OSSL_FUNC_core_vset_error(in);
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
  // A built-in provider shares libcrypto with its core, so the core's
  // context is the library context itself.
  context->libctx = reinterpret_cast<OSSL_LIB_CTX *>(get_libctx(handle));
  core_handle = handle;
  *provctx = context;
  *out = kProviderFunctions;
  return 1;
}

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

std::once_flag load_once;
Status load_status;

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

Status EnsureLoaded() {
  std::call_once(load_once, [] {
    // A fetch without a property query returns the implementation that
    // entered OpenSSL's method store first (OpenSSL 3.0). Fetching the
    // other providers' implementations of this provider's algorithm names
    // before it loads keeps them first. Otherwise an SSL_CTX created later
    // takes this provider's "EC" keymgmt for its group list, finds that it
    // supports no group, and cannot offer ECDSA certificates in TLS 1.2.
    for (const char *name : {"RSA", "EC", "ED25519", "ED448"}) {
      ERR_set_mark();
      EVP_KEYMGMT_free(EVP_KEYMGMT_fetch(nullptr, name, nullptr));
      EVP_SIGNATURE_free(EVP_SIGNATURE_fetch(
          nullptr, std::string_view(name) == "EC" ? "ECDSA" : name, nullptr));
      ERR_pop_to_mark();
    }
    EVP_ASYM_CIPHER_free(EVP_ASYM_CIPHER_fetch(nullptr, "RSA", nullptr));
    if (OSSL_PROVIDER_add_builtin(nullptr, kProviderName, ProviderInit) != 1) {
      load_status = Status(Code::kInternal,
                           "cannot register the keycell OpenSSL provider");
      return;
    }
    // retain_fallbacks=1: loading this provider must not switch off the
    // default provider that the server relies on for everything else.
    if (OSSL_PROVIDER_try_load(nullptr, kProviderName, 1) == nullptr) {
      load_status =
          Status(Code::kInternal, "cannot load the keycell OpenSSL provider");
    }
  });
  return load_status;
}

Result<EVP_PKEY *> NewCellKey(std::shared_ptr<client::CellClient> cell,
                              uint32_t key_id, protocol::KeyType type,
                              std::span<const uint8_t> public_key,
                              Transport transport) {
  const char *name = protocol::KeyTypeName(type);
  if (name == nullptr) {
    return Status(Code::kProtocol, "the cell returned an unknown key type");
  }
  auto handle =
      std::make_shared<CellKeyHandle>(std::move(cell), key_id, transport);
  uint64_t token = OfferHandle(handle);
  handle.reset();

  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_uint64(kParamHandleToken, &token),
      OSSL_PARAM_construct_octet_string(
          kParamPublicKey, const_cast<uint8_t *>(public_key.data()),
          public_key.size()),
      OSSL_PARAM_construct_end(),
  };
  EVP_PKEY *pkey = nullptr;
  EVP_PKEY_CTX *ctx =
      EVP_PKEY_CTX_new_from_name(nullptr, name, "provider=keycell");
  bool made = ctx != nullptr && EVP_PKEY_fromdata_init(ctx) == 1 &&
              EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) == 1;
  EVP_PKEY_CTX_free(ctx);
  WithdrawHandle(token);
  if (!made) {
    unsigned long error = ERR_peek_last_error();
    const char *reason = error != 0 ? ERR_reason_error_string(error) : nullptr;
    std::string message = "cannot create the EVP_PKEY of a cell key";
    if (reason != nullptr) {
      message += std::string(" (OpenSSL: ") + reason + ")";
    }
    ERR_clear_error();
    return Status(Code::kInternal, message);
  }
  return pkey;
}

bool IsCellKey(const EVP_PKEY *pkey) {
  if (pkey == nullptr) {
    return false;
  }
  const OSSL_PROVIDER *provider = EVP_PKEY_get0_provider(pkey);
  return provider != nullptr &&
         std::string_view(OSSL_PROVIDER_get0_name(provider)) == kProviderName;
}

std::shared_ptr<CellKeyHandle> HandleOf(const EVP_PKEY *pkey) {
  if (!IsCellKey(pkey)) {
    return nullptr;
  }
  uint64_t token = 0;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_uint64(kParamHandleToken, &token),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_PKEY_get_params(pkey, params) != 1 ||
      !OSSL_PARAM_modified(&params[0])) {
    return nullptr;
  }
  std::shared_ptr<CellKeyHandle> handle = ClaimHandle(token);
  WithdrawHandle(token);
  return handle;
}

}  // namespace kc::provider
