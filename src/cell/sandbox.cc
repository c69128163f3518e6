#include "cell/sandbox.h"

#include <fcntl.h>
#include <seccomp.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>
#include <span>
#include <string>

namespace kc::cell {
namespace {

struct FilterDeleter {
  void operator()(scmp_filter_ctx filter) const { seccomp_release(filter); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

// System calls that both profiles need: serving requests, managing memory
// and threads that already exist, and reading files.
constexpr int kAllowed[] = {
    // Connections and the event loop.
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(recvfrom),
    SCMP_SYS(sendto),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendmsg),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(shutdown),
    SCMP_SYS(close),
    SCMP_SYS(fcntl),
    SCMP_SYS(dup),
    SCMP_SYS(getsockopt),
    // Memory and threads.
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(mprotect),
    SCMP_SYS(madvise),
    SCMP_SYS(brk),
    SCMP_SYS(futex),
    SCMP_SYS(sched_yield),
    SCMP_SYS(sched_getaffinity),
    SCMP_SYS(sched_setaffinity),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(membarrier),
    // Time, randomness and identity.
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(getrandom),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(getuid),
    SCMP_SYS(geteuid),
    SCMP_SYS(getgid),
    SCMP_SYS(getegid),
    SCMP_SYS(getgroups),
    // Reading key files, passphrase files and the user database.
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(statx),
    SCMP_SYS(lseek),
    SCMP_SYS(pread64),
    // Signals and exit.
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(tgkill),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    SCMP_SYS(restart_syscall),
};

// The embedded cell drops privileges on request
// (keycell_drop_privileges), so it keeps the calls that switch users.
constexpr int kEmbeddedAllowed[] = {
    SCMP_SYS(setuid),    SCMP_SYS(setgid),    SCMP_SYS(setresuid),
    SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(prctl),
};

// keycelld has dropped privileges before the filter is installed. It still
// accepts connections, reloads its configuration on SIGHUP (reading key
// files, and resolving user and group names through NSS, which may load
// NSS modules and ask nscd or systemd-userdb over a Unix socket), logs to
// syslog (reconnecting to /dev/log when it has gone), and removes its
// socket file when it stops. socket() is allowed for AF_UNIX only.
constexpr int kDaemonAllowed[] = {
    // Clients and syslog.
    SCMP_SYS(accept4),
    SCMP_SYS(accept),
    SCMP_SYS(connect),
    SCMP_SYS(getsockname),
    SCMP_SYS(getpeername),
    // Reloading: NSS lookups and its modules.
    SCMP_SYS(access),
    SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2),
    SCMP_SYS(getdents64),
    SCMP_SYS(fstatfs),
    SCMP_SYS(stat),
    SCMP_SYS(lstat),
    SCMP_SYS(readlink),
    SCMP_SYS(readlinkat),
    SCMP_SYS(time),
    // Stopping: the socket file.
    SCMP_SYS(unlink),
    SCMP_SYS(unlinkat),
};

#ifdef KEYCELL_SANITIZER_BUILD
// What the ASan, UBSan and TSan runtimes call on their own: checking
// whether memory is readable through a pipe, and reading /proc for their
// reports.
constexpr int kSanitizerAllowed[] = {
    SCMP_SYS(pipe),        SCMP_SYS(pipe2),     SCMP_SYS(readlink),
    SCMP_SYS(readlinkat),  SCMP_SYS(open),      SCMP_SYS(getppid),
    SCMP_SYS(sigaltstack), SCMP_SYS(prlimit64), SCMP_SYS(getrlimit),
    SCMP_SYS(uname),       SCMP_SYS(dup2),      SCMP_SYS(dup3),
};
#endif

// System calls whose use can only mean that the cell has been taken over.
constexpr int kFatal[] = {
    SCMP_SYS(execve),           SCMP_SYS(execveat),
    SCMP_SYS(ptrace),           SCMP_SYS(process_vm_writev),
    SCMP_SYS(process_vm_readv), SCMP_SYS(kexec_load),
};

Status FilterError(const char *what, int error) {
  return Status(Code::kInternal, std::string("cannot install the system call "
                                             "filter: ") +
                                     what + ": " + std::strerror(-error));
}

Status AddRules(scmp_filter_ctx filter, std::span<const int> calls,
                const char *what) {
  for (int call : calls) {
    int error = seccomp_rule_add(filter, SCMP_ACT_ALLOW, call, 0);
    if (error != 0) {
      return FilterError(what, error);
    }
  }
  return Status::Ok();
}

}  // namespace

Status InstallSyscallFilter(SandboxProfile profile) {
  Filter filter(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
  if (filter == nullptr) {
    return Status(Code::kInternal,
                  "cannot install the system call filter: seccomp_init "
                  "failed");
  }
  int error = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1);
  if (error != 0) {
    return FilterError("synchronising threads", error);
  }
  Status added = AddRules(filter.get(), kAllowed, "adding a rule");
  if (added.ok() && profile == SandboxProfile::kEmbeddedCell) {
    added = AddRules(filter.get(), kEmbeddedAllowed, "adding a cell rule");
  }
  if (added.ok() && profile == SandboxProfile::kDaemon) {
    added = AddRules(filter.get(), kDaemonAllowed, "adding a keycelld rule");
  }
#ifdef KEYCELL_SANITIZER_BUILD
  if (added.ok()) {
    added =
        AddRules(filter.get(), kSanitizerAllowed, "adding a sanitizer rule");
  }
#endif
  if (!added.ok()) {
    return added;
  }
  if (profile == SandboxProfile::kDaemon) {
    error = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                             SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    if (error != 0) {
      return FilterError("adding the socket rule", error);
    }
  }
  // Files open for reading only. O_CREAT and O_TRUNC are excluded too,
  // because Linux creates or truncates a file opened O_RDONLY with them.
  error = seccomp_rule_add(
      filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
      SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY));
  if (error != 0) {
    return FilterError("adding the openat rule", error);
  }
  for (int call : kFatal) {
    error = seccomp_rule_add(filter.get(), SCMP_ACT_KILL_PROCESS, call, 0);
    if (error != 0) {
      return FilterError("adding a fatal rule", error);
    }
  }
  error = seccomp_load(filter.get());
  if (error != 0) {
    return FilterError("loading", error);
  }
  return Status::Ok();
}

}  // namespace kc::cell
