// The operations that only the loadable module, keycell.so, provides.
#ifndef KEYCELL_PROVIDER_MODULE_H
#define KEYCELL_PROVIDER_MODULE_H

#include <openssl/core.h>

namespace kc::provider {

// The decoders of reference files, one per key type.
const OSSL_ALGORITHM *DecoderAlgorithms();

// The OSSL_STORE loader of "keycell:" URIs.
const OSSL_ALGORITHM *StoreAlgorithms();

}  // namespace kc::provider

#endif  // KEYCELL_PROVIDER_MODULE_H
