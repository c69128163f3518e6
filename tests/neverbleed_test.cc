// The neverbleed API of libkeycell-neverbleed: TLS servers whose keys are
// loaded with neverbleed_load_private_key_file(), one-shot use of the
// asynchronous interface, failure values, forks and a dead cell.
#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <neverbleed.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "neverbleed_test_util.h"
#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

const char kMessage[] = "message signed through the neverbleed API";

class Neverbleed : public ::testing::Test {
 protected:
  void SetUp() override {
    errbuf_[0] = '\0';
    ASSERT_EQ(neverbleed_init(&nb_, errbuf_), 0) << errbuf_;
  }

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

  neverbleed_t nb_;
  char errbuf_[NEVERBLEED_ERRBUF_SIZE];
};

TEST_F(Neverbleed, HandshakeEveryKeyType) {
  for (const NeverbleedKey &key : NeverbleedKeys()) {
    SCOPED_TRACE(key.name);
    for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
      SCOPED_TRACE(version);
      SslCtxPtr server = LoadServerContext(PinnedVersion(version), key.name);
      ASSERT_NE(server, nullptr);
      EXPECT_EQ(keycell_is_cell_key(SSL_CTX_get0_privatekey(server.get())), 1);
      std::string error;
      SslCtxPtr client = NewClientContext(PinnedVersion(version),
                                          {CertPath(key.name)}, &error);
      ASSERT_NE(client, nullptr) << error;
      HandshakeResult result = RunHandshake(server.get(), client.get());
      ASSERT_TRUE(result.ok) << Describe(result);
      EXPECT_EQ(result.verify_result, X509_V_OK) << Describe(result);
      EXPECT_EQ(result.version, version);
    }
  }
}

TEST_F(Neverbleed, Tls12RsaKeyExchange) {
  TlsSettings settings = PinnedVersion(TLS1_2_VERSION);
  settings.cipher_list = "AES128-GCM-SHA256";
  SslCtxPtr server = LoadServerContext(settings, "rsa2048");
  ASSERT_NE(server, nullptr);
  std::string error;
  SslCtxPtr client = NewClientContext(settings, {CertPath("rsa2048")}, &error);
  ASSERT_NE(client, nullptr) << error;
  HandshakeResult result = RunHandshake(server.get(), client.get());
  ASSERT_TRUE(result.ok) << Describe(result);
  EXPECT_EQ(result.cipher, "AES128-GCM-SHA256");
  EXPECT_EQ(result.server_signature_type, NID_undef) << Describe(result);
}

TEST_F(Neverbleed, DigestSignEveryKeyType) {
  const std::string message = kMessage;
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
    for (int rsa_pss : rsa ? std::vector<int>{0, 1} : std::vector<int>{0}) {
      SCOPED_TRACE(rsa_pss);
      FinishedBytes signature;
      SignOnce(&nb_, pkey, md, message, rsa_pss, &signature);
      ASSERT_NE(signature.data, nullptr);
      ASSERT_NE(signature.length, 0u);
      EXPECT_TRUE(VerifySignature(public_key.get(), md, rsa_pss, message,
                                  signature.data, signature.length))
          << DrainOpenSslErrors();
    }
  }
}

TEST_F(Neverbleed, DigestSignDefaultsToSha256) {
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "p256");
  ASSERT_NE(ctx, nullptr);
  std::string error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  FinishedBytes signature;
  SignOnce(&nb_, SSL_CTX_get0_privatekey(ctx.get()), nullptr, kMessage, 0,
           &signature);
  ASSERT_NE(signature.data, nullptr);
  EXPECT_TRUE(VerifySignature(public_key.get(), EVP_sha256(), 0, kMessage,
                              signature.data, signature.length));
}

TEST_F(Neverbleed, DecryptRsa) {
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "rsa2048");
  ASSERT_NE(ctx, nullptr);
  std::string error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("rsa2048"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  const std::vector<unsigned char> plaintext(48, 0x5a);
  EVP_PKEY_CTX *encrypt = EVP_PKEY_CTX_new(public_key.get(), nullptr);
  ASSERT_NE(encrypt, nullptr);
  ASSERT_EQ(EVP_PKEY_encrypt_init(encrypt), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(encrypt, RSA_PKCS1_PADDING), 1);
  std::vector<unsigned char> ciphertext(EVP_PKEY_get_size(public_key.get()));
  size_t ciphertext_length = ciphertext.size();
  ASSERT_EQ(EVP_PKEY_encrypt(encrypt, ciphertext.data(), &ciphertext_length,
                             plaintext.data(), plaintext.size()),
            1);
  EVP_PKEY_CTX_free(encrypt);

  neverbleed_iobuf_t buf = {};
  neverbleed_start_decrypt(&buf, SSL_CTX_get0_privatekey(ctx.get()),
                           ciphertext.data(), ciphertext_length);
  RoundTrip(&nb_, &buf);
  FinishedBytes decrypted;
  neverbleed_finish_decrypt(&buf, &decrypted.data, &decrypted.length);
  ASSERT_NE(decrypted.data, nullptr);
  EXPECT_EQ(decrypted.bytes(), plaintext);
  EXPECT_EQ(buf.buf, nullptr) << "neverbleed_finish_decrypt keeps the buffer";
}

TEST_F(Neverbleed, SetuidgidToNobody) {
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "p256");
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(neverbleed_setuidgid(&nb_, "nobody", 1), 0);
  // Keys loaded before keep working after the cell drops privileges.
  FinishedBytes signature;
  SignOnce(&nb_, SSL_CTX_get0_privatekey(ctx.get()), EVP_sha256(), kMessage, 0,
           &signature);
  EXPECT_NE(signature.data, nullptr);
}

TEST_F(Neverbleed, GetFdIsPerThread) {
  int main_fd = neverbleed_get_fd(&nb_);
  ASSERT_GE(main_fd, 0);
  EXPECT_EQ(neverbleed_get_fd(&nb_), main_fd);
  int other_fd = -1;
  std::thread([&] { other_fd = neverbleed_get_fd(&nb_); }).join();
  EXPECT_GE(other_fd, 0);
  EXPECT_NE(other_fd, main_fd);
}

TEST_F(Neverbleed, SetaffinityPinsEveryCellThread) {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(0, &cpus);
  ASSERT_EQ(neverbleed_setaffinity(&nb_, &cpus), 0);

  std::string tasks = "/proc/" + std::to_string(nb_.daemon_pid) + "/task";
  DIR *directory = opendir(tasks.c_str());
  ASSERT_NE(directory, nullptr);
  int threads = 0;
  while (dirent *entry = readdir(directory)) {
    if (entry->d_name[0] == '.') {
      continue;
    }
    cpu_set_t pinned;
    CPU_ZERO(&pinned);
    pid_t tid = static_cast<pid_t>(std::atoi(entry->d_name));
    ASSERT_EQ(sched_getaffinity(tid, sizeof(pinned), &pinned), 0);
    EXPECT_TRUE(CPU_EQUAL(&pinned, &cpus)) << "thread " << tid;
    ++threads;
  }
  closedir(directory);
  EXPECT_GE(threads, 1);

  // The cell still serves requests on the one CPU.
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "ed448");
  ASSERT_NE(ctx, nullptr);
  FinishedBytes signature;
  SignOnce(&nb_, SSL_CTX_get0_privatekey(ctx.get()), nullptr, kMessage, 0,
           &signature);
  EXPECT_NE(signature.data, nullptr);
}

TEST_F(Neverbleed, SetaffinityRejectsBadArguments) {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(0, &cpus);
  neverbleed_t uninitialized = {};
  EXPECT_EQ(neverbleed_setaffinity(nullptr, &cpus), -1);
  EXPECT_EQ(neverbleed_setaffinity(&uninitialized, &cpus), -1);
  EXPECT_EQ(neverbleed_setaffinity(&nb_, nullptr), -1);
  // An empty set is invalid for sched_setaffinity.
  cpu_set_t empty;
  CPU_ZERO(&empty);
  EXPECT_EQ(neverbleed_setaffinity(&nb_, &empty), -1);
}

// The write end of a pipe that the post-fork callback writes one byte to.
int post_fork_pipe = -1;

void WriteToPostForkPipe(void) {
  char byte = 'f';
  (void)!write(post_fork_pipe, &byte, 1);
}

TEST(NeverbleedPostFork, CallbackRunsInCell) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  post_fork_pipe = pipe_fds[1];
  neverbleed_post_fork_cb = WriteToPostForkPipe;
  neverbleed_t nb;
  char errbuf[NEVERBLEED_ERRBUF_SIZE];
  int initialized = neverbleed_init(&nb, errbuf);
  neverbleed_post_fork_cb = nullptr;
  close(pipe_fds[1]);
  ASSERT_EQ(initialized, 0) << errbuf;

  pollfd readable{pipe_fds[0], POLLIN, 0};
  ASSERT_EQ(poll(&readable, 1, 10000), 1) << "the callback did not run";
  char byte = 0;
  EXPECT_EQ(read(pipe_fds[0], &byte, 1), 1);
  EXPECT_EQ(byte, 'f');
  close(pipe_fds[0]);
  // The callback ran in the cell, not in this process.
  EXPECT_NE(nb.daemon_pid, getpid());
}

// Failure values.

TEST(NeverbleedFailure, InitRejectsNull) {
  char errbuf[NEVERBLEED_ERRBUF_SIZE] = "";
  EXPECT_EQ(neverbleed_init(nullptr, errbuf), -1);
  EXPECT_NE(std::string(errbuf), "");
}

TEST(NeverbleedFailure, InitRejectsQatOffload) {
  for (neverbleed_offload_type offload :
       {NEVERBLEED_OFFLOAD_QAT_ON, NEVERBLEED_OFFLOAD_QAT_AUTO}) {
    neverbleed_offload = offload;
    neverbleed_t nb;
    char errbuf[NEVERBLEED_ERRBUF_SIZE] = "";
    EXPECT_EQ(neverbleed_init(&nb, errbuf), -1);
    EXPECT_NE(std::string(errbuf).find("QAT"), std::string::npos) << errbuf;
  }
  neverbleed_offload = NEVERBLEED_OFFLOAD_OFF;
}

TEST(NeverbleedFailure, UninitializedHandle) {
  neverbleed_t nb = {};
  char errbuf[NEVERBLEED_ERRBUF_SIZE] = "";
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  EXPECT_EQ(neverbleed_get_fd(&nb), -1);
  EXPECT_EQ(neverbleed_get_fd(nullptr), -1);
  EXPECT_EQ(neverbleed_load_private_key_file(&nb, ctx.get(),
                                             KeyPath("p256").c_str(), errbuf),
            -1);
  EXPECT_EQ(neverbleed_setuidgid(&nb, "nobody", 0), -1);
  neverbleed_iobuf_t buf = {};
  neverbleed_transaction_write(&nb, &buf);
  neverbleed_transaction_read(&nb, &buf);
  EXPECT_EQ(neverbleed_iobuf_size(&buf), 0u);
}

TEST_F(Neverbleed, LoadMissingFile) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  std::string path = DataPath("missing-key.pem");
  EXPECT_EQ(
      neverbleed_load_private_key_file(&nb_, ctx.get(), path.c_str(), errbuf_),
      -1);
  EXPECT_NE(std::string(errbuf_).find("missing-key.pem"), std::string::npos)
      << errbuf_;
  EXPECT_EQ(neverbleed_load_private_key_file(&nb_, nullptr,
                                             KeyPath("p256").c_str(), errbuf_),
            -1);
  EXPECT_EQ(neverbleed_load_private_key_file(&nb_, ctx.get(), nullptr, errbuf_),
            -1);
}

TEST_F(Neverbleed, LoadKeyNotMatchingCertificate) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  std::string error;
  ASSERT_TRUE(UseCertificateFile(ctx.get(), CertPath("rsa2048"), &error))
      << error;
  EXPECT_EQ(neverbleed_load_private_key_file(
                &nb_, ctx.get(), KeyPath("rsa3072").c_str(), errbuf_),
            0);
  EXPECT_NE(std::string(errbuf_).find("SSL_CTX_use_PrivateKey"),
            std::string::npos)
      << errbuf_;
}

TEST_F(Neverbleed, SetuidgidUnknownUser) {
  EXPECT_EQ(neverbleed_setuidgid(&nb_, "no-such-user-keycell", 0), -1);
  EXPECT_EQ(neverbleed_setuidgid(&nb_, nullptr, 0), -1);
  EXPECT_EQ(neverbleed_setuidgid(nullptr, "nobody", 0), -1);
}

TEST_F(Neverbleed, StartWithBadKeysFails) {
  std::string error;
  EvpPkeyPtr in_process = ReadPrivateKeyInProcess(KeyPath("p256"), &error);
  ASSERT_NE(in_process, nullptr) << error;
  SslCtxPtr ed_ctx = LoadServerContext(TlsSettings{}, "ed25519");
  ASSERT_NE(ed_ctx, nullptr);
  EVP_PKEY *ed25519 = SSL_CTX_get0_privatekey(ed_ctx.get());

  struct Case {
    const char *name;
    EVP_PKEY *pkey;
    const EVP_MD *md;
  };
  for (const Case &c : {Case{"NULL key", nullptr, EVP_sha256()},
                        Case{"in-process key", in_process.get(), EVP_sha256()},
                        Case{"EdDSA with a digest", ed25519, EVP_sha256()}}) {
    SCOPED_TRACE(c.name);
    FinishedBytes signature;
    SignOnce(&nb_, c.pkey, c.md, kMessage, 0, &signature);
    EXPECT_EQ(signature.data, nullptr);
    EXPECT_EQ(signature.length, 0u);
  }
  for (EVP_PKEY *pkey :
       {static_cast<EVP_PKEY *>(nullptr), in_process.get(), ed25519}) {
    neverbleed_iobuf_t buf = {};
    const unsigned char ciphertext[256] = {1};
    neverbleed_start_decrypt(&buf, pkey, ciphertext, sizeof(ciphertext));
    RoundTrip(&nb_, &buf);
    FinishedBytes decrypted;
    neverbleed_finish_decrypt(&buf, &decrypted.data, &decrypted.length);
    EXPECT_EQ(decrypted.data, nullptr);
    EXPECT_EQ(decrypted.length, 0u);
  }
  // The connection stays in step: a valid request still gets its reply.
  FinishedBytes signature;
  SignOnce(&nb_, ed25519, nullptr, kMessage, 0, &signature);
  EXPECT_NE(signature.data, nullptr);
}

TEST_F(Neverbleed, FinishWithoutReplyFails) {
  neverbleed_iobuf_t buf = {};
  FinishedBytes output;
  output.data = std::malloc(1);
  std::free(output.data);
  neverbleed_finish_digestsign(&buf, &output.data, &output.length);
  EXPECT_EQ(output.data, nullptr);
  EXPECT_EQ(output.length, 0u);
  neverbleed_finish_decrypt(nullptr, &output.data, &output.length);
  EXPECT_EQ(output.data, nullptr);
}

// The cell replies to a size prefix that disagrees with the frame, or exceeds
// the maximum frame, with an error and closes the connection.
TEST_F(Neverbleed, InvalidSizePrefixClosesConnection) {
  ScopedAlarm alarm(60, "the cell keeps a connection with an invalid prefix");
  for (size_t prefix : {size_t{5}, size_t{64}, ~size_t{0}}) {
    SCOPED_TRACE(prefix);
    // A new thread gets a connection of its own.
    std::thread([&] {
      int fd = neverbleed_get_fd(&nb_);
      ASSERT_GE(fd, 0);
      neverbleed_iobuf_t request = {};
      neverbleed_start_digestsign(&request, nullptr, nullptr, "", 0, 0);
      size_t size = neverbleed_iobuf_size(&request);
      ASSERT_NE(size, prefix);
      // The cell may close the connection as soon as it reads the prefix,
      // so the prefix and the bytes after it go out in one send.
      std::string bytes(reinterpret_cast<const char *>(&prefix),
                        sizeof(prefix));
      bytes.append(request.start, size);
      neverbleed_iobuf_dispose(&request);
      // A prefix of 64 waits for more bytes than the frame has.
      if (prefix == 64) {
        bytes.append(64 - size, '\0');
      }
      ASSERT_GT(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), 0);
      neverbleed_iobuf_t reply = {};
      neverbleed_transaction_read(&nb_, &reply);
      ASSERT_GE(neverbleed_iobuf_size(&reply), 16u);
      uint16_t status = static_cast<uint16_t>(
          (static_cast<unsigned char>(reply.start[6]) << 8) |
          static_cast<unsigned char>(reply.start[7]));
      EXPECT_NE(status, 0) << "the reply is not an error";
      neverbleed_iobuf_dispose(&reply);
      char byte;
      EXPECT_LE(recv(fd, &byte, 1, 0), 0) << "the connection stays open";
    }).join();
  }
  // Other connections are unaffected.
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "p384");
  ASSERT_NE(ctx, nullptr);
  FinishedBytes signature;
  SignOnce(&nb_, SSL_CTX_get0_privatekey(ctx.get()), EVP_sha384(), kMessage, 0,
           &signature);
  EXPECT_NE(signature.data, nullptr);
}

// Forks and process death.

TEST_F(Neverbleed, ForkedChildGetsItsOwnDescriptor) {
  SslCtxPtr ctx = LoadServerContext(TlsSettings{}, "p256");
  ASSERT_NE(ctx, nullptr);
  EVP_PKEY *pkey = SSL_CTX_get0_privatekey(ctx.get());
  int parent_fd = neverbleed_get_fd(&nb_);
  ASSERT_GE(parent_fd, 0);

  // This child leaves a request half written and exits.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = neverbleed_get_fd(&nb_);
    size_t size = 4096;
    bool wrote = fd >= 0 && WriteAll(fd, &size, sizeof(size)) &&
                 WriteAll(fd, "partial", 7);
    _exit(wrote ? 0 : 1);
  }
  EXPECT_EQ(WaitForChild(pid), "exit status 0");

  // This child signs through a descriptor of its own.
  pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FinishedBytes signature;
    SignOnce(&nb_, pkey, EVP_sha256(), kMessage, 0, &signature);
    _exit(signature.data != nullptr ? 0 : 1);
  }
  EXPECT_EQ(WaitForChild(pid), "exit status 0");

  EXPECT_EQ(neverbleed_get_fd(&nb_), parent_fd);
  FinishedBytes signature;
  SignOnce(&nb_, pkey, EVP_sha256(), kMessage, 0, &signature);
  EXPECT_NE(signature.data, nullptr);
}

TEST_F(Neverbleed, DeadCellFailsEveryOperation) {
  ScopedAlarm alarm(60, "operations on a dead cell hang");
  SslCtxPtr server = LoadServerContext(TlsSettings{}, "rsa2048");
  ASSERT_NE(server, nullptr);
  EVP_PKEY *pkey = SSL_CTX_get0_privatekey(server.get());
  ASSERT_GE(neverbleed_get_fd(&nb_), 0);

  ASSERT_EQ(kill(nb_.daemon_pid, SIGKILL), 0);
  ASSERT_EQ(waitpid(nb_.daemon_pid, nullptr, 0), nb_.daemon_pid);

  FinishedBytes signature;
  SignOnce(&nb_, pkey, EVP_sha256(), kMessage, 0, &signature);
  EXPECT_EQ(signature.data, nullptr);
  EXPECT_EQ(signature.length, 0u);

  std::string error;
  SslCtxPtr client =
      NewClientContext(TlsSettings{}, {CertPath("rsa2048")}, &error);
  ASSERT_NE(client, nullptr) << error;
  HandshakeResult result = RunHandshake(server.get(), client.get());
  EXPECT_FALSE(result.ok);

  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  EXPECT_EQ(neverbleed_load_private_key_file(&nb_, ctx.get(),
                                             KeyPath("p256").c_str(), errbuf_),
            -1);
  EXPECT_NE(std::string(errbuf_), "");
  EXPECT_EQ(neverbleed_setuidgid(&nb_, "nobody", 0), -1);
  int other_fd = 0;
  std::thread([&] { other_fd = neverbleed_get_fd(&nb_); }).join();
  EXPECT_EQ(other_fd, -1);
}

// A TLS server that uses only neverbleed.h and OpenSSL, in the order
// neverbleed's documentation shows: neverbleed_init, the certificate, the
// key through neverbleed_load_private_key_file, then dropping the cell's
// privileges. Returns the number of failures.
int RunNeverbleedServer() {
  neverbleed_t nb;
  char errbuf[NEVERBLEED_ERRBUF_SIZE];
  if (neverbleed_init(&nb, errbuf) != 0) {
    std::fprintf(stderr, "neverbleed_init failed: %s\n", errbuf);
    return 1;
  }
  std::vector<SslCtxPtr> contexts;
  int failures = 0;
  for (const NeverbleedKey &key : NeverbleedKeys()) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (ctx == nullptr ||
        SSL_CTX_use_certificate_chain_file(ctx.get(),
                                           CertPath(key.name).c_str()) != 1 ||
        neverbleed_load_private_key_file(
            &nb, ctx.get(), KeyPath(key.name).c_str(), errbuf) != 1) {
      std::fprintf(stderr, "%s: loading failed: %s\n", key.name, errbuf);
      ++failures;
    }
    contexts.push_back(std::move(ctx));
  }
  if (neverbleed_setuidgid(&nb, "nobody", 1) != 0) {
    std::fprintf(stderr, "neverbleed_setuidgid failed\n");
    ++failures;
  }
  for (size_t i = 0; i < contexts.size(); ++i) {
    const char *name = NeverbleedKeys()[i].name;
    std::string error;
    SslCtxPtr client =
        NewClientContext(TlsSettings{}, {CertPath(name)}, &error);
    if (contexts[i] == nullptr || client == nullptr) {
      ++failures;
      continue;
    }
    HandshakeResult result = RunHandshake(contexts[i].get(), client.get());
    if (!result.ok || result.verify_result != X509_V_OK) {
      std::fprintf(stderr, "%s: %s\n", name, Describe(result).c_str());
      ++failures;
    }
  }
  return failures;
}

TEST(NeverbleedServer, ForkedServerDropsToNobody) {
  ScopedAlarm alarm(100, "the forked neverbleed server hangs");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    _exit(RunNeverbleedServer() == 0 ? 0 : 1);
  }
  EXPECT_EQ(WaitForChild(pid), "exit status 0");
}

}  // namespace
}  // namespace keycell_test
