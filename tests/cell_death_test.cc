// Behaviour of cell keys after the cell process dies: every operation fails
// promptly with a clear error instead of hanging.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/err.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr char kCellGone[] = "cell process is not running";
constexpr int kSigningThreads = 4;
// Operations each thread runs after the cell is known to be dead.
constexpr int kOperationsAfterDeath = 20;
// Successful signatures, in total, before the cell is killed.
constexpr int kSignaturesBeforeKill = 40;

// Signs once with |key| and returns "" on success or the OpenSSL error text.
std::string TrySign(EVP_PKEY *key, EVP_PKEY *public_key) {
  std::string error;
  if (SignAndVerify(key, public_key, DefaultDigest(key), &error)) {
    return "";
  }
  return error.empty() ? "failed without an OpenSSL error" : error;
}

TEST(CellDeath, KillDuringSigning) {
  ScopedAlarm watchdog(90, "CellDeath.KillDuringSigning did not finish");
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  const std::vector<std::string> key_names = {"p256", "rsa2048", "ed25519"};
  std::vector<EvpPkeyPtr> keys;
  std::vector<EvpPkeyPtr> public_keys;
  for (const std::string &key_name : key_names) {
    keys.push_back(LoadCellKey(cell.get(), KeyPath(key_name), nullptr, &error));
    ASSERT_NE(keys.back(), nullptr) << error;
    public_keys.push_back(ReadCertificatePublicKey(CertPath(key_name), &error));
    ASSERT_NE(public_keys.back(), nullptr) << error;
  }
  pid_t cell_pid = keycell_cell_pid(cell.get());
  ASSERT_GT(cell_pid, 0);
  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;

  std::atomic<bool> cell_dead{false};
  std::atomic<int> successes_before_kill{0};
  std::mutex mutex;
  std::vector<std::string> violations;
  std::vector<int> failures_after_death(kSigningThreads, 0);

  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < kSigningThreads; thread_index++) {
    threads.emplace_back([&, thread_index] {
      int after_death = 0;
      for (int i = 0; after_death < kOperationsAfterDeath; i++) {
        bool dead_before = cell_dead.load();
        size_t key_index = (thread_index + i) % keys.size();
        std::string sign_error =
            TrySign(keys[key_index].get(), public_keys[key_index].get());
        if (!dead_before) {
          // An operation in flight when the cell dies may succeed or fail.
          if (sign_error.empty()) {
            successes_before_kill++;
          }
          continue;
        }
        after_death++;
        if (sign_error.empty()) {
          std::lock_guard<std::mutex> lock(mutex);
          violations.push_back(key_names[key_index] +
                               ": signing succeeded after the cell died");
        } else if (sign_error.find(kCellGone) == std::string::npos) {
          std::lock_guard<std::mutex> lock(mutex);
          violations.push_back(key_names[key_index] + ": error lacks \"" +
                               kCellGone + "\": " + sign_error);
        } else {
          failures_after_death[thread_index]++;
        }
      }
    });
  }

  // The threads stop only once the cell is dead, so the cell is killed even
  // when signing never succeeds.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (successes_before_kill.load() < kSignaturesBeforeKill &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  int signatures_before_kill = successes_before_kill.load();
  int kill_result = kill(cell_pid, SIGKILL);
  bool exited = WaitForExit(pidfd, 10000, &error);
  close(pidfd);
  cell_dead = true;
  for (std::thread &thread : threads) {
    thread.join();
  }
  EXPECT_GE(signatures_before_kill, kSignaturesBeforeKill)
      << "signing failed before the cell was killed";
  ASSERT_EQ(kill_result, 0);
  ASSERT_TRUE(exited) << "the cell did not exit after SIGKILL " << error;

  for (const std::string &violation : violations) {
    ADD_FAILURE() << violation;
  }
  for (int thread_index = 0; thread_index < kSigningThreads; thread_index++) {
    EXPECT_EQ(failures_after_death[thread_index], kOperationsAfterDeath)
        << "thread " << thread_index;
  }

  char message[KEYCELL_ERROR_SIZE] = "";
  EvpPkeyPtr key(keycell_load_private_key(cell.get(), KeyPath("p384").c_str(),
                                          nullptr, message, sizeof(message)));
  EXPECT_EQ(key, nullptr);
  EXPECT_NE(std::string(message).find(kCellGone), std::string::npos)
      << "message: " << message;
}

TEST(CellDeath, HandshakeFailsAfterDeath) {
  ScopedAlarm watchdog(90, "CellDeath.HandshakeFailsAfterDeath did not finish");
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  SslCtxPtr server =
      NewServerContext(PinnedVersion(TLS1_3_VERSION), CertPath("p256"),
                       CellKeyInstaller(cell.get(), KeyPath("p256")), &error);
  ASSERT_NE(server, nullptr) << error;
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                      {CertPath("p256")}, &error);
  ASSERT_NE(client, nullptr) << error;
  HandshakeResult before = RunHandshake(server.get(), client.get());
  ASSERT_TRUE(before.ok) << Describe(before);

  pid_t cell_pid = keycell_cell_pid(cell.get());
  ASSERT_GT(cell_pid, 0);
  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;
  ASSERT_EQ(kill(cell_pid, SIGKILL), 0);
  bool exited = WaitForExit(pidfd, 10000, &error);
  close(pidfd);
  ASSERT_TRUE(exited) << "the cell did not exit after SIGKILL " << error;

  for (int i = 0; i < 3; i++) {
    HandshakeResult after = RunHandshake(server.get(), client.get());
    EXPECT_FALSE(after.ok) << Describe(after);
    EXPECT_NE(after.error.find(kCellGone), std::string::npos)
        << Describe(after);
  }
}

// keycell_free() returns after the cell died, and keys from the freed cell
// fail cleanly.
TEST(CellDeath, KeysFailAfterFree) {
  ScopedAlarm watchdog(90, "CellDeath.KeysFailAfterFree did not finish");
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("ed25519"), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("ed25519"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  ASSERT_EQ(TrySign(key.get(), public_key.get()), "");

  cell.reset();
  std::string sign_error = TrySign(key.get(), public_key.get());
  EXPECT_NE(sign_error, "") << "signing succeeded after keycell_free";
  EXPECT_NE(sign_error.find(kCellGone), std::string::npos) << sign_error;
}

// A cell that is alive but does not reply makes operations fail after the
// configured timeout; once it runs again, the next operation succeeds.
TEST(CellDeath, StoppedCellTimesOut) {
  ScopedAlarm watchdog(90, "CellDeath.StoppedCellTimesOut did not finish");
  std::string error;
  std::unique_ptr<keycell_options, decltype(&keycell_options_free)> options(
      keycell_options_new(), keycell_options_free);
  ASSERT_NE(options, nullptr);
  // Sanitizer builds run the cell many times slower, so it gets longer to
  // recover before the last signature.
  const unsigned timeout_ms = Iterations(300, 3000);
  ASSERT_EQ(keycell_options_set_timeout(options.get(), timeout_ms), 1);
  CellPtr cell = StartCell(options.get(), &error);
  ASSERT_NE(cell, nullptr) << error;
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  ASSERT_EQ(TrySign(key.get(), public_key.get()), "");

  pid_t cell_pid = keycell_cell_pid(cell.get());
  ASSERT_TRUE(StopProcess(cell_pid));
  std::string stalled = TrySign(key.get(), public_key.get());
  ASSERT_EQ(kill(cell_pid, SIGCONT), 0);
  EXPECT_NE(stalled.find("did not reply within " + std::to_string(timeout_ms) +
                         " ms"),
            std::string::npos)
      << stalled;

  EXPECT_EQ(TrySign(key.get(), public_key.get()), "");
}

}  // namespace
}  // namespace keycell_test
