#include "provider/provider.h"

#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include <mutex>

#include "provider/embedded_key.h"
#include "provider/key.h"

namespace kc::provider {
namespace {

int BuiltinInit(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                const OSSL_DISPATCH **out, void **provctx) {
  ProviderSetup setup;
  setup.properties = kEmbeddedProperties;
  return InitProvider(handle, in, out, provctx, setup);
}

std::once_flag load_once;
Status load_status;

}  // namespace

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
    if (OSSL_PROVIDER_add_builtin(nullptr, kEmbeddedProviderName,
                                  BuiltinInit) != 1) {
      load_status = Status(Code::kInternal,
                           "cannot register the keycell OpenSSL provider");
      return;
    }
    // retain_fallbacks=1: loading this provider must not switch off the
    // default provider that the server relies on for everything else.
    if (OSSL_PROVIDER_try_load(nullptr, kEmbeddedProviderName, 1) == nullptr) {
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
  auto handle = std::make_shared<CellKeyHandle>(
      std::make_unique<EmbeddedKey>(std::move(cell), key_id, transport));
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
      EVP_PKEY_CTX_new_from_name(nullptr, name, kEmbeddedProperties);
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
         std::string_view(OSSL_PROVIDER_get0_name(provider)) ==
             kEmbeddedProviderName;
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
