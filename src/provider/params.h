// Parsing of the RSA parameters that signature and asym_cipher contexts
// accept, in both the integer and the string forms OpenSSL sends.
#ifndef KEYCELL_PROVIDER_PARAMS_H
#define KEYCELL_PROVIDER_PARAMS_H

#include <openssl/params.h>

namespace kc::provider {

bool GetPadding(const OSSL_PARAM *param, int *padding);
bool SetPadding(OSSL_PARAM *param, int padding);
bool GetSaltLength(const OSSL_PARAM *param, int *salt_length);
bool SetSaltLength(OSSL_PARAM *param, int salt_length);

}  // namespace kc::provider

#endif  // KEYCELL_PROVIDER_PARAMS_H
