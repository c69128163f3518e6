// Helpers for the suites of keycell.so: a fake keycelld that serves keys of
// this process on a Unix socket, reference files, and openssl.cnf files
// that load the module.
#ifndef KEYCELL_TESTS_MODULE_TEST_UTIL_H
#define KEYCELL_TESTS_MODULE_TEST_UTIL_H

#include <openssl/evp.h>
#include <sys/types.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tls_util.h"

namespace keycell_test {

// A stand-in for keycelld: a thread that accepts connections on a Unix
// socket and replies to open key and sign requests with keys of this process,
// in the frame protocol of docs/PROTOCOL.md. Key ids are per connection and
// differ after each Start, as a restarted keycelld's would.
class FakeDaemon {
 public:
  explicit FakeDaemon(std::string socket_path);
  FakeDaemon(const FakeDaemon &) = delete;
  FakeDaemon &operator=(const FakeDaemon &) = delete;
  ~FakeDaemon();

  // Serves |key| under |name|. Call before Start.
  void AddKey(const std::string &name, EVP_PKEY *key);

  // Listens on the socket path. Returns false with a message in |error|.
  bool Start(std::string *error);
  // Closes the listening socket and every connection, and removes the
  // socket file when |remove_socket| is true.
  void Stop(bool remove_socket = false);

  const std::string &socket_path() const { return socket_path_; }
  int open_requests() const { return open_requests_.load(); }
  int sign_requests() const { return sign_requests_.load(); }

 private:
  void AcceptLoop(int listener, int stop_fd);
  void Serve(int fd, uint32_t first_id);

  const std::string socket_path_;
  std::map<std::string, EVP_PKEY *> keys_;
  int listener_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<int> connections_;
  std::vector<std::thread> servers_;
  uint32_t starts_ = 0;
  std::atomic<int> open_requests_{0};
  std::atomic<int> sign_requests_{0};
};

// Writes a reference file for key |name| of the daemon at |socket_path|
// whose public key is that of |key|. Returns false with a message in
// |error|.
bool WriteReferenceFile(const std::string &path, const std::string &socket_path,
                        const std::string &name, EVP_PKEY *key,
                        std::string *error);

// Writes an openssl.cnf that activates the default provider and keycell.so
// from the build tree. Returns false on failure.
bool WriteModuleConfig(const std::string &path);

// A child process whose stdout and stderr go to one pipe.
struct Child {
  pid_t pid = -1;
  int output = -1;
};

// Starts `openssl ARGS...` with OPENSSL_CONF set to |config| (unset when
// empty) and stdin from /dev/null.
Child StartOpenssl(const std::vector<std::string> &args,
                   const std::string &config);

// Reads until end of file, or until |marker| appears when it is not empty,
// for at most |timeout_ms|.
std::string ReadOutput(int fd, const std::string &marker, int timeout_ms);

// Runs `openssl ARGS...` to the end. Returns its wait status description
// from WaitForChild and stores its output in |output|.
std::string RunOpenssl(const std::vector<std::string> &args,
                       const std::string &config, std::string *output);

// Runs the program at |argv[0]| with |argv| to the end. Returns its wait
// status description from WaitForChild and stores its output in |output|.
std::string RunProgram(const std::vector<std::string> &argv,
                       std::string *output);

// Returns a TCP port on 127.0.0.1 that was free a moment ago, or -1.
int FreePort();

// Runs `openssl s_server` on 127.0.0.1 with OPENSSL_CONF |config|, |key|
// and the certificate of test key |name|, and checks one `openssl s_client`
// handshake with |version| ("-tls1_2" or "-tls1_3") that verifies the
// certificate, with |client_options| added to its command line. Reports
// failures through GoogleTest.
void ExpectHandshake(const std::string &config, const std::string &name,
                     const std::string &key, const std::string &version,
                     const std::vector<std::string> &client_options = {});

// The path of keycell.so in the build tree.
const char *ModulePath();

}  // namespace keycell_test

#endif  // KEYCELL_TESTS_MODULE_TEST_UTIL_H
