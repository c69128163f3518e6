#include "fuzz_keys.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "cell/key_loader.h"
#include "protocol/frame.h"
#include "protocol/key_policy.h"
#include "protocol/messages.h"

namespace kc::fuzz {
namespace {

std::shared_ptr<const cell::CellKey> LoadKey(
    const char *name, const protocol::KeyPolicy &policy) {
  std::string path = std::string(KEYCELL_FUZZ_DATA_DIR) + "/" + name;
  Result<cell::LoadedKey> loaded =
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

}  // namespace

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

void FillStore(uint8_t selector, cell::KeyStore &store) {
  if ((selector & 1) == 0) {
    return;
  }
  for (const auto &key : Keys()) {
    store.Add(key);
  }
}

void CheckReply(std::span<const uint8_t> reply, uint64_t request_id) {
  protocol::Frame frame;
  Check(protocol::SplitFrame(reply, frame) == protocol::SplitResult::kFrame);
  Check(frame.size() == reply.size());
  Check(frame.header.version == protocol::kVersion);
  Check(frame.header.id == request_id);
  if (frame.header.status != 0) {
    protocol::ErrorReply error;
    Check(protocol::Decode(frame.payload, error));
  }
}

}  // namespace kc::fuzz
