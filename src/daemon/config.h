// keycelld's configuration file, described in docs/KEYCELLD.md.
#ifndef KEYCELL_DAEMON_CONFIG_H
#define KEYCELL_DAEMON_CONFIG_H

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocol/messages.h"

namespace kc::daemon {

struct KeyConfig {
  std::string name;
  int line = 0;  // The line of the key's "key NAME {".
  std::string file;
  std::string passphrase_file;  // Empty: none.
  std::vector<uid_t> allow_users;
  std::vector<gid_t> allow_groups;
  // The operations, digests and paddings the key serves, from
  // allow_signing, allow_digests, allow_rsa_paddings and
  // allow_rsa_decryption.
  protocol::KeyPolicy policy;
};

struct DaemonConfig {
  std::string path;  // The configuration file itself.
  std::string socket;
  mode_t socket_mode = 0660;
  std::string socket_group;  // Empty: the group is left as created.
  gid_t socket_gid = 0;
  std::string user;      // Empty: privileges are not dropped.
  unsigned workers = 0;  // 0: one per CPU.
  std::vector<KeyConfig> keys;
};

// Parses configuration text. |path| names the file in error messages, which
// have the form "PATH:LINE: what is wrong". User and group names are
// resolved with the system's user database.
Result<DaemonConfig> ParseConfig(std::string_view text,
                                 const std::string &path);

// Reads and parses the configuration file at |path|.
Result<DaemonConfig> LoadConfig(const std::string &path);

}  // namespace kc::daemon

#endif  // KEYCELL_DAEMON_CONFIG_H
