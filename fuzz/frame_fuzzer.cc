// Fuzzes the frame splitter and header decoder on arbitrary byte streams.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "protocol/codec.h"
#include "protocol/frame.h"

namespace {

using kc::protocol::Frame;
using kc::protocol::FrameHeader;
using kc::protocol::SplitResult;

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::span<const uint8_t> in(data, size);

  if (size >= kc::protocol::kHeaderSize) {
    std::optional<FrameHeader> header = kc::protocol::DecodeHeader(data);
    if (header) {
      // A decoded header encodes back to the same bytes.
      Check(header->length <= kc::protocol::kMaxPayload);
      uint8_t encoded[kc::protocol::kHeaderSize];
      kc::protocol::EncodeHeader(*header, encoded);
      for (size_t i = 0; i < kc::protocol::kHeaderSize; ++i) {
        Check(encoded[i] == data[i]);
      }
    }
  }

  // Split the input into consecutive frames, as the cell does with the bytes
  // of one connection.
  while (!in.empty()) {
    Frame frame;
    SplitResult result = kc::protocol::SplitFrame(in, frame);
    if (result == SplitResult::kNeedMore) {
      // Either the header or part of the announced payload is missing.
      if (in.size() >= kc::protocol::kHeaderSize) {
        std::optional<FrameHeader> header =
            kc::protocol::DecodeHeader(in.data());
        Check(header.has_value());
        Check(in.size() - kc::protocol::kHeaderSize < header->length);
      }
      break;
    }
    if (result == SplitResult::kTooLarge) {
      Check(!kc::protocol::DecodeHeader(in.data()).has_value());
      break;
    }
    Check(frame.size() <= in.size());
    Check(frame.payload.data() == in.data() + kc::protocol::kHeaderSize);
    Check(frame.payload.size() == frame.header.length);
    in = in.subspan(frame.size());
  }
  return 0;
}
