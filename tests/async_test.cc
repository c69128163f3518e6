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

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr int kConcurrentHandshakes = Iterations(64, 16);

struct SslDeleter {
  void operator()(SSL *ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// One client and one server joined by a BIO pair, both in this thread.
struct Pair {
  SslPtr client;
  SslPtr server;
  bool client_done = false;
  bool server_done = false;
  bool failed = false;
  std::string error;
};

bool NewPair(SSL_CTX *server_ctx, SSL_CTX *client_ctx, Pair &pair) {
  pair.client.reset(SSL_new(client_ctx));
  pair.server.reset(SSL_new(server_ctx));
  if (pair.client == nullptr || pair.server == nullptr) {
    return false;
  }
  BIO *client_bio = nullptr;
  BIO *server_bio = nullptr;
  if (BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) != 1) {
    return false;
  }
  SSL_set_bio(pair.client.get(), client_bio, client_bio);
  SSL_set_bio(pair.server.get(), server_bio, server_bio);
  SSL_set_connect_state(pair.client.get());
  SSL_set_accept_state(pair.server.get());
  SSL_set1_host(pair.client.get(), "localhost");
  return true;
}

// Advances one side. Returns true while the side still has work to do.
bool Step(SSL *ssl, bool &done, bool &failed, std::string &error) {
  if (done || failed) {
    return false;
  }
  ERR_clear_error();
  int result = SSL_do_handshake(ssl);
  if (result == 1) {
    done = true;
    return false;
  }
  int reason = SSL_get_error(ssl, result);
  if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE ||
      reason == SSL_ERROR_WANT_ASYNC) {
    return true;
  }
  failed = true;
  error = DrainOpenSslErrors();
  return false;
}

struct DriveStats {
  int completed = 0;
  int failed = 0;
  std::vector<std::string> errors;
};

// Drives every pair to completion or failure in this thread. Between rounds
// without progress it polls the async descriptors of the paused handshakes.
DriveStats DriveAll(std::vector<Pair> &pairs) {
  DriveStats stats;
  for (;;) {
    bool busy = false;
    std::vector<pollfd> waits;
    for (Pair &pair : pairs) {
      busy |=
          Step(pair.client.get(), pair.client_done, pair.failed, pair.error);
      busy |=
          Step(pair.server.get(), pair.server_done, pair.failed, pair.error);
      if (!pair.failed && !pair.server_done &&
          SSL_waiting_for_async(pair.server.get())) {
        size_t count = 0;
        SSL_get_all_async_fds(pair.server.get(), nullptr, &count);
        std::vector<OSSL_ASYNC_FD> fds(count);
        SSL_get_all_async_fds(pair.server.get(), fds.data(), &count);
        for (OSSL_ASYNC_FD fd : fds) {
          waits.push_back({fd, POLLIN, 0});
        }
      }
    }
    if (!busy) {
      break;
    }
    if (!waits.empty()) {
      poll(waits.data(), waits.size(), 1000);
    }
  }
  for (const Pair &pair : pairs) {
    if (pair.client_done && pair.server_done) {
      stats.completed++;
    } else {
      stats.failed++;
      stats.errors.push_back(pair.error);
    }
  }
  return stats;
}

// Steps every pair until its server waits for the cell, for at most 20
// sweeps, and returns how many servers wait.
size_t RunUntilPaused(std::vector<Pair> &pairs) {
  size_t paused = 0;
  for (int round = 0; round < 20 && paused < pairs.size(); ++round) {
    paused = 0;
    for (Pair &pair : pairs) {
      if (!SSL_waiting_for_async(pair.server.get())) {
        Step(pair.client.get(), pair.client_done, pair.failed, pair.error);
        Step(pair.server.get(), pair.server_done, pair.failed, pair.error);
      }
      paused += SSL_waiting_for_async(pair.server.get()) ? 1 : 0;
    }
  }
  return paused;
}

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
