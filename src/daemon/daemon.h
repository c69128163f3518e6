// keycelld: the cell as a service on a Unix socket, shared by the server
// processes of several users.
#ifndef KEYCELL_DAEMON_DAEMON_H
#define KEYCELL_DAEMON_DAEMON_H

#include <string>
#include <vector>

#include "base/status.h"
#include "cell/key_catalog.h"
#include "daemon/config.h"
#include "daemon/logger.h"

namespace kc::daemon {

// Loads every key of |config|. Returns the keys, or kKeyLoadFailed with one
// line per key that failed, each naming the key and its file.
Result<std::vector<cell::CatalogKey>> LoadKeys(const DaemonConfig &config);

// Validates the configuration at |path| and loads its keys, writing what it
// finds to stdout and errors to stderr. Returns the process exit status.
int CheckConfig(const std::string &path);

// Runs keycelld with the configuration at |path|. Returns an exit status
// when it cannot start. Otherwise it runs until SIGTERM or SIGINT and exits.
int RunDaemon(const std::string &path, bool foreground);

}  // namespace kc::daemon

#endif  // KEYCELL_DAEMON_DAEMON_H
