// The seccomp filter of a cell process.
#ifndef KEYCELL_CELL_SANDBOX_H
#define KEYCELL_CELL_SANDBOX_H

#include "base/status.h"

namespace kc::cell {

// Installs the cell's system call filter on every thread of the process.
// The cell keeps what it needs to serve requests, read key and passphrase
// files, and drop privileges. Starting programs, tracing other processes
// and writing to processes' memory kill the cell; any other system call
// fails with EPERM. Call it after the worker threads have started, because
// creating threads is not allowed afterwards.
Status InstallSyscallFilter();

}  // namespace kc::cell

#endif  // KEYCELL_CELL_SANDBOX_H
