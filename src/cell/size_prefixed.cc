#include "cell/size_prefixed.h"

#include <string>

#include "protocol/frame.h"
#include "protocol/messages.h"

namespace kc::cell {

PrefixedStep HandleSizePrefixedRequest(Dispatcher &dispatcher,
                                       std::span<const uint8_t> input,
                                       ConnectionContext *context,
                                       protocol::WipingBuffer &out,
                                       size_t &consumed) {
  consumed = 0;
  protocol::Frame frame;
  size_t declared = 0;
  protocol::WipingBuffer reply;
  PrefixedStep step = PrefixedStep::kReplied;
  switch (protocol::SplitSizePrefixedFrame(input, frame, declared)) {
    case protocol::PrefixedSplitResult::kNeedMore:
      return PrefixedStep::kNeedMore;
    case protocol::PrefixedSplitResult::kTooLarge:
      dispatcher.RejectOversized(reply, context);
      step = PrefixedStep::kClose;
      break;
    case protocol::PrefixedSplitResult::kMismatch:
      dispatcher.RejectSizePrefix(
          "the size prefix " + std::to_string(declared) +
              " disagrees with the length in the frame header",
          reply, context);
      step = PrefixedStep::kClose;
      break;
    case protocol::PrefixedSplitResult::kFrame:
      consumed = sizeof(size_t) + declared;
      if (dispatcher.Handle(frame, reply, context) ==
          Dispatcher::Outcome::kClose) {
        step = PrefixedStep::kClose;
      } else if (frame.header.type ==
                 static_cast<uint8_t>(protocol::MessageType::kReleaseKey)) {
        // neverbleed sends key releases without reading a reply.
        reply.Clear();
      }
      break;
  }
  if (reply.size() != 0) {
    size_t reply_size = reply.size();
    out.Append(&reply_size, sizeof(reply_size));
    out.Append(reply.data(), reply.size());
  }
  return step;
}

}  // namespace kc::cell
