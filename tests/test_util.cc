#include "test_util.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include <openssl/err.h>

namespace keycell_test {
namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX *ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// Message of the active ScopedAlarm; a fixed buffer so that the signal
// handler can write it without allocating.
char alarm_message[256];
size_t alarm_message_size = 0;

void OnAlarm(int) {
  static const char kPrefix[] = "watchdog expired: ";
  (void)!write(STDERR_FILENO, kPrefix, sizeof(kPrefix) - 1);
  (void)!write(STDERR_FILENO, alarm_message, alarm_message_size);
  (void)!write(STDERR_FILENO, "\n", 1);
  _exit(EXIT_FAILURE);
}

}  // namespace

CellPtr StartCell(const keycell_options *options, std::string *error) {
  char message[KEYCELL_ERROR_SIZE] = "";
  CellPtr cell(keycell_start(options, message, sizeof(message)));
  if (cell == nullptr) {
    *error = std::string("keycell_start failed: ") + message;
  }
  return cell;
}

EvpPkeyPtr LoadCellKey(keycell *cell, const std::string &path,
                       const keycell_key_options *options, std::string *error) {
  char message[KEYCELL_ERROR_SIZE] = "";
  EvpPkeyPtr key(keycell_load_private_key(cell, path.c_str(), options, message,
                                          sizeof(message)));
  if (key == nullptr) {
    *error = message;
  }
  return key;
}

KeyOptionsPtr NewDecryptionKeyOptions() {
  KeyOptionsPtr options(keycell_key_options_new());
  if (options != nullptr) {
    keycell_key_options_allow_rsa_decryption(options.get(), 1);
  }
  return options;
}

std::function<bool(SSL_CTX *, std::string *)> CellKeyInstaller(
    keycell *cell, const std::string &path,
    const keycell_key_options *options) {
  return [cell, path, options](SSL_CTX *ctx, std::string *error) {
    char message[KEYCELL_ERROR_SIZE] = "";
    if (keycell_use_private_key_file(cell, ctx, path.c_str(), options, message,
                                     sizeof(message)) != 1) {
      *error = std::string("keycell_use_private_key_file failed: ") + message;
      return false;
    }
    return true;
  };
}

bool SignAndVerify(EVP_PKEY *key, EVP_PKEY *public_key, const char *digest,
                   std::string *error) {
  static const unsigned char kMessage[] = "message signed by a keycell test";
  MdCtxPtr sign_ctx(EVP_MD_CTX_new());
  MdCtxPtr verify_ctx(EVP_MD_CTX_new());
  if (sign_ctx == nullptr || verify_ctx == nullptr) {
    *error = "EVP_MD_CTX_new failed";
    return false;
  }
  if (EVP_DigestSignInit_ex(sign_ctx.get(), nullptr, digest, nullptr, nullptr,
                            key, nullptr) != 1) {
    *error = "EVP_DigestSignInit_ex failed: " + DrainOpenSslErrors();
    return false;
  }
  size_t signature_size = 0;
  if (EVP_DigestSign(sign_ctx.get(), nullptr, &signature_size, kMessage,
                     sizeof(kMessage)) != 1) {
    *error = "EVP_DigestSign (size) failed: " + DrainOpenSslErrors();
    return false;
  }
  std::vector<unsigned char> signature(signature_size);
  if (EVP_DigestSign(sign_ctx.get(), signature.data(), &signature_size,
                     kMessage, sizeof(kMessage)) != 1) {
    *error = "EVP_DigestSign failed: " + DrainOpenSslErrors();
    return false;
  }
  signature.resize(signature_size);
  if (EVP_DigestVerifyInit_ex(verify_ctx.get(), nullptr, digest, nullptr,
                              nullptr, public_key, nullptr) != 1) {
    *error = "EVP_DigestVerifyInit_ex failed: " + DrainOpenSslErrors();
    return false;
  }
  if (EVP_DigestVerify(verify_ctx.get(), signature.data(), signature.size(),
                       kMessage, sizeof(kMessage)) != 1) {
    *error = "signature does not verify: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

const char *DefaultDigest(EVP_PKEY *key) {
  if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448")) {
    return nullptr;
  }
  return "SHA256";
}

ScopedAlarm::ScopedAlarm(unsigned seconds, const char *message) {
  alarm_message_size = std::strlen(message);
  if (alarm_message_size > sizeof(alarm_message)) {
    alarm_message_size = sizeof(alarm_message);
  }
  std::memcpy(alarm_message, message, alarm_message_size);
  struct sigaction action = {};
  action.sa_handler = OnAlarm;
  sigemptyset(&action.sa_mask);
  sigaction(SIGALRM, &action, nullptr);
  alarm(seconds);
}

ScopedAlarm::~ScopedAlarm() {
  alarm(0);
  signal(SIGALRM, SIG_DFL);
}

int OpenPidfd(pid_t pid, std::string *error) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    *error = "pidfd_open(" + std::to_string(pid) +
             ") failed: " + std::strerror(errno);
  }
  return pidfd;
}

bool StopProcess(pid_t pid) {
  if (kill(pid, SIGSTOP) != 0) {
    return false;
  }
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  for (int attempt = 0; attempt < 10000; ++attempt) {
    std::vector<unsigned char> stat;
    std::string error;
    if (!ReadFile(path, &stat, &error)) {
      return false;
    }
    std::string text(stat.begin(), stat.end());
    size_t end_of_name = text.rfind(')');
    if (end_of_name != std::string::npos && end_of_name + 2 < text.size() &&
        text[end_of_name + 2] == 'T') {
      return true;
    }
    usleep(1000);
  }
  return false;
}

bool WaitForExit(int pidfd, int timeout_ms, std::string *error) {
  pollfd poll_fd = {pidfd, POLLIN, 0};
  for (;;) {
    int ready = poll(&poll_fd, 1, timeout_ms);
    if (ready > 0) {
      return true;
    }
    if (ready == 0) {
      return false;
    }
    if (errno != EINTR) {
      *error = std::string("poll on a pidfd failed: ") + std::strerror(errno);
      return false;
    }
  }
}

std::string WaitForChild(pid_t pid) {
  int status = 0;
  pid_t waited;
  do {
    waited = waitpid(pid, &status, 0);
  } while (waited < 0 && errno == EINTR);
  if (waited < 0) {
    return std::string("waitpid failed: ") + std::strerror(errno);
  }
  if (WIFEXITED(status)) {
    return "exit status " + std::to_string(WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  }
  return "wait status " + std::to_string(status);
}

// Returns the number of open descriptors of |pid|, or -1 if they cannot be
// listed.
SignOutcome SignOnce(EVP_PKEY *key, EVP_PKEY *public_key) {
  static const unsigned char kMessage[] = "message signed once";
  const char *digest = DefaultDigest(key);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sign(EVP_MD_CTX_new(),
                                                               EVP_MD_CTX_free);
  unsigned char signature[1024];
  size_t signature_size = sizeof(signature);
  if (!sign ||
      EVP_DigestSignInit_ex(sign.get(), nullptr, digest, nullptr, nullptr, key,
                            nullptr) != 1 ||
      EVP_DigestSign(sign.get(), signature, &signature_size, kMessage,
                     sizeof(kMessage)) != 1) {
    ERR_clear_error();
    return SignOutcome::kFailed;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> verify(
      EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool verified =
      verify &&
      EVP_DigestVerifyInit_ex(verify.get(), nullptr, digest, nullptr, nullptr,
                              public_key, nullptr) == 1 &&
      EVP_DigestVerify(verify.get(), signature, signature_size, kMessage,
                       sizeof(kMessage)) == 1;
  ERR_clear_error();
  return verified ? SignOutcome::kVerified : SignOutcome::kBadSignature;
}

int CountDescriptors(pid_t pid) {
  std::error_code error;
  std::filesystem::directory_iterator entries(
      "/proc/" + std::to_string(pid) + "/fd", error);
  if (error) {
    return -1;
  }
  int count = 0;
  for (auto it = entries; it != std::filesystem::directory_iterator();
       it.increment(error)) {
    if (error) {
      return -1;
    }
    ++count;
  }
  return count;
}

bool WriteAll(int fd, const void *data, size_t size) {
  const char *bytes = static_cast<const char *>(data);
  while (size > 0) {
    ssize_t written = write(fd, bytes, size);
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    bytes += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

bool ReadAll(int fd, void *data, size_t size) {
  char *bytes = static_cast<char *>(data);
  while (size > 0) {
    ssize_t count = read(fd, bytes, size);
    if (count < 0 && errno == EINTR) {
      continue;
    }
    if (count <= 0) {
      return false;
    }
    bytes += count;
    size -= static_cast<size_t>(count);
  }
  return true;
}

TempDir::TempDir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "keycell-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) != nullptr) {
    path_ = pattern;
  }
}

TempDir::~TempDir() {
  if (!path_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
}

}  // namespace keycell_test
