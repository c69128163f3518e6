// Fuzzes size-prefixed framing, which connections opened by the neverbleed
// API use, as the cell's server runs it: cell::HandleSizePrefixedRequest on
// the bytes a connection delivered, until it needs more input or closes the
// connection. The first input byte selects the key store as in
// keycell_dispatcher_fuzzer: bit 0 clear gives an empty store, bit 0 set
// gives RSA 2048 (ids 1 with decryption and 2 without), P-256 (3), Ed25519
// (4) and Ed448 (5) keys from tests/data.
//
// Checks that protocol::SplitSizePrefixedFrame agrees with the prefix and
// the frame header, and that a request consumes exactly its prefix and
// frame. Every request gets exactly one reply with its id and a prefix
// equal to the reply's size, except a key release, which gets none. Every
// rejected prefix gets one error reply and a close.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cell/dispatcher.h"
#include "cell/key_loader.h"
#include "cell/key_store.h"
#include "cell/size_prefixed.h"
#include "protocol/frame.h"

namespace {

namespace cell = kc::cell;
namespace protocol = kc::protocol;

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

std::shared_ptr<const cell::CellKey> LoadKey(const char *name,
                                             bool allow_decrypt) {
  std::string path = std::string(KEYCELL_FUZZ_DATA_DIR) + "/" + name;
  kc::Result<cell::LoadedKey> loaded =
      cell::LoadKeyFile(path, cell::PassphraseSource{});
  if (!loaded.ok()) {
    fprintf(stderr, "failed to load %s: %s\n", path.c_str(),
            loaded.status().message().c_str());
    abort();
  }
  auto key = std::make_shared<cell::CellKey>();
  key->pkey = std::move(loaded->pkey);
  key->type = loaded->type;
  key->policy.allow_decrypt = allow_decrypt;
  key->name = name;
  return key;
}

const std::vector<std::shared_ptr<const cell::CellKey>> &Keys() {
  static const auto *keys =
      new std::vector<std::shared_ptr<const cell::CellKey>>{
          LoadKey("rsa2048-key.pem", true), LoadKey("rsa2048-key.pem", false),
          LoadKey("p256-key.pem", false),   LoadKey("ed25519-key.pem", false),
          LoadKey("ed448-key.pem", false),
      };
  return *keys;
}

// Checks that |out| is exactly one reply frame for |request_id|, preceded
// by its size.
void CheckPrefixedReply(const protocol::WipingBuffer &out,
                        uint64_t request_id) {
  Check(out.size() > sizeof(size_t));
  size_t prefix;
  std::memcpy(&prefix, out.data(), sizeof(prefix));
  Check(prefix == out.size() - sizeof(size_t));
  protocol::Frame reply;
  Check(protocol::SplitFrame(out.span().subspan(sizeof(size_t)), reply) ==
        protocol::SplitResult::kFrame);
  Check(reply.size() == prefix);
  Check(reply.header.version == protocol::kVersion);
  Check(reply.header.id == request_id);
  if (reply.header.status != 0) {
    protocol::ErrorReply error;
    Check(protocol::Decode(reply.payload, error));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv) {
  Keys();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  cell::KeyStore store;
  if ((data[0] & 1) != 0) {
    for (const auto &key : Keys()) {
      store.Add(key);
    }
  }
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
