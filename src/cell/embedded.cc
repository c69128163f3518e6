#include "cell/embedded.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "cell/dispatcher.h"
#include "cell/key_memory.h"
#include "cell/key_store.h"
#include "cell/sandbox.h"
#include "cell/server.h"

namespace kc::cell {
namespace {

// The descriptor the control socket is moved to before every other
// inherited descriptor is closed.
constexpr int kControlFd = 3;

// Resets what the cell inherited from the server: signal dispositions and
// mask, the session, and every descriptor but the control socket.
void ResetInheritedState(int control_fd) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, nullptr);
  for (int signal = 1; signal < NSIG; ++signal) {
    if (signal != SIGKILL && signal != SIGSTOP) {
      ::signal(signal, SIG_DFL);
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  // A session of its own keeps terminal signals (Ctrl-C) for the server;
  // the cell follows the server's exit through the control socket instead.
  setsid();

  if (control_fd != kControlFd) {
    dup2(control_fd, kControlFd);
  }
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
  }
  close_range(kControlFd + 1, ~0U, 0);
  fcntl(kControlFd, F_SETFD, FD_CLOEXEC);
}

// The embedded cell's share of the hardening: no core dumps, no ptrace
// attach by the server's uid, no privilege gain through exec, private keys
// in locked memory, and a Landlock domain that denies every filesystem
// change. Runs before any thread starts, because Landlock confines only
// the calling thread and the threads it creates later. Sends the server
// one message on the control socket of two bytes, the KeyMemoryState and
// the Landlock ABI version (0 without Landlock), because the library never
// prints and the server reports them through keycell_key_memory_locked and
// keycell_landlock_abi.
void Harden() {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);

  KeyMemory memory = SetUpKeyMemory(kEmbeddedArenaSize);
  // /dev/null is open already, so the domain needs no exception for it.
  // A failure other than a kernel without Landlock is reported as 0 too.
  Result<int> landlock = RestrictWithLandlock();
  char report[2] = {static_cast<char>(memory.state),
                    static_cast<char>(landlock.ok() ? *landlock : 0)};
  while (send(kControlFd, report, sizeof(report), MSG_NOSIGNAL) < 0 &&
         errno == EINTR) {
  }
}

// Closes every descriptor that an SCM_RIGHTS header carries.
void CloseReceivedDescriptors(const cmsghdr *header) {
  size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
  for (size_t i = 0; i < count; ++i) {
    int fd;
    std::memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof(fd));
    close(fd);
  }
}

// Takes every pending message off the control socket. Exits the cell when
// the last server process has closed its end.
void DrainControl(Server &server) {
  for (;;) {
    char byte;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))];
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = space;
    message.msg_controllen = sizeof(space);
    ssize_t n = recvmsg(kControlFd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    if (n <= 0) {
      _exit(0);
    }
    for (cmsghdr *header = CMSG_FIRSTHDR(&message); header != nullptr;
         header = CMSG_NXTHDR(&message, header)) {
      if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) {
        continue;
      }
      if (header->cmsg_len != CMSG_LEN(sizeof(int))) {
        // The descriptors of a message are open in the cell once received,
        // so a message that carries several must close them all.
        CloseReceivedDescriptors(header);
        continue;
      }
      int fd;
      std::memcpy(&fd, CMSG_DATA(header), sizeof(fd));
      // The message's one data byte selects the framing. An unknown value
      // closes the descriptor, and a failure in AddConnection does too; the
      // client sees its connection end.
      UniqueFd connection(fd);
      if (byte == static_cast<char>(protocol::Framing::kPlain) ||
          byte == static_cast<char>(protocol::Framing::kSizePrefixed)) {
        (void)server.AddConnection(std::move(connection),
                                   static_cast<protocol::Framing>(byte));
      }
    }
  }
}

}  // namespace

void RunEmbeddedCell(int control_fd, unsigned workers) {
  ResetInheritedState(control_fd);
  Harden();

  if (workers == 0) {
    workers = std::max(1u, std::thread::hardware_concurrency());
  }
  static KeyStore keys;
  static Dispatcher dispatcher(keys, nullptr);
  static Server server(dispatcher);
  if (!server.Init().ok()) {
    _exit(1);
  }
  Status watched = server.Watch(kControlFd, [] { DrainControl(server); });
  if (!watched.ok()) {
    _exit(1);
  }
  server.Run(workers, [] {
    // The embedded API has no log, so a cell that cannot confine itself
    // exits. Its server then gets every operation after keycell_start
    // failing with "cell process is not running".
    if (!InstallSyscallFilter(SandboxProfile::kEmbeddedCell).ok()) {
      _exit(1);
    }
  });
}

}  // namespace kc::cell
