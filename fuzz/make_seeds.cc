// Writes the seed corpora of the fuzz targets: one valid frame or message of
// each type, and the key files of tests/data with each passphrase source.
//
// Usage: keycell_fuzz_seeds CORPUS_DIR DATA_DIR
// CORPUS_DIR gets one subdirectory per fuzz target.
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "protocol/frame.h"
#include "protocol/key_policy.h"
#include "protocol/messages.h"

namespace {

namespace protocol = kc::protocol;
using protocol::MessageType;

std::string corpus_dir;
std::string data_dir;

void Write(const std::string &target, const std::string &name,
           const std::vector<uint8_t> &bytes) {
  std::string dir = corpus_dir + "/" + target;
  mkdir(dir.c_str(), 0755);
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name.c_str());
    exit(1);
  }
}

std::vector<uint8_t> ReadData(const std::string &name) {
  std::ifstream in(data_dir + "/" + name, std::ios::binary);
  if (!in) {
    fprintf(stderr, "cannot read %s/%s\n", data_dir.c_str(), name.c_str());
    exit(1);
  }
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<uint8_t> Bytes(const protocol::WipingBuffer &buffer) {
  return {buffer.data(), buffer.data() + buffer.size()};
}

// Returns |frames| with each frame preceded by its size as a size_t, after
// a key store selector byte of 1, as keycell_size_prefixed_fuzzer reads it.
std::vector<uint8_t> SizePrefixed(const protocol::WipingBuffer &frames) {
  std::vector<uint8_t> input{1};
  std::span<const uint8_t> rest = frames.span();
  protocol::Frame frame;
  while (protocol::SplitFrame(rest, frame) == protocol::SplitResult::kFrame) {
    size_t size = frame.size();
    const auto *prefix = reinterpret_cast<const uint8_t *>(&size);
    input.insert(input.end(), prefix, prefix + sizeof(size));
    input.insert(input.end(), rest.begin(), rest.begin() + size);
    rest = rest.subspan(size);
  }
  return input;
}

std::span<const uint8_t> AsBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t *>(text.data()), text.size()};
}

// Writes |message| as a frame seed, a dispatcher seed for each key store and
// a message seed whose first byte selects the decoder.
template <typename Message>
void Seed(const std::string &name, MessageType type, uint8_t decoder,
          const Message &message) {
  protocol::WipingBuffer frame;
  protocol::AppendFrame(frame, static_cast<uint8_t>(type), 0, 7, message);
  Write("frame", name, Bytes(frame));
  for (uint8_t store : {0, 1}) {
    std::vector<uint8_t> input{store};
    input.insert(input.end(), frame.data(), frame.data() + frame.size());
    Write("dispatcher", name + (store == 0 ? "-empty" : "-keys"), input);
  }
  Write("size_prefixed", name, SizePrefixed(frame));
  protocol::WipingBuffer payload;
  protocol::Writer writer(payload);
  protocol::Encode(writer, message);
  std::vector<uint8_t> input{decoder};
  input.insert(input.end(), payload.data(), payload.data() + payload.size());
  Write("messages", name, input);
}

// Writes a message seed for a reply, which only clients decode.
template <typename Message>
void ReplySeed(const std::string &name, uint8_t decoder,
               const Message &message) {
  protocol::WipingBuffer payload;
  protocol::Writer writer(payload);
  protocol::Encode(writer, message);
  std::vector<uint8_t> input{decoder};
  input.insert(input.end(), payload.data(), payload.data() + payload.size());
  Write("messages", name, input);
}

void WriteProtocolSeeds() {
  static const uint8_t kDigest[32] = {1, 2, 3};
  static const uint8_t kCiphertext[256] = {0x42};

  protocol::LoadKeyRequest load;
  std::string key_path = data_dir + "/p256-key.pem";
  load.path = key_path;
  Seed("load-key", MessageType::kLoadKey, 0, load);
  load.has_passphrase = true;
  load.passphrase = AsBytes("keycell test passphrase");
  load.policy.allow_decrypt = true;
  Seed("load-key-passphrase", MessageType::kLoadKey, 0, load);
  load.has_passphrase = false;
  load.passphrase = {};
  load.policy = protocol::KeyPolicy();
  load.policy.digests = protocol::ParseDigestList("SHA256", " ").value();
  load.policy.rsa_sign_paddings = protocol::kSignPaddingPss;
  Seed("load-key-policy", MessageType::kLoadKey, 0, load);

  protocol::SignRequest sign;
  sign.key_id = 1;
  sign.digest = "SHA256";
  sign.padding = protocol::kPaddingPkcs1;
  sign.input = kDigest;
  Seed("sign-rsa-pkcs1", MessageType::kSign, 2, sign);
  sign.padding = protocol::kPaddingPss;
  sign.salt_length = -1;
  sign.mgf1_digest = "SHA256";
  Seed("sign-rsa-pss", MessageType::kSign, 2, sign);
  // Key 6 of the dispatcher's store signs only with PSS and SHA-256.
  sign.key_id = 6;
  Seed("sign-rsa-pss-allowed", MessageType::kSign, 2, sign);
  sign.mgf1_digest = "SHA1";
  Seed("sign-rsa-pss-mgf1-forbidden", MessageType::kSign, 2, sign);
  sign.padding = protocol::kPaddingPkcs1;
  sign.mgf1_digest = {};
  Seed("sign-rsa-pkcs1-forbidden", MessageType::kSign, 2, sign);
  sign.key_id = 3;
  sign.padding = protocol::kPaddingNone;
  sign.salt_length = 0;
  sign.mgf1_digest = {};
  Seed("sign-ecdsa", MessageType::kSign, 2, sign);
  sign.key_id = 4;
  sign.digest = {};
  sign.input = AsBytes("message to sign");
  Seed("sign-ed25519", MessageType::kSign, 2, sign);

  protocol::DecryptRequest decrypt;
  decrypt.key_id = 1;
  decrypt.padding = protocol::kPaddingPkcs1;
  decrypt.ciphertext = kCiphertext;
  Seed("decrypt-pkcs1", MessageType::kDecrypt, 4, decrypt);
  decrypt.padding = protocol::kPaddingOaep;
  decrypt.oaep_digest = "SHA256";
  decrypt.mgf1_digest = "SHA256";
  decrypt.oaep_label = AsBytes("label");
  Seed("decrypt-oaep", MessageType::kDecrypt, 4, decrypt);
  decrypt.padding = protocol::kPaddingPkcs1Tls;
  decrypt.oaep_digest = {};
  decrypt.mgf1_digest = {};
  decrypt.oaep_label = {};
  decrypt.tls_client_version = 0x0303;
  decrypt.tls_negotiated_version = 0x0303;
  Seed("decrypt-tls", MessageType::kDecrypt, 4, decrypt);
  decrypt.key_id = 2;
  Seed("decrypt-forbidden", MessageType::kDecrypt, 4, decrypt);

  Seed("release-key", MessageType::kReleaseKey, 6,
       protocol::ReleaseKeyRequest{2});
  Seed("drop-privileges", MessageType::kDropPrivileges, 7,
       protocol::DropPrivilegesRequest{"nobody"});
  Seed("seal", MessageType::kSeal, 9, protocol::SealRequest{});

  ReplySeed("load-key-reply", 1,
            protocol::LoadKeyReply{1, protocol::KeyType::kEc, kDigest});
  ReplySeed("sign-reply", 3, protocol::SignReply{kCiphertext});
  ReplySeed("decrypt-reply", 5, protocol::DecryptReply{kDigest});
  ReplySeed("error-reply", 8, protocol::ErrorReply{"no key with id 9"});

  protocol::WipingBuffer ping;
  protocol::AppendEmptyFrame(ping, static_cast<uint8_t>(MessageType::kPing), 0,
                             1);
  Write("frame", "ping", Bytes(ping));
  // Several requests on one connection: ping, sign, release, sign again.
  protocol::WipingBuffer pipeline;
  protocol::AppendEmptyFrame(pipeline, static_cast<uint8_t>(MessageType::kPing),
                             0, 1);
  sign.key_id = 3;
  sign.digest = "SHA384";
  sign.input = kDigest;
  protocol::AppendFrame(pipeline, static_cast<uint8_t>(MessageType::kSign), 0,
                        2, sign);
  protocol::AppendFrame(pipeline,
                        static_cast<uint8_t>(MessageType::kReleaseKey), 0, 3,
                        protocol::ReleaseKeyRequest{3});
  protocol::AppendFrame(pipeline, static_cast<uint8_t>(MessageType::kSign), 0,
                        4, sign);
  std::vector<uint8_t> input{1};
  input.insert(input.end(), pipeline.data(), pipeline.data() + pipeline.size());
  Write("dispatcher", "pipeline-keys", input);
  Write("frame", "pipeline", Bytes(pipeline));
  std::vector<uint8_t> prefixed = SizePrefixed(pipeline);
  Write("size_prefixed", "pipeline", prefixed);
  // A prefix one byte above the first frame's size, and one above the
  // maximum frame.
  std::vector<uint8_t> mismatch = prefixed;
  mismatch[1]++;
  Write("size_prefixed", "prefix-mismatch", mismatch);
  std::vector<uint8_t> too_large{1};
  size_t above_maximum = protocol::kHeaderSize + protocol::kMaxPayload + 1;
  const auto *prefix = reinterpret_cast<const uint8_t *>(&above_maximum);
  too_large.insert(too_large.end(), prefix, prefix + sizeof(above_maximum));
  Write("size_prefixed", "prefix-too-large", too_large);
}

void WriteKeySeeds() {
  // Selector values of key_loader_fuzzer.cc: 0 none, 1 passphrase bytes,
  // 2 passphrase file.
  struct KeySeed {
    const char *file;
    uint8_t selector;
  };
  static const KeySeed kSeeds[] = {
      {"rsa2048-key.pem", 0},       {"rsa2048-pkcs1.pem", 0},
      {"rsa2048-pkcs1.der", 0},     {"rsa2048-pkcs8.der", 0},
      {"rsa2048-pkcs8-enc.pem", 1}, {"rsa2048-pkcs8-enc.der", 2},
      {"rsa2048-trad-enc.pem", 1},  {"rsa2048-cert-key.pem", 0},
      {"p256-key.pem", 0},          {"p256-sec1.pem", 0},
      {"p256-sec1.der", 0},         {"p256-pkcs8.der", 0},
      {"p256-pkcs8-enc.pem", 2},    {"p256-pkcs8-enc.der", 1},
      {"p256-trad-enc.pem", 2},     {"p256-crlf.pem", 0},
      {"p384-key.pem", 0},          {"p521-key.pem", 0},
      {"ed25519-key.pem", 0},       {"ed25519-pkcs8.der", 0},
      {"ed448-key.pem", 0},         {"dsa2048-key.pem", 0},
      {"x25519-key.pem", 0},        {"p256-cert.pem", 0},
  };
  for (const KeySeed &seed : kSeeds) {
    std::vector<uint8_t> input{seed.selector};
    std::vector<uint8_t> key = ReadData(seed.file);
    input.insert(input.end(), key.begin(), key.end());
    Write("key_loader",
          std::string(seed.file) + "-" + std::to_string(seed.selector), input);
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s CORPUS_DIR DATA_DIR\n", argv[0]);
    return 2;
  }
  corpus_dir = argv[1];
  data_dir = argv[2];
  mkdir(corpus_dir.c_str(), 0755);
  WriteProtocolSeeds();
  WriteKeySeeds();
  return 0;
}
