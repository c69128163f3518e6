// keycell helpers for the test suites: owning handles, key loading,
// signing checks and process control (watchdog, child exit, pidfd waits).
#ifndef KEYCELL_TESTS_TEST_UTIL_H
#define KEYCELL_TESTS_TEST_UTIL_H

#include <sys/types.h>

#include <memory>
#include <string>

#include <keycell/keycell.h>

#include "tls_util.h"

namespace keycell_test {

// Iteration counts shrink in sanitizer builds, which run slower, so that an
// ASan or TSan run of every suite stays within minutes on two cores.
#ifdef KEYCELL_SANITIZER_BUILD
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif

// Returns |normal| in ordinary builds and |sanitizer| in sanitizer builds.
constexpr int Iterations(int normal, int sanitizer) {
  return kSanitizerBuild ? sanitizer : normal;
}

// Passphrase of the encrypted test keys, as in data/passphrase.txt without
// the newline.
inline constexpr char kPassphrase[] = "keycell test passphrase";

struct CellDeleter {
  void operator()(keycell *cell) const { keycell_free(cell); }
};
struct OptionsDeleter {
  void operator()(keycell_options *options) const {
    keycell_options_free(options);
  }
};
struct KeyOptionsDeleter {
  void operator()(keycell_key_options *options) const {
    keycell_key_options_free(options);
  }
};
using CellPtr = std::unique_ptr<keycell, CellDeleter>;
using OptionsPtr = std::unique_ptr<keycell_options, OptionsDeleter>;
using KeyOptionsPtr = std::unique_ptr<keycell_key_options, KeyOptionsDeleter>;

// Starts a cell with |options| (NULL for the defaults). Returns nullptr with
// keycell's message in |error| on failure.
CellPtr StartCell(const keycell_options *options, std::string *error);

// Loads |path| through |cell|. Returns nullptr with keycell's message in
// |error| on failure.
EvpPkeyPtr LoadCellKey(keycell *cell, const std::string &path,
                       const keycell_key_options *options, std::string *error);

// Returns key options that allow RSA decryption.
KeyOptionsPtr NewDecryptionKeyOptions();

// Returns a callback for NewServerContext() that installs the key at |path|
// with keycell_use_private_key_file().
std::function<bool(SSL_CTX *, std::string *)> CellKeyInstaller(
    keycell *cell, const std::string &path,
    const keycell_key_options *options = nullptr);

// Signs a fixed message with |key| through EVP_DigestSign and verifies the
// signature with |public_key|. |digest| is an OpenSSL digest name, or NULL
// for Ed25519 and Ed448. Returns false with the OpenSSL errors in |error|.
bool SignAndVerify(EVP_PKEY *key, EVP_PKEY *public_key, const char *digest,
                   std::string *error);

enum class SignOutcome {
  kVerified,      // A signature was returned and it verifies.
  kFailed,        // Signing returned an error.
  kBadSignature,  // A signature was returned that does not verify.
};

// Signs a fixed message with |key| through EVP_DigestSign with
// DefaultDigest(key) and verifies the signature with |public_key|. Clears
// the OpenSSL error queue.
SignOutcome SignOnce(EVP_PKEY *key, EVP_PKEY *public_key);

// Returns the digest that SignAndVerify() should use for |key|: "SHA256" for
// RSA and EC keys and NULL for Ed25519 and Ed448.
const char *DefaultDigest(EVP_PKEY *key);

// Terminates the process with a message on stderr unless it is destroyed
// within |seconds|, so that a hang fails a test instead of blocking the
// run. Uses alarm(), so only one can be active at a time and it does not
// reach children forked later.
class ScopedAlarm {
 public:
  ScopedAlarm(unsigned seconds, const char *message);
  ScopedAlarm(const ScopedAlarm &) = delete;
  ScopedAlarm &operator=(const ScopedAlarm &) = delete;
  ~ScopedAlarm();
};

// Waits up to |timeout_ms| for the process behind |pidfd|, which need not be
// a child of this one, to exit. Returns true when it has exited and false on
// timeout or failure, with a message in |error| on failure.
bool WaitForExit(int pidfd, int timeout_ms, std::string *error);

// Opens a pidfd for |pid|. Returns -1 with a message in |error|.
int OpenPidfd(pid_t pid, std::string *error);

// Sends SIGSTOP to |pid| and waits until the process has stopped, since
// kill() returns before it has. Returns false after 10 seconds.
bool StopProcess(pid_t pid);

// Waits for the child |pid| and returns a description of how it ended,
// "exit status 0" for success.
std::string WaitForChild(pid_t pid);

// Returns the number of open descriptors of |pid|, or -1 if they cannot be
// listed; listing the descriptors of a cell needs CAP_SYS_PTRACE.
int CountDescriptors(pid_t pid);

// Writes |size| bytes to |fd|, retrying short writes. Returns false on error.
bool WriteAll(int fd, const void *data, size_t size);

// Reads exactly |size| bytes from |fd|. Returns false on error or end of
// file.
bool ReadAll(int fd, void *data, size_t size);

// Creates a temporary directory that is removed with its contents when the
// object is destroyed.
class TempDir {
 public:
  TempDir();
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  ~TempDir();
  // Returns "" if the directory could not be created.
  const std::string &path() const { return path_; }
  std::string File(const std::string &name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace keycell_test

#endif  // KEYCELL_TESTS_TEST_UTIL_H
