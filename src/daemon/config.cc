#include "daemon/config.h"

#include <grp.h>
#include <pwd.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "protocol/key_policy.h"
#include "protocol/reference.h"

namespace kc::daemon {
namespace {

constexpr unsigned kMaxWorkers = 256;
// The maximum size of a configuration file, in bytes.
constexpr size_t kMaxConfigSize = 1024 * 1024;

bool IsKeyDirective(const std::string &directive) {
  return directive == "file" || directive == "passphrase_file" ||
         directive == "allow_users" || directive == "allow_groups" ||
         directive == "allow_rsa_decryption" || directive == "allow_signing" ||
         directive == "allow_digests" || directive == "allow_rsa_paddings";
}

bool TakesList(const std::string &directive) {
  return directive == "allow_users" || directive == "allow_groups" ||
         directive == "allow_digests" || directive == "allow_rsa_paddings";
}

class Parser {
 public:
  explicit Parser(const std::string &path) : path_(path) {}

  Result<DaemonConfig> Parse(std::string_view text);

 private:
  Status Error(int line, const std::string &message) const {
    return Status(Code::kInvalidArgument,
                  path_ + ":" + std::to_string(line) + ": " + message);
  }
  Status ParseLine(int line, const std::vector<std::string> &words);
  Status ParseGlobal(int line, const std::vector<std::string> &words);
  Status ParseKeyDirective(int line, const std::vector<std::string> &words);
  Status ParsePolicyDirective(int line, const std::vector<std::string> &words);
  Status FinishKey(int line);
  Status CheckOnce(int line, const std::string &directive,
                   std::set<std::string> &seen);

  std::string path_;
  DaemonConfig config_;
  bool in_key_ = false;
  KeyConfig key_;
  std::set<std::string> global_seen_;
  std::set<std::string> key_seen_;
  // The lines of the key block's allow_digests and allow_rsa_paddings.
  std::map<std::string, int> signing_option_lines_;
  std::set<std::string> key_names_;
};

std::vector<std::string> SplitWords(std::string_view line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) {
      ++i;
    }
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') {
      ++i;
    }
    if (i > start) {
      words.emplace_back(line.substr(start, i - start));
    }
  }
  return words;
}

Status Parser::CheckOnce(int line, const std::string &directive,
                         std::set<std::string> &seen) {
  if (!seen.insert(directive).second) {
    return Error(line, "duplicate \"" + directive + "\" directive");
  }
  return Status::Ok();
}

Result<DaemonConfig> Parser::Parse(std::string_view text) {
  config_.path = path_;
  int line_number = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    ++line_number;
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.find('\0') != std::string_view::npos) {
      return Error(line_number, "the line contains a NUL byte");
    }
    size_t comment = line.find('#');
    if (comment != std::string_view::npos) {
      line = line.substr(0, comment);
    }
    std::vector<std::string> words = SplitWords(line);
    if (words.empty()) {
      continue;
    }
    Status status = ParseLine(line_number, words);
    if (!status.ok()) {
      return status;
    }
  }
  if (in_key_) {
    return Error(key_.line,
                 "the block of key '" + key_.name + "' has no closing '}'");
  }
  if (config_.socket.empty()) {
    // The last line of the file; a final newline starts no line.
    int last_line =
        std::max(1, !text.empty() && text.back() == '\n' ? line_number - 1
                                                         : line_number);
    return Error(last_line, "the \"socket\" directive is missing");
  }
  return std::move(config_);
}

Status Parser::ParseLine(int line, const std::vector<std::string> &words) {
  for (const std::string &word : words) {
    if (word.find(';') != std::string::npos) {
      return Error(line,
                   "unexpected ';': each directive ends at the end of its "
                   "line");
    }
  }
  if (words[0] == "}") {
    if (words.size() != 1) {
      return Error(line, "unexpected text after '}'");
    }
    if (!in_key_) {
      return Error(line, "'}' without an open key block");
    }
    return FinishKey(line);
  }
  if (words[0] == "key") {
    if (in_key_) {
      return Error(line,
                   "a key block cannot contain another key block; "
                   "close the block of key '" +
                       key_.name + "' first");
    }
    if (words.size() != 3 || words[2] != "{") {
      return Error(line, "expected \"key NAME {\"");
    }
    if (!protocol::ValidKeyName(words[1])) {
      return Error(line, "invalid key name '" + words[1] +
                             "': a key name has 1 to 64 characters from "
                             "A-Z a-z 0-9 . _ - and does not start with . "
                             "or -");
    }
    if (!key_names_.insert(words[1]).second) {
      return Error(line, "duplicate key name '" + words[1] + "'");
    }
    in_key_ = true;
    key_ = KeyConfig();
    key_.name = words[1];
    key_.line = line;
    key_seen_.clear();
    signing_option_lines_.clear();
    return Status::Ok();
  }
  return in_key_ ? ParseKeyDirective(line, words) : ParseGlobal(line, words);
}

Status Parser::ParseGlobal(int line, const std::vector<std::string> &words) {
  const std::string &directive = words[0];
  bool known = directive == "socket" || directive == "socket_mode" ||
               directive == "socket_group" || directive == "user" ||
               directive == "workers";
  if (!known) {
    return Error(
        line,
        "unknown directive \"" + directive + "\"" +
            (IsKeyDirective(directive) ? "; it belongs in a key block" : ""));
  }
  if (words.size() != 2) {
    return Error(line, "\"" + directive + "\" takes exactly one value");
  }
  Status once = CheckOnce(line, directive, global_seen_);
  if (!once.ok()) {
    return once;
  }
  const std::string &value = words[1];
  if (directive == "socket") {
    if (value.front() != '/') {
      return Error(line, "the socket path '" + value + "' is not absolute");
    }
    if (value.size() >= sizeof(sockaddr_un::sun_path)) {
      return Error(line, "the socket path is " + std::to_string(value.size()) +
                             " bytes long; the maximum is " +
                             std::to_string(sizeof(sockaddr_un::sun_path) - 1));
    }
    config_.socket = value;
  } else if (directive == "socket_mode") {
    char *end = nullptr;
    errno = 0;
    unsigned long mode = std::strtoul(value.c_str(), &end, 8);
    if (errno != 0 || *end != '\0' || value.size() > 4 || mode > 0777 ||
        value.find_first_not_of("01234567") != std::string::npos) {
      return Error(line, "invalid socket_mode '" + value +
                             "': expected an octal mode from 0000 to 0777, "
                             "such as 0660");
    }
    config_.socket_mode = static_cast<mode_t>(mode);
  } else if (directive == "socket_group") {
    struct group *group = getgrnam(value.c_str());
    if (group == nullptr) {
      return Error(line, "unknown group '" + value + "'");
    }
    config_.socket_group = value;
    config_.socket_gid = group->gr_gid;
  } else if (directive == "user") {
    if (getpwnam(value.c_str()) == nullptr) {
      return Error(line, "unknown user '" + value + "'");
    }
    config_.user = value;
  } else {
    char *end = nullptr;
    errno = 0;
    unsigned long workers = std::strtoul(value.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || value.front() == '-' ||
        value.front() == '+' || workers < 1 || workers > kMaxWorkers) {
      return Error(line, "invalid workers '" + value +
                             "': expected a thread count from 1 to " +
                             std::to_string(kMaxWorkers));
    }
    config_.workers = static_cast<unsigned>(workers);
  }
  return Status::Ok();
}

Status Parser::ParseKeyDirective(int line,
                                 const std::vector<std::string> &words) {
  const std::string &directive = words[0];
  if (!IsKeyDirective(directive)) {
    return Error(line, "unknown directive \"" + directive +
                           "\" in the block of key '" + key_.name + "'");
  }
  Status once = CheckOnce(line, directive, key_seen_);
  if (!once.ok()) {
    return once;
  }
  bool takes_list = TakesList(directive);
  if (takes_list ? words.size() < 2 : words.size() != 2) {
    return Error(line,
                 "\"" + directive + "\" takes " +
                     (takes_list ? "one or more names" : "exactly one value"));
  }
  if (directive == "file" || directive == "passphrase_file") {
    if (words[1].front() != '/') {
      return Error(line, "the path '" + words[1] + "' is not absolute");
    }
    (directive == "file" ? key_.file : key_.passphrase_file) = words[1];
  } else if (directive == "allow_users") {
    for (size_t i = 1; i < words.size(); ++i) {
      struct passwd *user = getpwnam(words[i].c_str());
      if (user == nullptr) {
        return Error(line, "unknown user '" + words[i] + "'");
      }
      key_.allow_users.push_back(user->pw_uid);
    }
  } else if (directive == "allow_groups") {
    for (size_t i = 1; i < words.size(); ++i) {
      struct group *group = getgrnam(words[i].c_str());
      if (group == nullptr) {
        return Error(line, "unknown group '" + words[i] + "'");
      }
      key_.allow_groups.push_back(group->gr_gid);
    }
  } else {
    return ParsePolicyDirective(line, words);
  }
  return Status::Ok();
}

Status Parser::ParsePolicyDirective(int line,
                                    const std::vector<std::string> &words) {
  const std::string &directive = words[0];
  if (directive == "allow_digests" || directive == "allow_rsa_paddings") {
    signing_option_lines_[directive] = line;
  }
  if (directive == "allow_digests") {
    std::string list;
    for (size_t i = 1; i < words.size(); ++i) {
      list += words[i] + " ";
    }
    Result<uint32_t> digests = protocol::ParseDigestList(list, " ");
    if (!digests.ok()) {
      return Error(line,
                   "invalid allow_digests: " + digests.status().message());
    }
    key_.policy.digests = digests.value();
    return Status::Ok();
  }
  if (directive == "allow_rsa_paddings") {
    uint8_t paddings = 0;
    for (size_t i = 1; i < words.size(); ++i) {
      if (words[i] == "pkcs1") {
        paddings |= protocol::kSignPaddingPkcs1;
      } else if (words[i] == "pss") {
        paddings |= protocol::kSignPaddingPss;
      } else {
        return Error(line, "invalid allow_rsa_paddings '" + words[i] +
                               "': expected pkcs1, pss or both");
      }
    }
    key_.policy.rsa_sign_paddings = paddings;
    return Status::Ok();
  }
  // allow_signing and allow_rsa_decryption.
  if (words[1] != "yes" && words[1] != "no") {
    return Error(line, "invalid " + directive + " '" + words[1] +
                           "': expected yes or no");
  }
  (directive == "allow_signing" ? key_.policy.allow_sign
                                : key_.policy.allow_decrypt) =
      words[1] == "yes";
  return Status::Ok();
}

Status Parser::FinishKey(int line) {
  in_key_ = false;
  if (key_.file.empty()) {
    return Error(
        line, "the block of key '" + key_.name + "' has no \"file\" directive");
  }
  if (!key_.policy.allow_sign) {
    if (!key_.policy.allow_decrypt) {
      return Error(line, "the block of key '" + key_.name +
                             "' allows neither signing nor RSA decryption, "
                             "so no client could use it");
    }
    if (!signing_option_lines_.empty()) {
      const auto &[directive, directive_line] = *signing_option_lines_.begin();
      return Error(directive_line,
                   "\"" + directive +
                       "\" applies to signing, but the block of key '" +
                       key_.name +
                       "' turns signing off with "
                       "\"allow_signing no\"");
    }
  }
  if (key_.allow_users.empty() && key_.allow_groups.empty()) {
    return Error(line, "the block of key '" + key_.name +
                           "' has neither \"allow_users\" nor "
                           "\"allow_groups\", so no client could open it");
  }
  config_.keys.push_back(std::move(key_));
  return Status::Ok();
}

}  // namespace

Result<DaemonConfig> ParseConfig(std::string_view text,
                                 const std::string &path) {
  Parser parser(path);
  return parser.Parse(text);
}

Result<DaemonConfig> LoadConfig(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status(Code::kInvalidArgument,
                  path + ": cannot open: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return Status(Code::kInvalidArgument, path + ": read failed");
  }
  if (text.str().size() > kMaxConfigSize) {
    return Status(Code::kInvalidArgument,
                  path + ": the file is larger than the maximum of " +
                      std::to_string(kMaxConfigSize) + " bytes");
  }
  return ParseConfig(text.str(), path);
}

}  // namespace kc::daemon
