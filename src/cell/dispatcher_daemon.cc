// The requests that only keycelld serves, and the key lookup that applies
// keycelld's per-connection policy.
#include <string>

#include "cell/dispatcher.h"

namespace kc::cell {

std::string DescribePeer(const ConnectionContext &peer) {
  return "pid " + std::to_string(peer.pid) + " uid " +
         std::to_string(peer.uid) + " gid " + std::to_string(peer.gid);
}

Status Dispatcher::FindUsableKey(uint32_t id, ConnectionContext *context,
                                 std::shared_ptr<const CellKey> &key,
                                 std::shared_ptr<KeyCounters> &counters) {
  if (catalog_ == nullptr) {
    key = keys_.Find(id);
    if (key == nullptr) {
      return Status(Code::kUnknownKey, "no key with id " + std::to_string(id));
    }
    return Status::Ok();
  }
  bool opened;
  {
    std::lock_guard lock(context->mutex);
    opened = context->opened_keys.count(id) != 0;
  }
  std::shared_ptr<const CatalogKey> entry = catalog_->FindById(id);
  if (!opened) {
    if (log_) {
      log_("denied use of key id " + std::to_string(id) +
           " that the connection has not opened to " + DescribePeer(*context));
    }
    return Status(Code::kForbidden,
                  "key id " + std::to_string(id) +
                      " has not been opened on this connection");
  }
  if (entry == nullptr) {
    return Status(Code::kUnknownKey,
                  "key id " + std::to_string(id) +
                      " was removed from keycelld's configuration");
  }
  counters = entry->counters;
  if (!PeerAllowed(*entry, *context)) {
    // The allow-list changed by a reload after the key was opened.
    if (log_) {
      log_("denied use of key '" + entry->name + "' to " +
           DescribePeer(*context));
    }
    return Status(Code::kForbidden, "access denied");
  }
  key = entry->key;
  return Status::Ok();
}

Dispatcher::Outcome Dispatcher::HandleOpenKey(const protocol::Frame &request,
                                              ConnectionContext &context,
                                              protocol::WipingBuffer &out) {
  protocol::OpenKeyRequest message;
  if (!protocol::Decode(request.payload, message)) {
    return Reject(request, "invalid open-key request", out, &context);
  }
  std::string name(message.name);
  std::shared_ptr<const CatalogKey> entry = catalog_->FindByName(name);
  if (entry == nullptr) {
    if (log_) {
      log_("open of unknown key '" + name + "' by " + DescribePeer(context));
    }
    ReplyError(request,
               Status(Code::kUnknownKey, "no key named '" + name + "'"), out);
    return Outcome::kReplied;
  }
  if (!PeerAllowed(*entry, context)) {
    if (log_) {
      log_("denied open of key '" + name + "' to " + DescribePeer(context));
    }
    // The message does not say which allow-list applies, so a client
    // learns nothing about the policy.
    ReplyError(request, Status(Code::kForbidden, "access denied"), out);
    return Outcome::kReplied;
  }
  {
    std::lock_guard lock(context.mutex);
    context.opened_keys.insert(entry->id);
  }
  protocol::OpenKeyReply reply;
  reply.key_id = entry->id;
  reply.type = entry->key->type;
  reply.public_key = entry->public_key;
  protocol::AppendFrame(out, request.header.type, 0, request.header.id, reply);
  return Outcome::kReplied;
}

Dispatcher::Outcome Dispatcher::HandleStatus(const protocol::Frame &request,
                                             protocol::WipingBuffer &out,
                                             const ConnectionContext *context) {
  if (!request.payload.empty()) {
    return Reject(request, "a status request carries a payload", out, context);
  }
  std::vector<std::shared_ptr<const CatalogKey>> keys = catalog_->Snapshot();
  protocol::StatusReply reply;
  reply.keys.reserve(keys.size());
  for (const std::shared_ptr<const CatalogKey> &entry : keys) {
    protocol::KeyStatus status;
    status.name = entry->name;
    status.type = entry->key->type;
    status.fingerprint = entry->fingerprint;
    status.signatures = entry->counters->signatures.load();
    status.decryptions = entry->counters->decryptions.load();
    status.failures = entry->counters->failures.load();
    status.policy = entry->key->policy;
    reply.keys.push_back(status);
  }
  protocol::AppendFrame(out, request.header.type, 0, request.header.id, reply);
  return Outcome::kReplied;
}

}  // namespace kc::cell
