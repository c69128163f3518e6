#include "provider/daemon_key.h"

#include <openssl/async.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/x509.h>

namespace kc::provider {

DaemonKey::DaemonKey(std::shared_ptr<client::DaemonClient> client,
                     std::string key_name, std::vector<uint8_t> public_key)
    : client_(std::move(client)),
      key_name_(std::move(key_name)),
      public_key_(std::move(public_key)) {}

Status DaemonKey::Call(protocol::SignRequest request, client::Reply &reply) {
  if (ASYNC_get_current_job() != nullptr) {
    return client_->CallPipelined(key_name_, public_key_, request, reply,
                                  WaitInJob);
  }
  return client_->Call(key_name_, public_key_, request, reply);
}

Status DaemonKey::Call(protocol::DecryptRequest request, client::Reply &reply) {
  if (ASYNC_get_current_job() != nullptr) {
    return client_->CallPipelined(key_name_, public_key_, request, reply,
                                  WaitInJob);
  }
  return client_->Call(key_name_, public_key_, request, reply);
}

Result<std::shared_ptr<client::PendingOperation>> DaemonKey::Submit(
    protocol::SignRequest request) {
  return Status(Code::kInvalidArgument,
                "keycelld keys do not support asynchronous operations");
}

Result<std::shared_ptr<client::PendingOperation>> DaemonKey::Submit(
    protocol::DecryptRequest request) {
  return Status(Code::kInvalidArgument,
                "keycelld keys do not support asynchronous operations");
}

Result<protocol::KeyType> ParsePublicKey(OSSL_LIB_CTX *libctx,
                                         const std::string &key_name,
                                         std::span<const uint8_t> public_key,
                                         EVP_PKEY **pkey) {
  const unsigned char *cursor = public_key.data();
  // The decoder tries several structures and leaves errors for the ones
  // that did not match; only a failure overall is worth reporting.
  ERR_set_mark();
  EVP_PKEY *parsed =
      d2i_PUBKEY_ex(nullptr, &cursor, static_cast<long>(public_key.size()),
                    libctx, kOtherProviders);
  ERR_pop_to_mark();
  if (parsed == nullptr || cursor != public_key.data() + public_key.size()) {
    EVP_PKEY_free(parsed);
    return Status(Code::kInvalidArgument,
                  "the public key of key '" + key_name +
                      "' is not a valid DER SubjectPublicKeyInfo");
  }
  for (protocol::KeyType type :
       {protocol::KeyType::kRsa, protocol::KeyType::kEc,
        protocol::KeyType::kEd25519, protocol::KeyType::kEd448}) {
    if (EVP_PKEY_is_a(parsed, protocol::KeyTypeName(type))) {
      if (pkey != nullptr) {
        *pkey = parsed;
      } else {
        EVP_PKEY_free(parsed);
      }
      return type;
    }
  }
  std::string type_name = EVP_PKEY_get0_type_name(parsed) != nullptr
                              ? EVP_PKEY_get0_type_name(parsed)
                              : "unknown";
  EVP_PKEY_free(parsed);
  return Status(Code::kInvalidArgument,
                "key '" + key_name + "' has the unsupported key type " +
                    type_name + "; keycell supports RSA, EC, ED25519, ED448");
}

Result<ProviderKey *> NewDaemonKey(OSSL_LIB_CTX *libctx,
                                   const std::string &socket_path,
                                   const std::string &key_name,
                                   std::span<const uint8_t> public_key) {
  EVP_PKEY *pkey = nullptr;
  Result<protocol::KeyType> type =
      ParsePublicKey(libctx, key_name, public_key, &pkey);
  if (!type.ok()) {
    return type.status();
  }
  auto *key = new ProviderKey(*type, libctx);
  key->public_key = pkey;
  key->handle = std::make_shared<CellKeyHandle>(std::make_unique<DaemonKey>(
      client::DaemonClient::ForSocket(socket_path), key_name,
      std::vector<uint8_t>(public_key.begin(), public_key.end())));
  return key;
}

void ObjectParams(ProviderKey **key, OSSL_PARAM params[4]) {
  static int object_type = OSSL_OBJECT_PKEY;
  params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type);
  params[1] = OSSL_PARAM_construct_utf8_string(
      OSSL_OBJECT_PARAM_DATA_TYPE,
      const_cast<char *>(protocol::KeyTypeName((*key)->type)), 0);
  params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE,
                                                key, sizeof(*key));
  params[3] = OSSL_PARAM_construct_end();
}

}  // namespace kc::provider
