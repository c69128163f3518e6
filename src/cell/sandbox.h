// The seccomp filter and the Landlock domain of a cell process.
#ifndef KEYCELL_CELL_SANDBOX_H
#define KEYCELL_CELL_SANDBOX_H

#include <string>

#include "base/status.h"

namespace kc::cell {

// The kind of process that a system call filter confines.
enum class SandboxProfile {
  // The forked cell of the embedded library, which may still drop
  // privileges on request.
  kEmbeddedCell,
  // keycelld once its keys are loaded and its privileges dropped.
  kDaemon,
};

// Installs a system call filter on every thread of the process. Both
// profiles keep what they need to serve requests and read key and
// passphrase files (openat only without write access, O_CREAT or O_TRUNC).
// The embedded cell also keeps the calls that drop privileges. keycelld
// keeps accept4, connect, socket for AF_UNIX only, and unlink, because it
// accepts clients, logs to syslog, looks up names through NSS on reload
// and removes its socket file. Starting programs, tracing other processes
// and writing to processes' memory kill the process, and any other system
// call fails with EPERM. Call it after the
// worker threads have started, because creating threads is not allowed
// afterwards.
Status InstallSyscallFilter(
    SandboxProfile profile = SandboxProfile::kEmbeddedCell);

// The Landlock ABI version that the running kernel offers, or 0 when it
// has no Landlock (not built in, or not among the active LSMs).
int LandlockAbi();

// Confines the calling thread, and the threads it starts afterwards, with
// a Landlock domain. Every filesystem change is denied everywhere: writing
// files, creating and removing files, directories, sockets, FIFOs, device
// nodes and symbolic links (which also denies renaming and linking),
// reparenting files (REFER, from ABI 2), truncating (from ABI 3), and
// executing files. Removing
// files is allowed beneath |removable_dir| unless it is empty. Reading
// stays allowed. From ABI 4, binding and connecting TCP sockets are
// denied. From ABI 6, connecting to abstract Unix sockets and signalling
// processes outside the domain are denied too. Landlock also keeps the
// process from tracing any process outside the domain, or opening its
// /proc/<pid>/mem or /proc/<pid>/root. Only the rights that the kernel's
// ABI supports are requested, so a newer kernel keeps the same rules.
//
// Returns the ABI version of the domain, or 0 when the kernel has no
// Landlock, in which case nothing changes. Needs no_new_privs (or
// CAP_SYS_ADMIN). Threads that already run stay outside the domain, so
// call it before starting any.
Result<int> RestrictWithLandlock(const std::string &removable_dir = "");

}  // namespace kc::cell

#endif  // KEYCELL_CELL_SANDBOX_H
