// keycelld and the keycell command, run as programs on a socket in a
// temporary directory.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/landlock.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "cli/daemon_client.h"
#include "protocol/messages.h"
#include "protocol/reference.h"

namespace kc {
namespace {

using cli::DaemonClient;
using protocol::MessageType;

const std::string kDataDir = KEYCELL_TEST_DATA_DIR;

std::string ReadFile(const std::string &path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string KeyBlock(const std::string &name, const std::string &file,
                     const std::string &users) {
  return "key " + name + " {\n  file " + kDataDir + "/" + file +
         "\n  allow_users " + users + "\n}\n";
}

// Runs |command| with a shell and returns its exit status and output.
int RunCommand(const std::string &command, std::string &output) {
  FILE *pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return -1;
  }
  char buffer[4096];
  output.clear();
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, n);
  }
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A keycelld process with its configuration and socket in a temporary
// directory that every user may traverse.
class TestDaemon {
 public:
  TestDaemon() {
    char pattern[] = "/tmp/keycelld-test-XXXXXX";
    dir_ = mkdtemp(pattern);
    chmod(dir_.c_str(), 0755);
    socket_ = dir_ + "/keycelld.sock";
    config_ = dir_ + "/keycelld.conf";
  }
  ~TestDaemon() {
    Stop();
    std::string ignored;
    RunCommand("rm -rf " + dir_, ignored);
  }

  const std::string &socket() const { return socket_; }
  const std::string &config() const { return config_; }
  const std::string &dir() const { return dir_; }
  pid_t pid() const { return pid_; }
  void set_socket(const std::string &path) { socket_ = path; }

  void WriteConfig(const std::string &keys) {
    WriteFile(config_,
              "socket " + socket_ + "\nsocket_mode 0666\nworkers 2\n" + keys);
  }

  // Starts keycelld and waits until it replies to a ping. The socket accepts
  // connections before the workers run, and keycelld installs its seccomp
  // filter before a worker serves the first request, so a reply means the
  // daemon is fully set up.
  bool Start() {
    pid_ = fork();
    if (pid_ == 0) {
      int log = open((dir_ + "/keycelld.log").c_str(),
                     O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(log, STDERR_FILENO);
      execl(KEYCELLD_PATH, "keycelld", "--config", config_.c_str(),
            "--foreground", nullptr);
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      Result<DaemonClient> client = DaemonClient::Connect(socket_);
      if (client.ok() &&
          client->Call(MessageType::kPing, std::span<const uint8_t>()).ok()) {
        return true;
      }
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Sends SIGTERM and returns the exit status, or -1.
  int Stop() {
    if (pid_ <= 0) {
      return -1;
    }
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Sends SIGHUP and waits until the log shows the reload's outcome.
  void Reload() {
    size_t before = Count(Log());
    kill(pid_, SIGHUP);
    for (int i = 0; i < 500 && Count(Log()) == before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  std::string Log() const { return ReadFile(dir_ + "/keycelld.log"); }

 private:
  static size_t Count(const std::string &log) {
    size_t count = 0;
    for (size_t at = log.find("reload "); at != std::string::npos;
         at = log.find("reload ", at + 1)) {
      ++count;
    }
    return count;
  }

  std::string dir_;
  std::string socket_;
  std::string config_;
  pid_t pid_ = -1;
};

Result<protocol::OpenKeyReply> OpenKey(DaemonClient &client,
                                       const std::string &name,
                                       std::vector<uint8_t> &storage) {
  Result<std::vector<uint8_t>> reply =
      client.Call(MessageType::kOpenKey, protocol::OpenKeyRequest{name});
  if (!reply.ok()) {
    return reply.status();
  }
  storage = std::move(*reply);
  protocol::OpenKeyReply opened;
  if (!protocol::Decode(storage, opened)) {
    return Status(Code::kProtocol, "invalid open-key reply");
  }
  return opened;
}

// Signs |message| with key |id| and returns the signature.
Result<std::vector<uint8_t>> SignMessage(DaemonClient &client, uint32_t id,
                                         protocol::KeyType type,
                                         const std::vector<uint8_t> &message) {
  std::vector<uint8_t> digest(32);
  unsigned int length = 0;
  EVP_Digest(message.data(), message.size(), digest.data(), &length,
             EVP_sha256(), nullptr);
  protocol::SignRequest request;
  request.key_id = id;
  if (type == protocol::KeyType::kEd25519) {
    request.input = message;
  } else {
    request.digest = "SHA256";
    request.input = digest;
    request.padding = type == protocol::KeyType::kRsa ? protocol::kPaddingPkcs1
                                                      : protocol::kPaddingNone;
  }
  Result<std::vector<uint8_t>> reply = client.Call(MessageType::kSign, request);
  if (!reply.ok()) {
    return reply.status();
  }
  protocol::SignReply signature;
  if (!protocol::Decode(*reply, signature)) {
    return Status(Code::kProtocol, "invalid sign reply");
  }
  return std::vector<uint8_t>(signature.signature.begin(),
                              signature.signature.end());
}

bool Verify(std::span<const uint8_t> public_key, protocol::KeyType type,
            const std::vector<uint8_t> &message,
            const std::vector<uint8_t> &signature) {
  const uint8_t *der = public_key.data();
  EVP_PKEY *pkey =
      d2i_PUBKEY(nullptr, &der, static_cast<long>(public_key.size()));
  if (pkey == nullptr) {
    return false;
  }
  EVP_MD_CTX *context = EVP_MD_CTX_new();
  const EVP_MD *md =
      type == protocol::KeyType::kEd25519 ? nullptr : EVP_sha256();
  bool ok = EVP_DigestVerifyInit(context, nullptr, md, nullptr, pkey) == 1 &&
            EVP_DigestVerify(context, signature.data(), signature.size(),
                             message.data(), message.size()) == 1;
  EVP_MD_CTX_free(context);
  EVP_PKEY_free(pkey);
  return ok;
}

TEST(DaemonKeycelld, CheckAcceptsGoodConfig) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("rsa", "rsa2048-key.pem", "root") +
                     KeyBlock("ec", "p256-key.pem", "root"));
  std::string output;
  EXPECT_EQ(
      RunCommand(std::string(KEYCELLD_PATH) + " --check " + daemon.config(),
                 output),
      0)
      << output;
  EXPECT_NE(output.find("configuration valid, 2 keys"), std::string::npos)
      << output;
}

TEST(DaemonKeycelld, CheckReportsEveryFailingKey) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("first", "missing-1.pem", "root") +
                     KeyBlock("ok", "p256-key.pem", "root") +
                     KeyBlock("second", "missing-2.pem", "root"));
  std::string output;
  EXPECT_EQ(
      RunCommand(std::string(KEYCELLD_PATH) + " --check " + daemon.config(),
                 output),
      1);
  EXPECT_NE(output.find("key 'first' failed to load"), std::string::npos)
      << output;
  EXPECT_NE(output.find("key 'second' failed to load"), std::string::npos)
      << output;
  EXPECT_EQ(output.find("key 'ok' failed"), std::string::npos) << output;
}

TEST(DaemonKeycelld, CheckReportsSyntaxErrorLine) {
  TestDaemon daemon;
  WriteFile(daemon.config(), "socket /tmp/x.sock\nworkers none\n");
  std::string output;
  EXPECT_EQ(
      RunCommand(std::string(KEYCELLD_PATH) + " --check " + daemon.config(),
                 output),
      1);
  EXPECT_NE(output.find(daemon.config() + ":2: invalid workers"),
            std::string::npos)
      << output;
}

TEST(DaemonKeycelld, SignsWithRsaEcEd25519) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("rsa", "rsa2048-key.pem", "root") +
                     KeyBlock("ec", "p256-key.pem", "root") +
                     KeyBlock("ed", "ed25519-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok()) << client.status().message();
  std::vector<uint8_t> message = {'h', 'e', 'l', 'l', 'o'};
  for (const char *name : {"rsa", "ec", "ed"}) {
    std::vector<uint8_t> storage;
    Result<protocol::OpenKeyReply> opened = OpenKey(*client, name, storage);
    ASSERT_TRUE(opened.ok()) << name << ": " << opened.status().message();
    Result<std::vector<uint8_t>> signature =
        SignMessage(*client, opened->key_id, opened->type, message);
    ASSERT_TRUE(signature.ok()) << name << ": " << signature.status().message();
    EXPECT_TRUE(Verify(opened->public_key, opened->type, message, *signature))
        << name;
  }
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
}

TEST(DaemonKeycelld, DeniesOpenToOtherUid) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("root-only", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  struct passwd *nobody = getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  uid_t nobody_uid = nobody->pw_uid;
  gid_t nobody_gid = nobody->pw_gid;
  pid_t child = fork();
  if (child == 0) {
    // Exit codes: 0 denied with status 3, 1 setup failed, 2 other result.
    if (setgroups(0, nullptr) != 0 || setgid(nobody_gid) != 0 ||
        setuid(nobody_uid) != 0) {
      _exit(1);
    }
    Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
    if (!client.ok()) {
      _exit(1);
    }
    std::vector<uint8_t> storage;
    Result<protocol::OpenKeyReply> opened =
        OpenKey(*client, "root-only", storage);
    _exit(!opened.ok() && opened.status().code() == Code::kForbidden &&
                  opened.status().message() == "access denied"
              ? 0
              : 2);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::string log = daemon.Log();
  EXPECT_NE(
      log.find("denied open of key 'root-only' to pid " +
               std::to_string(child) + " uid " + std::to_string(nobody_uid)),
      std::string::npos)
      << log;
}

TEST(DaemonKeycelld, RequiresOpenedAndAllowedKeys) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("a", "p256-key.pem", "root") +
                     KeyBlock("b", "p384-key.pem", "root") +
                     KeyBlock("c", "ed25519-key.pem", "nobody"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok());
  std::vector<uint8_t> storage;
  Result<protocol::OpenKeyReply> a = OpenKey(*client, "a", storage);
  ASSERT_TRUE(a.ok()) << a.status().message();

  // Key b's id is found through another connection, which opens it.
  Result<DaemonClient> other = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(other.ok());
  std::vector<uint8_t> other_storage;
  Result<protocol::OpenKeyReply> b = OpenKey(*other, "b", other_storage);
  ASSERT_TRUE(b.ok()) << b.status().message();
  Result<std::vector<uint8_t>> signature =
      SignMessage(*client, b->key_id, protocol::KeyType::kEc, {1, 2, 3});
  ASSERT_FALSE(signature.ok());
  EXPECT_EQ(signature.status().code(), Code::kForbidden);

  Result<protocol::OpenKeyReply> c = OpenKey(*client, "c", storage);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kForbidden);

  Result<protocol::OpenKeyReply> missing = OpenKey(*client, "zzz", storage);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kUnknownKey);

  protocol::LoadKeyRequest load;
  load.path = "/etc/passwd";
  Result<std::vector<uint8_t>> loaded =
      client->Call(MessageType::kLoadKey, load);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), Code::kForbidden);
  protocol::DropPrivilegesRequest drop{"nobody"};
  Result<std::vector<uint8_t>> dropped =
      client->Call(MessageType::kDropPrivileges, drop);
  ASSERT_FALSE(dropped.ok());
  EXPECT_EQ(dropped.status().code(), Code::kForbidden);
}

// Returns the value of the field |name| in /proc/<pid>/status, or "".
std::string StatusField(pid_t pid, const std::string &name) {
  std::istringstream status(
      ReadFile("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with(name + ":")) {
      size_t value = line.find_first_not_of(" \t", name.size() + 1);
      return value == std::string::npos ? "" : line.substr(value);
    }
  }
  return "";
}

// Returns the VmFlags of the 4 MiB anonymous mapping of |pid| that is
// excluded from core dumps (keycelld's secure heap), or "".
std::string ArenaFlags(pid_t pid) {
  std::istringstream smaps(ReadFile("/proc/" + std::to_string(pid) + "/smaps"));
  std::string line;
  unsigned long long start = 0;
  unsigned long long end = 0;
  while (std::getline(smaps, line)) {
    unsigned long long line_start = 0;
    unsigned long long line_end = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx ", &line_start, &line_end) == 2 &&
        line.find(':') > line.find(' ')) {
      start = line_start;
      end = line_end;
    } else if (line.starts_with("VmFlags:") && end - start == (4u << 20) &&
               line.find(" dd") != std::string::npos) {
      return line.substr(8) + " ";
    }
  }
  return "";
}

TEST(DaemonKeycelld, ServesUnderSeccompWithLockedKeys) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  EXPECT_EQ(StatusField(daemon.pid(), "Seccomp"), "2");
  std::string flags = ArenaFlags(daemon.pid());
  ASSERT_NE(flags, "") << "no 4 MiB mapping with VmFlags dd";
  // Root's CAP_IPC_LOCK lifts RLIMIT_MEMLOCK, so the lock succeeds.
  EXPECT_NE(flags.find(" lo "), std::string::npos) << flags;
  EXPECT_NE(daemon.Log().find("private keys are in a locked 4 MiB secure heap"),
            std::string::npos)
      << daemon.Log();

  // A reload under the filter reads the file, resolves "root" through NSS
  // and loads the new key.
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root") +
                     KeyBlock("rsa", "rsa2048-key.pem", "root"));
  daemon.Reload();
  EXPECT_NE(daemon.Log().find("reload done: serving 2 keys"), std::string::npos)
      << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok()) << client.status().message();
  std::vector<uint8_t> storage;
  Result<protocol::OpenKeyReply> opened = OpenKey(*client, "rsa", storage);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  std::vector<uint8_t> message = {'x'};
  Result<std::vector<uint8_t>> signature =
      SignMessage(*client, opened->key_id, opened->type, message);
  ASSERT_TRUE(signature.ok()) << signature.status().message();

  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
  struct stat info;
  EXPECT_NE(lstat(daemon.socket().c_str(), &info), 0)
      << "the socket file remains after SIGTERM";
}

// Returns the pid of the process that accepts on the Unix socket |path|.
pid_t PeerPid(const std::string &path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
          0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    credentials.pid = -1;
  }
  close(fd);
  return credentials.pid;
}

TEST(DaemonKeycelld, DetachedDaemonKeepsLockedKeys) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  std::string output;
  // Without --foreground keycelld exits 0 once the detached daemon serves.
  ASSERT_EQ(RunCommand(std::string(KEYCELLD_PATH) + " --config " +
                           daemon.config() + " 2>&1",
                       output),
            0)
      << output;
  pid_t pid = PeerPid(daemon.socket());
  ASSERT_GT(pid, 0);
  EXPECT_EQ(StatusField(pid, "Seccomp"), "2");
  // The daemon is the process that created the secure heap, so the lock
  // holds; fork would have dropped it.
  EXPECT_NE(ArenaFlags(pid).find(" lo "), std::string::npos) << ArenaFlags(pid);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  for (int i = 0; i < 500 && kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(kill(pid, 0), 0) << "keycelld did not stop on SIGTERM";
}

// A start that fails in the detached child makes the parent exit 1.
TEST(DaemonKeycelld, DetachedStartReportsFailure) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("broken", "missing.pem", "root"));
  std::string output;
  EXPECT_EQ(RunCommand(std::string(KEYCELLD_PATH) + " --config " +
                           daemon.config() + " 2>&1",
                       output),
            1)
      << output;
  EXPECT_NE(output.find("missing.pem"), std::string::npos) << output;
}

// Signs a digest of |size| bytes with key |id| and returns the status.
Status SignDigest(DaemonClient &client, uint32_t id, const char *digest,
                  uint8_t padding, size_t size) {
  std::vector<uint8_t> input(size, 0x5a);
  protocol::SignRequest request;
  request.key_id = id;
  request.digest = digest;
  request.padding = padding;
  request.salt_length = padding == protocol::kPaddingPss ? -1 : 0;
  request.input = input;
  Result<std::vector<uint8_t>> reply = client.Call(MessageType::kSign, request);
  return reply.ok() ? Status::Ok() : reply.status();
}

TEST(DaemonKeycelld, EnforcesKeyPolicy) {
  TestDaemon daemon;
  daemon.WriteConfig("key tls13 {\n  file " + kDataDir +
                     "/rsa2048-key.pem\n  allow_users root\n"
                     "  allow_digests SHA256\n  allow_rsa_paddings pss\n}\n"
                     "key decrypt-only {\n  file " +
                     kDataDir +
                     "/rsa2048-key.pem\n  allow_users root\n"
                     "  allow_signing no\n  allow_rsa_decryption yes\n}\n");
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok()) << client.status().message();
  std::vector<uint8_t> storage;
  Result<protocol::OpenKeyReply> tls13 = OpenKey(*client, "tls13", storage);
  ASSERT_TRUE(tls13.ok()) << tls13.status().message();
  uint32_t id = tls13->key_id;

  Status pss = SignDigest(*client, id, "SHA256", protocol::kPaddingPss, 32);
  EXPECT_TRUE(pss.ok()) << pss.message();
  Status pkcs1 = SignDigest(*client, id, "SHA256", protocol::kPaddingPkcs1, 32);
  EXPECT_EQ(pkcs1.code(), Code::kForbidden);
  EXPECT_EQ(pkcs1.message(),
            "key 'tls13' does not allow signing with PKCS#1 v1.5 padding");
  Status sha1 = SignDigest(*client, id, "SHA1", protocol::kPaddingPss, 20);
  EXPECT_EQ(sha1.code(), Code::kForbidden);
  EXPECT_EQ(sha1.message(),
            "key 'tls13' does not allow signing with digest SHA1");

  Result<protocol::OpenKeyReply> decrypt_only =
      OpenKey(*client, "decrypt-only", storage);
  ASSERT_TRUE(decrypt_only.ok()) << decrypt_only.status().message();
  Status unsigned_status = SignDigest(*client, decrypt_only->key_id, "SHA256",
                                      protocol::kPaddingPss, 32);
  EXPECT_EQ(unsigned_status.code(), Code::kForbidden);
  EXPECT_EQ(unsigned_status.message(),
            "key 'decrypt-only' does not allow signing");

  // Each rejection is logged with the peer and the key.
  std::string peer = "for pid " + std::to_string(getpid()) + " uid " +
                     std::to_string(getuid());
  std::string log = daemon.Log();
  EXPECT_NE(log.find("rejected " + peer), std::string::npos) << log;
  EXPECT_NE(log.find("key 'tls13' does not allow signing with digest SHA1"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("key 'decrypt-only' does not allow signing"),
            std::string::npos)
      << log;

  // keycell status shows each key's policy.
  Result<std::vector<uint8_t>> reply =
      client->Call(MessageType::kStatus, std::span<const uint8_t>());
  ASSERT_TRUE(reply.ok()) << reply.status().message();
  protocol::StatusReply status;
  ASSERT_TRUE(protocol::Decode(*reply, status));
  ASSERT_EQ(status.keys.size(), 2u);
  EXPECT_FALSE(status.keys[0].policy.allow_sign);
  EXPECT_TRUE(status.keys[0].policy.allow_decrypt);
  EXPECT_EQ(status.keys[1].policy.rsa_sign_paddings, protocol::kSignPaddingPss);
  std::string output;
  EXPECT_EQ(RunCommand(std::string(KEYCELL_CLI_PATH) + " status --socket " +
                           daemon.socket(),
                       output),
            0);
  EXPECT_NE(output.find("  decrypt\n"), std::string::npos) << output;
  EXPECT_NE(output.find("  sign digests=SHA256 paddings=pss\n"),
            std::string::npos)
      << output;
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
}

TEST(DaemonKeycelld, CheckReportsPolicyErrorLines) {
  TestDaemon daemon;
  struct Case {
    std::string block;
    std::string expected;
  };
  const std::string file = "  file " + kDataDir + "/rsa2048-key.pem\n";
  // The configuration's first three lines are socket, socket_mode and
  // workers, so a key block starts on line 4.
  std::vector<Case> cases = {
      {"key a {\n" + file +
           "  allow_users root\n  allow_digests SHA256 MD6\n}\n",
       ":7: invalid allow_digests: unknown digest 'MD6'"},
      {"key a {\n" + file +
           "  allow_users root\n  allow_rsa_paddings oaep\n}\n",
       ":7: invalid allow_rsa_paddings 'oaep'"},
      {"key a {\n" + file + "  allow_signing off\n  allow_users root\n}\n",
       ":6: invalid allow_signing 'off': expected yes or no"},
      {"key a {\n" + file + "  allow_users root\n  allow_signing no\n}\n",
       ":8: the block of key 'a' allows neither signing nor RSA decryption"},
      // An EC key cannot decrypt, so with signing off it serves nothing.
      // That shows only once the key file is read.
      {"key ec {\n  file " + kDataDir +
           "/p256-key.pem\n  allow_users root\n  allow_signing no\n"
           "  allow_rsa_decryption yes\n}\n",
       ":4: key 'ec': the key's policy allows no operation: signing is "
       "off, and RSA decryption does not apply to an EC key"},
  };
  for (const Case &test : cases) {
    daemon.WriteConfig(test.block);
    std::string output;
    EXPECT_EQ(
        RunCommand(std::string(KEYCELLD_PATH) + " --check " + daemon.config(),
                   output),
        1)
        << test.block;
    EXPECT_NE(output.find(daemon.config() + test.expected), std::string::npos)
        << test.block << output;
  }
}

TEST(DaemonKeycelld, ReloadAddsAndRemovesKeys) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("keep", "p256-key.pem", "root") +
                     KeyBlock("drop", "p384-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok());
  std::vector<uint8_t> keep_storage;
  Result<protocol::OpenKeyReply> keep = OpenKey(*client, "keep", keep_storage);
  ASSERT_TRUE(keep.ok());
  std::vector<uint8_t> drop_storage;
  Result<protocol::OpenKeyReply> drop = OpenKey(*client, "drop", drop_storage);
  ASSERT_TRUE(drop.ok());

  daemon.WriteConfig(KeyBlock("keep", "p256-key.pem", "root") +
                     KeyBlock("added", "ed25519-key.pem", "root"));
  daemon.Reload();
  ASSERT_NE(daemon.Log().find("reload done: serving 2 keys"), std::string::npos)
      << daemon.Log();

  std::vector<uint8_t> message = {'x'};
  Result<std::vector<uint8_t>> kept =
      SignMessage(*client, keep->key_id, keep->type, message);
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  EXPECT_TRUE(Verify(keep->public_key, keep->type, message, *kept));
  Result<std::vector<uint8_t>> dropped =
      SignMessage(*client, drop->key_id, drop->type, message);
  ASSERT_FALSE(dropped.ok());
  EXPECT_EQ(dropped.status().code(), Code::kUnknownKey);
  std::vector<uint8_t> added_storage;
  Result<protocol::OpenKeyReply> added =
      OpenKey(*client, "added", added_storage);
  ASSERT_TRUE(added.ok()) << added.status().message();

  // A reload with a missing key file keeps the current keys.
  daemon.WriteConfig(KeyBlock("keep", "p256-key.pem", "root") +
                     KeyBlock("broken", "missing.pem", "root"));
  daemon.Reload();
  EXPECT_NE(daemon.Log().find("reload failed, keeping the current keys"),
            std::string::npos)
      << daemon.Log();
  Result<protocol::OpenKeyReply> still_added =
      OpenKey(*client, "added", added_storage);
  EXPECT_TRUE(still_added.ok()) << still_added.status().message();
  Result<protocol::OpenKeyReply> broken =
      OpenKey(*client, "broken", added_storage);
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), Code::kUnknownKey);
}

TEST(DaemonKeycelld, SigtermRemovesSocket) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  struct stat info;
  ASSERT_EQ(stat(daemon.socket().c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0666u);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
  EXPECT_NE(stat(daemon.socket().c_str(), &info), 0);
  EXPECT_NE(daemon.Log().find("stopping on TERM"), std::string::npos);
}

// keycelld's Landlock domain allows removing files only in the directory
// that held its socket when it started. The socket's path goes through a
// symbolic link, which the test points at another directory holding a file
// of the socket's name before SIGTERM. keycelld runs as the owner of that
// directory and its seccomp filter allows unlink, so without Landlock it
// would remove that file. With Landlock the unlink fails and keycelld logs
// it.
TEST(DaemonKeycelld, LandlockLimitsRemovalToTheSocketDirectory) {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0,
                     LANDLOCK_CREATE_RULESET_VERSION);
  TestDaemon daemon;
  std::string first = daemon.dir() + "/first";
  std::string second = daemon.dir() + "/second";
  std::string link = daemon.dir() + "/link";
  ASSERT_EQ(mkdir(first.c_str(), 0755), 0);
  ASSERT_EQ(mkdir(second.c_str(), 0755), 0);
  ASSERT_EQ(symlink("first", link.c_str()), 0);
  daemon.set_socket(link + "/keycelld.sock");
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  if (abi < 0) {
    EXPECT_NE(daemon.Log().find("the kernel offers no Landlock"),
              std::string::npos)
        << daemon.Log();
    GTEST_SKIP() << "the kernel offers no Landlock";
  }
  EXPECT_NE(
      daemon.Log().find("confined by Landlock ABI " + std::to_string(abi) +
                        ": no file changes except removing files in " + link),
      std::string::npos)
      << daemon.Log();

  WriteFile(second + "/keycelld.sock", "not a socket");
  std::string new_link = daemon.dir() + "/new-link";
  ASSERT_EQ(symlink("second", new_link.c_str()), 0);
  ASSERT_EQ(rename(new_link.c_str(), link.c_str()), 0);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
  struct stat info;
  EXPECT_EQ(stat((second + "/keycelld.sock").c_str(), &info), 0)
      << "keycelld removed a file outside its socket's directory";
  EXPECT_NE(daemon.Log().find("cannot remove the socket " + link +
                              "/keycelld.sock: Permission denied"),
            std::string::npos)
      << daemon.Log();
}

// Returns the lowest descriptor number that process |pid| has not open,
// or -1.
int LowestFreeDescriptor(pid_t pid) {
  DIR *dir = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (dir == nullptr) {
    return -1;
  }
  std::set<int> open;
  while (dirent *entry = readdir(dir)) {
    if (entry->d_name[0] != '.') {
      open.insert(std::atoi(entry->d_name));
    }
  }
  closedir(dir);
  int lowest = 0;
  while (open.count(lowest) != 0) {
    ++lowest;
  }
  return lowest;
}

// With no descriptor left, keycelld closes each new connection at once.
// Left in the backlog, such a connection would keep the listener readable
// and wake a worker again and again while its peer waited unanswered. Once
// descriptors are free again, keycelld serves new clients.
TEST(DaemonKeycelld, ClosesNewConnectionsWhenOutOfDescriptors) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  rlimit original{};
  ASSERT_EQ(prlimit(daemon.pid(), RLIMIT_NOFILE, nullptr, &original), 0);
  // A soft limit at the lowest free descriptor number leaves no number for
  // a new descriptor. The probe connection of Start holds two descriptors
  // until keycelld reads its end-of-file, so wait until the number stays
  // the same for 200 ms.
  int lowest = LowestFreeDescriptor(daemon.pid());
  for (int same = 0, round = 0; same < 4 && round < 100; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    int now = LowestFreeDescriptor(daemon.pid());
    same = now == lowest ? same + 1 : 0;
    lowest = now;
  }
  ASSERT_GT(lowest, 2);
  rlimit exhausted = {static_cast<rlim_t>(lowest), original.rlim_max};
  ASSERT_EQ(prlimit(daemon.pid(), RLIMIT_NOFILE, &exhausted, nullptr), 0)
      << std::strerror(errno);

  std::vector<pollfd> connections;
  for (int i = 0; i < 16; ++i) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s",
                  daemon.socket().c_str());
    ASSERT_EQ(
        connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)), 0)
        << std::strerror(errno);
    connections.push_back({fd, POLLIN, 0});
  }
  // Each must read end-of-file. The deadline only guards against a hang.
  size_t closed = 0;
  for (int round = 0; round < 100 && closed < connections.size() - 1; ++round) {
    if (poll(connections.data(), connections.size(), 100) <= 0) {
      continue;
    }
    for (pollfd &connection : connections) {
      char byte;
      if (connection.revents != 0 && connection.fd >= 0 &&
          recv(connection.fd, &byte, 1, MSG_DONTWAIT) == 0) {
        ++closed;
        close(connection.fd);
        connection.fd = -1;
      }
    }
  }
  EXPECT_GE(closed, connections.size() - 1) << daemon.Log();
  EXPECT_NE(daemon.Log().find("out of file descriptors"), std::string::npos)
      << daemon.Log();
  for (pollfd &connection : connections) {
    if (connection.fd >= 0) {
      close(connection.fd);
    }
  }

  ASSERT_EQ(prlimit(daemon.pid(), RLIMIT_NOFILE, &original, nullptr), 0)
      << std::strerror(errno);
  // A connection made while keycelld still runs out of descriptors is
  // closed, so a client may need a few attempts.
  bool signed_again = false;
  std::string last_error;
  for (int attempt = 0; attempt < 100 && !signed_again; ++attempt) {
    Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
    std::vector<uint8_t> storage;
    if (client.ok()) {
      Result<protocol::OpenKeyReply> opened = OpenKey(*client, "ec", storage);
      signed_again =
          opened.ok() &&
          SignMessage(*client, opened->key_id, opened->type, {1}).ok();
      if (!opened.ok()) {
        last_error = opened.status().message();
      }
    }
    if (!signed_again) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  EXPECT_TRUE(signed_again) << last_error << "\n" << daemon.Log();
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
}

TEST(DaemonKeycelld, RefusesSecondDaemonAndReplacesStaleSocket) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  std::string output;
  EXPECT_EQ(RunCommand(std::string(KEYCELLD_PATH) + " --foreground --config " +
                           daemon.config(),
                       output),
            1);
  EXPECT_NE(output.find("another keycelld is running on"), std::string::npos)
      << output;
  // SIGKILL leaves the socket file behind, and the next start replaces it.
  kill(daemon.pid(), SIGKILL);
  waitpid(daemon.pid(), nullptr, 0);
  struct stat info;
  ASSERT_EQ(stat(daemon.socket().c_str(), &info), 0);
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
}

TEST(DaemonKeycelld, StatusCountsOperations) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root") +
                     KeyBlock("rsa", "rsa2048-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok());
  std::vector<uint8_t> storage;
  Result<protocol::OpenKeyReply> ec = OpenKey(*client, "ec", storage);
  ASSERT_TRUE(ec.ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(SignMessage(*client, ec->key_id, ec->type, {1}).ok());
  }
  protocol::DecryptRequest decrypt;
  decrypt.key_id = ec->key_id;
  std::vector<uint8_t> ciphertext(32, 1);
  decrypt.ciphertext = ciphertext;
  EXPECT_FALSE(client->Call(MessageType::kDecrypt, decrypt).ok());

  Result<std::vector<uint8_t>> reply =
      client->Call(MessageType::kStatus, std::span<const uint8_t>());
  ASSERT_TRUE(reply.ok()) << reply.status().message();
  protocol::StatusReply status;
  ASSERT_TRUE(protocol::Decode(*reply, status));
  ASSERT_EQ(status.keys.size(), 2u);
  EXPECT_EQ(status.keys[0].name, "ec");
  EXPECT_EQ(status.keys[0].type, protocol::KeyType::kEc);
  EXPECT_EQ(status.keys[0].signatures, 3u);
  EXPECT_EQ(status.keys[0].decryptions, 0u);
  EXPECT_EQ(status.keys[0].failures, 1u);
  EXPECT_EQ(status.keys[0].fingerprint.size(), 64u);
  EXPECT_EQ(status.keys[1].name, "rsa");
  EXPECT_EQ(status.keys[1].signatures, 0u);

  std::string output;
  EXPECT_EQ(RunCommand(std::string(KEYCELL_CLI_PATH) + " status --socket " +
                           daemon.socket(),
                       output),
            0);
  EXPECT_NE(output.find(std::string(status.keys[0].fingerprint)),
            std::string::npos)
      << output;
}

// A malformed request closes its connection, and the log line names the
// peer that sent it.
TEST(DaemonKeycelld, LogsPeerOfMalformedRequest) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("ec", "p256-key.pem", "root"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  Result<DaemonClient> client = DaemonClient::Connect(daemon.socket());
  ASSERT_TRUE(client.ok()) << client.status().message();
  const uint8_t payload[] = {1};
  Result<std::vector<uint8_t>> reply =
      client->Call(MessageType::kPing, std::span<const uint8_t>(payload));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), Code::kBadRequest);
  std::string expected =
      "closing a connection of pid " + std::to_string(getpid()) + " uid " +
      std::to_string(getuid()) + " gid " + std::to_string(getgid()) +
      " after a malformed request: a ping carries a payload";
  EXPECT_NE(daemon.Log().find(expected), std::string::npos) << expected << "\n"
                                                            << daemon.Log();
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Log();
}

TEST(DaemonKeycelld, WrapWritesDecodableReference) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("web", "rsa2048-key.pem", "root") +
                     KeyBlock("other", "p256-key.pem", "nobody"));
  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  std::string out = daemon.dir() + "/web.ref";
  std::string output;
  ASSERT_EQ(RunCommand(std::string(KEYCELL_CLI_PATH) + " wrap --socket " +
                           daemon.socket() + " --key web --out " + out,
                       output),
            0)
      << output;
  struct stat info;
  ASSERT_EQ(stat(out.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0644u);
  Result<protocol::KeyReference> reference =
      protocol::DecodeReference(ReadFile(out));
  ASSERT_TRUE(reference.ok()) << reference.status().message();
  EXPECT_EQ(reference->socket_path, daemon.socket());
  EXPECT_EQ(reference->key_name, "web");
  const uint8_t *der = reference->public_key.data();
  EVP_PKEY *pkey = d2i_PUBKEY(nullptr, &der,
                              static_cast<long>(reference->public_key.size()));
  ASSERT_NE(pkey, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pkey), EVP_PKEY_RSA);
  EVP_PKEY_free(pkey);
}

TEST(DaemonKeycelld, CliErrorMessages) {
  TestDaemon daemon;
  daemon.WriteConfig(KeyBlock("web", "p256-key.pem", "root") +
                     KeyBlock("other", "p256-key.pem", "nobody"));
  std::string cli = KEYCELL_CLI_PATH;
  std::string output;
  EXPECT_EQ(RunCommand(cli + " ping --socket " + daemon.socket(), output), 1);
  EXPECT_NE(output.find("keycelld is not running on"), std::string::npos)
      << output;

  ASSERT_TRUE(daemon.Start()) << daemon.Log();
  EXPECT_EQ(RunCommand(cli + " ping --socket " + daemon.socket(), output), 0)
      << output;
  EXPECT_EQ(RunCommand(cli + " wrap --socket " + daemon.socket() +
                           " --key nope --out " + daemon.dir() + "/x",
                       output),
            1);
  EXPECT_NE(output.find("key 'nope' not found"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(cli + " wrap --socket " + daemon.socket() +
                           " --key other --out " + daemon.dir() + "/x",
                       output),
            1);
  EXPECT_NE(output.find("not allowed to open key 'other'"), std::string::npos)
      << output;
  EXPECT_EQ(RunCommand(cli + " wrap --socket " + daemon.socket(), output), 2);
  EXPECT_NE(output.find("--key is required"), std::string::npos) << output;
  EXPECT_EQ(RunCommand(cli + " wrap --help", output), 0);
  for (const char *option : {"--socket", "--key", "--out", "--help"}) {
    EXPECT_NE(output.find(option), std::string::npos) << option;
  }

  // A socket whose mode lets no other user connect.
  chmod(daemon.socket().c_str(), 0600);
  pid_t child = fork();
  if (child == 0) {
    struct passwd *nobody = getpwnam("nobody");
    if (nobody == nullptr || setgroups(0, nullptr) != 0 ||
        setgid(nobody->pw_gid) != 0 || setuid(nobody->pw_uid) != 0) {
      _exit(3);
    }
    execl("/bin/sh", "sh", "-c",
          (cli + " ping --socket " + daemon.socket() + " 2>&1 | grep -q " +
           "'permission denied on the socket'")
              .c_str(),
          nullptr);
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace kc
