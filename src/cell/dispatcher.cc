#include "cell/dispatcher.h"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <vector>

#include "cell/key_loader.h"
#include "cell/operations.h"

namespace kc::cell {
namespace {

using protocol::Frame;
using protocol::MessageType;
using protocol::WipingBuffer;

// Returns " for <peer>" for a keycelld connection and "" otherwise.
std::string PeerSuffix(const ConnectionContext *context) {
  return context == nullptr ? std::string() : " for " + DescribePeer(*context);
}

}  // namespace

Result<std::shared_ptr<CellKey>> NewCellKey(UniquePkey pkey,
                                            protocol::KeyType type,
                                            const protocol::KeyPolicy &policy,
                                            const std::string &name) {
  auto key = std::make_shared<CellKey>();
  key->type = type;
  key->policy = policy;
  key->policy.allow_decrypt =
      policy.allow_decrypt && type == protocol::KeyType::kRsa;
  key->name = name;
  if (!key->policy.allow_sign && !key->policy.allow_decrypt) {
    if (policy.allow_decrypt) {
      return Status(Code::kKeyLoadFailed,
                    std::string("the key's policy allows no operation: "
                                "signing is off, and RSA decryption does "
                                "not apply to an ") +
                        protocol::KeyTypeName(type) + " key");
    }
    return Status(Code::kKeyLoadFailed,
                  "the key's policy allows no operation: signing is off, "
                  "and RSA decryption is not allowed");
  }
  key->pkey = std::move(pkey);
  return key;
}

Status SwitchUser(std::string_view user) {
  std::string name(user);
  std::vector<char> buffer(16384);
  struct passwd entry;
  struct passwd *found = nullptr;
  int error =
      getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (found == nullptr) {
    return Status(Code::kOperationFailed,
                  "cannot drop privileges: unknown user '" + name + "'" +
                      (error != 0 ? std::string(": ") + std::strerror(error)
                                  : std::string()));
  }
  uid_t uid = entry.pw_uid;
  gid_t gid = entry.pw_gid;
  if (initgroups(name.c_str(), gid) != 0 || setgid(gid) != 0 ||
      setuid(uid) != 0) {
    return Status(Code::kOperationFailed, "cannot drop privileges to user '" +
                                              name +
                                              "': " + std::strerror(errno));
  }
  if (uid != 0 && setuid(0) == 0) {
    return Status(Code::kInternal,
                  "privileges were not dropped: the cell could regain root");
  }
  // Linux resets the dumpable flag to fs.suid_dumpable when the uid
  // changes; with that sysctl at 1 the new user could ptrace the cell.
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return Status(Code::kInternal,
                  std::string("cannot mark the cell non-dumpable: ") +
                      std::strerror(errno));
  }
  return Status::Ok();
}

Dispatcher::Dispatcher(KeyStore &keys,
                       std::function<void(const std::string &)> log)
    : keys_(keys), log_(std::move(log)) {}

Dispatcher::Dispatcher(KeyCatalog &catalog,
                       std::function<void(const std::string &)> log)
    : keys_(unused_keys_), catalog_(&catalog), log_(std::move(log)) {}

Dispatcher::Outcome Dispatcher::Handle(const Frame &request, WipingBuffer &out,
                                       ConnectionContext *context) {
  if (request.header.version != protocol::kVersion) {
    ReplyError(request,
               Status(Code::kUnsupportedVersion,
                      "unsupported protocol version " +
                          std::to_string(request.header.version) +
                          "; this cell speaks version " +
                          std::to_string(protocol::kVersion)),
               out);
    counters_.bad_frames++;
    LogClose("a request of protocol version " +
                 std::to_string(request.header.version),
             context);
    return Outcome::kClose;
  }
  if (request.header.status != 0) {
    return Reject(request, "a request carries a nonzero status", out, context);
  }
  if (catalog_ != nullptr && context == nullptr) {
    ReplyError(request,
               Status(Code::kInternal, "a daemon connection has no context"),
               out);
    return Outcome::kClose;
  }
  auto type = static_cast<MessageType>(request.header.type);
  bool daemon_only =
      type == MessageType::kOpenKey || type == MessageType::kStatus;
  bool embedded_only = type == MessageType::kLoadKey ||
                       type == MessageType::kDropPrivileges ||
                       type == MessageType::kSeal;
  if ((catalog_ == nullptr && daemon_only) ||
      (catalog_ != nullptr && embedded_only)) {
    ReplyError(request,
               Status(Code::kForbidden,
                      catalog_ == nullptr
                          ? "this request is served by keycelld only"
                          : "keycelld does not serve this request; open a "
                            "configured key instead"),
               out);
    return Outcome::kReplied;
  }
  switch (type) {
    case MessageType::kOpenKey:
      return HandleOpenKey(request, *context, out);
    case MessageType::kStatus:
      return HandleStatus(request, out, context);
    case MessageType::kLoadKey:
      return HandleLoadKey(request, out);
    case MessageType::kSign:
      return HandleSign(request, out, context);
    case MessageType::kDecrypt:
      return HandleDecrypt(request, out, context);
    case MessageType::kReleaseKey:
      return HandleReleaseKey(request, out, context);
    case MessageType::kDropPrivileges:
      return HandleDropPrivileges(request, out);
    case MessageType::kSeal:
      return HandleSeal(request, out);
    case MessageType::kPing:
      if (!request.payload.empty()) {
        return Reject(request, "a ping carries a payload", out, context);
      }
      protocol::AppendEmptyFrame(out, request.header.type, 0,
                                 request.header.id);
      return Outcome::kReplied;
  }
  return Reject(request,
                "unknown message type " + std::to_string(request.header.type),
                out, context);
}

void Dispatcher::LogClose(const std::string &what,
                          const ConnectionContext *context) {
  if (!log_) {
    return;
  }
  std::string line = "closing a connection";
  if (context != nullptr) {
    line += " of " + DescribePeer(*context);
  }
  log_(line + " after " + what);
}

Dispatcher::Outcome Dispatcher::Reject(const Frame &request,
                                       const std::string &reason,
                                       WipingBuffer &out,
                                       const ConnectionContext *context) {
  counters_.bad_frames++;
  LogClose("a malformed request: " + reason, context);
  ReplyError(request, Status(Code::kBadRequest, "malformed request: " + reason),
             out);
  return Outcome::kClose;
}

void Dispatcher::RejectOversized(WipingBuffer &out,
                                 const ConnectionContext *context) {
  counters_.bad_frames++;
  LogClose("a frame larger than the maximum of " +
               std::to_string(protocol::kMaxPayload) + " bytes",
           context);
  protocol::ErrorReply reply{"malformed request: frame too large"};
  protocol::AppendFrame(out, 0, static_cast<uint16_t>(Code::kBadRequest), 0,
                        reply);
}

void Dispatcher::RejectSizePrefix(const std::string &reason, WipingBuffer &out,
                                  const ConnectionContext *context) {
  counters_.bad_frames++;
  LogClose("an invalid size prefix: " + reason, context);
  std::string message = "malformed request: " + reason;
  protocol::ErrorReply reply{message};
  protocol::AppendFrame(out, 0, static_cast<uint16_t>(Code::kBadRequest), 0,
                        reply);
}

void Dispatcher::CountFailure(KeyCounters *key_counters) {
  counters_.failures++;
  if (key_counters != nullptr) {
    key_counters->failures++;
  }
}

void Dispatcher::ReplyError(const Frame &request, const Status &status,
                            WipingBuffer &out) {
  protocol::ErrorReply reply{status.message()};
  protocol::AppendFrame(out, request.header.type,
                        static_cast<uint16_t>(status.code()), request.header.id,
                        reply);
}

Dispatcher::Outcome Dispatcher::HandleLoadKey(const Frame &request,
                                              WipingBuffer &out) {
  protocol::LoadKeyRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "invalid load-key request", out);
  }
  std::string path(message.path);
  // Held until the key is stored, so that no load completes after the reply
  // to a seal.
  std::shared_lock seal_lock(seal_mutex_);
  Status rejected = LoadRejection(path);
  if (!rejected.ok()) {
    counters_.failures++;
    if (log_) {
      log_("key load rejected: " + rejected.message());
    }
    ReplyError(request, rejected, out);
    return Outcome::kReplied;
  }
  PassphraseSource passphrase;
  passphrase.file = message.passphrase_file;
  passphrase.bytes = message.passphrase;
  passphrase.has_bytes = message.has_passphrase;
  Result<LoadedKey> loaded = LoadKeyFile(message.path, passphrase);
  if (!loaded.ok()) {
    counters_.failures++;
    if (log_ && loaded.status().code() != Code::kPassphraseRequired) {
      log_("key load failed: " + loaded.status().message());
    }
    ReplyError(request, loaded.status(), out);
    return Outcome::kReplied;
  }
  Result<std::shared_ptr<CellKey>> key =
      NewCellKey(std::move(loaded->pkey), loaded->type, message.policy, path);
  if (!key.ok()) {
    counters_.failures++;
    ReplyError(
        request,
        Status(key.status().code(), path + ": " + key.status().message()), out);
    return Outcome::kReplied;
  }
  protocol::LoadKeyReply reply;
  reply.type = loaded->type;
  reply.public_key = loaded->public_key;
  std::optional<uint32_t> id = keys_.Add(std::move(key.value()));
  if (!id) {
    counters_.failures++;
    ReplyError(request, FullStoreStatus(path), out);
    return Outcome::kReplied;
  }
  reply.key_id = *id;
  protocol::AppendFrame(out, request.header.type, 0, request.header.id, reply);
  return Outcome::kReplied;
}

Status Dispatcher::LoadRejection(const std::string &path) const {
  if (sealed_) {
    return Status(Code::kForbidden,
                  path +
                      ": the cell is sealed and loads no more keys; load "
                      "every key before keycell_seal()");
  }
  if (keys_.Full()) {
    return FullStoreStatus(path);
  }
  return Status::Ok();
}

Status Dispatcher::FullStoreStatus(const std::string &path) {
  return Status(Code::kKeyLoadFailed,
                path + ": the cell already holds the maximum of " +
                    std::to_string(KeyStore::kMaxKeys) +
                    " keys; free keys that are no longer used first");
}

Dispatcher::Outcome Dispatcher::HandleSeal(const Frame &request,
                                           WipingBuffer &out) {
  protocol::SealRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "a seal request carries a payload", out);
  }
  {
    std::unique_lock lock(seal_mutex_);
    sealed_ = true;
  }
  protocol::AppendEmptyFrame(out, request.header.type, 0, request.header.id);
  return Outcome::kReplied;
}

Dispatcher::Outcome Dispatcher::HandleSign(const Frame &request,
                                           WipingBuffer &out,
                                           ConnectionContext *context) {
  protocol::SignRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "invalid sign request", out, context);
  }
  std::shared_ptr<const CellKey> key;
  std::shared_ptr<KeyCounters> key_counters;
  Status usable = FindUsableKey(message.key_id, context, key, key_counters);
  if (!usable.ok()) {
    CountFailure(key_counters.get());
    ReplyError(request, usable, out);
    return Outcome::kReplied;
  }
  std::vector<uint8_t> signature;
  Status status = Sign(*key, message, signature);
  if (!status.ok()) {
    CountFailure(key_counters.get());
    if (log_) {
      log_("signing with key id " + std::to_string(message.key_id) +
           (status.code() == Code::kForbidden ? " rejected" : " failed") +
           PeerSuffix(context) + ": " + status.message());
    }
    ReplyError(request, status, out);
    return Outcome::kReplied;
  }
  counters_.signatures++;
  if (key_counters != nullptr) {
    key_counters->signatures++;
  }
  protocol::SignReply reply{signature};
  protocol::AppendFrame(out, request.header.type, 0, request.header.id, reply);
  return Outcome::kReplied;
}

Dispatcher::Outcome Dispatcher::HandleDecrypt(const Frame &request,
                                              WipingBuffer &out,
                                              ConnectionContext *context) {
  protocol::DecryptRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "invalid decrypt request", out, context);
  }
  std::shared_ptr<const CellKey> key;
  std::shared_ptr<KeyCounters> key_counters;
  Status usable = FindUsableKey(message.key_id, context, key, key_counters);
  if (!usable.ok()) {
    CountFailure(key_counters.get());
    ReplyError(request, usable, out);
    return Outcome::kReplied;
  }
  WipingBuffer plaintext;
  Status status = Decrypt(*key, message, plaintext);
  if (!status.ok()) {
    CountFailure(key_counters.get());
    if (log_ && status.code() == Code::kForbidden) {
      log_("decryption with key id " + std::to_string(message.key_id) +
           " rejected" + PeerSuffix(context) + ": " + status.message());
    }
    ReplyError(request, status, out);
    return Outcome::kReplied;
  }
  counters_.decryptions++;
  if (key_counters != nullptr) {
    key_counters->decryptions++;
  }
  protocol::DecryptReply reply{plaintext.span()};
  protocol::AppendFrame(out, request.header.type, 0, request.header.id, reply);
  return Outcome::kReplied;
}

Dispatcher::Outcome Dispatcher::HandleReleaseKey(const Frame &request,
                                                 WipingBuffer &out,
                                                 ConnectionContext *context) {
  protocol::ReleaseKeyRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "invalid release-key request", out, context);
  }
  if (catalog_ != nullptr) {
    // In daemon mode a release only closes the key for this connection.
    std::lock_guard lock(context->mutex);
    if (context->opened_keys.erase(message.key_id) == 0) {
      ReplyError(
          request,
          Status(Code::kUnknownKey, "this connection has not opened key id " +
                                        std::to_string(message.key_id)),
          out);
      return Outcome::kReplied;
    }
  } else if (!keys_.Remove(message.key_id)) {
    ReplyError(request,
               Status(Code::kUnknownKey,
                      "no key with id " + std::to_string(message.key_id)),
               out);
    return Outcome::kReplied;
  }
  protocol::AppendEmptyFrame(out, request.header.type, 0, request.header.id);
  return Outcome::kReplied;
}

Dispatcher::Outcome Dispatcher::HandleDropPrivileges(const Frame &request,
                                                     WipingBuffer &out) {
  protocol::DropPrivilegesRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "invalid drop-privileges request", out);
  }
  Status status = SwitchUser(message.user);
  if (!status.ok()) {
    if (log_) {
      log_(status.message());
    }
    ReplyError(request, status, out);
    return Outcome::kReplied;
  }
  protocol::AppendEmptyFrame(out, request.header.type, 0, request.header.id);
  return Outcome::kReplied;
}

}  // namespace kc::cell
