#include "cell/key_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cstdint>

namespace kc::cell {
namespace {

// The smallest block the secure heap hands out. Key BIGNUMs are 32 bytes
// and up, so a smaller unit would only grow OpenSSL's free lists.
constexpr size_t kMinAllocation = 16;

// Bounds of the secure heap arena, found through CRYPTO_secure_allocated,
// which compares a pointer with the arena's bounds and never reads it.
struct Arena {
  uintptr_t start = 0;
  uintptr_t end = 0;
};

// Finds the page-aligned arena that contains |inside| by binary search
// over page numbers: allocated(page) is false below the arena, true
// inside it and false above it.
Arena FindArena(uintptr_t inside) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  auto allocated = [page](uintptr_t page_number) {
    return CRYPTO_secure_allocated(
               reinterpret_cast<const void *>(page_number * page)) != 0;
  };
  uintptr_t below = 0;  // Not in the arena: page 0 is never mapped.
  uintptr_t in = inside / page;
  while (in - below > 1) {
    uintptr_t middle = below + (in - below) / 2;
    (allocated(middle) ? in : below) = middle;
  }
  Arena arena;
  arena.start = in * page;
  in = inside / page;
  uintptr_t above = UINTPTR_MAX / page;
  while (above - in > 1) {
    uintptr_t middle = in + (above - in) / 2;
    (allocated(middle) ? in : above) = middle;
  }
  arena.end = above * page;
  return arena;
}

// Raises the soft RLIMIT_MEMLOCK by |size| bytes, at most to the hard limit,
// so that the arena fits beside memory the process has already locked.
void RaiseMemlockLimit(size_t size) {
  rlimit limit;
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0 ||
      limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= limit.rlim_max) {
    return;
  }
  rlim_t raised = limit.rlim_cur + size;
  if (limit.rlim_max != RLIM_INFINITY && raised > limit.rlim_max) {
    raised = limit.rlim_max;
  }
  limit.rlim_cur = raised;
  setrlimit(RLIMIT_MEMLOCK, &limit);
}

std::string Bytes(uint64_t value) {
  if (value == RLIM_INFINITY) {
    return "unlimited";
  }
  if (value % (1024 * 1024) == 0) {
    return std::to_string(value / (1024 * 1024)) + " MiB";
  }
  if (value % 1024 == 0) {
    return std::to_string(value / 1024) + " KiB";
  }
  return std::to_string(value) + " bytes";
}

KeyMemoryState LockArena(size_t *arena_size) {
  if (CRYPTO_secure_malloc_initialized() == 0) {
    return KeyMemoryState::kUnavailable;
  }
  void *probe = OPENSSL_secure_malloc(1);
  if (probe == nullptr || CRYPTO_secure_allocated(probe) == 0) {
    // A full arena leaves nothing to find it by. OpenSSL 3.0 returns
    // NULL then; the arena is still excluded from core dumps.
    OPENSSL_secure_free(probe);
    return KeyMemoryState::kNotLocked;
  }
  Arena arena = FindArena(reinterpret_cast<uintptr_t>(probe));
  OPENSSL_secure_free(probe);
  if (arena_size != nullptr) {
    *arena_size = arena.end - arena.start;
  }
  RaiseMemlockLimit(arena.end - arena.start);
  if (mlock(reinterpret_cast<void *>(arena.start), arena.end - arena.start) !=
      0) {
    return KeyMemoryState::kNotLocked;
  }
  return KeyMemoryState::kLocked;
}

}  // namespace

KeyMemory SetUpKeyMemory(size_t arena_size) {
  KeyMemory memory;
  if (CRYPTO_secure_malloc_initialized() != 0) {
    memory.inherited = true;
    memory.state = LockArena(&memory.arena_size);
    getrlimit(RLIMIT_MEMLOCK, &memory.memlock_limit);
    return memory;
  }
  RaiseMemlockLimit(arena_size);
  getrlimit(RLIMIT_MEMLOCK, &memory.memlock_limit);
  memory.arena_size = arena_size;
  switch (CRYPTO_secure_malloc_init(arena_size, kMinAllocation)) {
    case 1:
      memory.state = KeyMemoryState::kLocked;
      break;
    case 2:
      // OpenSSL 3.0 returns 2 when mlock or madvise(MADV_DONTDUMP) fails.
      memory.state = KeyMemoryState::kNotLocked;
      break;
    default:
      memory.state = KeyMemoryState::kUnavailable;
      break;
  }
  return memory;
}

KeyMemoryState RelockKeyMemory() {
  return LockArena(nullptr);
}

std::string DescribeKeyMemory(const KeyMemory &memory) {
  std::string arena = Bytes(memory.arena_size) + " secure heap" +
                      (memory.inherited ? " inherited from the parent" : "");
  switch (memory.state) {
    case KeyMemoryState::kLocked:
      return "private keys are in a locked " + arena;
    case KeyMemoryState::kNotLocked:
      return "private keys are in a " + arena +
             " that could not be locked in memory (RLIMIT_MEMLOCK soft " +
             Bytes(memory.memlock_limit.rlim_cur) + ", hard " +
             Bytes(memory.memlock_limit.rlim_max) +
             "), so they may be swapped out; raise the limit (LimitMEMLOCK= "
             "in systemd) or grant CAP_IPC_LOCK";
    case KeyMemoryState::kUnavailable:
      break;
  }
  return "the secure heap could not be created, so private keys are in the "
         "ordinary heap and may be swapped out";
}

}  // namespace kc::cell
