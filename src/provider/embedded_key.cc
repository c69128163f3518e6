#include "provider/embedded_key.h"

#include <openssl/async.h>
#include <unistd.h>

namespace kc::provider {
namespace {

template <typename Message>
void EncodePayload(const Message &message, protocol::WipingBuffer &payload) {
  protocol::Writer writer(payload);
  protocol::Encode(writer, message);
}

}  // namespace

EmbeddedKey::EmbeddedKey(std::shared_ptr<client::CellClient> cell,
                         uint32_t key_id, Transport transport)
    : cell_(std::move(cell)),
      key_id_(key_id),
      loader_pid_(getpid()),
      transport_(transport) {}

EmbeddedKey::~EmbeddedKey() {
  // A forked child frees its copies of the parent's keys too; only the
  // process that loaded a key may release it.
  if (getpid() != loader_pid_ || cell_->gone()) {
    return;
  }
  protocol::ReleaseKeyRequest request{key_id_};
  if (transport_ != nullptr) {
    protocol::WipingBuffer payload;
    EncodePayload(request, payload);
    Status status;
    if (transport_(protocol::MessageType::kReleaseKey, payload.span(), nullptr,
                   status)) {
      return;
    }
  }
  (void)cell_->Send(protocol::MessageType::kReleaseKey, request);
}

template <typename Message>
Status EmbeddedKey::Run(protocol::MessageType type, Message &request,
                        client::Reply &reply) {
  request.key_id = key_id_;
  if (transport_ != nullptr) {
    protocol::WipingBuffer payload;
    EncodePayload(request, payload);
    Status status;
    if (transport_(type, payload.span(), &reply, status)) {
      return status;
    }
  }
  if (ASYNC_get_current_job() != nullptr) {
    return WaitInJob(cell_->Submit(type, request), reply);
  }
  return cell_->Call(type, request, reply);
}

Status EmbeddedKey::Call(protocol::SignRequest request, client::Reply &reply) {
  return Run(protocol::MessageType::kSign, request, reply);
}

Status EmbeddedKey::Call(protocol::DecryptRequest request,
                         client::Reply &reply) {
  return Run(protocol::MessageType::kDecrypt, request, reply);
}

Result<std::shared_ptr<client::PendingOperation>> EmbeddedKey::Submit(
    protocol::SignRequest request) {
  request.key_id = key_id_;
  return cell_->Submit(protocol::MessageType::kSign, request);
}

Result<std::shared_ptr<client::PendingOperation>> EmbeddedKey::Submit(
    protocol::DecryptRequest request) {
  request.key_id = key_id_;
  return cell_->Submit(protocol::MessageType::kDecrypt, request);
}

}  // namespace kc::provider
