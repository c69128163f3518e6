// The asynchronous interface of libkeycell-neverbleed, driven the way h2o
// drives it. An event loop writes size_t-framed requests to
// neverbleed_get_fd() itself, with many in flight. A transaction callback
// pauses an OpenSSL ASYNC_JOB while a handshake waits for the cell.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <neverbleed.h>
#include <openssl/async.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "neverbleed_test_util.h"
#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr int kInFlight = 64;

class NeverbleedAsync : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(neverbleed_init(&nb_, errbuf_), 0) << errbuf_;
  }

  void TearDown() override { neverbleed_transaction_cb = nullptr; }

  // Returns a server context with the certificate of |key_name| and its key
  // loaded through neverbleed_load_private_key_file().
  SslCtxPtr LoadServerContext(const TlsSettings &settings,
                              const std::string &key_name) {
    std::string error;
    SslCtxPtr ctx = NewServerContext(
        settings, CertPath(key_name),
        [&](SSL_CTX *server, std::string *message) {
          if (neverbleed_load_private_key_file(
                  &nb_, server, KeyPath(key_name).c_str(), errbuf_) != 1) {
            *message = errbuf_;
            return false;
          }
          return true;
        },
        &error);
    EXPECT_NE(ctx, nullptr) << error;
    return ctx;
  }

  // Sends every request in |requests| through an event loop on
  // neverbleed_get_fd(): the loop writes the size_t-framed requests as the
  // descriptor accepts them and reads each reply with
  // neverbleed_transaction_read() as it arrives. On return each iobuf
  // contains its reply.
  void ExchangeAll(std::vector<neverbleed_iobuf_t> &requests) {
    int fd = neverbleed_get_fd(&nb_);
    ASSERT_GE(fd, 0);
    int flags = fcntl(fd, F_GETFL);
    ASSERT_EQ(fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);

    std::string output;
    for (neverbleed_iobuf_t &request : requests) {
      size_t size = neverbleed_iobuf_size(&request);
      output.append(reinterpret_cast<const char *>(&size), sizeof(size));
      output.append(request.start, size);
    }
    size_t written = 0;
    size_t replies = 0;
    while (replies < requests.size()) {
      pollfd event{fd, POLLIN, 0};
      if (written < output.size()) {
        event.events |= POLLOUT;
      }
      ASSERT_GT(poll(&event, 1, 10000), 0) << "the cell stopped replying";
      if ((event.revents & POLLOUT) != 0) {
        ssize_t n = write(fd, output.data() + written, output.size() - written);
        ASSERT_TRUE(n > 0 || errno == EAGAIN) << std::strerror(errno);
        if (n > 0) {
          written += static_cast<size_t>(n);
        }
      }
      if ((event.revents & POLLIN) != 0) {
        neverbleed_transaction_read(&nb_, &requests[replies]);
        ASSERT_NE(neverbleed_iobuf_size(&requests[replies]), 0u)
            << "reply " << replies << " is missing";
        ++replies;
      }
    }
    ASSERT_EQ(fcntl(fd, F_SETFL, flags), 0);
  }

  neverbleed_t nb_;
  char errbuf_[NEVERBLEED_ERRBUF_SIZE];
};

TEST_F(NeverbleedAsync, SignManyInFlight) {
  for (const NeverbleedKey &key : NeverbleedKeys()) {
    SCOPED_TRACE(key.name);
    SslCtxPtr ctx = LoadServerContext(TlsSettings{}, key.name);
    ASSERT_NE(ctx, nullptr);
    EVP_PKEY *pkey = SSL_CTX_get0_privatekey(ctx.get());
    std::string error;
    EvpPkeyPtr public_key =
        ReadCertificatePublicKey(CertPath(key.name), &error);
    ASSERT_NE(public_key, nullptr) << error;
    const EVP_MD *md =
        key.digest != nullptr ? EVP_get_digestbyname(key.digest) : nullptr;
    bool rsa = EVP_PKEY_is_a(pkey, "RSA");

    std::vector<std::string> messages;
    std::vector<neverbleed_iobuf_t> buffers(kInFlight);
    for (int i = 0; i < kInFlight; ++i) {
      messages.push_back("message " + std::to_string(i));
      neverbleed_start_digestsign(&buffers[i], pkey, md, messages[i].data(),
                                  messages[i].size(), rsa ? i % 2 : 0);
    }
    ExchangeAll(buffers);
    for (int i = 0; i < kInFlight; ++i) {
      FinishedBytes signature;
      neverbleed_finish_digestsign(&buffers[i], &signature.data,
                                   &signature.length);
      ASSERT_NE(signature.data, nullptr) << "request " << i;
      EXPECT_TRUE(VerifySignature(public_key.get(), md, rsa ? i % 2 : 0,
                                  messages[i], signature.data,
                                  signature.length))
          << "request " << i << ": " << DrainOpenSslErrors();
    }
  }
}

TEST_F(NeverbleedAsync, DecryptManyInFlight) {
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "rsa2048");
  ASSERT_NE(ctx, nullptr);
  EVP_PKEY *pkey = SSL_CTX_get0_privatekey(ctx.get());
  std::string error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("rsa2048"), &error);
  ASSERT_NE(public_key, nullptr) << error;

  std::vector<std::vector<unsigned char>> plaintexts;
  std::vector<neverbleed_iobuf_t> buffers(kInFlight);
  for (int i = 0; i < kInFlight; ++i) {
    plaintexts.emplace_back(48, static_cast<unsigned char>(i));
    EVP_PKEY_CTX *encrypt = EVP_PKEY_CTX_new(public_key.get(), nullptr);
    ASSERT_NE(encrypt, nullptr);
    ASSERT_EQ(EVP_PKEY_encrypt_init(encrypt), 1);
    ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(encrypt, RSA_PKCS1_PADDING), 1);
    unsigned char ciphertext[512];
    size_t ciphertext_length = sizeof(ciphertext);
    ASSERT_EQ(EVP_PKEY_encrypt(encrypt, ciphertext, &ciphertext_length,
                               plaintexts[i].data(), plaintexts[i].size()),
              1);
    EVP_PKEY_CTX_free(encrypt);
    neverbleed_start_decrypt(&buffers[i], pkey, ciphertext, ciphertext_length);
  }
  ExchangeAll(buffers);
  for (int i = 0; i < kInFlight; ++i) {
    FinishedBytes decrypted;
    neverbleed_finish_decrypt(&buffers[i], &decrypted.data, &decrypted.length);
    ASSERT_NE(decrypted.data, nullptr) << "request " << i;
    EXPECT_EQ(decrypted.bytes(), plaintexts[i]) << "request " << i;
  }
}

// The transaction callback of an event loop: inside an ASYNC_JOB it writes
// the request, pauses the job until the loop finds the descriptor readable,
// then reads the reply. Outside a job it waits in place.
neverbleed_t *callback_nb = nullptr;
int paused_jobs = 0;
int responseless_requests = 0;

void PausingTransaction(neverbleed_iobuf_t *req, int responseless) {
  neverbleed_transaction_write(callback_nb, req);
  if (responseless != 0) {
    ++responseless_requests;
    neverbleed_iobuf_dispose(req);
    return;
  }
  if (ASYNC_get_current_job() != nullptr) {
    ++paused_jobs;
    ASYNC_pause_job();
  }
  neverbleed_transaction_read(callback_nb, req);
}

// Runs a handshake whose server uses SSL_MODE_ASYNC. When the server
// reports SSL_ERROR_WANT_ASYNC, the loop waits for the neverbleed
// descriptor to become readable and resumes the server.
void RunAsyncHandshake(neverbleed_t *nb, SSL_CTX *server_ctx,
                       SSL_CTX *client_ctx, long *verify_result) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  for (int fd : pair) {
    ASSERT_EQ(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  }
  SSL *server = SSL_new(server_ctx);
  SSL *client = SSL_new(client_ctx);
  ASSERT_NE(server, nullptr);
  ASSERT_NE(client, nullptr);
  SSL_set_mode(server, SSL_MODE_ASYNC);
  SSL_set_fd(server, pair[0]);
  SSL_set_fd(client, pair[1]);
  SSL_set_accept_state(server);
  SSL_set_connect_state(client);
  SSL_set1_host(client, "localhost");

  bool server_done = false;
  bool client_done = false;
  for (int step = 0; step < 1000 && !(server_done && client_done); ++step) {
    if (!client_done) {
      int ret = SSL_do_handshake(client);
      int error = SSL_get_error(client, ret);
      client_done = ret == 1;
      ASSERT_TRUE(ret == 1 || error == SSL_ERROR_WANT_READ)
          << "client: " << DrainOpenSslErrors();
    }
    if (!server_done) {
      int ret = SSL_do_handshake(server);
      int error = SSL_get_error(server, ret);
      server_done = ret == 1;
      if (error == SSL_ERROR_WANT_ASYNC) {
        pollfd readable{neverbleed_get_fd(nb), POLLIN, 0};
        ASSERT_EQ(poll(&readable, 1, 10000), 1) << "no reply from the cell";
        continue;
      }
      ASSERT_TRUE(ret == 1 || error == SSL_ERROR_WANT_READ)
          << "server: " << DrainOpenSslErrors();
    }
  }
  EXPECT_TRUE(server_done);
  EXPECT_TRUE(client_done);
  *verify_result = SSL_get_verify_result(client);
  SSL_free(server);
  SSL_free(client);
  close(pair[0]);
  close(pair[1]);
}

TEST_F(NeverbleedAsync, HandshakePausesAsyncJob) {
  ScopedAlarm alarm(100, "an asynchronous handshake hangs");
  callback_nb = &nb_;
  neverbleed_transaction_cb = PausingTransaction;
  struct Case {
    const char *key;
    TlsSettings settings;
  };
  TlsSettings rsa_key_exchange = PinnedVersion(TLS1_2_VERSION);
  rsa_key_exchange.cipher_list = "AES128-GCM-SHA256";
  std::vector<Case> cases = {{"rsa2048", rsa_key_exchange}};
  for (const NeverbleedKey &key : NeverbleedKeys()) {
    cases.push_back({key.name, TlsSettings{}});
  }
  for (const Case &c : cases) {
    SCOPED_TRACE(c.key);
    SslCtxPtr server = LoadServerContext(c.settings, c.key);
    ASSERT_NE(server, nullptr);
    std::string error;
    SslCtxPtr client = NewClientContext(c.settings, {CertPath(c.key)}, &error);
    ASSERT_NE(client, nullptr) << error;
    int paused_before = paused_jobs;
    long verify_result = X509_V_ERR_UNSPECIFIED;
    RunAsyncHandshake(&nb_, server.get(), client.get(), &verify_result);
    EXPECT_EQ(verify_result, X509_V_OK);
    EXPECT_GT(paused_jobs, paused_before) << "no private-key operation paused";
  }
  // Freeing the contexts released their keys through the callback without
  // a reply; the descriptor stays in step for the next request.
  EXPECT_GT(responseless_requests, 0);
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "p256");
  ASSERT_NE(ctx, nullptr);
  FinishedBytes signature;
  SignOnce(&nb_, SSL_CTX_get0_privatekey(ctx.get()), EVP_sha256(), "message", 0,
           &signature);
  EXPECT_NE(signature.data, nullptr);
}

}  // namespace
}  // namespace keycell_test
