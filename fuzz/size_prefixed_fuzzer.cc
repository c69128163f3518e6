// Fuzzes size-prefixed framing, which connections opened by the neverbleed
// API use, as the cell's server runs it: cell::HandleSizePrefixedRequest on
// the bytes a connection delivered, until it needs more input or closes the
// connection. The first input byte selects the key store of
// kc::fuzz::FillStore, which keycell_dispatcher_fuzzer uses too.
//
// Checks that protocol::SplitSizePrefixedFrame agrees with the prefix and
// the frame header, and that a request consumes exactly its prefix and
// frame. Every request gets exactly one reply with its id and a prefix
// equal to the reply's size, except a key release, which gets none. Every
// rejected prefix gets one error reply and a close.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "cell/dispatcher.h"
#include "cell/key_store.h"
#include "cell/size_prefixed.h"
#include "fuzz_keys.h"
#include "protocol/frame.h"

namespace {

namespace cell = kc::cell;
namespace protocol = kc::protocol;
using kc::fuzz::Check;

// Checks that |out| is exactly one reply frame for |request_id|, preceded
// by its size.
void CheckPrefixedReply(const protocol::WipingBuffer &out,
                        uint64_t request_id) {
  Check(out.size() > sizeof(size_t));
  size_t prefix;
  std::memcpy(&prefix, out.data(), sizeof(prefix));
  Check(prefix == out.size() - sizeof(size_t));
  kc::fuzz::CheckReply(out.span().subspan(sizeof(size_t)), request_id);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv) {
  cell::KeyStore store;
  kc::fuzz::FillStore(1, store);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  cell::KeyStore store;
  kc::fuzz::FillStore(data[0], store);
  cell::Dispatcher dispatcher(store, nullptr);
  std::span<const uint8_t> in(data + 1, size - 1);
  for (;;) {
    protocol::Frame frame;
    size_t declared = 0;
    protocol::PrefixedSplitResult split =
        protocol::SplitSizePrefixedFrame(in, frame, declared);
    if (split == protocol::PrefixedSplitResult::kFrame &&
        frame.header.type ==
            static_cast<uint8_t>(protocol::MessageType::kDropPrivileges)) {
      // A valid request would switch the fuzzing process to another user.
      in = in.subspan(sizeof(size_t) + declared);
      continue;
    }

    protocol::WipingBuffer out;
    size_t consumed = 1;
    cell::PrefixedStep step =
        cell::HandleSizePrefixedRequest(dispatcher, in, nullptr, out, consumed);
    switch (split) {
      case protocol::PrefixedSplitResult::kNeedMore:
        Check(step == cell::PrefixedStep::kNeedMore);
        Check(consumed == 0 && out.size() == 0);
        Check(in.size() < sizeof(size_t) ||
              (declared <= protocol::kHeaderSize + protocol::kMaxPayload &&
               in.size() - sizeof(size_t) < declared));
        return 0;
      case protocol::PrefixedSplitResult::kTooLarge:
        Check(declared > protocol::kHeaderSize + protocol::kMaxPayload);
        Check(step == cell::PrefixedStep::kClose && consumed == 0);
        CheckPrefixedReply(out, 0);
        return 0;
      case protocol::PrefixedSplitResult::kMismatch: {
        Check(in.size() - sizeof(size_t) >= declared);
        // The declared bytes hold no frame of exactly that size.
        protocol::Frame inner;
        Check(protocol::SplitFrame(in.subspan(sizeof(size_t), declared),
                                   inner) != protocol::SplitResult::kFrame ||
              inner.size() != declared);
        Check(step == cell::PrefixedStep::kClose && consumed == 0);
        CheckPrefixedReply(out, 0);
        return 0;
      }
      case protocol::PrefixedSplitResult::kFrame:
        Check(declared == frame.size());
        Check(frame.payload.data() ==
              in.data() + sizeof(size_t) + protocol::kHeaderSize);
        Check(consumed == sizeof(size_t) + declared && consumed <= in.size());
        Check(step != cell::PrefixedStep::kNeedMore);
        if (step == cell::PrefixedStep::kReplied &&
            frame.header.type ==
                static_cast<uint8_t>(protocol::MessageType::kReleaseKey)) {
          Check(out.size() == 0);
        } else {
          CheckPrefixedReply(out, frame.header.id);
        }
        if (step == cell::PrefixedStep::kClose) {
          return 0;
        }
        in = in.subspan(consumed);
        break;
    }
  }
}
