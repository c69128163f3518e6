// keycell.so loaded in-process with OSSL_PROVIDER_load: reference files
// through PEM_read_bio_PrivateKey and SSL_CTX_use_PrivateKey_file, keycell:
// URIs through OSSL_STORE, and daemon restarts, against a fake keycelld.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "module_test_util.h"
#include "protocol/codec.h"
#include "test_util.h"

namespace keycell_test {
namespace {

// Loads the default provider and keycell.so into the default library
// context. The default provider goes first, so that fetches without a
// property query keep returning its implementations.
bool LoadModule(std::string *error) {
  if (OSSL_PROVIDER_load(nullptr, "default") == nullptr ||
      OSSL_PROVIDER_load(nullptr, ModulePath()) == nullptr) {
    *error = DrainOpenSslErrors();
    return false;
  }
  return true;
}

EvpPkeyPtr ReadReference(const std::string &path, std::string *error) {
  BIO *bio = BIO_new_file(path.c_str(), "r");
  if (bio == nullptr) {
    *error = "cannot open " + path;
    return nullptr;
  }
  EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr) {
    *error = DrainOpenSslErrors();
  }
  return EvpPkeyPtr(key);
}

EvpPkeyPtr LoadUri(const std::string &uri, std::string *error) {
  OSSL_STORE_CTX *store =
      OSSL_STORE_open(uri.c_str(), nullptr, nullptr, nullptr, nullptr);
  if (store == nullptr) {
    *error = DrainOpenSslErrors();
    return nullptr;
  }
  EVP_PKEY *key = nullptr;
  while (key == nullptr && !OSSL_STORE_eof(store)) {
    OSSL_STORE_INFO *info = OSSL_STORE_load(store);
    if (info == nullptr) {
      break;
    }
    if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) {
      key = OSSL_STORE_INFO_get1_PKEY(info);
    }
    OSSL_STORE_INFO_free(info);
  }
  OSSL_STORE_close(store);
  if (key == nullptr) {
    *error = DrainOpenSslErrors();
  }
  return EvpPkeyPtr(key);
}

class ModuleProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(dir_.path(), "");
    daemon_ = std::make_unique<FakeDaemon>(dir_.File("keycelld.sock"));
    for (const char *name : {"rsa2048", "p256", "ed25519", "ed448"}) {
      std::string error;
      EvpPkeyPtr key = ReadPrivateKeyInProcess(KeyPath(name), &error);
      ASSERT_NE(key, nullptr) << error;
      daemon_->AddKey(name, key.get());
      ASSERT_TRUE(WriteReferenceFile(Reference(name), daemon_->socket_path(),
                                     name, key.get(), &error))
          << error;
    }
    std::string error;
    ASSERT_TRUE(daemon_->Start(&error)) << error;
  }

  std::string Reference(const std::string &name) const {
    return dir_.File(name + "-ref.pem");
  }

  TempDir dir_;
  std::unique_ptr<FakeDaemon> daemon_;
};

TEST_F(ModuleProviderTest, PemReadSignsEveryKeyType) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  for (const char *name : {"rsa2048", "p256", "ed25519", "ed448"}) {
    SCOPED_TRACE(name);
    EvpPkeyPtr key = ReadReference(Reference(name), &error);
    ASSERT_NE(key, nullptr) << error;
    EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath(name), &error);
    ASSERT_NE(public_key, nullptr) << error;
    EXPECT_EQ(EVP_PKEY_eq(key.get(), public_key.get()), 1);
    EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(),
                              DefaultDigest(key.get()), &error))
        << error;
  }
  EXPECT_GE(daemon_->sign_requests(), 4);
}

TEST_F(ModuleProviderTest, SslCtxUsesReferenceFile) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  ASSERT_NE(ctx, nullptr);
  ASSERT_EQ(SSL_CTX_use_certificate_file(ctx.get(), CertPath("p256").c_str(),
                                         SSL_FILETYPE_PEM),
            1)
      << DrainOpenSslErrors();
  ASSERT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), Reference("p256").c_str(),
                                        SSL_FILETYPE_PEM),
            1)
      << DrainOpenSslErrors();
  EXPECT_EQ(SSL_CTX_check_private_key(ctx.get()), 1) << DrainOpenSslErrors();
}

TEST_F(ModuleProviderTest, StoreLoadsKeycellUri) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  EvpPkeyPtr key =
      LoadUri("keycell:ed25519?socket=" + daemon_->socket_path(), &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("ed25519"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), nullptr, &error))
      << error;
}

TEST_F(ModuleProviderTest, StoreRejectsInvalidUris) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  const std::string socket = daemon_->socket_path();
  struct Case {
    std::string uri;
    std::string message;
  };
  const Case cases[] = {
      {"keycell:p256", "has no absolute socket path"},
      {"keycell:p256?socket=relative.sock", "has no absolute socket path"},
      {"keycell:.hidden?socket=" + socket, "invalid key name"},
      {"keycell:p256?port=1", "unknown parameter 'port=1'"},
      {"keycell:p256?socket=%zz", "invalid percent escape"},
      {"keycell:missing?socket=" + socket, "no key named missing"},
  };
  for (const Case &test : cases) {
    SCOPED_TRACE(test.uri);
    EvpPkeyPtr key = LoadUri(test.uri, &error);
    EXPECT_EQ(key, nullptr);
    EXPECT_NE(error.find(test.message), std::string::npos) << error;
  }
}

TEST_F(ModuleProviderTest, DaemonRestartFailsThenRecovers) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  EvpPkeyPtr key = ReadReference(Reference("p256"), &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  ASSERT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;

  daemon_->Stop();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(1));
  EXPECT_NE(error.find("keycelld is not running at " + daemon_->socket_path() +
                       ": Connection refused"),
            std::string::npos)
      << error;

  daemon_->Stop(true);
  EXPECT_FALSE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error));
  EXPECT_NE(error.find("No such file or directory"), std::string::npos)
      << error;

  ASSERT_TRUE(daemon_->Start(&error)) << error;
  int opens = daemon_->open_requests();
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;
  // The new connection opened the key again, because ids are per
  // connection and the restarted daemon numbers them anew.
  EXPECT_EQ(daemon_->open_requests(), opens + 1);
}

TEST_F(ModuleProviderTest, ForkedChildConnectsAgain) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  EvpPkeyPtr key = ReadReference(Reference("p256"), &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  ASSERT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;
  int opens = daemon_->open_requests();

  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::string child_error;
    _exit(SignAndVerify(key.get(), public_key.get(), "SHA256", &child_error)
              ? 0
              : 1);
  }
  EXPECT_EQ(WaitForChild(pid), "exit status 0");
  // The child opened a connection of its own and the key on it.
  EXPECT_EQ(daemon_->open_requests(), opens + 1);

  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;
  EXPECT_EQ(daemon_->open_requests(), opens + 1);
}

TEST_F(ModuleProviderTest, ThreadsUseOwnConnections) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  EvpPkeyPtr key = ReadReference(Reference("rsa2048"), &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("rsa2048"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  constexpr int kThreads = 4;
  constexpr int kSignaturesPerThread = 20;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kSignaturesPerThread; ++i) {
        std::string thread_error;
        if (!SignAndVerify(key.get(), public_key.get(), "SHA256",
                           &thread_error)) {
          ++failures;
        }
      }
    });
  }
  for (std::thread &thread : threads) {
    thread.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(daemon_->open_requests(), kThreads);
  EXPECT_EQ(daemon_->sign_requests(), kThreads * kSignaturesPerThread);
}

TEST_F(ModuleProviderTest, UnknownKeyNameFailsToSign) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  std::string path = dir_.File("unknown-ref.pem");
  ASSERT_TRUE(WriteReferenceFile(path, daemon_->socket_path(), "unknown",
                                 public_key.get(), &error))
      << error;
  EvpPkeyPtr key = ReadReference(path, &error);
  ASSERT_NE(key, nullptr) << error;
  EXPECT_FALSE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error));
  EXPECT_NE(error.find("did not open key 'unknown': no key named unknown"),
            std::string::npos)
      << error;
}

TEST_F(ModuleProviderTest, MismatchedPublicKeyIsRejected) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  // A reference that names key "p256" but carries the P-384 public key.
  EvpPkeyPtr other = ReadCertificatePublicKey(CertPath("p384"), &error);
  ASSERT_NE(other, nullptr) << error;
  std::string path = dir_.File("mismatch-ref.pem");
  ASSERT_TRUE(WriteReferenceFile(path, daemon_->socket_path(), "p256",
                                 other.get(), &error))
      << error;
  EvpPkeyPtr key = ReadReference(path, &error);
  ASSERT_NE(key, nullptr) << error;
  EXPECT_FALSE(SignAndVerify(key.get(), other.get(), "SHA256", &error));
  EXPECT_NE(error.find("has a different public key than the reference"),
            std::string::npos)
      << error;
}

TEST_F(ModuleProviderTest, ReferenceWithoutModuleFails) {
  if (OSSL_PROVIDER_available(nullptr, ModulePath()) == 1) {
    GTEST_SKIP() << "an earlier test in this process loaded keycell.so";
  }
  ASSERT_NE(OSSL_PROVIDER_load(nullptr, "default"), nullptr);
  std::string error;
  EvpPkeyPtr key = ReadReference(Reference("p256"), &error);
  EXPECT_EQ(key, nullptr);
  EXPECT_NE(error, "");
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), Reference("p256").c_str(),
                                        SSL_FILETYPE_PEM),
            0);
  EXPECT_NE(DrainOpenSslErrors(), "");
  EXPECT_EQ(daemon_->open_requests(), 0);
}

TEST_F(ModuleProviderTest, EmbeddedAndModuleKeysCoexist) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  EvpPkeyPtr embedded =
      LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(embedded, nullptr) << error;
  EvpPkeyPtr daemon_key = ReadReference(Reference("p256"), &error);
  ASSERT_NE(daemon_key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;

  EXPECT_EQ(keycell_is_cell_key(embedded.get()), 1);
  EXPECT_EQ(keycell_is_cell_key(daemon_key.get()), 0);
  int signs = daemon_->sign_requests();
  EXPECT_TRUE(SignAndVerify(embedded.get(), public_key.get(), "SHA256", &error))
      << error;
  EXPECT_EQ(daemon_->sign_requests(), signs);
  EXPECT_TRUE(
      SignAndVerify(daemon_key.get(), public_key.get(), "SHA256", &error))
      << error;
  EXPECT_EQ(daemon_->sign_requests(), signs + 1);
}

// Base64 of |body| inside the reference PEM armor.
std::string ReferencePem(const std::vector<uint8_t> &body) {
  std::string base64(4 * ((body.size() + 2) / 3) + 1, '\0');
  int length = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(base64.data()),
                               body.data(), static_cast<int>(body.size()));
  base64.resize(static_cast<size_t>(length));
  return "-----BEGIN KEYCELL PRIVATE KEY-----\n" + base64 +
         "\n-----END KEYCELL PRIVATE KEY-----\n";
}

std::vector<uint8_t> Body(uint8_t version, const std::string &socket,
                          const std::string &name,
                          std::span<const uint8_t> public_key) {
  kc::protocol::WipingBuffer buffer;
  kc::protocol::Writer writer(buffer);
  writer.U8(version);
  writer.String(socket);
  writer.String(name);
  writer.Bytes(public_key);
  return std::vector<uint8_t>(buffer.data(), buffer.data() + buffer.size());
}

TEST_F(ModuleProviderTest, MalformedReferencesFailClearly) {
  std::string error;
  ASSERT_TRUE(LoadModule(&error)) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  unsigned char *der = nullptr;
  int der_length = i2d_PUBKEY(public_key.get(), &der);
  ASSERT_GT(der_length, 0);
  std::vector<uint8_t> spki(der, der + der_length);
  OPENSSL_free(der);

  const std::string socket = daemon_->socket_path();
  std::vector<uint8_t> truncated = Body(1, socket, "p256", spki);
  truncated.resize(truncated.size() - 5);
  std::vector<uint8_t> garbage_spki = {0x30, 0x03, 0x02, 0x01, 0x01};
  std::vector<uint8_t> x25519;
  {
    EvpPkeyPtr key = ReadPrivateKeyInProcess(KeyPath("x25519"), &error);
    ASSERT_NE(key, nullptr) << error;
    unsigned char *x = nullptr;
    int x_length = i2d_PUBKEY(key.get(), &x);
    ASSERT_GT(x_length, 0);
    x25519.assign(x, x + x_length);
    OPENSSL_free(x);
  }

  struct Case {
    const char *label;
    std::string pem;
  };
  const Case cases[] = {
      {"bad base64",
       "-----BEGIN KEYCELL PRIVATE KEY-----\n!!!!\n"
       "-----END KEYCELL PRIVATE KEY-----\n"},
      {"no end line", "-----BEGIN KEYCELL PRIVATE KEY-----\nAQID\n"},
      {"truncated body", ReferencePem(truncated)},
      {"version 2", ReferencePem(Body(2, socket, "p256", spki))},
      {"relative socket", ReferencePem(Body(1, "k.sock", "p256", spki))},
      {"invalid key name", ReferencePem(Body(1, socket, "-p256", spki))},
      {"empty public key", ReferencePem(Body(1, socket, "p256", {}))},
      {"garbage public key",
       ReferencePem(Body(1, socket, "p256", garbage_spki))},
      {"X25519 public key", ReferencePem(Body(1, socket, "p256", x25519))},
  };
  for (const Case &test : cases) {
    SCOPED_TRACE(test.label);
    std::string path = dir_.File("malformed.pem");
    ASSERT_TRUE(WriteFile(path, test.pem.data(), test.pem.size(), &error));
    EvpPkeyPtr key = ReadReference(path, &error);
    EXPECT_EQ(key, nullptr);
    EXPECT_NE(error.find("invalid keycell reference file"), std::string::npos)
        << error;
  }
  EXPECT_EQ(daemon_->open_requests(), 0);
}

}  // namespace
}  // namespace keycell_test
