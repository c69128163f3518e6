// Fuzzes the cell's request dispatcher with whole frames, as a connection
// delivers them. The first input byte selects the key store: bit 0 clear
// gives an empty store, bit 0 set gives a store with real keys from
// tests/data, so the signing and decryption paths run. The rest of the
// input is a byte stream that is split into frames and handled until the
// dispatcher returns Outcome::kClose.
//
// fuzz_keys.h lists the keys of the full store.
#include <cstddef>
#include <cstdint>
#include <span>

#include "cell/dispatcher.h"
#include "cell/key_store.h"
#include "fuzz_keys.h"
#include "protocol/frame.h"

namespace {

namespace cell = kc::cell;
namespace protocol = kc::protocol;
using kc::fuzz::CheckReply;

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
  while (!in.empty()) {
    protocol::Frame frame;
    protocol::SplitResult split = protocol::SplitFrame(in, frame);
    if (split == protocol::SplitResult::kNeedMore) {
      break;
    }
    protocol::WipingBuffer out;
    if (split == protocol::SplitResult::kTooLarge) {
      dispatcher.RejectOversized(out);
      CheckReply(out.span(), 0);
      break;
    }
    in = in.subspan(frame.size());
    if (frame.header.type ==
        static_cast<uint8_t>(protocol::MessageType::kDropPrivileges)) {
      // A valid request would switch the fuzzing process to another user.
      continue;
    }
    cell::Dispatcher::Outcome outcome = dispatcher.Handle(frame, out);
    CheckReply(out.span(), frame.header.id);
    if (outcome == cell::Dispatcher::Outcome::kClose) {
      break;
    }
  }
  return 0;
}
