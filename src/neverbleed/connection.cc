#include "neverbleed/connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "base/unique_fd.h"
#include "protocol/frame.h"

namespace kc::neverbleed {
namespace {

// Per-thread descriptors of neverbleed_get_fd. An entry belongs to the
// process that opened it; a child forked later closes its copy and opens
// its own.
struct ThreadDescriptor {
  uint64_t serial;
  pid_t pid;
  int fd;
};

struct ThreadDescriptors {
  std::vector<ThreadDescriptor> list;
  ~ThreadDescriptors() {
    pid_t self = getpid();
    for (const ThreadDescriptor &entry : list) {
      if (entry.pid == self) {
        ::close(entry.fd);
      }
    }
  }
};

thread_local ThreadDescriptors thread_descriptors;

// Waits until |fd| is readable or |deadline| passes. Returns false on
// timeout or error.
bool WaitReadable(int fd, std::chrono::steady_clock::time_point deadline,
                  bool has_deadline) {
  for (;;) {
    int wait_ms = -1;
    if (has_deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return false;
      }
      wait_ms = static_cast<int>(left.count());
    }
    pollfd readable{fd, POLLIN, 0};
    int ready = poll(&readable, 1, wait_ms);
    if (ready > 0) {
      return true;
    }
    if (ready < 0 && errno != EINTR) {
      return false;
    }
  }
}

}  // namespace

int DescriptorForThisThread(keycell_neverbleed_state &state) {
  pid_t self = getpid();
  std::vector<ThreadDescriptor> &list = thread_descriptors.list;
  for (auto it = list.begin(); it != list.end();) {
    if (it->pid != self) {
      ::close(it->fd);
      it = list.erase(it);
      continue;
    }
    if (it->serial == state.serial) {
      return it->fd;
    }
    ++it;
  }
  Result<kc::UniqueFd> connection =
      state.cell->OpenDedicatedConnection(protocol::Framing::kSizePrefixed);
  if (!connection.ok()) {
    return -1;
  }
  int fd = connection->release();
  list.push_back({state.serial, self, fd});
  return fd;
}

bool ReadExactly(int fd, void *data, size_t length,
                 std::chrono::steady_clock::time_point deadline,
                 bool has_deadline) {
  auto *cursor = static_cast<char *>(data);
  while (length != 0) {
    ssize_t n = recv(fd, cursor, length, MSG_DONTWAIT);
    if (n > 0) {
      cursor += n;
      length -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      return false;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return false;
    }
    if (!WaitReadable(fd, deadline, has_deadline)) {
      return false;
    }
  }
  return true;
}

bool WriteAll(int fd, const void *data, size_t length) {
  const auto *cursor = static_cast<const char *>(data);
  while (length != 0) {
    ssize_t n = send(fd, cursor, length, MSG_NOSIGNAL);
    if (n > 0) {
      cursor += n;
      length -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd writable{fd, POLLOUT, 0};
      if (poll(&writable, 1, -1) < 0 && errno != EINTR) {
        return false;
      }
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace kc::neverbleed
