// Cell keys in processes forked after the keys were loaded, as a pre-forking
// server does: each child reaches the cell on its own, while the parent
// keeps using the same keys.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr int kChildren = 4;

struct HandshakeKind {
  const char *client_sigalgs;
  int expected_signature_type;
};

const HandshakeKind kKinds[] = {
    {"rsa_pss_rsae_sha256", NID_rsassaPss},
    {"ECDSA+SHA256", NID_X9_62_id_ecPublicKey},
    {"ed25519", NID_ED25519},
};

class CellFork : public ::testing::Test {
 protected:
  void SetUp() override {
    cell_ = StartCell(nullptr, &error_);
    ASSERT_NE(cell_, nullptr) << error_;
    server_ = NewServerContext(PinnedVersion(TLS1_3_VERSION), &error_);
    ASSERT_NE(server_, nullptr) << error_;
    std::vector<std::string> cert_paths;
    for (const char *key_name : {"rsa2048", "p256", "ed25519"}) {
      ASSERT_TRUE(
          UseCertificateFile(server_.get(), CertPath(key_name), &error_))
          << error_;
      ASSERT_TRUE(CellKeyInstaller(cell_.get(), KeyPath(key_name))(
          server_.get(), &error_))
          << error_;
      cert_paths.push_back(CertPath(key_name));
    }
    client_ =
        NewClientContext(PinnedVersion(TLS1_3_VERSION), cert_paths, &error_);
    ASSERT_NE(client_, nullptr) << error_;
  }

  // Runs |count| handshakes, cycling through kKinds starting at |first|.
  // Returns false with a description of the first failure.
  bool RunHandshakes(int count, int first, std::string *error) {
    for (int i = 0; i < count; i++) {
      const HandshakeKind &kind = kKinds[(first + i) % std::size(kKinds)];
      HandshakeOptions options;
      options.client_sigalgs = kind.client_sigalgs;
      HandshakeResult result =
          RunHandshake(server_.get(), client_.get(), options);
      if (!result.ok || result.verify_result != X509_V_OK ||
          result.server_signature_type != kind.expected_signature_type) {
        *error = std::string(kind.client_sigalgs) + ": " + Describe(result);
        return false;
      }
    }
    return true;
  }

  // Forks a child that runs |body| and exits with status 0 when it returns
  // true. The child reports a failure on stderr.
  pid_t ForkChild(const std::function<bool(std::string *)> &body) {
    pid_t pid = fork();
    if (pid == 0) {
      std::string child_error;
      bool ok = body(&child_error);
      if (!ok) {
        std::fprintf(stderr, "child %d failed: %s\n", getpid(),
                     child_error.c_str());
      }
      std::fflush(stderr);
      _exit(ok ? EXIT_SUCCESS : EXIT_FAILURE);
    }
    EXPECT_GT(pid, 0) << "fork failed: " << std::strerror(errno);
    return pid;
  }

  CellPtr cell_;
  SslCtxPtr server_;
  SslCtxPtr client_;
  std::string error_;
};

TEST_F(CellFork, ChildrenHandshake) {
  const int child_handshakes = Iterations(60, 20);
  const int parent_handshakes = Iterations(15, 3);
  ASSERT_TRUE(RunHandshakes(parent_handshakes, 0, &error_)) << error_;

  std::vector<pid_t> children;
  for (int child = 0; child < kChildren; child++) {
    pid_t pid = ForkChild([this, child, child_handshakes](std::string *error) {
      return RunHandshakes(child_handshakes, child, error);
    });
    ASSERT_GT(pid, 0);
    children.push_back(pid);
  }

  // The parent keeps signing while the children run.
  int concurrent_handshakes = 0;
  bool parent_ok = true;
  size_t running = children.size();
  std::vector<std::string> statuses(children.size());
  while (running > 0) {
    if (parent_ok) {
      parent_ok = RunHandshakes(1, concurrent_handshakes, &error_);
      concurrent_handshakes++;
    }
    for (size_t i = 0; i < children.size(); i++) {
      if (children[i] == 0) {
        continue;
      }
      int status = 0;
      pid_t waited = waitpid(children[i], &status, parent_ok ? WNOHANG : 0);
      if (waited == children[i]) {
        statuses[i] = WIFEXITED(status)
                          ? "exit status " + std::to_string(WEXITSTATUS(status))
                          : "wait status " + std::to_string(status);
        children[i] = 0;
        running--;
      } else if (waited < 0) {
        statuses[i] = std::string("waitpid failed: ") + std::strerror(errno);
        children[i] = 0;
        running--;
      }
    }
  }
  EXPECT_TRUE(parent_ok) << "parent handshake during the children's run: "
                         << error_;
  for (size_t i = 0; i < statuses.size(); i++) {
    EXPECT_EQ(statuses[i], "exit status 0") << "child " << i;
  }

  EXPECT_TRUE(RunHandshakes(parent_handshakes, 1, &error_))
      << "parent handshake after the children exited: " << error_;
}

// A child may load further keys from the cell that its parent started.
TEST_F(CellFork, ChildLoadsKey) {
  pid_t pid = ForkChild([this](std::string *error) {
    EvpPkeyPtr key = LoadCellKey(cell_.get(), KeyPath("p384"), nullptr, error);
    if (key == nullptr) {
      return false;
    }
    EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p384"), error);
    return public_key != nullptr &&
           SignAndVerify(key.get(), public_key.get(), "SHA384", error);
  });
  ASSERT_GT(pid, 0);
  EXPECT_EQ(WaitForChild(pid), "exit status 0");
  EXPECT_TRUE(RunHandshakes(3, 0, &error_)) << error_;
}

// keycell_free() in a child releases only the child's descriptors.
TEST_F(CellFork, ChildFreeKeepsParentCell) {
  pid_t pid = ForkChild([this](std::string *) {
    keycell_free(cell_.release());
    return true;
  });
  ASSERT_GT(pid, 0);
  EXPECT_EQ(WaitForChild(pid), "exit status 0");
  EXPECT_TRUE(RunHandshakes(3, 0, &error_)) << error_;
  std::string load_error;
  EvpPkeyPtr key =
      LoadCellKey(cell_.get(), KeyPath("ed448"), nullptr, &load_error);
  EXPECT_NE(key, nullptr) << load_error;
}

// A child that exits while its handshakes are in progress leaves the
// parent's keys working.
TEST_F(CellFork, ChildKilledMidRun) {
  pid_t pid = ForkChild([this](std::string *error) {
    for (int i = 0;; i++) {
      if (!RunHandshakes(1, i, error)) {
        return false;
      }
    }
  });
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(RunHandshakes(5, 0, &error_)) << error_;
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_EQ(WaitForChild(pid), "killed by signal Killed");
  EXPECT_TRUE(RunHandshakes(6, 0, &error_)) << error_;
}

}  // namespace
}  // namespace keycell_test
