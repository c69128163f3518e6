#include "provider/params.h"

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include <charconv>
#include <string>
#include <string_view>

namespace kc::provider {
namespace {

struct NamedValue {
  std::string_view name;
  int value;
};

constexpr NamedValue kPaddings[] = {
    {OSSL_PKEY_RSA_PAD_MODE_NONE, RSA_NO_PADDING},
    {OSSL_PKEY_RSA_PAD_MODE_PKCSV15, RSA_PKCS1_PADDING},
    {OSSL_PKEY_RSA_PAD_MODE_OAEP, RSA_PKCS1_OAEP_PADDING},
    {OSSL_PKEY_RSA_PAD_MODE_X931, RSA_X931_PADDING},
    {OSSL_PKEY_RSA_PAD_MODE_PSS, RSA_PKCS1_PSS_PADDING},
};

constexpr NamedValue kSaltLengths[] = {
    {OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST, RSA_PSS_SALTLEN_DIGEST},
    {OSSL_PKEY_RSA_PSS_SALT_LEN_MAX, RSA_PSS_SALTLEN_MAX},
    {OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO, RSA_PSS_SALTLEN_AUTO},
};

template <size_t N>
bool GetNamed(const OSSL_PARAM *param, const NamedValue (&table)[N],
              bool allow_number, int *out) {
  if (param->data_type != OSSL_PARAM_UTF8_STRING) {
    return OSSL_PARAM_get_int(param, out) == 1;
  }
  const char *text = nullptr;
  if (OSSL_PARAM_get_utf8_string_ptr(param, &text) != 1) {
    return false;
  }
  std::string_view name(text);
  for (const NamedValue &entry : table) {
    if (entry.name == name) {
      *out = entry.value;
      return true;
    }
  }
  if (!allow_number) {
    return false;
  }
  int value = 0;
  auto [end, error] =
      std::from_chars(name.data(), name.data() + name.size(), value);
  if (error != std::errc() || end != name.data() + name.size() || value < 0) {
    return false;
  }
  *out = value;
  return true;
}

template <size_t N>
bool SetNamed(OSSL_PARAM *param, const NamedValue (&table)[N], int value) {
  if (param->data_type != OSSL_PARAM_UTF8_STRING) {
    return OSSL_PARAM_set_int(param, value) == 1;
  }
  for (const NamedValue &entry : table) {
    if (entry.value == value) {
      return OSSL_PARAM_set_utf8_string(param, entry.name.data()) == 1;
    }
  }
  return OSSL_PARAM_set_utf8_string(param, std::to_string(value).c_str()) == 1;
}

}  // namespace

bool GetPadding(const OSSL_PARAM *param, int *padding) {
  return GetNamed(param, kPaddings, false, padding);
}

bool SetPadding(OSSL_PARAM *param, int padding) {
  return SetNamed(param, kPaddings, padding);
}

bool GetSaltLength(const OSSL_PARAM *param, int *salt_length) {
  return GetNamed(param, kSaltLengths, true, salt_length);
}

bool SetSaltLength(OSSL_PARAM *param, int salt_length) {
  return SetNamed(param, kSaltLengths, salt_length);
}

}  // namespace kc::provider
