// Installs the build tree to a temporary prefix, compiles a small TLS server
// against the installed neverbleed.h with the flags from
// `pkg-config --cflags --libs keycell-neverbleed`, and runs it: the server
// loads a key of every type through neverbleed, drops the key process to
// nobody and completes a verified handshake with each.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

const char kProgram[] = R"(#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <neverbleed.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* A TLS server written the way neverbleed's documentation shows: init,
 * load the key file in place of SSL_CTX_use_PrivateKey_file, setuidgid.
 * Arguments: USER, then pairs of certificate and key files. For each pair
 * it runs one handshake with a client in this process that verifies the
 * server against that certificate. */

struct server_job {
  SSL_CTX *ctx;
  int fd;
  int ok;
};

static void *serve(void *arg) {
  struct server_job *job = arg;
  SSL *ssl = SSL_new(job->ctx);
  SSL_set_fd(ssl, job->fd);
  job->ok = SSL_accept(ssl) == 1 && SSL_write(ssl, "x", 1) == 1;
  SSL_free(ssl);
  return NULL;
}

static int handshake(SSL_CTX *server_ctx, const char *cert) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    return 0;
  }
  struct server_job job = {server_ctx, fds[0], 0};
  pthread_t thread;
  pthread_create(&thread, NULL, serve, &job);

  SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(client_ctx, cert, NULL);
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, NULL);
  SSL *ssl = SSL_new(client_ctx);
  SSL_set_fd(ssl, fds[1]);
  SSL_set1_host(ssl, "localhost");
  char byte;
  int ok = SSL_connect(ssl) == 1 && SSL_read(ssl, &byte, 1) == 1 &&
           SSL_get_verify_result(ssl) == X509_V_OK;
  SSL_free(ssl);
  SSL_CTX_free(client_ctx);
  pthread_join(thread, NULL);
  close(fds[0]);
  close(fds[1]);
  return ok && job.ok;
}

int main(int argc, char **argv) {
  neverbleed_t nb;
  char errbuf[NEVERBLEED_ERRBUF_SIZE];
  if (argc < 4 || argc % 2 != 0) {
    fprintf(stderr, "usage: %s USER CERT KEY [CERT KEY]...\n", argv[0]);
    return 2;
  }
  if (neverbleed_init(&nb, errbuf) != 0) {
    fprintf(stderr, "neverbleed_init: %s\n", errbuf);
    return 1;
  }
  SSL_CTX *ctxs[16];
  int count = 0;
  for (int i = 2; i + 1 < argc && count < 16; i += 2, count++) {
    ctxs[count] = SSL_CTX_new(TLS_server_method());
    if (SSL_CTX_use_certificate_chain_file(ctxs[count], argv[i]) != 1 ||
        neverbleed_load_private_key_file(&nb, ctxs[count], argv[i + 1],
                                         errbuf) != 1) {
      fprintf(stderr, "%s: %s\n", argv[i + 1], errbuf);
      return 1;
    }
  }
  if (neverbleed_setuidgid(&nb, argv[1], 1) != 0) {
    fprintf(stderr, "neverbleed_setuidgid failed\n");
    return 1;
  }
  for (int i = 0; i < count; i++) {
    if (!handshake(ctxs[i], argv[2 + 2 * i])) {
      fprintf(stderr, "handshake with %s failed\n", argv[3 + 2 * i]);
      ERR_print_errors_fp(stderr);
      return 1;
    }
    printf("verified %s\n", argv[3 + 2 * i]);
    SSL_CTX_free(ctxs[i]);
  }
  return 0;
}
)";

// Runs |command| through the shell and returns its exit status, with its
// output in |output|.
int RunCommand(const std::string &command, std::string *output) {
  output->clear();
  FILE *pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return -1;
  }
  char chunk[4096];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), pipe)) > 0) {
    output->append(chunk, n);
  }
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(NeverbleedPackage, CompilesAgainstInstalledPrefix) {
  TempDir dir;
  ASSERT_NE(dir.path(), "");
  std::string prefix = dir.File("prefix");
  std::string output;
  ASSERT_EQ(
      RunCommand(std::string("'") + KEYCELL_CMAKE_COMMAND + "' --install '" +
                     KEYCELL_BUILD_DIR + "' --prefix '" + prefix +
                     "' --component Unspecified",
                 &output),
      0)
      << output;

  std::string source = dir.File("program.c");
  std::string error;
  ASSERT_TRUE(WriteFile(source, kProgram, sizeof(kProgram) - 1, &error))
      << error;
  std::string libdir = prefix + "/" + KEYCELL_INSTALL_LIBDIR;
  std::string environment = "PKG_CONFIG_PATH='" + libdir + "/pkgconfig' ";
  std::string program = dir.File("program");
  ASSERT_EQ(RunCommand(environment +
                           "sh -c 'cc -std=c11 -Wall -Werror -pthread -o \"" +
                           program + "\" \"" + source +
                           "\" $(pkg-config --cflags --libs "
                           "keycell-neverbleed)'",
                       &output),
            0)
      << output;

  const char *kKeyNames[] = {"rsa2048", "rsa4096", "p256", "p384",
                             "p521",    "ed25519", "ed448"};
  std::string arguments = "nobody";
  std::string expected;
  for (const char *name : kKeyNames) {
    arguments += " '" + CertPath(name) + "' '" + KeyPath(name) + "'";
    expected += "verified " + KeyPath(name) + "\n";
  }
  ASSERT_EQ(RunCommand("LD_LIBRARY_PATH='" + libdir + "' '" + program + "' " +
                           arguments,
                       &output),
            0)
      << output;
  EXPECT_EQ(output, expected);
}

}  // namespace
}  // namespace keycell_test
