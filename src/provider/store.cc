// The OSSL_STORE loader of "keycell:" URIs, which name a key held by
// keycelld: keycell:NAME?socket=PATH. NAME is the key's name in keycelld's
// configuration and PATH the absolute path of its Unix socket, in which
// "%XX" stands for the byte with hexadecimal value XX. Loading opens the
// key on the daemon to learn its type and public key.
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>

#include <string>
#include <string_view>

#include "client/daemon_client.h"
#include "protocol/reference.h"
#include "provider/daemon_key.h"
#include "provider/module.h"
#include "provider/provider.h"

namespace kc::provider {
namespace {

constexpr std::string_view kScheme = "keycell:";

struct LoaderCtx {
  OSSL_LIB_CTX *libctx;
  std::string key_name;
  std::string socket_path;
  bool loaded = false;
};

int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

Result<std::string> PercentDecode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    int high = i + 2 < in.size() ? HexValue(in[i + 1]) : -1;
    int low = i + 2 < in.size() ? HexValue(in[i + 2]) : -1;
    if (high < 0 || low < 0) {
      return Status(Code::kInvalidArgument,
                    "invalid percent escape in '" + std::string(in) + "'");
    }
    out.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return out;
}

// Parses keycell:NAME?socket=PATH.
Status ParseUri(std::string_view uri, LoaderCtx &ctx) {
  std::string_view rest = uri.substr(kScheme.size());
  size_t question = rest.find('?');
  ctx.key_name = std::string(rest.substr(0, question));
  if (!protocol::ValidKeyName(ctx.key_name)) {
    return Status(Code::kInvalidArgument,
                  "invalid key name '" + ctx.key_name + "' in " +
                      std::string(uri) + "; expected keycell:NAME?socket=PATH");
  }
  std::string_view query =
      question == std::string_view::npos ? "" : rest.substr(question + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
    constexpr std::string_view kSocket = "socket=";
    if (item.substr(0, kSocket.size()) != kSocket) {
      return Status(Code::kInvalidArgument,
                    "unknown parameter '" + std::string(item) + "' in " +
                        std::string(uri) + "; the only parameter is socket");
    }
    Result<std::string> path = PercentDecode(item.substr(kSocket.size()));
    if (!path.ok()) {
      return path.status();
    }
    ctx.socket_path = *path;
  }
  if (ctx.socket_path.empty() || ctx.socket_path.front() != '/') {
    return Status(Code::kInvalidArgument,
                  std::string(uri) +
                      " has no absolute socket path; expected "
                      "keycell:NAME?socket=PATH");
  }
  return Status::Ok();
}

void *Open(void *provctx, const char *uri) {
  std::string_view text(uri);
  if (text.substr(0, kScheme.size()) != kScheme) {
    return nullptr;
  }
  auto *ctx =
      new LoaderCtx{static_cast<ProviderContext *>(provctx)->libctx, {}, {}};
  Status status = ParseUri(text, *ctx);
  if (!status.ok()) {
    RaiseError(status);
    delete ctx;
    return nullptr;
  }
  return ctx;
}

const OSSL_PARAM *SettableCtxParams(void *provctx) {
  static const OSSL_PARAM kSettable[] = {OSSL_PARAM_END};
  return kSettable;
}

int SetCtxParams(void *loaderctx, const OSSL_PARAM params[]) {
  // The URI names exactly one key, so search criteria change nothing.
  return 1;
}

int Load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
         OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg) {
  auto *ctx = static_cast<LoaderCtx *>(loaderctx);
  if (ctx->loaded) {
    return 0;
  }
  ctx->loaded = true;
  std::shared_ptr<client::DaemonClient> daemon =
      client::DaemonClient::ForSocket(ctx->socket_path);
  Result<client::OpenedKey> opened = daemon->Open(ctx->key_name);
  if (!opened.ok()) {
    RaiseError(opened.status());
    return 0;
  }
  Result<ProviderKey *> key = NewDaemonKey(ctx->libctx, ctx->socket_path,
                                           ctx->key_name, opened->public_key);
  if (!key.ok()) {
    RaiseError(key.status());
    return 0;
  }
  ProviderKey *object = key.value();
  if (object->type != opened->type) {
    delete object;
    RaiseError(Status(Code::kProtocol,
                      "keycelld at " + ctx->socket_path +
                          " returned a key type that does not match the "
                          "public key of key '" +
                          ctx->key_name + "'"));
    return 0;
  }
  OSSL_PARAM params[4];
  ObjectParams(&object, params);
  int ok = object_cb(params, object_cbarg);
  delete object;  // Non-null only if keymgmt did not take the key.
  return ok;
}

int Eof(void *loaderctx) {
  return static_cast<LoaderCtx *>(loaderctx)->loaded ? 1 : 0;
}

int Close(void *loaderctx) {
  delete static_cast<LoaderCtx *>(loaderctx);
  return 1;
}

int ExportObject(void *loaderctx, const void *reference, size_t reference_size,
                 OSSL_CALLBACK *export_cb, void *export_cbarg) {
  // The private half stays with keycelld.
  return 0;
}

const OSSL_DISPATCH kStoreFunctions[] = {
    {OSSL_FUNC_STORE_OPEN, reinterpret_cast<void (*)()>(Open)},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS,
     reinterpret_cast<void (*)()>(SettableCtxParams)},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS,
     reinterpret_cast<void (*)()>(SetCtxParams)},
    {OSSL_FUNC_STORE_LOAD, reinterpret_cast<void (*)()>(Load)},
    {OSSL_FUNC_STORE_EOF, reinterpret_cast<void (*)()>(Eof)},
    {OSSL_FUNC_STORE_CLOSE, reinterpret_cast<void (*)()>(Close)},
    {OSSL_FUNC_STORE_EXPORT_OBJECT, reinterpret_cast<void (*)()>(ExportObject)},
    {0, nullptr},
};

}  // namespace

const OSSL_ALGORITHM *StoreAlgorithms() {
  static const OSSL_ALGORITHM kStores[] = {
      {"keycell", kModuleProperties, kStoreFunctions,
       "keys held by keycelld, named by keycell: URIs"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  return kStores;
}

}  // namespace kc::provider
