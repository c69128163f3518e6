#include "neverbleed/iobuf.h"

#include <openssl/crypto.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace kc::neverbleed {
namespace {

std::atomic<uint64_t> next_request_id{1};

}  // namespace

void Reserve(neverbleed_iobuf_t *buf, size_t extra) {
  size_t used = static_cast<size_t>(buf->end - buf->buf);
  if (buf->capacity - used >= extra) {
    return;
  }
  size_t capacity = buf->capacity == 0 ? 4096 : buf->capacity;
  while (capacity - used < extra) {
    capacity *= 2;
  }
  // A fresh allocation rather than realloc, so the old bytes can be wiped.
  char *bytes = static_cast<char *>(std::malloc(capacity));
  if (bytes == nullptr) {
    throw std::bad_alloc();
  }
  size_t offset = static_cast<size_t>(buf->start - buf->buf);
  if (buf->buf != nullptr) {
    std::memcpy(bytes, buf->buf, used);
    OPENSSL_cleanse(buf->buf, buf->capacity);
    std::free(buf->buf);
  }
  buf->buf = bytes;
  buf->start = bytes + offset;
  buf->end = bytes + used;
  buf->capacity = capacity;
}

void Append(neverbleed_iobuf_t *buf, const void *data, size_t length) {
  if (length == 0) {
    return;  // |data| may be null, which memcpy does not accept.
  }
  Reserve(buf, length);
  std::memcpy(buf->end, data, length);
  buf->end += length;
}

std::span<const uint8_t> Contents(const neverbleed_iobuf_t *buf) {
  if (buf->start == nullptr) {
    return {};
  }
  return {reinterpret_cast<const uint8_t *>(buf->start),
          static_cast<size_t>(buf->end - buf->start)};
}

void BuildFrame(neverbleed_iobuf_t *buf, protocol::MessageType type,
                std::span<const uint8_t> payload) {
  protocol::FrameHeader header;
  header.length = static_cast<uint32_t>(payload.size());
  header.type = static_cast<uint8_t>(type);
  header.id = next_request_id.fetch_add(1, std::memory_order_relaxed);
  uint8_t header_bytes[protocol::kHeaderSize];
  protocol::EncodeHeader(header, header_bytes);
  Append(buf, header_bytes, sizeof(header_bytes));
  Append(buf, payload.data(), payload.size());
}

void BuildFailingRequest(neverbleed_iobuf_t *buf) {
  BuildFrame(buf, protocol::MessageType::kPing, {});
}

Status ParseReply(std::span<const uint8_t> bytes, protocol::MessageType type,
                  client::Reply &reply) {
  if (bytes.empty()) {
    return Status(Code::kCellGone, "no reply from the cell");
  }
  reply.buffer.Clear();
  reply.buffer.Append(bytes.data(), bytes.size());
  protocol::Frame frame;
  if (protocol::SplitFrame(reply.buffer.span(), frame) !=
          protocol::SplitResult::kFrame ||
      frame.size() != reply.buffer.size()) {
    return Status(Code::kProtocol, "the reply is not exactly one frame");
  }
  reply.header = frame.header;
  reply.payload = frame.payload;
  if (frame.header.status != 0) {
    protocol::ErrorReply error;
    if (!protocol::Decode(frame.payload, error) ||
        frame.header.status >= static_cast<uint16_t>(Code::kCellGone)) {
      return Status(Code::kProtocol, "the cell sent a malformed error");
    }
    return Status(static_cast<Code>(frame.header.status),
                  std::string(error.message));
  }
  if (frame.header.type != static_cast<uint8_t>(type)) {
    return Status(Code::kProtocol, "the reply is of message type " +
                                       std::to_string(frame.header.type) +
                                       ", expected " +
                                       std::to_string(static_cast<int>(type)));
  }
  return Status::Ok();
}

}  // namespace kc::neverbleed
