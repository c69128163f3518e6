// The seccomp filter of a cell process.
#ifndef KEYCELL_CELL_SANDBOX_H
#define KEYCELL_CELL_SANDBOX_H

#include "base/status.h"

namespace kc::cell {

// Which process a filter confines.
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
// The embedded cell also keeps the calls that drop privileges; keycelld
// keeps accept4, connect, socket for AF_UNIX only, and unlink, for
// clients, syslog, NSS lookups on reload, and its socket file. Starting
// programs, tracing other processes and writing to processes' memory kill
// the process; any other system call fails with EPERM. Call it after the
// worker threads have started, because creating threads is not allowed
// afterwards.
Status InstallSyscallFilter(
    SandboxProfile profile = SandboxProfile::kEmbeddedCell);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_SANDBOX_H
