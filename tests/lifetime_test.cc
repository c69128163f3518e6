// The cell's lifetime: it exits when the last process holding its
// descriptors exits or is killed, and on keycell_free().
//
// A forked child plays the server. This test process makes itself a child
// subreaper, so that the cell, orphaned when the server exits, is reparented
// here and its exit can be observed and reaped.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer sleeps for atexit_sleep_ms, 1000 ms by default, in every
// exiting process, which would put each cell exit at the limit below. The
// TSAN_OPTIONS environment variable still overrides this default.
extern "C" __attribute__((visibility("default"))) const char *
__tsan_default_options() {
  return "atexit_sleep_ms=0";
}
#endif

namespace keycell_test {
namespace {

// Time the cell may take to exit after its last user is gone.
constexpr int kExitTimeoutMs = 1000;

// Exit statuses of the server child.
enum ServerStatus {
  kServerOk = 0,
  kServerStartFailed = 10,
  kServerLoadFailed,
  kServerPipeFailed,
  kServerForkFailed,
};

// Pipes between the test and its server child: the server writes pids to
// |report|, then waits for one byte on |go| before it exits.
struct ServerPipes {
  int report[2] = {-1, -1};
  int go[2] = {-1, -1};
};

// Kills the cell |pid| unless it has |exited|, then reaps it if it is a
// child of this process. The library may have reaped it already, so ECHILD
// is not an error here.
void FinishCell(pid_t pid, bool exited) {
  if (!exited) {
    kill(pid, SIGKILL);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

class CellLifetime : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0)
        << std::strerror(errno);
    ASSERT_EQ(pipe2(pipes_.report, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(pipes_.go, O_CLOEXEC), 0);
  }

  void TearDown() override {
    for (int fd :
         {pipes_.report[0], pipes_.report[1], pipes_.go[0], pipes_.go[1]}) {
      if (fd >= 0) {
        close(fd);
      }
    }
  }

  // Forks the server child: it starts a cell, loads a key, forks
  // |workers| worker children that sign once each after a byte on the go
  // pipe, reports the cell pid and the worker pids, and waits for the go
  // pipe before it exits.
  pid_t ForkServer(int workers) {
    pid_t pid = fork();
    if (pid != 0) {
      EXPECT_GT(pid, 0) << "fork failed: " << std::strerror(errno);
      return pid;
    }
    close(pipes_.report[0]);
    close(pipes_.go[1]);

    std::string error;
    CellPtr cell = StartCell(nullptr, &error);
    if (cell == nullptr) {
      _exit(kServerStartFailed);
    }
    EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
    if (key == nullptr) {
      _exit(kServerLoadFailed);
    }

    pid_t pids[2] = {keycell_cell_pid(cell.get()), 0};
    for (int i = 0; i < workers; i++) {
      pids[1] = fork();
      if (pids[1] < 0) {
        _exit(kServerForkFailed);
      }
      if (pids[1] == 0) {
        // The worker waits for the test, then checks that the cell still
        // serves its inherited key.
        char byte;
        if (!ReadAll(pipes_.go[0], &byte, 1)) {
          _exit(kServerPipeFailed);
        }
        EvpPkeyPtr public_key =
            ReadCertificatePublicKey(CertPath("p256"), &error);
        bool signed_ok =
            public_key != nullptr &&
            SignAndVerify(key.get(), public_key.get(), "SHA256", &error);
        _exit(signed_ok ? kServerOk : kServerLoadFailed);
      }
    }

    if (!WriteAll(pipes_.report[1], pids, sizeof(pids))) {
      _exit(kServerPipeFailed);
    }
    char byte;
    (void)ReadAll(pipes_.go[0], &byte, 1);
    // Exit without keycell_free(): the cell must notice on its own.
    _exit(kServerOk);
  }

  // Reads the pids that the server child reports.
  bool ReadServerReport(pid_t *cell_pid, pid_t *worker_pid) {
    close(pipes_.report[1]);
    pipes_.report[1] = -1;
    pid_t pids[2] = {0, 0};
    if (!ReadAll(pipes_.report[0], pids, sizeof(pids))) {
      return false;
    }
    *cell_pid = pids[0];
    *worker_pid = pids[1];
    return true;
  }

  // Sends one byte on the go pipe, releasing the server or one worker.
  bool Go() {
    char byte = 'g';
    return WriteAll(pipes_.go[1], &byte, 1);
  }

  ServerPipes pipes_;
};

TEST_F(CellLifetime, ExitsWhenServerExits) {
  pid_t server = ForkServer(0);
  ASSERT_GT(server, 0);
  pid_t cell_pid = 0;
  pid_t worker_pid = 0;
  ASSERT_TRUE(ReadServerReport(&cell_pid, &worker_pid))
      << "server child: " << WaitForChild(server);
  ASSERT_GT(cell_pid, 0);
  std::string error;
  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;
  EXPECT_FALSE(WaitForExit(pidfd, 0, &error))
      << "the cell exited while the server ran " << error;

  ASSERT_TRUE(Go());
  EXPECT_EQ(WaitForChild(server), "exit status 0");
  bool exited = WaitForExit(pidfd, kExitTimeoutMs, &error);
  EXPECT_TRUE(exited) << "the cell still runs " << kExitTimeoutMs
                      << " ms after the server exited " << error;
  close(pidfd);
  FinishCell(cell_pid, exited);
}

TEST_F(CellLifetime, ExitsWhenServerIsKilled) {
  pid_t server = ForkServer(0);
  ASSERT_GT(server, 0);
  pid_t cell_pid = 0;
  pid_t worker_pid = 0;
  ASSERT_TRUE(ReadServerReport(&cell_pid, &worker_pid))
      << "server child: " << WaitForChild(server);
  ASSERT_GT(cell_pid, 0);
  std::string error;
  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;

  ASSERT_EQ(kill(server, SIGKILL), 0);
  EXPECT_EQ(WaitForChild(server), "killed by signal Killed");
  bool exited = WaitForExit(pidfd, kExitTimeoutMs, &error);
  EXPECT_TRUE(exited) << "the cell still runs " << kExitTimeoutMs
                      << " ms after the server was killed " << error;
  close(pidfd);
  FinishCell(cell_pid, exited);
}

// A child forked by the server after loading keys keeps the cell alive after
// the server exits, and the cell exits once that child exits too.
TEST_F(CellLifetime, OutlivesServerWhileChildRuns) {
  pid_t server = ForkServer(1);
  ASSERT_GT(server, 0);
  pid_t cell_pid = 0;
  pid_t worker_pid = 0;
  ASSERT_TRUE(ReadServerReport(&cell_pid, &worker_pid))
      << "server child: " << WaitForChild(server);
  ASSERT_GT(cell_pid, 0);
  ASSERT_GT(worker_pid, 0);
  std::string error;
  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;

  // The server and the worker both read the go pipe, so kill the server
  // instead of releasing it, leaving the byte for the worker.
  ASSERT_EQ(kill(server, SIGKILL), 0);
  EXPECT_EQ(WaitForChild(server), "killed by signal Killed");
  EXPECT_FALSE(WaitForExit(pidfd, 200, &error))
      << "the cell exited while a child of the server held its descriptors "
      << error;

  // The worker is now a child of this process, through the subreaper.
  ASSERT_TRUE(Go());
  EXPECT_EQ(WaitForChild(worker_pid), "exit status 0")
      << "the worker could not sign after the server exited";
  bool exited = WaitForExit(pidfd, kExitTimeoutMs, &error);
  EXPECT_TRUE(exited) << "the cell still runs " << kExitTimeoutMs
                      << " ms after the last child exited " << error;
  close(pidfd);
  FinishCell(cell_pid, exited);
}

TEST_F(CellLifetime, ExitsOnFree) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  pid_t cell_pid = keycell_cell_pid(cell.get());
  ASSERT_GT(cell_pid, 0);
  int pidfd = OpenPidfd(cell_pid, &error);
  ASSERT_GE(pidfd, 0) << error;
  EXPECT_FALSE(WaitForExit(pidfd, 0, &error)) << error;

  cell.reset();
  bool exited = WaitForExit(pidfd, kExitTimeoutMs, &error);
  EXPECT_TRUE(exited) << "the cell still runs " << kExitTimeoutMs
                      << " ms after keycell_free " << error;
  close(pidfd);
  FinishCell(cell_pid, exited);
}

}  // namespace
}  // namespace keycell_test
