// keycelld's log: stderr and syslog (facility LOG_DAEMON), with repeats of
// one message limited to kMaxRepeats lines per kRepeatWindow.
#ifndef KEYCELL_DAEMON_LOGGER_H
#define KEYCELL_DAEMON_LOGGER_H

#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace kc::daemon {

class Logger {
 public:
  static constexpr int kMaxRepeats = 5;
  static constexpr std::chrono::seconds kRepeatWindow{10};

  // Opens syslog with the identity "keycelld" when |to_syslog| is set.
  Logger(bool to_stderr, bool to_syslog);
  ~Logger();

  void set_stderr(bool to_stderr);

  // Writes |message| at syslog |priority| (LOG_INFO, LOG_ERR, ...). Lines
  // identical to one logged kMaxRepeats times within kRepeatWindow are
  // counted instead, and the count is logged when the window ends.
  void Log(int priority, const std::string &message);

 private:
  struct Repeat {
    std::chrono::steady_clock::time_point window_start;
    int count = 0;
    uint64_t suppressed = 0;
  };

  void Write(int priority, const std::string &message);

  std::mutex mutex_;
  bool to_stderr_;
  bool to_syslog_;
  std::map<std::string, Repeat> repeats_;
};

}  // namespace kc::daemon

#endif  // KEYCELL_DAEMON_LOGGER_H
