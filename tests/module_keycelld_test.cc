// keycell.so with the real keycelld: reference files written by
// `keycell wrap`, signatures through PEM_read_bio_PrivateKey and
// `openssl s_server`, keycelld restarts and allow-lists.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "async_util.h"
#include "module_test_util.h"
#include "test_util.h"

namespace keycell_test {
namespace {

bool SocketAccepts(const std::string &path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  bool ok =
      connect(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0;
  ::close(fd);
  return ok;
}

class ModuleKeycelldTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(dir_.path(), "");
    // keycelld may run as another user, which must reach the socket.
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
    ASSERT_TRUE(WriteModuleConfig(openssl_config_));
    WriteConfig("root");
  }

  void TearDown() override { Stop(); }

  // Writes a keycelld configuration that serves rsa2048, p256 and ed25519
  // to |users|, and rsa2048 also for RSA decryption.
  void WriteConfig(const std::string &users) {
    std::string text = "socket " + socket_ + "\nsocket_mode 0666\nworkers 2\n";
    for (const char *name : {"rsa2048", "p256", "ed25519"}) {
      text += std::string("key ") + name + " {\n  file " + KeyPath(name) +
              "\n  allow_users " + users + "\n";
      if (std::string(name) == "rsa2048") {
        text += "  allow_rsa_decryption yes\n";
      }
      text += "}\n";
    }
    std::string error;
    ASSERT_TRUE(WriteFile(config_, text.data(), text.size(), &error)) << error;
  }

  // Starts keycelld and waits until its socket accepts connections.
  bool Start() {
    pid_ = fork();
    if (pid_ == 0) {
      int log = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(log, STDERR_FILENO);
      execl(KEYCELLD_PATH, "keycelld", "--config", config_.c_str(),
            "--foreground", nullptr);
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      if (SocketAccepts(socket_)) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // Writes a reference file for |name| with `keycell wrap`.
  std::string Wrap(const std::string &name) {
    std::string path = dir_.File(name + "-ref.pem");
    std::string output;
    std::string status = RunProgram({KEYCELL_CLI_PATH, "wrap", "--socket",
                                     socket_, "--key", name, "--out", path},
                                    &output);
    EXPECT_EQ(status, "exit status 0") << output;
    return path;
  }

  std::string Log() const {
    std::vector<unsigned char> text;
    std::string error;
    ReadFile(log_, &text, &error);
    return std::string(text.begin(), text.end());
  }

  TempDir dir_;
  std::string socket_ = dir_.File("keycelld.sock");
  std::string config_ = dir_.File("keycelld.conf");
  std::string log_ = dir_.File("keycelld.log");
  std::string openssl_config_ = dir_.File("openssl.cnf");
  pid_t pid_ = -1;
};

EvpPkeyPtr ReadReference(const std::string &path, std::string *error) {
  BIO *bio = BIO_new_file(path.c_str(), "r");
  EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr) {
    *error = DrainOpenSslErrors();
  }
  return EvpPkeyPtr(key);
}

bool LoadModule() {
  return OSSL_PROVIDER_load(nullptr, "default") != nullptr &&
         OSSL_PROVIDER_load(nullptr, ModulePath()) != nullptr;
}

TEST_F(ModuleKeycelldTest, WrappedReferencesSign) {
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  for (const char *name : {"rsa2048", "p256", "ed25519"}) {
    SCOPED_TRACE(name);
    std::string error;
    EvpPkeyPtr key = ReadReference(Wrap(name), &error);
    ASSERT_NE(key, nullptr) << error;
    EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath(name), &error);
    ASSERT_NE(public_key, nullptr) << error;
    EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(),
                              DefaultDigest(key.get()), &error))
        << error << Log();
  }
}

TEST_F(ModuleKeycelldTest, RestartFailsThenRecovers) {
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  std::string error;
  EvpPkeyPtr key = ReadReference(Wrap("p256"), &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  ASSERT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;

  Stop();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_NE(error.find("keycelld is not running at " + socket_),
            std::string::npos)
      << error;

  ASSERT_TRUE(Start()) << Log();
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;
}

TEST_F(ModuleKeycelldTest, AllowListDeniesOtherUsers) {
  ASSERT_TRUE(Start()) << Log();
  std::string reference = Wrap("p256");
  Stop();
  WriteConfig("nobody");
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  std::string error;
  EvpPkeyPtr key = ReadReference(reference, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_FALSE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error));
  EXPECT_NE(error.find("access denied"), std::string::npos) << error;
}

TEST_F(ModuleKeycelldTest, SServerHandshakes) {
  ASSERT_TRUE(Start()) << Log();
  for (const char *name : {"rsa2048", "p256", "ed25519"}) {
    std::string reference = Wrap(name);
    for (const char *version : {"-tls1_2", "-tls1_3"}) {
      ExpectHandshake(openssl_config_, name, reference, version);
    }
  }
}

TEST_F(ModuleKeycelldTest, SServerRsaKeyExchange) {
  ASSERT_TRUE(Start()) << Log();
  // TLS 1.2 RSA key exchange: keycelld decrypts the premaster secret.
  ExpectHandshake(openssl_config_, "rsa2048", Wrap("rsa2048"), "-tls1_2",
                  {"-cipher", "AES128-GCM-SHA256"});
}

// Creates a TLS 1.3 server context with SSL_MODE_ASYNC for the reference
// key |key| of test key |name|, and a client context that trusts it.
void AsyncContexts(const char *name, EVP_PKEY *key, SslCtxPtr *server,
                   SslCtxPtr *client) {
  std::string error;
  *server = NewServerContext(PinnedVersion(TLS1_3_VERSION), CertPath(name), key,
                             &error);
  ASSERT_NE(*server, nullptr) << error;
  SSL_CTX_set_mode(server->get(), SSL_MODE_ASYNC);
  *client =
      NewClientContext(PinnedVersion(TLS1_3_VERSION), {CertPath(name)}, &error);
  ASSERT_NE(*client, nullptr) << error;
}

// With SSL_MODE_ASYNC, a daemon key's operation pauses its ASYNC_JOB: while
// keycelld is stopped, every handshake on this one thread reaches its
// signature and waits, and all complete once keycelld runs again.
TEST_F(ModuleKeycelldTest, AsyncJobsPauseForKeycelld) {
  ScopedAlarm watchdog(100, "AsyncJobsPauseForKeycelld did not finish");
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  for (const char *name : {"rsa2048", "p256", "ed25519"}) {
    SCOPED_TRACE(name);
    std::string error;
    EvpPkeyPtr key = ReadReference(Wrap(name), &error);
    ASSERT_NE(key, nullptr) << error;
    SslCtxPtr server;
    SslCtxPtr client;
    ASSERT_NO_FATAL_FAILURE(AsyncContexts(name, key.get(), &server, &client));
    std::vector<Pair> pairs(24);
    for (Pair &pair : pairs) {
      ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
    }
    ASSERT_TRUE(StopProcess(pid_));
    size_t paused = RunUntilPaused(pairs);
    ASSERT_EQ(kill(pid_, SIGCONT), 0);
    EXPECT_EQ(paused, pairs.size());
    DriveStats stats = DriveAll(pairs);
    EXPECT_EQ(stats.completed, 24)
        << (stats.errors.empty() ? "" : stats.errors.front()) << Log();
    for (const Pair &pair : pairs) {
      EXPECT_EQ(SSL_get_verify_result(pair.client.get()), X509_V_OK);
    }
  }
}

// Killing keycelld while jobs wait for it fails each of their handshakes,
// and none of them hangs.
TEST_F(ModuleKeycelldTest, AsyncJobsFailWhenKeycelldDies) {
  ScopedAlarm watchdog(100, "AsyncJobsFailWhenKeycelldDies did not finish");
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  std::string error;
  EvpPkeyPtr key = ReadReference(Wrap("p256"), &error);
  ASSERT_NE(key, nullptr) << error;
  SslCtxPtr server;
  SslCtxPtr client;
  ASSERT_NO_FATAL_FAILURE(AsyncContexts("p256", key.get(), &server, &client));
  std::vector<Pair> pairs(16);
  for (Pair &pair : pairs) {
    ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
  }
  ASSERT_TRUE(StopProcess(pid_));
  EXPECT_EQ(RunUntilPaused(pairs), pairs.size());
  ASSERT_EQ(kill(pid_, SIGKILL), 0);
  ASSERT_EQ(waitpid(pid_, nullptr, 0), pid_);
  pid_ = -1;

  DriveStats stats = DriveAll(pairs);
  EXPECT_EQ(stats.failed, 16);
  for (const std::string &message : stats.errors) {
    EXPECT_TRUE(message.find("closed the connection") != std::string::npos ||
                message.find("keycelld is not running") != std::string::npos)
        << message;
  }
}

// A key that keycelld refuses to open fails the handshakes that wait for
// it with keycelld's reason.
TEST_F(ModuleKeycelldTest, AsyncJobsReportAccessDenied) {
  ScopedAlarm watchdog(100, "AsyncJobsReportAccessDenied did not finish");
  ASSERT_TRUE(Start()) << Log();
  std::string reference = Wrap("p256");
  Stop();
  WriteConfig("nobody");
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  std::string error;
  EvpPkeyPtr key = ReadReference(reference, &error);
  ASSERT_NE(key, nullptr) << error;
  SslCtxPtr server;
  SslCtxPtr client;
  ASSERT_NO_FATAL_FAILURE(AsyncContexts("p256", key.get(), &server, &client));
  std::vector<Pair> pairs(4);
  for (Pair &pair : pairs) {
    ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
  }
  DriveStats stats = DriveAll(pairs);
  EXPECT_EQ(stats.failed, 4);
  for (const std::string &message : stats.errors) {
    EXPECT_NE(message.find("access denied"), std::string::npos) << message;
  }
}

// Threads of one process sign through keycell.so while keycelld is stopped
// with SIGTERM and started again. Each operation returns a signature that
// verifies or an error, none hangs, and after the restart the same keys
// sign again without being read anew.
TEST_F(ModuleKeycelldTest, RestartUnderLoad) {
  constexpr int kThreads = 4;
  ScopedAlarm alarm(100, "ModuleKeycelldTest.RestartUnderLoad hung");
  ASSERT_TRUE(Start()) << Log();
  ASSERT_TRUE(LoadModule()) << DrainOpenSslErrors();
  std::vector<EvpPkeyPtr> keys;
  std::vector<EvpPkeyPtr> public_keys;
  for (const char *name : {"rsa2048", "p256", "ed25519"}) {
    std::string error;
    keys.push_back(ReadReference(Wrap(name), &error));
    ASSERT_NE(keys.back(), nullptr) << error;
    public_keys.push_back(ReadCertificatePublicKey(CertPath(name), &error));
    ASSERT_NE(public_keys.back(), nullptr) << error;
  }

  // 0 while the first keycelld runs, 1 after it has exited, 2 from just
  // before the second one starts.
  std::atomic<int> phase{0};
  std::atomic<bool> done{false};
  std::atomic<int> bad_signatures{0};
  std::atomic<int> verified[3] = {0, 0, 0};
  std::atomic<int> failed[3] = {0, 0, 0};
  // Operations that started and ended while no keycelld ran.
  std::atomic<int> verified_while_stopped{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; !done.load(); i++) {
        size_t index = static_cast<size_t>(t + i) % keys.size();
        int phase_before = phase.load();
        SignOutcome outcome =
            SignOnce(keys[index].get(), public_keys[index].get());
        // An operation that overlaps a change of phase counts for the
        // earlier phase.
        if (outcome == SignOutcome::kVerified) {
          verified[phase_before]++;
          if (phase_before == 1 && phase.load() == 1) {
            verified_while_stopped++;
          }
        } else if (outcome == SignOutcome::kFailed) {
          failed[phase_before]++;
        } else {
          bad_signatures++;
        }
      }
    });
  }
  // Waits until |count| reaches |target|, at most 30 seconds.
  auto wait_for = [](const std::atomic<int> &count, int target) {
    for (int i = 0; i < 3000 && count.load() < target; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return count.load() >= target;
  };

  bool signed_before = wait_for(verified[0], 50);
  Stop();
  phase = 1;
  bool failed_while_stopped = wait_for(failed[1], 20);
  phase = 2;
  bool restarted = Start();
  bool signed_after = wait_for(verified[2], 50);
  done = true;
  for (std::thread &thread : threads) {
    thread.join();
  }
  RecordProperty("verified_before", verified[0].load());
  RecordProperty("failed_before", failed[0].load());
  RecordProperty("failed_while_stopped", failed[1].load());
  RecordProperty("verified_after", verified[2].load());
  RecordProperty("failed_after", failed[2].load());

  EXPECT_EQ(bad_signatures.load(), 0) << "signatures that do not verify";
  EXPECT_TRUE(signed_before) << verified[0].load() << " signatures" << Log();
  EXPECT_TRUE(failed_while_stopped) << failed[1].load() << " failures";
  EXPECT_EQ(verified_while_stopped.load(), 0);
  ASSERT_TRUE(restarted) << Log();
  EXPECT_TRUE(signed_after) << verified[2].load() << " signatures after "
                            << failed[2].load() << " failures" << Log();
  // Each key signs again on this thread too.
  for (size_t i = 0; i < keys.size(); i++) {
    EXPECT_EQ(SignOnce(keys[i].get(), public_keys[i].get()),
              SignOutcome::kVerified)
        << "key " << i << " after the restart";
  }
}

}  // namespace
}  // namespace keycell_test
