// Fuzzes the cell's request dispatcher with whole frames, as a connection
// delivers them. The first input byte selects the key store: bit 0 clear
// gives an empty store, bit 0 set gives a store with real keys from
// tests/data, so the signing and decryption paths run. The rest of the
// input is a byte stream that is split into frames and handled until the
// dispatcher returns Outcome::kClose.
//
// Key ids in the full store: 1 RSA 2048 with decryption allowed, 2 RSA 2048
// without, 3 P-256, 4 Ed25519, 5 Ed448.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cell/dispatcher.h"
#include "cell/key_loader.h"
#include "cell/key_store.h"
#include "protocol/frame.h"
#include "protocol/key_policy.h"

namespace {

namespace cell = kc::cell;
namespace protocol = kc::protocol;

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

std::shared_ptr<const cell::CellKey> LoadKey(
    const char *name, const protocol::KeyPolicy &policy) {
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
  key->policy = policy;
  key->name = name;
  return key;
}

protocol::KeyPolicy DecryptPolicy() {
  protocol::KeyPolicy policy;
  policy.allow_decrypt = true;
  return policy;
}

// Signs only with PSS and SHA-256, as a TLS 1.3 server may restrict an RSA
// key.
protocol::KeyPolicy PssSha256Policy() {
  protocol::KeyPolicy policy;
  policy.digests = protocol::ParseDigestList("SHA256", " ").value();
  policy.rsa_sign_paddings = protocol::kSignPaddingPss;
  return policy;
}

const std::vector<std::shared_ptr<const cell::CellKey>> &Keys() {
  static const auto *keys =
      new std::vector<std::shared_ptr<const cell::CellKey>>{
          LoadKey("rsa2048-key.pem", DecryptPolicy()),
          LoadKey("rsa2048-key.pem", {}),
          LoadKey("p256-key.pem", {}),
          LoadKey("ed25519-key.pem", {}),
          LoadKey("ed448-key.pem", {}),
          LoadKey("rsa2048-key.pem", PssSha256Policy()),
      };
  return *keys;
}

// Checks that |out| contains exactly one reply frame for |request_id|.
void CheckReply(const protocol::WipingBuffer &out, uint64_t request_id) {
  protocol::Frame reply;
  Check(protocol::SplitFrame(out.span(), reply) ==
        protocol::SplitResult::kFrame);
  Check(reply.size() == out.size());
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
  while (!in.empty()) {
    protocol::Frame frame;
    protocol::SplitResult split = protocol::SplitFrame(in, frame);
    if (split == protocol::SplitResult::kNeedMore) {
      break;
    }
    protocol::WipingBuffer out;
    if (split == protocol::SplitResult::kTooLarge) {
      dispatcher.RejectOversized(out);
      CheckReply(out, 0);
      break;
    }
    in = in.subspan(frame.size());
    if (frame.header.type ==
        static_cast<uint8_t>(protocol::MessageType::kDropPrivileges)) {
      // A valid request would switch the fuzzing process to another user.
      continue;
    }
    cell::Dispatcher::Outcome outcome = dispatcher.Handle(frame, out);
    CheckReply(out, frame.header.id);
    if (outcome == cell::Dispatcher::Outcome::kClose) {
      break;
    }
  }
  return 0;
}
