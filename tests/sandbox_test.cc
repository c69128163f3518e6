// The confinement of a running cell: its seccomp filter, as /proc shows
// it, and its Landlock domain, shown by what it denies.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cell/sandbox.h"
#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

// Returns the fields of /proc/<pid>/status by name.
std::map<std::string, std::string> ProcessStatus(pid_t pid) {
  std::map<std::string, std::string> fields;
  std::ifstream file("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(file, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    size_t value = line.find_first_not_of(" \t", colon + 1);
    fields[line.substr(0, colon)] =
        value == std::string::npos ? "" : line.substr(value);
  }
  return fields;
}

TEST(CellSandbox, SeccompFilterInstalled) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  // A key load and a signature show that the filter allows the cell's work.
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;

  std::map<std::string, std::string> status =
      ProcessStatus(keycell_cell_pid(cell.get()));
  EXPECT_EQ(status["Seccomp"], "2") << "2 is SECCOMP_MODE_FILTER";
  EXPECT_EQ(status["Seccomp_filters"], "1");
  EXPECT_EQ(status["NoNewPrivs"], "1");
}

TEST(CellSandbox, KeysLoadAfterPrivilegeDrop) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  char err[KEYCELL_ERROR_SIZE] = {};
  ASSERT_EQ(keycell_drop_privileges(cell.get(), "nobody", err, sizeof(err)), 1)
      << err;
  // A world-readable copy of the key, in a directory that every user can
  // enter, so that the filter, not the credentials, decides whether the
  // cell can still open and parse it.
  TempDir dir;
  ASSERT_NE(dir.path(), "");
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  std::vector<unsigned char> contents;
  ASSERT_TRUE(ReadFile(KeyPath("ed25519"), &contents, &error)) << error;
  std::string copy = dir.File("ed25519-key.pem");
  ASSERT_TRUE(WriteFile(copy, contents.data(), contents.size(), &error))
      << error;
  ASSERT_EQ(chmod(copy.c_str(), 0644), 0);
  EvpPkeyPtr key = LoadCellKey(cell.get(), copy, nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("ed25519"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), nullptr, &error))
      << error;
}

// The Landlock ABI version that the kernel offers, 0 without Landlock.
int KernelLandlockAbi() {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0,
                     LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

// Runs |body| in a forked child that is not dumpable and has no_new_privs,
// as a cell is, and returns what it wrote to its pipe: an empty string
// when every check in it passed.
std::string RunInChild(const std::function<std::string()> &body) {
  int fds[2];
  if (pipe(fds) != 0) {
    return "pipe failed";
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    std::string failures = body();
    (void)!write(fds[1], failures.data(), failures.size());
    _exit(0);
  }
  close(fds[1]);
  std::string output;
  char buffer[512];
  ssize_t n;
  while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) {
    output.append(buffer, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    output += "the child did not exit normally";
  }
  return output;
}

// Runs |call| and describes it unless it failed with errno |expected|.
std::string Denied(const char *what, const std::function<long()> &call,
                   int expected) {
  errno = 0;
  long result = call();
  int error = errno;
  if (result == -1 && error == expected) {
    return "";
  }
  return std::string(what) + " returned " + std::to_string(result) + " (" +
         std::strerror(error) + "), expected " + std::strerror(expected) + "\n";
}

// Runs |call| and describes it if it failed.
std::string Allowed(const char *what, const std::function<long()> &call) {
  errno = 0;
  long result = call();
  int error = errno;
  if (result != -1) {
    return "";
  }
  return std::string(what) + " failed: " + std::strerror(error) + "\n";
}

// A Landlock domain from RestrictWithLandlock, in a child that has the
// cell's no_new_privs. Each call below succeeds without the domain: the
// test runs as the owner of the directories, and the same calls on the
// same paths succeed in the parent afterwards.
TEST(Landlock, DeniesEveryFileChangeButRemovalInOneDirectory) {
  int abi = KernelLandlockAbi();
  if (abi == 0) {
    GTEST_SKIP() << "the kernel offers no Landlock";
  }
  TempDir dir;
  ASSERT_NE(dir.path(), "");
  std::string removable = dir.File("removable");
  ASSERT_EQ(mkdir(removable.c_str(), 0755), 0);
  std::string error;
  const unsigned char text[] = "text";
  for (const std::string &path :
       {dir.File("existing"), removable + "/existing"}) {
    ASSERT_TRUE(WriteFile(path, text, sizeof(text), &error)) << error;
  }
  // An abstract Unix socket and a TCP port of this process, outside the
  // child's domain.
  int abstract = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(abstract, 0);
  sockaddr_un abstract_address{};
  abstract_address.sun_family = AF_UNIX;
  std::string abstract_name =
      "keycell-landlock-test-" + std::to_string(getpid());
  std::memcpy(abstract_address.sun_path + 1, abstract_name.data(),
              abstract_name.size());
  socklen_t abstract_length = static_cast<socklen_t>(
      offsetof(sockaddr_un, sun_path) + 1 + abstract_name.size());
  ASSERT_EQ(bind(abstract, reinterpret_cast<sockaddr *>(&abstract_address),
                 abstract_length),
            0);
  ASSERT_EQ(listen(abstract, 1), 0);
  int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(tcp, 0);
  sockaddr_in tcp_address{};
  tcp_address.sin_family = AF_INET;
  tcp_address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t tcp_length = sizeof(tcp_address);
  ASSERT_EQ(bind(tcp, reinterpret_cast<sockaddr *>(&tcp_address), tcp_length),
            0);
  ASSERT_EQ(listen(tcp, 1), 0);
  ASSERT_EQ(
      getsockname(tcp, reinterpret_cast<sockaddr *>(&tcp_address), &tcp_length),
      0);
  // A datagram socket at a path, as /dev/log is for syslog.
  int log_socket = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(log_socket, 0);
  sockaddr_un log_address{};
  log_address.sun_family = AF_UNIX;
  std::string log_path = dir.File("log");
  std::memcpy(log_address.sun_path, log_path.data(), log_path.size());
  ASSERT_EQ(bind(log_socket, reinterpret_cast<sockaddr *>(&log_address),
                 sizeof(log_address)),
            0);
  pid_t parent = getpid();

  std::string failures = RunInChild([&]() -> std::string {
    kc::Result<int> restricted = kc::cell::RestrictWithLandlock(removable);
    if (!restricted.ok()) {
      return restricted.status().message();
    }
    if (*restricted != abi) {
      return "domain of ABI " + std::to_string(*restricted);
    }
    std::string out;
    std::string existing = dir.File("existing");
    int fd = -1;
    out += Allowed("opening a file for reading",
                   [&] { return fd = open(existing.c_str(), O_RDONLY); });
    out += Allowed("reading it", [&] {
      char byte;
      return read(fd, &byte, 1);
    });
    out += Denied(
        "opening a file for writing",
        [&] { return open(existing.c_str(), O_WRONLY); }, EACCES);
    out += Denied(
        "creating a file",
        [&] { return open(dir.File("new").c_str(), O_WRONLY | O_CREAT, 0600); },
        EACCES);
    out += Denied(
        "creating a directory",
        [&] { return mkdir(dir.File("new-dir").c_str(), 0700); }, EACCES);
    out += Denied(
        "creating a symbolic link",
        [&] { return symlink("existing", dir.File("new-link").c_str()); },
        EACCES);
    out += Denied(
        "creating a FIFO",
        [&] { return mkfifo(dir.File("new-fifo").c_str(), 0600); }, EACCES);
    out += Denied(
        "renaming a file",
        [&] { return rename(existing.c_str(), dir.File("renamed").c_str()); },
        EACCES);
    out += Denied(
        "removing a file", [&] { return unlink(existing.c_str()); }, EACCES);
    out += Denied(
        "removing a directory", [&] { return rmdir(removable.c_str()); },
        EACCES);
    if (abi >= 3) {
      out += Denied(
          "truncating a file", [&] { return truncate(existing.c_str(), 0); },
          EACCES);
    }
    out += Denied(
        "binding a Unix socket to a path",
        [&] {
          int unix_socket = socket(AF_UNIX, SOCK_STREAM, 0);
          sockaddr_un path_address{};
          path_address.sun_family = AF_UNIX;
          std::string socket_path = dir.File("new-socket");
          std::memcpy(path_address.sun_path, socket_path.data(),
                      socket_path.size());
          return bind(unix_socket, reinterpret_cast<sockaddr *>(&path_address),
                      sizeof(path_address));
        },
        EACCES);
    out += Allowed("removing a file in the removable directory",
                   [&] { return unlink((removable + "/existing").c_str()); });
    out += Allowed("sending to a Unix socket at a path", [&] {
      int client = socket(AF_UNIX, SOCK_DGRAM, 0);
      if (connect(client, reinterpret_cast<sockaddr *>(&log_address),
                  sizeof(log_address)) != 0) {
        return -1L;
      }
      return static_cast<long>(send(client, "log", 3, 0));
    });
    if (abi >= 4) {
      out += Denied(
          "binding a TCP socket",
          [&] {
            int tcp_socket = socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in any{};
            any.sin_family = AF_INET;
            any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return bind(tcp_socket, reinterpret_cast<sockaddr *>(&any),
                        sizeof(any));
          },
          EACCES);
      out += Denied(
          "connecting a TCP socket",
          [&] {
            int tcp_socket = socket(AF_INET, SOCK_STREAM, 0);
            return connect(tcp_socket,
                           reinterpret_cast<sockaddr *>(&tcp_address),
                           sizeof(tcp_address));
          },
          EACCES);
    }
    if (abi >= 6) {
      out += Denied(
          "connecting to an abstract Unix socket",
          [&] {
            int abstract_client = socket(AF_UNIX, SOCK_STREAM, 0);
            return connect(abstract_client,
                           reinterpret_cast<sockaddr *>(&abstract_address),
                           abstract_length);
          },
          EPERM);
      out += Denied(
          "signalling a process outside the domain",
          [&] { return kill(parent, 0); }, EPERM);
    }
    return out;
  });
  EXPECT_EQ(failures, "");

  // The same changes succeed outside the domain.
  EXPECT_EQ(truncate(dir.File("existing").c_str(), 0), 0) << strerror(errno);
  EXPECT_EQ(mkdir(dir.File("new-dir").c_str(), 0700), 0) << strerror(errno);
  EXPECT_EQ(unlink(dir.File("existing").c_str()), 0) << strerror(errno);
  EXPECT_EQ(kill(parent, 0), 0);
  char received[8];
  EXPECT_EQ(recv(log_socket, received, sizeof(received), MSG_DONTWAIT), 3);
  close(abstract);
  close(tcp);
  close(log_socket);
}

// A cell in a Landlock domain fails every ptrace access check on processes
// outside it, and opening /proc/<pid>/root needs one. The cell's seccomp
// filter allows opening files for reading, so without Landlock a cell
// taken over could read its server's files and memory through /proc.
// The test loads a key through /proc/<pid>/root of the test process: a
// child with the cell's other confinement (same uid, not dumpable,
// no_new_privs) reads that path, the cell loads the same key through its
// own /proc/self/root, and only the load through the server's entry fails.
TEST(CellSandbox, LandlockKeepsTheCellOutOfItsServer) {
  int abi = KernelLandlockAbi();
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  EXPECT_EQ(keycell_landlock_abi(cell.get()), abi);
  if (abi == 0) {
    GTEST_SKIP() << "the kernel offers no Landlock";
  }
  std::string through_self = "/proc/self/root" + KeyPath("p256");
  std::string through_server =
      "/proc/" + std::to_string(getpid()) + "/root" + KeyPath("p256");
  EXPECT_EQ(RunInChild([&]() -> std::string {
              int fd = open(through_server.c_str(), O_RDONLY);
              return fd >= 0 ? "" : std::string(std::strerror(errno));
            }),
            "");
  EXPECT_NE(LoadCellKey(cell.get(), through_self, nullptr, &error), nullptr)
      << error;
  EXPECT_EQ(LoadCellKey(cell.get(), through_server, nullptr, &error), nullptr);
  EXPECT_NE(error.find("permission denied"), std::string::npos) << error;
}

}  // namespace
}  // namespace keycell_test
