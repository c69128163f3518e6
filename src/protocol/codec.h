// The bounded codec shared by the cell and its clients: frame headers and
// the primitive fields that messages are built from. Everything is
// big-endian. A Reader never reads past its input; after the first failed
// read it stays failed, so a decoder checks ok() once at the end.
#ifndef KEYCELL_PROTOCOL_CODEC_H
#define KEYCELL_PROTOCOL_CODEC_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace kc::protocol {

inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;
// The largest payload either end accepts. A larger length in a header is a
// protocol error that closes the connection.
inline constexpr uint32_t kMaxPayload = 256 * 1024;

// Frame header: payload length (u32), version (u8), message type (u8),
// status (u16, zero in requests), request id (u64).
struct FrameHeader {
  uint32_t length = 0;
  uint8_t version = kVersion;
  uint8_t type = 0;
  uint16_t status = 0;
  uint64_t id = 0;
};

void EncodeHeader(const FrameHeader &header, uint8_t out[kHeaderSize]);

// Decodes a header. Returns nullopt if the length exceeds kMaxPayload; the
// version is returned as found so the caller can reply to a mismatch.
std::optional<FrameHeader> DecodeHeader(const uint8_t in[kHeaderSize]);

// A byte buffer that overwrites its contents when cleared or destroyed, for
// frames that may carry passphrases or decrypted data.
class WipingBuffer {
 public:
  WipingBuffer() = default;
  WipingBuffer(const WipingBuffer &) = delete;
  WipingBuffer &operator=(const WipingBuffer &) = delete;
  ~WipingBuffer();

  // Wipes the contents and releases storage larger than 64 KiB.
  void Clear();
  void Append(const void *data, size_t length);
  // Removes the first |length| bytes.
  void Consume(size_t length);
  // Makes room for |length| more bytes and returns where they go; Commit
  // then accounts for the bytes actually written.
  uint8_t *Reserve(size_t length);
  void Commit(size_t length) { size_ += length; }

  uint8_t *data() { return bytes_.data(); }
  const uint8_t *data() const { return bytes_.data(); }
  size_t size() const { return size_; }
  std::span<const uint8_t> span() const { return {bytes_.data(), size_}; }

 private:
  std::vector<uint8_t> bytes_;
  size_t size_ = 0;
};

// Appends fields to a buffer.
class Writer {
 public:
  explicit Writer(WipingBuffer &out) : out_(out) {}

  void U8(uint8_t value);
  void U16(uint16_t value);
  void U32(uint32_t value);
  void U64(uint64_t value);
  void I32(int32_t value) { U32(static_cast<uint32_t>(value)); }
  // A string is a u16 length and that many bytes, with no terminator.
  void String(std::string_view value);
  // A byte string is a u32 length and that many bytes.
  void Bytes(std::span<const uint8_t> value);

 private:
  WipingBuffer &out_;
};

// Reads fields from a span. Strings and byte strings are returned as views
// into the input, which must outlive them.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}

  uint8_t U8();
  uint16_t U16();
  uint32_t U32();
  uint64_t U64();
  int32_t I32() { return static_cast<int32_t>(U32()); }
  std::string_view String();
  std::span<const uint8_t> Bytes();

  bool ok() const { return ok_; }
  size_t remaining() const { return in_.size(); }
  // True when every byte was read and no read failed.
  bool Finished() const { return ok_ && in_.empty(); }

 private:
  const uint8_t *Take(size_t length);

  std::span<const uint8_t> in_;
  bool ok_ = true;
};

}  // namespace kc::protocol

#endif  // KEYCELL_PROTOCOL_CODEC_H
