#include "protocol/codec.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>

namespace kc::protocol {
namespace {

void PutU16(uint8_t *out, uint16_t value) {
  out[0] = static_cast<uint8_t>(value >> 8);
  out[1] = static_cast<uint8_t>(value);
}

void PutU32(uint8_t *out, uint32_t value) {
  out[0] = static_cast<uint8_t>(value >> 24);
  out[1] = static_cast<uint8_t>(value >> 16);
  out[2] = static_cast<uint8_t>(value >> 8);
  out[3] = static_cast<uint8_t>(value);
}

uint16_t GetU16(const uint8_t *in) {
  return static_cast<uint16_t>((in[0] << 8) | in[1]);
}

// The largest storage that an emptied WipingBuffer keeps for reuse.
constexpr size_t kRetainedCapacity = 64 * 1024;

uint32_t GetU32(const uint8_t *in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) |
         (uint32_t{in[2]} << 8) | uint32_t{in[3]};
}

}  // namespace

void EncodeHeader(const FrameHeader &header, uint8_t out[kHeaderSize]) {
  PutU32(out, header.length);
  out[4] = header.version;
  out[5] = header.type;
  PutU16(out + 6, header.status);
  PutU32(out + 8, static_cast<uint32_t>(header.id >> 32));
  PutU32(out + 12, static_cast<uint32_t>(header.id));
}

std::optional<FrameHeader> DecodeHeader(const uint8_t in[kHeaderSize]) {
  FrameHeader header;
  header.length = GetU32(in);
  if (header.length > kMaxPayload) {
    return std::nullopt;
  }
  header.version = in[4];
  header.type = in[5];
  header.status = GetU16(in + 6);
  header.id = (uint64_t{GetU32(in + 8)} << 32) | GetU32(in + 12);
  return header;
}

WipingBuffer::~WipingBuffer() {
  OPENSSL_cleanse(bytes_.data(), bytes_.size());
}

void WipingBuffer::Clear() {
  OPENSSL_cleanse(bytes_.data(), size_);
  size_ = 0;
  // Bytes past size_ were never written or are already wiped, so the
  // storage can go. A cell connection that carried one large frame would
  // otherwise keep its storage for as long as it stays open.
  if (bytes_.size() > kRetainedCapacity) {
    std::vector<uint8_t>().swap(bytes_);
  }
}

uint8_t *WipingBuffer::Reserve(size_t length) {
  if (bytes_.size() - size_ < length) {
    // Grow by hand so the old storage can be wiped before it is released.
    std::vector<uint8_t> larger(std::max(bytes_.size() * 2, size_ + length));
    if (size_ != 0) {
      std::memcpy(larger.data(), bytes_.data(), size_);
    }
    OPENSSL_cleanse(bytes_.data(), bytes_.size());
    bytes_.swap(larger);
  }
  return bytes_.data() + size_;
}

void WipingBuffer::Append(const void *data, size_t length) {
  if (length == 0) {
    return;
  }
  std::memcpy(Reserve(length), data, length);
  size_ += length;
}

void WipingBuffer::Consume(size_t length) {
  if (length >= size_) {
    Clear();
    return;
  }
  std::memmove(bytes_.data(), bytes_.data() + length, size_ - length);
  OPENSSL_cleanse(bytes_.data() + size_ - length, length);
  size_ -= length;
}

void Writer::U8(uint8_t value) {
  out_.Append(&value, 1);
}

void Writer::U16(uint16_t value) {
  uint8_t bytes[2];
  PutU16(bytes, value);
  out_.Append(bytes, sizeof(bytes));
}

void Writer::U32(uint32_t value) {
  uint8_t bytes[4];
  PutU32(bytes, value);
  out_.Append(bytes, sizeof(bytes));
}

void Writer::U64(uint64_t value) {
  U32(static_cast<uint32_t>(value >> 32));
  U32(static_cast<uint32_t>(value));
}

void Writer::String(std::string_view value) {
  // Callers bound their strings well below 64 KiB; a longer one is cut so
  // that the length field stays true.
  size_t length = std::min<size_t>(value.size(), UINT16_MAX);
  U16(static_cast<uint16_t>(length));
  out_.Append(value.data(), length);
}

void Writer::Bytes(std::span<const uint8_t> value) {
  U32(static_cast<uint32_t>(value.size()));
  out_.Append(value.data(), value.size());
}

const uint8_t *Reader::Take(size_t length) {
  if (!ok_ || in_.size() < length) {
    ok_ = false;
    return nullptr;
  }
  const uint8_t *start = in_.data();
  in_ = in_.subspan(length);
  return start;
}

uint8_t Reader::U8() {
  const uint8_t *p = Take(1);
  return p == nullptr ? 0 : p[0];
}

uint16_t Reader::U16() {
  const uint8_t *p = Take(2);
  return p == nullptr ? 0 : GetU16(p);
}

uint32_t Reader::U32() {
  const uint8_t *p = Take(4);
  return p == nullptr ? 0 : GetU32(p);
}

uint64_t Reader::U64() {
  uint64_t high = U32();
  uint64_t low = U32();
  return (high << 32) | low;
}

std::string_view Reader::String() {
  uint16_t length = U16();
  const uint8_t *p = Take(length);
  if (p == nullptr) {
    return {};
  }
  return {reinterpret_cast<const char *>(p), length};
}

std::span<const uint8_t> Reader::Bytes() {
  uint32_t length = U32();
  const uint8_t *p = Take(length);
  if (p == nullptr) {
    return {};
  }
  return {p, length};
}

}  // namespace kc::protocol
