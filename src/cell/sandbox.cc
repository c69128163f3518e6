#include "cell/sandbox.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <seccomp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "base/unique_fd.h"

// Landlock rights newer than the <linux/landlock.h> of Debian 12, with the
// values of the kernel's UAPI header. Each is requested only when the
// running kernel's ABI version supports it.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)  // ABI 3
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)  // ABI 4
#endif
#ifndef LANDLOCK_ACCESS_NET_CONNECT_TCP
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)  // ABI 4
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)  // ABI 6
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)  // ABI 6
#endif

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
// accepts connections and removes its socket file when it stops. On SIGHUP
// it reads its configuration and key files and resolves user and group
// names through NSS, whose modules may query nscd or systemd-userdb over a
// Unix socket. It logs to syslog and reconnects to /dev/log when that
// connection is gone, so socket() is allowed, for AF_UNIX only.
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

// struct landlock_ruleset_attr as of ABI 6, because Debian 12's header has
// only its first field. A kernel with an older ABI accepts the larger
// struct as long as the fields it does not support are zero.
struct LandlockRulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};

// Every filesystem right that changes something, in ABI 1, and executing.
constexpr uint64_t kLandlockDeniedFs =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
    LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
    LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
    LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
    LANDLOCK_ACCESS_FS_MAKE_SYM;

Status LandlockError(const std::string &what, int error) {
  return Status(Code::kInternal, "cannot confine the process with Landlock: " +
                                     what + ": " + std::strerror(error));
}

}  // namespace

int LandlockAbi() {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0,
                     LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

Result<int> RestrictWithLandlock(const std::string &removable_dir) {
  int abi = LandlockAbi();
  if (abi == 0) {
    return 0;
  }

  LandlockRulesetAttr attr{};
  attr.handled_access_fs = kLandlockDeniedFs;
  if (abi >= 2) {
    attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
  }
  if (abi >= 3) {
    attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
  }
  if (abi >= 4) {
    attr.handled_access_net =
        LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
  }
  if (abi >= 6) {
    attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
  }
  UniqueFd ruleset(static_cast<int>(
      syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0)));
  if (!ruleset.valid()) {
    return LandlockError("creating the ruleset", errno);
  }

  if (!removable_dir.empty()) {
    UniqueFd dir(open(removable_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid()) {
      return LandlockError("opening " + removable_dir, errno);
    }
    landlock_path_beneath_attr rule{};
    rule.allowed_access = LANDLOCK_ACCESS_FS_REMOVE_FILE;
    rule.parent_fd = dir.get();
    if (syscall(SYS_landlock_add_rule, ruleset.get(),
                LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
      return LandlockError("allowing removal in " + removable_dir, errno);
    }
  }

  if (syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return LandlockError("restricting the process", errno);
  }
  return abi;
}

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
    const scmp_arg_cmp unix_only = {0, SCMP_CMP_EQ, AF_UNIX, 0};
    error = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                             unix_only);
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
