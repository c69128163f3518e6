#include "daemon/logger.h"

#include <syslog.h>
#include <unistd.h>

#include <cstdio>

namespace kc::daemon {
namespace {

// Messages tracked for repeats before expired entries are dropped.
constexpr size_t kMaxTrackedMessages = 1024;

}  // namespace

Logger::Logger(bool to_stderr, bool to_syslog)
    : to_stderr_(to_stderr), to_syslog_(to_syslog) {
  if (to_syslog_) {
    openlog("keycelld", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  }
}

Logger::~Logger() {
  if (to_syslog_) {
    closelog();
  }
}

void Logger::set_stderr(bool to_stderr) {
  std::lock_guard lock(mutex_);
  to_stderr_ = to_stderr;
}

void Logger::Write(int priority, const std::string &message) {
  if (to_syslog_) {
    syslog(priority, "%s", message.c_str());
  }
  if (to_stderr_) {
    std::string line =
        "keycelld[" + std::to_string(getpid()) + "]: " + message + "\n";
    (void)!write(STDERR_FILENO, line.data(), line.size());
  }
}

void Logger::Log(int priority, const std::string &message) {
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  if (repeats_.size() >= kMaxTrackedMessages) {
    for (auto it = repeats_.begin(); it != repeats_.end();) {
      if (now - it->second.window_start >= kRepeatWindow) {
        if (it->second.suppressed != 0) {
          Write(priority, "suppressed " +
                              std::to_string(it->second.suppressed) +
                              " repeats of: " + it->first);
        }
        it = repeats_.erase(it);
      } else {
        ++it;
      }
    }
  }
  Repeat &repeat = repeats_[message];
  if (repeat.count == 0 || now - repeat.window_start >= kRepeatWindow) {
    if (repeat.suppressed != 0) {
      Write(priority, "suppressed " + std::to_string(repeat.suppressed) +
                          " repeats of: " + message);
    }
    repeat.window_start = now;
    repeat.count = 0;
    repeat.suppressed = 0;
  }
  if (repeat.count >= kMaxRepeats) {
    repeat.suppressed++;
    return;
  }
  repeat.count++;
  Write(priority, message);
}

}  // namespace kc::daemon
