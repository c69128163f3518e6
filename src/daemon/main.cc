// keycelld: keeps TLS private keys in a service that server processes use
// through a Unix socket. See docs/KEYCELLD.md.
#include <cstdio>
#include <cstring>
#include <string>

#include "daemon/daemon.h"

namespace {

constexpr const char kUsage[] =
    "Usage: keycelld --config FILE [--foreground]\n"
    "       keycelld --check FILE\n"
    "\n"
    "Keeps TLS private keys and signs or decrypts with them for the server\n"
    "processes that connect to its Unix socket.\n"
    "\n"
    "Options:\n"
    "  --config FILE   run with the configuration file FILE (path)\n"
    "  --foreground    stay attached to the terminal and log to stderr as\n"
    "                  well as syslog; without it keycelld detaches once its\n"
    "                  socket and keys are ready\n"
    "  --check FILE    validate FILE and load every key in it, report each\n"
    "                  error, and exit 0 if all is valid or 1 otherwise\n"
    "  --help          print this help and exit\n"
    "  --version       print the version and exit\n"
    "\n"
    "Signals: SIGHUP reloads the key blocks of the configuration; SIGTERM\n"
    "and SIGINT stop keycelld and remove its socket file.\n";

int UsageError(const std::string &message) {
  std::fprintf(stderr, "keycelld: %s\nRun 'keycelld --help' for usage.\n",
               message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char **argv) {
  std::string config;
  std::string check;
  bool foreground = false;
  for (int i = 1; i < argc; ++i) {
    std::string argument = argv[i];
    if (argument == "--help" || argument == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (argument == "--version") {
      std::puts("keycelld " KEYCELL_VERSION);
      return 0;
    }
    if (argument == "--foreground") {
      foreground = true;
    } else if (argument == "--config" || argument == "--check") {
      if (i + 1 >= argc) {
        return UsageError(argument + " requires a file path");
      }
      (argument == "--config" ? config : check) = argv[++i];
    } else {
      return UsageError("unknown option '" + argument + "'");
    }
  }
  if (!check.empty() && !config.empty()) {
    return UsageError("--check and --config cannot be combined");
  }
  if (!check.empty()) {
    return kc::daemon::CheckConfig(check);
  }
  if (config.empty()) {
    return UsageError("--config FILE or --check FILE is required");
  }
  return kc::daemon::RunDaemon(config, foreground);
}
