// Reference files: the PEM format that names a key held by keycelld.
#include "protocol/reference.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/codec.h"

namespace kc::protocol {
namespace {

KeyReference SampleReference() {
  KeyReference reference;
  reference.socket_path = "/run/keycelld/keycelld.sock";
  reference.key_name = "web-rsa";
  for (int i = 0; i < 91; ++i) {
    reference.public_key.push_back(static_cast<uint8_t>(i * 7));
  }
  return reference;
}

std::string EncodeBody(std::span<const uint8_t> body) {
  // Wraps arbitrary bytes in PEM armor with a base64 encoder of its own, so
  // that bodies the encoder rejects can be built.
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string base64;
  size_t i = 0;
  for (; i + 3 <= body.size(); i += 3) {
    uint32_t group = (body[i] << 16) | (body[i + 1] << 8) | body[i + 2];
    for (int shift = 18; shift >= 0; shift -= 6) {
      base64.push_back(kAlphabet[(group >> shift) & 63]);
    }
  }
  if (body.size() - i == 1) {
    uint32_t group = body[i] << 16;
    base64 += kAlphabet[(group >> 18) & 63];
    base64 += kAlphabet[(group >> 12) & 63];
    base64 += "==";
  } else if (body.size() - i == 2) {
    uint32_t group = (body[i] << 16) | (body[i + 1] << 8);
    base64 += kAlphabet[(group >> 18) & 63];
    base64 += kAlphabet[(group >> 12) & 63];
    base64 += kAlphabet[(group >> 6) & 63];
    base64 += "=";
  }
  return "-----BEGIN KEYCELL PRIVATE KEY-----\n" + base64 +
         "\n-----END KEYCELL PRIVATE KEY-----\n";
}

std::vector<uint8_t> SampleBody(uint8_t version, bool trailing_byte) {
  KeyReference reference = SampleReference();
  WipingBuffer buffer;
  Writer writer(buffer);
  writer.U8(version);
  writer.String(reference.socket_path);
  writer.String(reference.key_name);
  writer.Bytes(reference.public_key);
  if (trailing_byte) {
    writer.U8(0);
  }
  return {buffer.data(), buffer.data() + buffer.size()};
}

TEST(DaemonReference, RoundTrip) {
  KeyReference reference = SampleReference();
  Result<std::string> pem = EncodeReference(reference);
  ASSERT_TRUE(pem.ok()) << pem.status().message();
  EXPECT_EQ(pem->rfind("-----BEGIN KEYCELL PRIVATE KEY-----\n", 0), 0u);
  EXPECT_NE(pem->find("\n-----END KEYCELL PRIVATE KEY-----\n"),
            std::string::npos);

  Result<KeyReference> decoded = DecodeReference(*pem);
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->socket_path, reference.socket_path);
  EXPECT_EQ(decoded->key_name, reference.key_name);
  EXPECT_EQ(decoded->public_key, reference.public_key);
}

TEST(DaemonReference, LinesAreAtMost64Characters) {
  Result<std::string> pem = EncodeReference(SampleReference());
  ASSERT_TRUE(pem.ok());
  size_t start = 0;
  while (start < pem->size()) {
    size_t end = pem->find('\n', start);
    ASSERT_NE(end, std::string::npos);
    std::string line = pem->substr(start, end - start);
    if (line.rfind("-----", 0) != 0) {
      EXPECT_LE(line.size(), 64u) << line;
    }
    start = end + 1;
  }
}

TEST(DaemonReference, BodyMatchesWriterEncoding) {
  std::vector<uint8_t> body = SampleBody(1, false);
  Result<KeyReference> decoded = DecodeReference(EncodeBody(body));
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
  EXPECT_EQ(decoded->key_name, "web-rsa");
}

TEST(DaemonReference, IgnoresTextAroundBlockAndCrLf) {
  Result<std::string> pem = EncodeReference(SampleReference());
  ASSERT_TRUE(pem.ok());
  std::string crlf;
  for (char c : *pem) {
    if (c == '\n') {
      crlf += '\r';
    }
    crlf += c;
  }
  Result<KeyReference> decoded =
      DecodeReference("comment before\n" + crlf + "after\n");
  ASSERT_TRUE(decoded.ok()) << decoded.status().message();
}

struct BadCase {
  const char *name;
  std::string pem;
  const char *expected_message;
};

TEST(DaemonReference, RejectsBadInput) {
  std::vector<uint8_t> truncated = SampleBody(1, false);
  truncated.resize(truncated.size() - 1);
  std::vector<uint8_t> cut_in_path = SampleBody(1, false);
  cut_in_path.resize(5);
  std::vector<BadCase> cases = {
      {"no begin", "hello\n", "no \"-----BEGIN KEYCELL PRIVATE KEY-----\""},
      {"no end", "-----BEGIN KEYCELL PRIVATE KEY-----\nAQ==\n",
       "no \"-----END KEYCELL PRIVATE KEY-----\""},
      {"other label",
       "-----BEGIN PRIVATE KEY-----\nAQ==\n-----END PRIVATE KEY-----\n",
       "no \"-----BEGIN KEYCELL"},
      {"empty body",
       "-----BEGIN KEYCELL PRIVATE KEY-----\n-----END KEYCELL PRIVATE "
       "KEY-----\n",
       "empty"},
      {"bad character",
       "-----BEGIN KEYCELL PRIVATE KEY-----\nAQ*=\n-----END KEYCELL PRIVATE "
       "KEY-----\n",
       "invalid character"},
      {"bad length",
       "-----BEGIN KEYCELL PRIVATE KEY-----\nAQA\n-----END KEYCELL PRIVATE "
       "KEY-----\n",
       "not a multiple of 4"},
      {"padding bits",
       "-----BEGIN KEYCELL PRIVATE KEY-----\nAR==\n-----END KEYCELL PRIVATE "
       "KEY-----\n",
       "padding bits"},
      {"headers",
       "-----BEGIN KEYCELL PRIVATE KEY-----\nProc-Type: 4\nAQ==\n-----END "
       "KEYCELL PRIVATE KEY-----\n",
       "PEM headers"},
      {"version 2", EncodeBody(SampleBody(2, false)), "version 2"},
      {"trailing byte", EncodeBody(SampleBody(1, true)),
       "bytes after the public key"},
      {"truncated key", EncodeBody(truncated), "inside the public key"},
      {"truncated path", EncodeBody(cut_in_path), "inside the socket path"},
  };
  for (const BadCase &bad : cases) {
    Result<KeyReference> decoded = DecodeReference(bad.pem);
    ASSERT_FALSE(decoded.ok()) << bad.name;
    EXPECT_EQ(decoded.status().code(), Code::kInvalidArgument) << bad.name;
    EXPECT_NE(decoded.status().message().find(bad.expected_message),
              std::string::npos)
        << bad.name << ": " << decoded.status().message();
  }
}

TEST(DaemonReference, ValidatesFields) {
  KeyReference relative = SampleReference();
  relative.socket_path = "run/keycelld.sock";
  EXPECT_FALSE(EncodeReference(relative).ok());

  KeyReference long_path = SampleReference();
  long_path.socket_path = "/" + std::string(107, 'a');
  EXPECT_FALSE(EncodeReference(long_path).ok());

  KeyReference bad_name = SampleReference();
  bad_name.key_name = "web rsa";
  EXPECT_FALSE(EncodeReference(bad_name).ok());

  KeyReference empty_key = SampleReference();
  empty_key.public_key.clear();
  EXPECT_FALSE(EncodeReference(empty_key).ok());
}

TEST(DaemonReference, KeyNames) {
  EXPECT_TRUE(ValidKeyName("web-rsa"));
  EXPECT_TRUE(ValidKeyName("a.b_c-1"));
  EXPECT_FALSE(ValidKeyName(""));
  EXPECT_FALSE(ValidKeyName("-web"));
  EXPECT_FALSE(ValidKeyName(".web"));
  EXPECT_FALSE(ValidKeyName("web/rsa"));
  EXPECT_FALSE(ValidKeyName(std::string(65, 'a')));
  EXPECT_TRUE(ValidKeyName(std::string(64, 'a')));
}

}  // namespace
}  // namespace kc::protocol
