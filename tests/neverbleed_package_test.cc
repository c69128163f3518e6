// Installs the build tree to a temporary prefix, compiles a C program
// against the installed neverbleed.h with the flags from
// `pkg-config --cflags --libs keycell-neverbleed`, and runs it: the program
// loads a key, signs through the asynchronous interface and verifies the
// signature.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

const char kProgram[] = R"(#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <neverbleed.h>
#include <openssl/pem.h>

int main(int argc, char **argv) {
  neverbleed_t nb;
  char errbuf[NEVERBLEED_ERRBUF_SIZE];
  if (argc != 3 || neverbleed_init(&nb, errbuf) != 0) {
    fprintf(stderr, "neverbleed_init failed\n");
    return 1;
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1 ||
      neverbleed_load_private_key_file(&nb, ctx, argv[2], errbuf) != 1) {
    fprintf(stderr, "loading failed: %s\n", errbuf);
    return 1;
  }
  static const char message[] = "installed package";
  neverbleed_iobuf_t buf;
  memset(&buf, 0, sizeof(buf));
  neverbleed_start_digestsign(&buf, SSL_CTX_get0_privatekey(ctx), EVP_sha256(),
                              message, sizeof(message), 0);
  neverbleed_transaction_write(&nb, &buf);
  neverbleed_transaction_read(&nb, &buf);
  void *signature;
  size_t signature_length;
  neverbleed_finish_digestsign(&buf, &signature, &signature_length);
  if (signature == NULL) {
    fprintf(stderr, "signing failed\n");
    return 1;
  }
  EVP_PKEY *public_key = X509_get0_pubkey(SSL_CTX_get0_certificate(ctx));
  EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();
  int verified =
      EVP_DigestVerifyInit(md_ctx, NULL, EVP_sha256(), NULL, public_key) == 1 &&
      EVP_DigestVerify(md_ctx, signature, signature_length,
                       (const unsigned char *)message, sizeof(message)) == 1;
  EVP_MD_CTX_free(md_ctx);
  free(signature);
  SSL_CTX_free(ctx);
  if (!verified) {
    fprintf(stderr, "the signature does not verify\n");
    return 1;
  }
  printf("verified\n");
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
  if (kSanitizerBuild) {
    GTEST_SKIP() << "a sanitizer build installs instrumented libraries, which "
                    "an uninstrumented C program cannot load";
  }
  TempDir dir;
  ASSERT_NE(dir.path(), "");
  std::string prefix = dir.File("prefix");
  std::string output;
  ASSERT_EQ(
      RunCommand(std::string("'") + KEYCELL_CMAKE_COMMAND + "' --install '" +
                     KEYCELL_BUILD_DIR + "' --prefix '" + prefix + "'",
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
  ASSERT_EQ(RunCommand(environment + "sh -c 'cc -std=c11 -Wall -Werror -o \"" +
                           program + "\" \"" + source +
                           "\" $(pkg-config --cflags --libs "
                           "keycell-neverbleed)'",
                       &output),
            0)
      << output;

  ASSERT_EQ(RunCommand("LD_LIBRARY_PATH='" + libdir + "' '" + program + "' '" +
                           CertPath("p256") + "' '" + KeyPath("p256") + "'",
                       &output),
            0)
      << output;
  EXPECT_EQ(output, "verified\n");
}

}  // namespace
}  // namespace keycell_test
