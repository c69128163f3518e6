// keycell: queries keycelld and writes reference files for its keys.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "cli/daemon_client.h"
#include "protocol/key_policy.h"
#include "protocol/reference.h"

namespace {

using kc::Code;
using kc::Result;
using kc::Status;
using kc::cli::DaemonClient;
namespace protocol = kc::protocol;

constexpr const char kUsage[] =
    "Usage: keycell COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  ping     check that keycelld answers on its socket\n"
    "  status   list keycelld's keys with fingerprints and operation counts\n"
    "  wrap     write a reference file for one of keycelld's keys\n"
    "\n"
    "Run 'keycell COMMAND --help' for the options of a command, and\n"
    "'keycell --version' for the version.\n";

constexpr const char kPingUsage[] =
    "Usage: keycell ping --socket PATH\n"
    "\n"
    "Sends a ping to keycelld and exits 0 when it replies.\n"
    "\n"
    "Options:\n"
    "  --socket PATH   path of keycelld's Unix socket (file path)\n"
    "  --help          print this help and exit\n";

constexpr const char kStatusUsage[] =
    "Usage: keycell status --socket PATH\n"
    "\n"
    "Prints one line per key: name, type, SHA-256 fingerprint of the public\n"
    "key, and the counts of signatures, decryptions and failed operations\n"
    "since keycelld started.\n"
    "\n"
    "Options:\n"
    "  --socket PATH   path of keycelld's Unix socket (file path)\n"
    "  --help          print this help and exit\n";

constexpr const char kWrapUsage[] =
    "Usage: keycell wrap --socket PATH --key NAME --out FILE\n"
    "\n"
    "Opens the key NAME in keycelld and writes a reference file, a PEM file\n"
    "that names the socket and key and contains the public key but no\n"
    "secret. Servers use it in place of the private key file.\n"
    "\n"
    "Options:\n"
    "  --socket PATH   absolute path of keycelld's Unix socket (file path),\n"
    "                  stored in the reference file\n"
    "  --key NAME      name of the key in keycelld's configuration\n"
    "  --out FILE      file to write (mode 0644, replaced if it exists)\n"
    "  --help          print this help and exit\n";

int Fail(const std::string &message) {
  std::fprintf(stderr, "keycell: %s\n", message.c_str());
  return 1;
}

int UsageError(const std::string &command, const std::string &message) {
  std::fprintf(stderr, "keycell: %s\nRun 'keycell %s --help' for usage.\n",
               message.c_str(), command.c_str());
  return 2;
}

// Parses "--name VALUE" pairs. Returns false after printing an error.
bool ParseOptions(const std::string &command, int argc, char **argv,
                  const char *usage, std::map<std::string, std::string> &values,
                  int &exit_status) {
  for (int i = 2; i < argc; ++i) {
    std::string argument = argv[i];
    if (argument == "--help" || argument == "-h") {
      std::fputs(usage, stdout);
      exit_status = 0;
      return false;
    }
    if (values.count(argument) == 0) {
      exit_status = UsageError(command, "unknown option '" + argument + "'");
      return false;
    }
    if (i + 1 >= argc) {
      exit_status = UsageError(command, argument + " requires a value");
      return false;
    }
    values[argument] = argv[++i];
  }
  for (const auto &[name, value] : values) {
    if (value.empty()) {
      exit_status = UsageError(command, name + " is required");
      return false;
    }
  }
  return true;
}

int Ping(const std::string &socket_path) {
  Result<DaemonClient> client = DaemonClient::Connect(socket_path);
  if (!client.ok()) {
    return Fail(client.status().message());
  }
  Result<std::vector<uint8_t>> reply =
      client->Call(protocol::MessageType::kPing, std::span<const uint8_t>());
  if (!reply.ok()) {
    return Fail("ping failed: " + reply.status().message());
  }
  std::printf("keycelld is running on %s\n", socket_path.c_str());
  return 0;
}

// Describes a key's policy in a few words, such as "sign digests=SHA256
// paddings=pss decrypt". Lists that allow everything are left out.
std::string DescribePolicy(const protocol::KeyStatus &key) {
  const protocol::KeyPolicy &policy = key.policy;
  std::string text;
  if (policy.allow_sign) {
    text = "sign";
    bool eddsa = key.type == protocol::KeyType::kEd25519 ||
                 key.type == protocol::KeyType::kEd448;
    if (!eddsa && policy.digests != protocol::kAllDigests) {
      std::string names = protocol::DigestListNames(policy.digests);
      std::replace(names.begin(), names.end(), ' ', ',');
      text += " digests=" + names;
    }
    if (key.type == protocol::KeyType::kRsa &&
        policy.rsa_sign_paddings != protocol::kAllSignPaddings) {
      text += policy.rsa_sign_paddings == protocol::kSignPaddingPss
                  ? " paddings=pss"
                  : " paddings=pkcs1";
    }
  }
  if (policy.allow_decrypt) {
    text += text.empty() ? "decrypt" : " decrypt";
  }
  return text;
}

int PrintStatus(const std::string &socket_path) {
  Result<DaemonClient> client = DaemonClient::Connect(socket_path);
  if (!client.ok()) {
    return Fail(client.status().message());
  }
  Result<std::vector<uint8_t>> reply =
      client->Call(protocol::MessageType::kStatus, std::span<const uint8_t>());
  if (!reply.ok()) {
    return Fail("status failed: " + reply.status().message());
  }
  protocol::StatusReply status;
  if (!protocol::Decode(*reply, status)) {
    return Fail("keycelld sent an invalid status reply");
  }
  std::printf("%-24s %-8s %12s %12s %10s  %-64s  %s\n", "KEY", "TYPE",
              "SIGNATURES", "DECRYPTIONS", "FAILURES",
              "FINGERPRINT (SHA-256 of the SPKI)", "POLICY");
  for (const protocol::KeyStatus &key : status.keys) {
    std::string name(key.name);
    std::string fingerprint(key.fingerprint);
    std::printf("%-24s %-8s %12llu %12llu %10llu  %-64s  %s\n", name.c_str(),
                protocol::KeyTypeName(key.type),
                static_cast<unsigned long long>(key.signatures),
                static_cast<unsigned long long>(key.decryptions),
                static_cast<unsigned long long>(key.failures),
                fingerprint.c_str(), DescribePolicy(key).c_str());
  }
  return 0;
}

int Wrap(const std::string &socket_path, const std::string &key_name,
         const std::string &out_path) {
  if (socket_path.front() != '/') {
    return Fail(
        "--socket must be an absolute path for wrap, because the "
        "reference file stores it: '" +
        socket_path + "'");
  }
  Result<DaemonClient> client = DaemonClient::Connect(socket_path);
  if (!client.ok()) {
    return Fail(client.status().message());
  }
  protocol::OpenKeyRequest request{key_name};
  Result<std::vector<uint8_t>> reply =
      client->Call(protocol::MessageType::kOpenKey, request);
  if (!reply.ok()) {
    if (reply.status().code() == Code::kUnknownKey) {
      return Fail("key '" + key_name + "' not found in keycelld");
    }
    if (reply.status().code() == Code::kForbidden) {
      return Fail("not allowed to open key '" + key_name +
                  "': keycelld's allow_users and allow_groups for the key "
                  "do not include this user");
    }
    return Fail("opening key '" + key_name +
                "' failed: " + reply.status().message());
  }
  protocol::OpenKeyReply opened;
  if (!protocol::Decode(*reply, opened)) {
    return Fail("keycelld sent an invalid open-key reply");
  }
  protocol::KeyReference reference;
  reference.socket_path = socket_path;
  reference.key_name = key_name;
  reference.public_key.assign(opened.public_key.begin(),
                              opened.public_key.end());
  Result<std::string> pem = protocol::EncodeReference(reference);
  if (!pem.ok()) {
    return Fail("cannot encode the reference: " + pem.status().message());
  }
  int fd =
      open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Fail("cannot open " + out_path + ": " + std::strerror(errno));
  }
  bool written = fchmod(fd, 0644) == 0 && write(fd, pem->data(), pem->size()) ==
                                              static_cast<ssize_t>(pem->size());
  int error = errno;
  if (close(fd) != 0 || !written) {
    return Fail("cannot write " + out_path + ": " + std::strerror(error));
  }
  std::printf("wrote %s for key '%s'\n", out_path.c_str(), key_name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::puts("keycell " KEYCELL_VERSION);
    return 0;
  }
  int exit_status = 0;
  if (command == "ping" || command == "status") {
    std::map<std::string, std::string> values = {{"--socket", ""}};
    const char *usage = command == "ping" ? kPingUsage : kStatusUsage;
    if (!ParseOptions(command, argc, argv, usage, values, exit_status)) {
      return exit_status;
    }
    return command == "ping" ? Ping(values["--socket"])
                             : PrintStatus(values["--socket"]);
  }
  if (command == "wrap") {
    std::map<std::string, std::string> values = {
        {"--socket", ""}, {"--key", ""}, {"--out", ""}};
    if (!ParseOptions(command, argc, argv, kWrapUsage, values, exit_status)) {
      return exit_status;
    }
    return Wrap(values["--socket"], values["--key"], values["--out"]);
  }
  std::fprintf(stderr, "keycell: unknown command '%s'\n%s", command.c_str(),
               kUsage);
  return 2;
}
