#include "protocol/frame.h"

#include <cstring>

namespace kc::protocol {

void AppendEmptyFrame(WipingBuffer &out, uint8_t type, uint16_t status,
                      uint64_t id) {
  FrameHeader header;
  header.type = type;
  header.status = status;
  header.id = id;
  uint8_t bytes[kHeaderSize];
  EncodeHeader(header, bytes);
  out.Append(bytes, sizeof(bytes));
}

SplitResult SplitFrame(std::span<const uint8_t> in, Frame &frame) {
  if (in.size() < kHeaderSize) {
    return SplitResult::kNeedMore;
  }
  std::optional<FrameHeader> header = DecodeHeader(in.data());
  if (!header) {
    return SplitResult::kTooLarge;
  }
  if (in.size() - kHeaderSize < header->length) {
    return SplitResult::kNeedMore;
  }
  frame.header = *header;
  frame.payload = in.subspan(kHeaderSize, header->length);
  return SplitResult::kFrame;
}

PrefixedSplitResult SplitSizePrefixedFrame(std::span<const uint8_t> in,
                                           Frame &frame, size_t &declared) {
  if (in.size() < sizeof(size_t)) {
    return PrefixedSplitResult::kNeedMore;
  }
  std::memcpy(&declared, in.data(), sizeof(declared));
  if (declared > kHeaderSize + kMaxPayload) {
    return PrefixedSplitResult::kTooLarge;
  }
  if (in.size() - sizeof(size_t) < declared) {
    return PrefixedSplitResult::kNeedMore;
  }
  Frame inner;
  if (SplitFrame(in.subspan(sizeof(size_t), declared), inner) !=
          SplitResult::kFrame ||
      inner.size() != declared) {
    return PrefixedSplitResult::kMismatch;
  }
  frame = inner;
  return PrefixedSplitResult::kFrame;
}

}  // namespace kc::protocol
