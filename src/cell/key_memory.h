// Locked memory for private keys: OpenSSL's secure heap in a cell process.
#ifndef KEYCELL_CELL_KEY_MEMORY_H
#define KEYCELL_CELL_KEY_MEMORY_H

#include <sys/resource.h>

#include <cstddef>
#include <string>

namespace kc::cell {

// Size of the secure heap arena of the embedded cell. OpenSSL 3.0 keeps
// there the private BIGNUMs of RSA keys (about 3.5 bytes per bit of the
// modulus: 7 KiB for RSA-16384) and of EC keys, the private keys of
// Ed25519 and Ed448, and ECDSA nonces while a signature is made. 1 MiB
// has room for over 100 RSA-16384 keys or 1000 RSA-2048 keys.
constexpr size_t kEmbeddedArenaSize = size_t{1} << 20;
// keycelld's arena is larger because a reload keeps the old and the new
// keys at once, and one keycelld serves the keys of many servers.
constexpr size_t kDaemonArenaSize = size_t{4} << 20;

// Whether the memory that holds private keys is locked in RAM.
// The values travel as one byte from the embedded cell to its server.
enum class KeyMemoryState : char {
  // In the secure heap, locked with mlock and excluded from core dumps.
  kLocked = 1,
  // In the secure heap and excluded from core dumps, but mlock failed
  // (RLIMIT_MEMLOCK is too low), so the kernel may swap it out.
  kNotLocked = 2,
  // No secure heap: keys are in the ordinary heap.
  kUnavailable = 3,
};

struct KeyMemory {
  KeyMemoryState state = KeyMemoryState::kUnavailable;
  size_t arena_size = 0;
  // RLIMIT_MEMLOCK when the arena was set up, for messages.
  rlimit memlock_limit{};
  // True when the arena was inherited from the process that forked this
  // one instead of created here.
  bool inherited = false;
};

// Creates the secure heap with an arena of |arena_size| bytes, a power of
// two, and locks it. Raises the soft RLIMIT_MEMLOCK by the arena size, up
// to the hard limit, first. A secure heap that already exists,
// inherited through fork, is kept and locked again, because fork does not
// pass memory locks to the child. Call it before any key is loaded.
KeyMemory SetUpKeyMemory(size_t arena_size);

// Locks the existing secure heap arena again. Call it in a child forked
// after SetUpKeyMemory. Returns kUnavailable when there is no secure heap.
KeyMemoryState RelockKeyMemory();

// Describes |memory| in one line for a log.
std::string DescribeKeyMemory(const KeyMemory &memory);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_KEY_MEMORY_H
