// Cell keys in processes forked after the keys were loaded, as a pre-forking
// server does: each child reaches the cell on its own, while the parent
// keeps using the same keys.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
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

// How a child of the fork storm ends.
enum class StormEnd {
  kExits,           // Signs a few times and exits.
  kKilled,          // Signs until the parent sends SIGKILL.
  kTerminated,      // Signs until the parent sends SIGTERM.
  kExitsMidThread,  // Exits while a second thread is signing.
};

constexpr StormEnd kStormEnds[] = {StormEnd::kExits, StormEnd::kKilled,
                                   StormEnd::kTerminated,
                                   StormEnd::kExitsMidThread};

// Exit statuses of a storm child.
constexpr int kSignFailed = 1;
constexpr int kBadSignature = 2;

// Many children forked in waves from a process whose keys live in the cell:
// each signs through the cell and some end mid-operation. Every signature
// that a child gets verifies, the parent signs throughout, and once the
// children are gone the cell has as many descriptors open as before.
TEST_F(CellFork, ForkStormLeavesNoConnections) {
  const int children = Iterations(160, 40);
  constexpr int kWave = 8;
  ScopedAlarm alarm(110, "CellFork.ForkStormLeavesNoConnections hung");
  std::vector<EvpPkeyPtr> keys;
  std::vector<EvpPkeyPtr> public_keys;
  for (const char *name : {"p256", "ed25519", "rsa2048"}) {
    keys.push_back(LoadCellKey(cell_.get(), KeyPath(name), nullptr, &error_));
    ASSERT_NE(keys.back(), nullptr) << error_;
    public_keys.push_back(ReadCertificatePublicKey(CertPath(name), &error_));
    ASSERT_NE(public_keys.back(), nullptr) << error_;
  }
  // Returns 0, kSignFailed or kBadSignature.
  auto sign_with = [&](size_t index) {
    switch (SignOnce(keys[index % keys.size()].get(),
                     public_keys[index % keys.size()].get())) {
      case SignOutcome::kVerified:
        return 0;
      case SignOutcome::kFailed:
        return kSignFailed;
      case SignOutcome::kBadSignature:
        break;
    }
    return kBadSignature;
  };
  for (size_t i = 0; i < keys.size(); i++) {
    ASSERT_EQ(sign_with(i), 0) << "parent signature before the storm";
  }
  pid_t cell_pid = keycell_cell_pid(cell_.get());
  ASSERT_GT(cell_pid, 0);
  // -1 without CAP_SYS_PTRACE; the descriptor check below then does not
  // run.
  const int baseline = CountDescriptors(cell_pid);
  RecordProperty("cell_descriptors_before", baseline);

  int parent_signatures = 0;
  for (int first = 0; first < children; first += kWave) {
    struct StormChild {
      pid_t pid;
      StormEnd end;
      int ready;  // Readable once the child has a verified signature.
    };
    std::vector<StormChild> wave;
    for (int n = first; n < std::min(children, first + kWave); n++) {
      StormEnd end = kStormEnds[n % std::size(kStormEnds)];
      int ready[2];
      ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
      pid_t pid = fork();
      if (pid == 0) {
        close(ready[0]);
        for (int i = 0;; i++) {
          int result = sign_with(n + i);
          if (result != 0) {
            _exit(result);
          }
          if (i == 0) {
            char byte = 1;
            (void)!write(ready[1], &byte, 1);
            if (end == StormEnd::kExitsMidThread) {
              // The second thread signs on a connection of its own; this
              // one exits while that thread's request is in flight.
              std::thread([&] {
                for (int j = 0;; j++) {
                  int thread_result = sign_with(n + j);
                  if (thread_result != 0) {
                    _exit(thread_result);
                  }
                }
              }).detach();
              usleep(2000);
              _exit(0);
            }
          }
          if (end == StormEnd::kExits && i == 4) {
            _exit(0);
          }
        }
      }
      close(ready[1]);
      ASSERT_GT(pid, 0) << "fork failed: " << std::strerror(errno);
      wave.push_back({pid, end, ready[0]});
    }
    for (StormChild &child : wave) {
      // The parent signs while each child runs.
      EXPECT_EQ(sign_with(parent_signatures++), 0) << "parent signature";
      char byte = 0;
      pollfd entry{child.ready, POLLIN, 0};
      bool ready =
          poll(&entry, 1, 20000) == 1 && read(child.ready, &byte, 1) == 1;
      close(child.ready);
      EXPECT_TRUE(ready) << "child " << child.pid << " signed nothing";
      if (child.end == StormEnd::kKilled) {
        kill(child.pid, SIGKILL);
      } else if (child.end == StormEnd::kTerminated) {
        kill(child.pid, SIGTERM);
      }
    }
    for (const StormChild &child : wave) {
      std::string expected = "exit status 0";
      if (child.end == StormEnd::kKilled) {
        expected = "killed by signal Killed";
      } else if (child.end == StormEnd::kTerminated) {
        expected = "killed by signal Terminated";
      }
      EXPECT_EQ(WaitForChild(child.pid), expected)
          << "child " << child.pid << " (exit status " << kSignFailed
          << ": a signing error, " << kBadSignature
          << ": a signature that does not verify)";
    }
  }
  for (size_t i = 0; i < keys.size(); i++) {
    EXPECT_EQ(sign_with(i), 0) << "parent signature after the storm";
  }
  EXPECT_TRUE(RunHandshakes(3, 0, &error_)) << error_;

  if (baseline >= 0) {
    // The cell closes a dead child's connections once it reads their end of
    // file, so the count may take a moment to come down.
    int count = CountDescriptors(cell_pid);
    for (int i = 0; i < 200 && count != baseline; i++) {
      usleep(50000);
      count = CountDescriptors(cell_pid);
    }
    RecordProperty("cell_descriptors_after", count);
    EXPECT_EQ(count, baseline) << "descriptors the children left in the cell";
  }
}

}  // namespace
}  // namespace keycell_test
