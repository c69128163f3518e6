// Many TLS handshakes driven from one thread with SSL_MODE_ASYNC: each pair
// of client and server is joined by a BIO pair, and a server whose key
// operation pauses its ASYNC_JOB is resumed once its descriptors are
// readable.
#ifndef KEYCELL_TESTS_ASYNC_UTIL_H
#define KEYCELL_TESTS_ASYNC_UTIL_H

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

namespace keycell_test {

struct SslDeleter {
  void operator()(SSL *ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// One client and one server joined by a BIO pair, both in this thread.
struct Pair {
  SslPtr client;
  SslPtr server;
  bool client_done = false;
  bool server_done = false;
  bool failed = false;
  std::string error;
};

// Creates the two ends of |pair|. Returns false on failure.
bool NewPair(SSL_CTX *server_ctx, SSL_CTX *client_ctx, Pair &pair);

// Advances one side. Returns true while the side still has work to do.
bool Step(SSL *ssl, bool &done, bool &failed, std::string &error);

struct DriveStats {
  int completed = 0;
  int failed = 0;
  std::vector<std::string> errors;
};

// Drives every pair to completion or failure in this thread. Between rounds
// without progress it polls the async descriptors of the paused handshakes.
DriveStats DriveAll(std::vector<Pair> &pairs);

// Steps every pair until its server waits for its key, for at most 20
// sweeps, and returns how many servers wait.
size_t RunUntilPaused(std::vector<Pair> &pairs);

}  // namespace keycell_test

#endif  // KEYCELL_TESTS_ASYNC_UTIL_H
