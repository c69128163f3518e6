// The cell of the embedded mode: a process forked from the server.
#ifndef KEYCELL_CELL_EMBEDDED_H
#define KEYCELL_CELL_EMBEDDED_H

namespace kc::cell {

// Runs the cell in a freshly forked child. |control_fd| is the cell's end of
// a SOCK_SEQPACKET socketpair: each message on it carries one new
// connection as an SCM_RIGHTS descriptor, and end-of-file on it means every
// server process has gone, so the cell exits. Never returns.
[[noreturn]] void RunEmbeddedCell(int control_fd, unsigned workers);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_EMBEDDED_H
