// Fuzzes the parser of keycelld's configuration file. Every input must end
// in a configuration or in an error of the form "PATH:LINE: reason".
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "daemon/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  kc::Result<kc::daemon::DaemonConfig> parsed =
      kc::daemon::ParseConfig(text, "fuzz.conf");
  if (!parsed.ok() &&
      parsed.status().message().rfind("fuzz.conf:", 0) != 0) {
    abort();
  }
  return 0;
}
