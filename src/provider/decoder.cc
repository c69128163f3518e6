// The decoders of reference files: PEM blocks labelled "KEYCELL PRIVATE
// KEY" that name a key held by keycelld. They work in two stages, like
// OpenSSL's own PEM to DER to key chain. A "DER" decoder turns the PEM
// block into the binary reference body, and one decoder per key type turns
// a body into a key object, because OpenSSL picks the last stage by the
// name of the key type it produces.
#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/params.h>

#include <span>
#include <string>

#include "protocol/codec.h"
#include "protocol/reference.h"
#include "provider/daemon_key.h"
#include "provider/module.h"
#include "provider/provider.h"

namespace kc::provider {
namespace {

using protocol::KeyType;

// A reference file is a few hundred bytes; reading stops at this size.
constexpr size_t kMaxInput = 1024 * 1024;

// The structure name of a reference body, between the two stages.
constexpr const char *kStructure = "keycell";

struct DecoderCtx {
  OSSL_LIB_CTX *libctx;
};

void *NewDecoderCtx(void *provctx) {
  return new DecoderCtx{static_cast<ProviderContext *>(provctx)->libctx};
}

void FreeDecoderCtx(void *ctx) {
  delete static_cast<DecoderCtx *>(ctx);
}

int DoesSelection(void *provctx, int selection) {
  // A reference names a key pair, so it serves any selection that includes
  // one of its halves, and a selection of zero, which means all parts.
  return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

// Reads the input up to kMaxInput bytes. Returns false when the input
// cannot be opened.
bool ReadAll(OSSL_LIB_CTX *libctx, OSSL_CORE_BIO *cbio, std::string &text) {
  BIO *bio = BIO_new_from_core_bio(libctx, cbio);
  if (bio == nullptr) {
    return false;
  }
  char chunk[4096];
  while (text.size() < kMaxInput) {
    size_t read = 0;
    if (BIO_read_ex(bio, chunk, sizeof(chunk), &read) != 1 || read == 0) {
      break;
    }
    text.append(chunk, read);
  }
  BIO_free(bio);
  return true;
}

// The first stage: a PEM block labelled "KEYCELL PRIVATE KEY" becomes the
// binary reference body, passed on with the structure name "keycell" and
// the key's type. Passing data rather than a reference at this stage is
// what OpenSSL 3.0's file: store loader accepts: it decodes the data again
// with the decoders of the key's type, which include the second stage.
int DecodePem(void *vctx, OSSL_CORE_BIO *cbio, int selection,
              OSSL_CALLBACK *data_cb, void *data_cbarg,
              OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  auto *ctx = static_cast<DecoderCtx *>(vctx);
  std::string text;
  if (!ReadAll(ctx->libctx, cbio, text)) {
    return 1;  // Nothing read: not a reference, so other decoders may try.
  }
  std::string begin = "-----BEGIN " + std::string(protocol::kReferencePemLabel);
  if (text.find(begin) == std::string::npos) {
    return 1;
  }
  Result<protocol::KeyReference> reference = protocol::DecodeReference(text);
  Result<KeyType> type = Status(Code::kInvalidArgument, "");
  if (reference.ok()) {
    type = ParsePublicKey(ctx->libctx, reference->key_name,
                          reference->public_key, nullptr);
  }
  if (!reference.ok() || !type.ok()) {
    const Status &status = !reference.ok() ? reference.status() : type.status();
    RaiseError(Status(Code::kInvalidArgument,
                      "invalid keycell reference file: " + status.message()));
    return 0;
  }
  protocol::WipingBuffer body;
  protocol::Writer writer(body);
  writer.U8(protocol::kReferenceVersion);
  writer.String(reference->socket_path);
  writer.String(reference->key_name);
  writer.Bytes(reference->public_key);

  static int object_type = OSSL_OBJECT_PKEY;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &object_type),
      OSSL_PARAM_construct_utf8_string(
          OSSL_OBJECT_PARAM_DATA_TYPE,
          const_cast<char *>(protocol::KeyTypeName(*type)), 0),
      OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                       const_cast<char *>(kStructure), 0),
      OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, body.data(),
                                        body.size()),
      OSSL_PARAM_construct_end(),
  };
  return data_cb(params, data_cbarg);
}

// The second stage: a reference body becomes this provider's key object,
// handed to keymgmt by reference. A body that does not decode, or contains a
// key of another type, is left to other decoders.
template <KeyType kType>
int DecodeBody(void *vctx, OSSL_CORE_BIO *cbio, int selection,
               OSSL_CALLBACK *object_cb, void *object_cbarg,
               OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  auto *ctx = static_cast<DecoderCtx *>(vctx);
  std::string data;
  if (!ReadAll(ctx->libctx, cbio, data)) {
    return 1;
  }
  Result<protocol::KeyReference> reference = protocol::DecodeReferenceBody(
      {reinterpret_cast<const uint8_t *>(data.data()), data.size()});
  if (!reference.ok()) {
    return 1;
  }
  ERR_set_mark();
  Result<ProviderKey *> key =
      NewDaemonKey(ctx->libctx, reference->socket_path, reference->key_name,
                   reference->public_key);
  ERR_pop_to_mark();
  if (!key.ok()) {
    return 1;
  }
  ProviderKey *object = key.value();
  if (object->type != kType) {
    delete object;
    return 1;
  }
  OSSL_PARAM params[4];
  ObjectParams(&object, params);
  int ok = object_cb(params, object_cbarg);
  delete object;  // Non-null only if keymgmt did not take the key.
  return ok;
}

int ExportObject(void *vctx, const void *reference, size_t reference_size,
                 OSSL_CALLBACK *export_cb, void *export_cbarg) {
  // The private half stays with keycelld, so a reference cannot become a
  // key of another provider.
  return 0;
}

const OSSL_DISPATCH kPemFunctions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, reinterpret_cast<void (*)()>(NewDecoderCtx)},
    {OSSL_FUNC_DECODER_FREECTX, reinterpret_cast<void (*)()>(FreeDecoderCtx)},
    {OSSL_FUNC_DECODER_DOES_SELECTION,
     reinterpret_cast<void (*)()>(DoesSelection)},
    {OSSL_FUNC_DECODER_DECODE, reinterpret_cast<void (*)()>(DecodePem)},
    {0, nullptr},
};

template <KeyType kType>
const OSSL_DISPATCH kBodyFunctions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, reinterpret_cast<void (*)()>(NewDecoderCtx)},
    {OSSL_FUNC_DECODER_FREECTX, reinterpret_cast<void (*)()>(FreeDecoderCtx)},
    {OSSL_FUNC_DECODER_DOES_SELECTION,
     reinterpret_cast<void (*)()>(DoesSelection)},
    {OSSL_FUNC_DECODER_DECODE, reinterpret_cast<void (*)()>(DecodeBody<kType>)},
    {OSSL_FUNC_DECODER_EXPORT_OBJECT,
     reinterpret_cast<void (*)()>(ExportObject)},
    {0, nullptr},
};

constexpr const char *kPemProperties = "provider=keycell,input=pem";
constexpr const char *kBodyProperties =
    "provider=keycell,input=der,structure=keycell";

}  // namespace

const OSSL_ALGORITHM *DecoderAlgorithms() {
  static const OSSL_ALGORITHM kDecoders[] = {
      {"DER", kPemProperties, kPemFunctions,
       "keycell reference file to reference body"},
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kBodyProperties,
       kBodyFunctions<KeyType::kRsa>, "keycell reference body of an RSA key"},
      {"EC:id-ecPublicKey:1.2.840.10045.2.1", kBodyProperties,
       kBodyFunctions<KeyType::kEc>, "keycell reference body of an EC key"},
      {"ED25519:1.3.101.112", kBodyProperties,
       kBodyFunctions<KeyType::kEd25519>,
       "keycell reference body of an Ed25519 key"},
      {"ED448:1.3.101.113", kBodyProperties, kBodyFunctions<KeyType::kEd448>,
       "keycell reference body of an Ed448 key"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  return kDecoders;
}

}  // namespace kc::provider
