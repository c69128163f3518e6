#include "provider/key.h"

#include <openssl/async.h>

#include <cstring>
#include <map>
#include <mutex>

#include "provider/provider.h"

namespace kc::provider {
namespace {

std::mutex offered_mutex;
std::map<uint64_t, std::shared_ptr<CellKeyHandle>> offered;
uint64_t next_token = 1;

// The key under which an operation's descriptor is registered with the
// ASYNC_WAIT_CTX of the job waiting for it.
const char kWaitKey = 0;

}  // namespace

Status WaitInJob(Result<std::shared_ptr<client::PendingOperation>> submitted,
                 client::Reply &reply) {
  if (!submitted.ok()) {
    return submitted.status();
  }
  const client::PendingOperation &operation = **submitted;
  ASYNC_WAIT_CTX *wait = ASYNC_get_wait_ctx(ASYNC_get_current_job());
  if (wait == nullptr ||
      ASYNC_WAIT_CTX_set_wait_fd(wait, &kWaitKey, operation.fd(), nullptr,
                                 nullptr) != 1) {
    return Status(Code::kInternal,
                  "cannot register the cell operation with the ASYNC job");
  }
  // The application may resume the job before the descriptor is readable,
  // so every resumption checks again.
  bool paused = true;
  while (!operation.done() && paused) {
    paused = ASYNC_pause_job() == 1;
  }
  ASYNC_WAIT_CTX_clear_fd(wait, &kWaitKey);
  if (!operation.done()) {
    return Status(Code::kInternal, "the ASYNC job could not pause");
  }
  if (!operation.status().ok()) {
    return operation.status();
  }
  reply.buffer.Clear();
  reply.buffer.Append(operation.payload().data(), operation.payload().size());
  reply.payload = reply.buffer.span();
  return Status::Ok();
}

bool CellKeyHandle::Sign(protocol::SignRequest request, unsigned char *out,
                         size_t *out_length, size_t out_size) const {
  client::Reply reply;
  Status status = backend_->Call(request, reply);
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
  client::Reply reply;
  Status status = backend_->Call(request, reply);
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
