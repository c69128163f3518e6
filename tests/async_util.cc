#include "async_util.h"

#include <poll.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "tls_util.h"

namespace keycell_test {

bool NewPair(SSL_CTX *server_ctx, SSL_CTX *client_ctx, Pair &pair) {
  pair.client.reset(SSL_new(client_ctx));
  pair.server.reset(SSL_new(server_ctx));
  if (pair.client == nullptr || pair.server == nullptr) {
    return false;
  }
  BIO *client_bio = nullptr;
  BIO *server_bio = nullptr;
  if (BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) != 1) {
    return false;
  }
  SSL_set_bio(pair.client.get(), client_bio, client_bio);
  SSL_set_bio(pair.server.get(), server_bio, server_bio);
  SSL_set_connect_state(pair.client.get());
  SSL_set_accept_state(pair.server.get());
  SSL_set1_host(pair.client.get(), "localhost");
  return true;
}

bool Step(SSL *ssl, bool &done, bool &failed, std::string &error) {
  if (done || failed) {
    return false;
  }
  ERR_clear_error();
  int result = SSL_do_handshake(ssl);
  if (result == 1) {
    done = true;
    return false;
  }
  int reason = SSL_get_error(ssl, result);
  if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE ||
      reason == SSL_ERROR_WANT_ASYNC) {
    return true;
  }
  failed = true;
  error = DrainOpenSslErrors();
  return false;
}

DriveStats DriveAll(std::vector<Pair> &pairs) {
  DriveStats stats;
  for (;;) {
    bool busy = false;
    std::vector<pollfd> waits;
    for (Pair &pair : pairs) {
      busy |=
          Step(pair.client.get(), pair.client_done, pair.failed, pair.error);
      busy |=
          Step(pair.server.get(), pair.server_done, pair.failed, pair.error);
      if (!pair.failed && !pair.server_done &&
          SSL_waiting_for_async(pair.server.get())) {
        size_t count = 0;
        SSL_get_all_async_fds(pair.server.get(), nullptr, &count);
        std::vector<OSSL_ASYNC_FD> fds(count);
        SSL_get_all_async_fds(pair.server.get(), fds.data(), &count);
        for (OSSL_ASYNC_FD fd : fds) {
          waits.push_back({fd, POLLIN, 0});
        }
      }
    }
    if (!busy) {
      break;
    }
    if (!waits.empty()) {
      poll(waits.data(), waits.size(), 1000);
    }
  }
  for (const Pair &pair : pairs) {
    if (pair.client_done && pair.server_done) {
      stats.completed++;
    } else {
      stats.failed++;
      stats.errors.push_back(pair.error);
    }
  }
  return stats;
}

size_t RunUntilPaused(std::vector<Pair> &pairs) {
  size_t paused = 0;
  for (int round = 0; round < 20 && paused < pairs.size(); ++round) {
    paused = 0;
    for (Pair &pair : pairs) {
      if (!SSL_waiting_for_async(pair.server.get())) {
        Step(pair.client.get(), pair.client_done, pair.failed, pair.error);
        Step(pair.server.get(), pair.server_done, pair.failed, pair.error);
      }
      paused += SSL_waiting_for_async(pair.server.get()) ? 1 : 0;
    }
  }
  return paused;
}

}  // namespace keycell_test
