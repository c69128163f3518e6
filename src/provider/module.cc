// The entry point of keycell.so, the provider as a loadable module.
#include <openssl/core_dispatch.h>

#include "provider/module.h"
#include "provider/provider.h"

namespace kc::provider {
namespace {

const OSSL_ALGORITHM *ModuleAlgorithms(int operation_id) {
  switch (operation_id) {
    case OSSL_OP_DECODER:
      return DecoderAlgorithms();
    case OSSL_OP_STORE:
      return StoreAlgorithms();
    default:
      return nullptr;
  }
}

}  // namespace
}  // namespace kc::provider

extern "C" __attribute__((visibility("default"))) int OSSL_provider_init(
    const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
    const OSSL_DISPATCH **out, void **provctx) {
  kc::provider::ProviderSetup setup;
  setup.properties = kc::provider::kModuleProperties;
  setup.child_libctx = true;
  setup.extra_algorithms = kc::provider::ModuleAlgorithms;
  return kc::provider::InitProvider(handle, in, out, provctx, setup);
}
