// Many threads using the same cell keys at once: handshakes on one shared
// server context and concurrent key loads.
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr int kThreads = 16;

// Records the first failure of any thread and counts successes.
class Tally {
 public:
  void Success() { successes_.fetch_add(1, std::memory_order_relaxed); }
  void Failure(const std::string &message) {
    std::lock_guard<std::mutex> lock(mutex_);
    failures_++;
    if (first_failure_.empty()) {
      first_failure_ = message;
    }
  }
  int successes() const { return successes_.load(); }
  int failures() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failures_;
  }
  std::string first_failure() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return first_failure_;
  }

 private:
  std::atomic<int> successes_{0};
  mutable std::mutex mutex_;
  int failures_ = 0;
  std::string first_failure_;
};

// One kind of handshake: which server key the client selects through its
// signature algorithms, and the protocol version.
struct HandshakeKind {
  const char *client_sigalgs;
  int version;
  int expected_signature_type;
};

const HandshakeKind kKinds[] = {
    {"rsa_pss_rsae_sha256", TLS1_3_VERSION, NID_rsassaPss},
    {"ECDSA+SHA256", TLS1_3_VERSION, NID_X9_62_id_ecPublicKey},
    {"ed25519", TLS1_3_VERSION, NID_ED25519},
    {"ed448", TLS1_3_VERSION, NID_ED448},
    {"RSA+SHA256", TLS1_2_VERSION, NID_rsaEncryption},
    {"ECDSA+SHA384", TLS1_2_VERSION, NID_X9_62_id_ecPublicKey},
    {"ed25519", TLS1_2_VERSION, NID_ED25519},
};

TEST(CellThreads, SharedContextHandshakes) {
  const int handshakes_per_thread = Iterations(200, 40);
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;

  // One server context has a certificate and cell key of each type. The
  // client's signature algorithms pick one per handshake.
  const std::vector<std::string> key_names = {"rsa2048", "p256", "ed25519",
                                              "ed448"};
  SslCtxPtr server = NewServerContext(TlsSettings{}, &error);
  ASSERT_NE(server, nullptr) << error;
  std::vector<std::string> cert_paths;
  for (const std::string &key_name : key_names) {
    ASSERT_TRUE(UseCertificateFile(server.get(), CertPath(key_name), &error))
        << error;
    ASSERT_TRUE(
        CellKeyInstaller(cell.get(), KeyPath(key_name))(server.get(), &error))
        << error;
    cert_paths.push_back(CertPath(key_name));
  }
  SslCtxPtr client12 =
      NewClientContext(PinnedVersion(TLS1_2_VERSION), cert_paths, &error);
  ASSERT_NE(client12, nullptr) << error;
  SslCtxPtr client13 =
      NewClientContext(PinnedVersion(TLS1_3_VERSION), cert_paths, &error);
  ASSERT_NE(client13, nullptr) << error;

  Tally tally;
  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < kThreads; thread_index++) {
    threads.emplace_back([&, thread_index] {
      for (int i = 0; i < handshakes_per_thread; i++) {
        const HandshakeKind &kind =
            kKinds[(thread_index + i) % std::size(kKinds)];
        SSL_CTX *client =
            kind.version == TLS1_3_VERSION ? client13.get() : client12.get();
        HandshakeOptions options;
        options.client_sigalgs = kind.client_sigalgs;
        HandshakeResult result = RunHandshake(server.get(), client, options);
        if (!result.ok || result.verify_result != X509_V_OK ||
            result.version != kind.version ||
            result.server_signature_type != kind.expected_signature_type) {
          tally.Failure(std::string(kind.client_sigalgs) + ": " +
                        Describe(result));
          continue;
        }
        tally.Success();
      }
    });
  }
  for (std::thread &thread : threads) {
    thread.join();
  }

  EXPECT_EQ(tally.failures(), 0) << "first failure: " << tally.first_failure();
  EXPECT_EQ(tally.successes(), kThreads * handshakes_per_thread);
}

// keycell_load_private_key may be called from any thread.
TEST(CellThreads, ConcurrentLoads) {
  const int loads_per_thread = Iterations(10, 3);
  const std::vector<std::string> key_names = {"rsa2048", "p256", "p384",
                                              "ed25519", "ed448"};
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  std::vector<EvpPkeyPtr> public_keys;
  for (const std::string &key_name : key_names) {
    public_keys.push_back(ReadCertificatePublicKey(CertPath(key_name), &error));
    ASSERT_NE(public_keys.back(), nullptr) << error;
  }

  Tally tally;
  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < kThreads; thread_index++) {
    threads.emplace_back([&, thread_index] {
      for (int i = 0; i < loads_per_thread; i++) {
        size_t key_index = (thread_index + i) % key_names.size();
        std::string load_error;
        EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath(key_names[key_index]),
                                     nullptr, &load_error);
        if (key == nullptr) {
          tally.Failure(load_error);
          continue;
        }
        if (!SignAndVerify(key.get(), public_keys[key_index].get(),
                           DefaultDigest(key.get()), &load_error)) {
          tally.Failure(key_names[key_index] + ": " + load_error);
          continue;
        }
        tally.Success();
      }
    });
  }
  for (std::thread &thread : threads) {
    thread.join();
  }

  EXPECT_EQ(tally.failures(), 0) << "first failure: " << tally.first_failure();
  EXPECT_EQ(tally.successes(), kThreads * loads_per_thread);
}

}  // namespace
}  // namespace keycell_test
