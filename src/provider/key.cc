#include "provider/key.h"

#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>

#include "provider/provider.h"

namespace kc::provider {
namespace {

std::mutex offered_mutex;
std::map<uint64_t, std::shared_ptr<CellKeyHandle>> offered;
uint64_t next_token = 1;

template <typename Message>
void EncodePayload(const Message &message, protocol::WipingBuffer &payload) {
  protocol::Writer writer(payload);
  protocol::Encode(writer, message);
}

}  // namespace

CellKeyHandle::CellKeyHandle(std::shared_ptr<client::CellClient> cell,
                             uint32_t key_id, Transport transport)
    : cell_(std::move(cell)),
      key_id_(key_id),
      loader_pid_(getpid()),
      transport_(transport) {}

template <typename Message>
Status CellKeyHandle::Call(protocol::MessageType type, const Message &request,
                           client::Reply &reply) const {
  if (transport_ != nullptr) {
    protocol::WipingBuffer payload;
    EncodePayload(request, payload);
    Status status;
    if (transport_(type, payload.span(), &reply, status)) {
      return status;
    }
  }
  return cell_->Call(type, request, reply);
}

CellKeyHandle::~CellKeyHandle() {
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

bool CellKeyHandle::Sign(protocol::SignRequest request, unsigned char *out,
                         size_t *out_length, size_t out_size) const {
  request.key_id = key_id_;
  client::Reply reply;
  Status status = Call(protocol::MessageType::kSign, request, reply);
  protocol::SignReply message;
  if (status.ok() && !protocol::Decode(reply.payload, message)) {
    status = Status(Code::kProtocol, "the cell sent a malformed signature");
  }
  if (status.ok() && message.signature.size() > out_size) {
    status =
        Status(Code::kInvalidArgument, "the signature buffer is too small");
  }
  if (!status.ok()) {
    RaiseError(status);
    return false;
  }
  std::memcpy(out, message.signature.data(), message.signature.size());
  *out_length = message.signature.size();
  return true;
}

bool CellKeyHandle::Decrypt(protocol::DecryptRequest request,
                            unsigned char *out, size_t *out_length,
                            size_t out_size) const {
  request.key_id = key_id_;
  client::Reply reply;
  Status status = Call(protocol::MessageType::kDecrypt, request, reply);
  protocol::DecryptReply message;
  if (status.ok() && !protocol::Decode(reply.payload, message)) {
    status = Status(Code::kProtocol, "the cell sent a malformed plaintext");
  }
  if (status.ok() && message.plaintext.size() > out_size) {
    status =
        Status(Code::kInvalidArgument, "the plaintext buffer is too small");
  }
  if (!status.ok()) {
    RaiseError(status);
    return false;
  }
  std::memcpy(out, message.plaintext.data(), message.plaintext.size());
  *out_length = message.plaintext.size();
  return true;
}

uint64_t OfferHandle(std::shared_ptr<CellKeyHandle> handle) {
  std::lock_guard lock(offered_mutex);
  uint64_t token = next_token++;
  offered.emplace(token, std::move(handle));
  return token;
}

std::shared_ptr<CellKeyHandle> ClaimHandle(uint64_t token) {
  std::lock_guard lock(offered_mutex);
  auto it = offered.find(token);
  return it == offered.end() ? nullptr : it->second;
}

void WithdrawHandle(uint64_t token) {
  std::lock_guard lock(offered_mutex);
  offered.erase(token);
}

}  // namespace kc::provider
