#include "cell/operations.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <memory>
#include <string>

#include "protocol/key_policy.h"

namespace kc::cell {
namespace {

using protocol::KeyType;

struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX *ctx) const { EVP_PKEY_CTX_free(ctx); }
};
using UniquePkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX *ctx) const { EVP_MD_CTX_free(ctx); }
};
using UniqueMdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// Returns |what| with the reason of the last OpenSSL error appended, and
// clears the queue.
Status OpenSslFailure(Code code, const std::string &what) {
  unsigned long error = ERR_peek_last_error();
  std::string message = what;
  if (error != 0) {
    const char *reason = ERR_reason_error_string(error);
    message += " (OpenSSL: ";
    message += reason != nullptr ? reason : "unknown error";
    message += ")";
  }
  ERR_clear_error();
  return Status(code, message);
}

// The parameters shared by signing and the verification that checks it.
class SignatureParams {
 public:
  explicit SignatureParams(const protocol::SignRequest &request)
      : digest_(request.digest), mgf1_(request.mgf1_digest) {
    padding_ = request.padding;
    salt_length_ = request.salt_length;
  }

  // Builds the OSSL_PARAM list; |for_verify| maps a sign-only salt length
  // to the one that accepts it.
  const OSSL_PARAM *Build(KeyType type, bool for_verify) {
    OSSL_PARAM *p = params_;
    if (!digest_.empty()) {
      *p++ = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST,
                                              digest_.data(), 0);
    }
    if (type == KeyType::kRsa && padding_ != protocol::kPaddingNone) {
      *p++ = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PAD_MODE, &padding_);
      if (padding_ == protocol::kPaddingPss) {
        verify_salt_length_ = salt_length_;
        if (for_verify && salt_length_ < RSA_PSS_SALTLEN_DIGEST) {
          verify_salt_length_ = RSA_PSS_SALTLEN_AUTO;
        }
        *p++ = OSSL_PARAM_construct_int(
            OSSL_SIGNATURE_PARAM_PSS_SALTLEN,
            for_verify ? &verify_salt_length_ : &salt_length_);
        if (!mgf1_.empty()) {
          *p++ = OSSL_PARAM_construct_utf8_string(
              OSSL_SIGNATURE_PARAM_MGF1_DIGEST, mgf1_.data(), 0);
        }
      }
    }
    *p = OSSL_PARAM_construct_end();
    return params_;
  }

 private:
  std::string digest_;
  std::string mgf1_;
  int padding_ = 0;
  int salt_length_ = 0;
  int verify_salt_length_ = 0;
  OSSL_PARAM params_[6];
};

Status PolicyRejects(const CellKey &key, const std::string &operation) {
  return Status(Code::kForbidden,
                "key '" + key.name + "' does not allow " + operation);
}

// Returns true if |bit|, the DigestBitOf a digest name, is in |digests|. A
// digest outside the table (bit 0) passes only the default list, which
// leaves it to OpenSSL to reject as before.
bool DigestAllowed(uint32_t digests, uint32_t bit) {
  return bit == 0 ? digests == protocol::kAllDigests : (digests & bit) != 0;
}

// Returns the policy table's name of a digest, such as SHA384 for a request
// that names SHA2-384, or the name as sent when it is not in the table.
std::string DisplayName(std::string_view name, uint32_t bit) {
  const char *table_name = protocol::DigestName(bit);
  return table_name != nullptr ? table_name : std::string(name);
}

// Checks |request| against the digests and paddings of the key's policy.
// EdDSA hashes with its own fixed digest, so neither list applies to it.
Status CheckSignPolicy(const CellKey &key,
                       const protocol::SignRequest &request) {
  const protocol::KeyPolicy &policy = key.policy;
  if (!policy.allow_sign) {
    return PolicyRejects(key, "signing");
  }
  if (key.type == KeyType::kEd25519 || key.type == KeyType::kEd448) {
    return Status::Ok();
  }
  bool pss = request.padding == protocol::kPaddingPss;
  if (key.type == KeyType::kRsa) {
    uint8_t padding_bit =
        pss ? protocol::kSignPaddingPss : protocol::kSignPaddingPkcs1;
    if ((policy.rsa_sign_paddings & padding_bit) == 0) {
      return PolicyRejects(key, std::string("signing with ") +
                                    protocol::SignPaddingName(request.padding) +
                                    " padding");
    }
  }
  uint32_t digest_bit = protocol::DigestBitOf(request.digest, kCellProperties);
  if (!DigestAllowed(policy.digests, digest_bit)) {
    if (request.digest.empty()) {
      return PolicyRejects(key, "signing without a digest");
    }
    return PolicyRejects(
        key, "signing with digest " + DisplayName(request.digest, digest_bit));
  }
  if (pss && !request.mgf1_digest.empty()) {
    uint32_t mgf1_bit =
        protocol::DigestBitOf(request.mgf1_digest, kCellProperties);
    if (!DigestAllowed(policy.digests, mgf1_bit)) {
      return PolicyRejects(key, "signing with MGF1 digest " +
                                    DisplayName(request.mgf1_digest, mgf1_bit));
    }
  }
  return Status::Ok();
}

Status CheckSignShape(const CellKey &key,
                      const protocol::SignRequest &request) {
  switch (key.type) {
    case KeyType::kRsa:
      if (request.padding != protocol::kPaddingNone &&
          request.padding != protocol::kPaddingPkcs1 &&
          request.padding != protocol::kPaddingPss) {
        return Status(Code::kForbidden,
                      "RSA signatures use PKCS#1 v1.5 or PSS padding");
      }
      if (request.padding == protocol::kPaddingPss && request.digest.empty()) {
        return Status(Code::kBadRequest, "PSS signatures need a digest");
      }
      return Status::Ok();
    case KeyType::kEc:
      if (request.padding != protocol::kPaddingNone) {
        return Status(Code::kBadRequest, "ECDSA takes no padding");
      }
      return Status::Ok();
    case KeyType::kEd25519:
    case KeyType::kEd448:
      if (!request.digest.empty() ||
          request.padding != protocol::kPaddingNone) {
        return Status(Code::kBadRequest,
                      "EdDSA signs the message itself; it takes no digest "
                      "or padding");
      }
      return Status::Ok();
  }
  return Status(Code::kInternal, "unknown key type");
}

// Checks that |request| is well formed for the key type, then that the
// key's policy allows it.
Status CheckSignRequest(const CellKey &key,
                        const protocol::SignRequest &request) {
  Status valid = CheckSignShape(key, request);
  if (!valid.ok()) {
    return valid;
  }
  return CheckSignPolicy(key, request);
}

Status SignEdDsa(const CellKey &key, const protocol::SignRequest &request,
                 std::vector<uint8_t> &out) {
  UniqueMdCtx ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestSignInit_ex(ctx.get(), nullptr, nullptr, nullptr,
                            kCellProperties, key.pkey.get(), nullptr) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "EdDSA signing failed");
  }
  size_t length = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &length, request.input.data(),
                     request.input.size()) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "EdDSA signing failed");
  }
  out.resize(length);
  if (EVP_DigestSign(ctx.get(), out.data(), &length, request.input.data(),
                     request.input.size()) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "EdDSA signing failed");
  }
  out.resize(length);
  return Status::Ok();
}

Status VerifyRsa(const CellKey &key, SignatureParams &params,
                 const protocol::SignRequest &request,
                 const std::vector<uint8_t> &signature) {
  UniquePkeyCtx ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, key.pkey.get(), kCellProperties));
  if (ctx == nullptr ||
      EVP_PKEY_verify_init_ex(ctx.get(), params.Build(key.type, true)) != 1) {
    return OpenSslFailure(Code::kInternal,
                          "cannot set up the check of the RSA signature");
  }
  if (EVP_PKEY_verify(ctx.get(), signature.data(), signature.size(),
                      request.input.data(), request.input.size()) != 1) {
    ERR_clear_error();
    return Status(Code::kInternal,
                  "the RSA signature failed its check and was withheld");
  }
  return Status::Ok();
}

}  // namespace

Status Sign(const CellKey &key, const protocol::SignRequest &request,
            std::vector<uint8_t> &out) {
  Status status = CheckSignRequest(key, request);
  if (!status.ok()) {
    return status;
  }
  if (key.type == KeyType::kEd25519 || key.type == KeyType::kEd448) {
    return SignEdDsa(key, request, out);
  }

  SignatureParams params(request);
  UniquePkeyCtx ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, key.pkey.get(), kCellProperties));
  if (ctx == nullptr ||
      EVP_PKEY_sign_init_ex(ctx.get(), params.Build(key.type, false)) != 1) {
    return OpenSslFailure(Code::kOperationFailed,
                          "invalid signature parameters");
  }
  size_t length = 0;
  if (EVP_PKEY_sign(ctx.get(), nullptr, &length, request.input.data(),
                    request.input.size()) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "signing failed");
  }
  out.resize(length);
  if (EVP_PKEY_sign(ctx.get(), out.data(), &length, request.input.data(),
                    request.input.size()) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "signing failed");
  }
  out.resize(length);
  if (key.type == KeyType::kRsa) {
    return VerifyRsa(key, params, request, out);
  }
  return Status::Ok();
}

Status Decrypt(const CellKey &key, const protocol::DecryptRequest &request,
               protocol::WipingBuffer &out) {
  if (key.type != KeyType::kRsa) {
    return Status(Code::kBadRequest, "only RSA keys decrypt");
  }
  if (!key.policy.allow_decrypt) {
    return PolicyRejects(key, "RSA decryption");
  }
  int padding = request.padding;
  if (padding != protocol::kPaddingPkcs1 && padding != protocol::kPaddingOaep &&
      padding != protocol::kPaddingPkcs1Tls) {
    return Status(Code::kForbidden,
                  "RSA decryption uses PKCS#1 v1.5, OAEP or TLS padding");
  }
  std::string oaep_digest(request.oaep_digest);
  std::string mgf1_digest(request.mgf1_digest);
  unsigned int client_version = request.tls_client_version;
  unsigned int negotiated_version = request.tls_negotiated_version;

  OSSL_PARAM params[7];
  OSSL_PARAM *p = params;
  *p++ = OSSL_PARAM_construct_int(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, &padding);
  if (padding == protocol::kPaddingOaep) {
    if (!oaep_digest.empty()) {
      *p++ = OSSL_PARAM_construct_utf8_string(
          OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, oaep_digest.data(), 0);
    }
    if (!mgf1_digest.empty()) {
      *p++ = OSSL_PARAM_construct_utf8_string(
          OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, mgf1_digest.data(), 0);
    }
    if (!request.oaep_label.empty()) {
      *p++ = OSSL_PARAM_construct_octet_string(
          OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL,
          const_cast<uint8_t *>(request.oaep_label.data()),
          request.oaep_label.size());
    }
  }
  if (padding == protocol::kPaddingPkcs1Tls) {
    *p++ = OSSL_PARAM_construct_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION,
                                     &client_version);
    if (negotiated_version != 0) {
      *p++ = OSSL_PARAM_construct_uint(
          OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, &negotiated_version);
    }
  }
  *p = OSSL_PARAM_construct_end();

  UniquePkeyCtx ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, key.pkey.get(), kCellProperties));
  if (ctx == nullptr || EVP_PKEY_decrypt_init_ex(ctx.get(), params) != 1) {
    return OpenSslFailure(Code::kOperationFailed,
                          "invalid decryption parameters");
  }
  size_t length = 0;
  if (EVP_PKEY_decrypt(ctx.get(), nullptr, &length, request.ciphertext.data(),
                       request.ciphertext.size()) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "decryption failed");
  }
  uint8_t *start = out.Reserve(length);
  if (EVP_PKEY_decrypt(ctx.get(), start, &length, request.ciphertext.data(),
                       request.ciphertext.size()) != 1) {
    return OpenSslFailure(Code::kOperationFailed, "decryption failed");
  }
  out.Commit(length);
  return Status::Ok();
}

}  // namespace kc::cell
