// Takes a core dump of a TLS server process with gcore and searches it for
// the secret values of its keys. The core of a server that uses its keys
// through keycell must contain none of them. The core of a control server
// that loaded the same keys in-process must contain them, so the search is
// shown to find them.
//
// Both servers are forked before this process reads any key file, so
// neither can inherit a secret from it. gcore reads the server's memory
// with ptrace, which the test's own child allows; no system setting such as
// the kernel's core pattern is changed.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

using Bytes = std::vector<unsigned char>;

constexpr const char *kKeyNames[] = {"rsa2048", "p256", "ed25519"};
constexpr size_t kCanarySize = 32;

enum class KeyUse { kKeycell, kInProcess };

struct ServerProcess {
  pid_t pid = -1;
  int report_fd = -1;  // The server writes its canary here once ready.
};

// Body of a server process: installs every key of kKeyNames, through
// keycell or in-process, runs TLS 1.2 and 1.3 handshakes with each, plants
// a random canary in its heap and sends it, then waits to be killed.
[[noreturn]] void RunServer(KeyUse use, int report_fd) {
  std::string error;
  CellPtr cell;
  if (use == KeyUse::kKeycell) {
    cell = StartCell(nullptr, &error);
  }
  std::vector<EvpPkeyPtr> in_process_keys;
  std::vector<SslCtxPtr> servers;
  bool ok = use == KeyUse::kInProcess || cell != nullptr;
  for (const char *name : kKeyNames) {
    if (!ok) {
      break;
    }
    SslCtxPtr server;
    if (use == KeyUse::kKeycell) {
      server =
          NewServerContext(TlsSettings{}, CertPath(name),
                           CellKeyInstaller(cell.get(), KeyPath(name)), &error);
    } else {
      in_process_keys.push_back(ReadPrivateKeyInProcess(KeyPath(name), &error));
      server = in_process_keys.back() == nullptr
                   ? nullptr
                   : NewServerContext(TlsSettings{}, CertPath(name),
                                      in_process_keys.back().get(), &error);
    }
    ok = server != nullptr;
    for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
      SslCtxPtr client = ok ? NewClientContext(PinnedVersion(version),
                                               {CertPath(name)}, &error)
                            : nullptr;
      ok = client != nullptr && RunHandshake(server.get(), client.get()).ok;
      if (!ok) {
        break;
      }
    }
    servers.push_back(std::move(server));
  }
  if (!ok) {
    std::fprintf(stderr, "server setup failed: %s\n", error.c_str());
    _exit(EXIT_FAILURE);
  }
  // The global pointer keeps the heap copy alive and in use.
  static Bytes *canary = new Bytes(kCanarySize);
  if (RAND_bytes(canary->data(), static_cast<int>(canary->size())) != 1 ||
      !WriteAll(report_fd, canary->data(), canary->size())) {
    _exit(EXIT_FAILURE);
  }
  for (;;) {
    pause();
  }
}

ServerProcess ForkServer(KeyUse use) {
  ServerProcess server;
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    return server;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(report[0]);
    RunServer(use, report[1]);
  }
  close(report[1]);
  server.pid = pid;
  server.report_fd = report[0];
  return server;
}

// Runs gcore on |pid| with output prefix |prefix|. Returns the core file's
// path, or "" with gcore's output in |error|.
std::string TakeCore(pid_t pid, const std::string &prefix,
                     const std::string &log, std::string *error) {
  pid_t child = fork();
  if (child == 0) {
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    dup2(out, STDOUT_FILENO);
    dup2(out, STDERR_FILENO);
    execl(KEYCELL_GCORE_PATH, "gcore", "-o", prefix.c_str(),
          std::to_string(pid).c_str(), nullptr);
    _exit(127);
  }
  std::string status = WaitForChild(child);
  std::string core = prefix + "." + std::to_string(pid);
  if (status != "exit status 0" || access(core.c_str(), R_OK) != 0) {
    Bytes output;
    std::string read_error;
    ReadFile(log, &output, &read_error);
    *error =
        "gcore: " + status + ": " + std::string(output.begin(), output.end());
    return "";
  }
  return core;
}

// Counts the occurrences of |needle| in |haystack|.
size_t CountOccurrences(const Bytes &haystack, const Bytes &needle) {
  size_t count = 0;
  const unsigned char *start = haystack.data();
  const unsigned char *end = haystack.data() + haystack.size();
  while (static_cast<size_t>(end - start) >= needle.size()) {
    const void *found =
        memmem(start, end - start, needle.data(), needle.size());
    if (found == nullptr) {
      break;
    }
    count++;
    start = static_cast<const unsigned char *>(found) + 1;
  }
  return count;
}

// Reads the BIGNUM parameter |name| of |key| as a big-endian number of
// exactly |size| bytes.
Bytes BignumParameter(EVP_PKEY *key, const char *name, int size) {
  BIGNUM *value = nullptr;
  Bytes bytes(size);
  if (EVP_PKEY_get_bn_param(key, name, &value) != 1 ||
      BN_bn2binpad(value, bytes.data(), size) != size) {
    bytes.clear();
  }
  BN_clear_free(value);
  return bytes;
}

// A secret value of a key, big-endian, with the key it belongs to.
struct Secret {
  std::string key;
  std::string name;
  Bytes value;
};

// Returns the secret values of the keys of kKeyNames: RSA d, p and q, the
// P-256 scalar and the Ed25519 seed.
std::vector<Secret> ReadSecrets(std::string *error) {
  std::vector<Secret> secrets;
  for (const char *name : kKeyNames) {
    EvpPkeyPtr key = ReadPrivateKeyInProcess(KeyPath(name), error);
    if (key == nullptr) {
      return {};
    }
    int bytes = (EVP_PKEY_get_bits(key.get()) + 7) / 8;
    if (EVP_PKEY_get_base_id(key.get()) == EVP_PKEY_RSA) {
      secrets.push_back(
          {name, "d",
           BignumParameter(key.get(), OSSL_PKEY_PARAM_RSA_D, bytes)});
      secrets.push_back(
          {name, "p",
           BignumParameter(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR1, bytes / 2)});
      secrets.push_back(
          {name, "q",
           BignumParameter(key.get(), OSSL_PKEY_PARAM_RSA_FACTOR2, bytes / 2)});
    } else if (EVP_PKEY_get_base_id(key.get()) == EVP_PKEY_EC) {
      secrets.push_back(
          {name, "private scalar",
           BignumParameter(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, bytes)});
    } else {
      Bytes seed(32);
      size_t size = seed.size();
      if (EVP_PKEY_get_raw_private_key(key.get(), seed.data(), &size) != 1 ||
          size != seed.size()) {
        seed.clear();
      }
      secrets.push_back({name, "seed", seed});
    }
  }
  return secrets;
}

TEST(CoreDump, ServerCoreHoldsNoKeyBytes) {
  ScopedAlarm alarm(110, "CoreDump.ServerCoreHoldsNoKeyBytes hung");
  ServerProcess keycell_server = ForkServer(KeyUse::kKeycell);
  ServerProcess control_server = ForkServer(KeyUse::kInProcess);
  ASSERT_GT(keycell_server.pid, 0) << "fork failed";
  ASSERT_GT(control_server.pid, 0) << "fork failed";

  TempDir dir;
  ASSERT_NE(dir.path(), "");
  struct Dump {
    const char *name;
    ServerProcess server;
    Bytes canary;
    Bytes core;
  };
  Dump dumps[] = {{"keycell", keycell_server, {}, {}},
                  {"control", control_server, {}, {}}};
  for (Dump &dump : dumps) {
    SCOPED_TRACE(dump.name);
    dump.canary.resize(kCanarySize);
    bool ready =
        ReadAll(dump.server.report_fd, dump.canary.data(), dump.canary.size());
    close(dump.server.report_fd);
    if (ready) {
      std::string error;
      std::string core = TakeCore(
          dump.server.pid, dir.File(std::string("core-") + dump.name),
          dir.File(std::string("gcore-") + dump.name + ".log"), &error);
      EXPECT_NE(core, "") << error;
      if (!core.empty()) {
        EXPECT_TRUE(ReadFile(core, &dump.core, &error)) << error;
        unlink(core.c_str());
      }
    }
    kill(dump.server.pid, SIGKILL);
    std::string status = WaitForChild(dump.server.pid);
    ASSERT_TRUE(ready) << "the server did not start: " << status;
    ASSERT_FALSE(dump.core.empty());
    // The core contains the server's heap, so the canary planted there.
    EXPECT_GE(CountOccurrences(dump.core, dump.canary), 1u)
        << "the core misses the canary";
  }
  RecordProperty("keycell_core_bytes", std::to_string(dumps[0].core.size()));
  RecordProperty("control_core_bytes", std::to_string(dumps[1].core.size()));

  // Only now, with both servers gone, does this process read the keys.
  std::string error;
  std::vector<Secret> secrets = ReadSecrets(&error);
  ASSERT_FALSE(secrets.empty()) << error;
  std::map<std::string, size_t> control_hits;
  for (const Secret &secret : secrets) {
    ASSERT_FALSE(secret.value.empty())
        << "reading " << secret.key << " " << secret.name << " failed";
    // BIGNUMs keep their limbs little-endian on x86-64 and AArch64, while
    // DER and raw encodings are big-endian.
    const Bytes reversed(secret.value.rbegin(), secret.value.rend());
    for (const Bytes *form : {&secret.value, &reversed}) {
      std::string what =
          secret.key + " " + secret.name +
          (form == &reversed ? " (little-endian)" : " (big-endian)");
      EXPECT_EQ(CountOccurrences(dumps[0].core, *form), 0u)
          << what << " found in the core of the server that used keycell";
      size_t hits = CountOccurrences(dumps[1].core, *form);
      control_hits[secret.key] += hits;
      RecordProperty("control_hits " + what, std::to_string(hits));
    }
  }
  for (const char *name : kKeyNames) {
    EXPECT_GT(control_hits[name], 0u)
        << "no secret of " << name << " found in the core of the control "
        << "server, which loaded it in-process, so the search cannot detect "
        << "it";
  }
}

}  // namespace
}  // namespace keycell_test
