// Cell keys inside OpenSSL ASYNC jobs: one thread drives many handshakes at
// once with SSL_MODE_ASYNC, and each key operation pauses its job instead of
// blocking the thread.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "async_util.h"
#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr int kConcurrentHandshakes = Iterations(64, 16);

class AsyncHandshake : public ::testing::TestWithParam<const char *> {};

TEST_P(AsyncHandshake, ManyOnOneThread) {
  ScopedAlarm watchdog(100, "AsyncHandshake.ManyOnOneThread did not finish");
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  SslCtxPtr server = NewServerContext(
      PinnedVersion(TLS1_3_VERSION), CertPath(GetParam()),
      CellKeyInstaller(cell.get(), KeyPath(GetParam())), &error);
  ASSERT_NE(server, nullptr) << error;
  SSL_CTX_set_mode(server.get(), SSL_MODE_ASYNC);
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                      {CertPath(GetParam())}, &error);
  ASSERT_NE(client, nullptr) << error;

  std::vector<Pair> pairs(kConcurrentHandshakes);
  for (Pair &pair : pairs) {
    ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
  }
  // With the cell stopped, no signature can complete, so every handshake
  // that reaches its signature pauses: all of them are in flight at once
  // on this one thread.
  pid_t cell_pid = keycell_cell_pid(cell.get());
  ASSERT_TRUE(StopProcess(cell_pid));
  size_t paused = RunUntilPaused(pairs);
  ASSERT_EQ(kill(cell_pid, SIGCONT), 0);
  EXPECT_EQ(paused, pairs.size());

  DriveStats stats = DriveAll(pairs);
  EXPECT_EQ(stats.completed, kConcurrentHandshakes)
      << (stats.errors.empty() ? "" : stats.errors.front());
  EXPECT_EQ(stats.failed, 0);
  for (const Pair &pair : pairs) {
    EXPECT_EQ(SSL_get_verify_result(pair.client.get()), X509_V_OK);
  }
}

INSTANTIATE_TEST_SUITE_P(KeyTypes, AsyncHandshake,
                         ::testing::Values("rsa2048", "p256", "ed25519",
                                           "ed448"));

// Killing the cell while jobs are paused fails each of their handshakes,
// and none of them hangs.
TEST(AsyncHandshakeFault, CellDiesWhileJobsPaused) {
  ScopedAlarm watchdog(100, "CellDiesWhileJobsPaused did not finish");
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  SslCtxPtr server = NewServerContext(
      PinnedVersion(TLS1_3_VERSION), CertPath("rsa4096"),
      CellKeyInstaller(cell.get(), KeyPath("rsa4096")), &error);
  ASSERT_NE(server, nullptr) << error;
  SSL_CTX_set_mode(server.get(), SSL_MODE_ASYNC);
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                      {CertPath("rsa4096")}, &error);
  ASSERT_NE(client, nullptr) << error;

  std::vector<Pair> pairs(16);
  for (Pair &pair : pairs) {
    ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
  }
  // A stopped cell takes the requests but replies to none, so every job that
  // pauses stays paused until the cell is killed.
  pid_t cell_pid = keycell_cell_pid(cell.get());
  ASSERT_TRUE(StopProcess(cell_pid));
  size_t paused = RunUntilPaused(pairs);
  ASSERT_GT(paused, 0u) << "no handshake paused for the cell";

  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;
  ASSERT_EQ(kill(cell_pid, SIGKILL), 0);
  ASSERT_TRUE(WaitForExit(pidfd, 10000, &error)) << error;
  close(pidfd);

  DriveStats stats = DriveAll(pairs);
  EXPECT_GE(stats.failed, static_cast<int>(paused));
  for (const Pair &pair : pairs) {
    if (pair.failed && !pair.error.empty()) {
      EXPECT_NE(pair.error.find("cell process is not running"),
                std::string::npos)
          << pair.error;
    }
  }
}

}  // namespace
}  // namespace keycell_test
