// Building and splitting frames: a header followed by an encoded message.
#ifndef KEYCELL_PROTOCOL_FRAME_H
#define KEYCELL_PROTOCOL_FRAME_H

#include <cstdint>
#include <optional>
#include <span>

#include "protocol/codec.h"
#include "protocol/messages.h"

namespace kc::protocol {

// Appends a frame carrying |message| to |out|.
template <typename Message>
void AppendFrame(WipingBuffer &out, uint8_t type, uint16_t status, uint64_t id,
                 const Message &message) {
  size_t start = out.size();
  uint8_t placeholder[kHeaderSize] = {};
  out.Append(placeholder, sizeof(placeholder));
  Writer writer(out);
  Encode(writer, message);
  FrameHeader header;
  header.length = static_cast<uint32_t>(out.size() - start - kHeaderSize);
  header.type = type;
  header.status = status;
  header.id = id;
  EncodeHeader(header, out.data() + start);
}

// Appends a frame with an empty payload.
void AppendEmptyFrame(WipingBuffer &out, uint8_t type, uint16_t status,
                      uint64_t id);

struct Frame {
  FrameHeader header;
  std::span<const uint8_t> payload;
  size_t size() const { return kHeaderSize + payload.size(); }
};

enum class SplitResult { kFrame, kNeedMore, kTooLarge };

// The way a connection delimits its frames. kSizePrefixed puts the frame's size
// in bytes, as a native-endian size_t, before each frame in both
// directions; it is the framing that neverbleed's clients write. On such a
// connection a ReleaseKey request gets no reply.
enum class Framing : uint8_t { kPlain = 0, kSizePrefixed = 1 };

// Finds the first complete frame at the start of |in|. On kFrame, |frame|
// points into |in|.
SplitResult SplitFrame(std::span<const uint8_t> in, Frame &frame);

enum class PrefixedSplitResult { kFrame, kNeedMore, kTooLarge, kMismatch };

// Finds the first size-prefixed frame at the start of |in|: a native-endian
// size_t, then a frame of exactly that many bytes. |declared| receives the
// prefix once |in| contains it.
// - kFrame: |frame| points into |in|; the prefix and the frame take
//   sizeof(size_t) + |declared| bytes.
// - kNeedMore: the prefix or some of the |declared| bytes are missing.
// - kTooLarge: the prefix exceeds kHeaderSize + kMaxPayload.
// - kMismatch: the |declared| bytes do not hold exactly one frame, because
//   its header announces more or fewer bytes or too large a payload.
PrefixedSplitResult SplitSizePrefixedFrame(std::span<const uint8_t> in,
                                           Frame &frame, size_t &declared);

}  // namespace kc::protocol

#endif  // KEYCELL_PROTOCOL_FRAME_H
