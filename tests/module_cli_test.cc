// keycell.so loaded by the openssl command through openssl.cnf: reading
// reference files and keycell: URIs with `openssl pkey`, and TLS handshakes
// of `openssl s_server` with reference keys, against a fake keycelld.
#include <gtest/gtest.h>

#include <string>

#include "module_test_util.h"
#include "test_util.h"

namespace keycell_test {
namespace {

class ModuleCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(dir_.path(), "");
    daemon_ = std::make_unique<FakeDaemon>(dir_.File("keycelld.sock"));
    for (const char *name : {"rsa2048", "p256", "ed25519"}) {
      std::string error;
      EvpPkeyPtr key = ReadPrivateKeyInProcess(KeyPath(name), &error);
      ASSERT_NE(key, nullptr) << error;
      daemon_->AddKey(name, key.get());
      ASSERT_TRUE(WriteReferenceFile(Reference(name), daemon_->socket_path(),
                                     name, key.get(), &error))
          << error;
    }
    std::string error;
    ASSERT_TRUE(daemon_->Start(&error)) << error;
    ASSERT_TRUE(WriteModuleConfig(config_));
  }

  std::string Reference(const std::string &name) const {
    return dir_.File(name + "-ref.pem");
  }

  // Returns the PEM public key that `openssl pkey -pubout` writes for |in|.
  std::string PublicKey(const std::string &in, const std::string &config,
                        std::string *status) {
    std::string output;
    *status = RunOpenssl({"pkey", "-in", in, "-pubout"}, config, &output);
    return output;
  }

  TempDir dir_;
  std::string config_ = dir_.File("openssl.cnf");
  std::unique_ptr<FakeDaemon> daemon_;
};

TEST_F(ModuleCliTest, PkeyPuboutReadsReference) {
  for (const char *name : {"rsa2048", "p256", "ed25519"}) {
    SCOPED_TRACE(name);
    std::string status;
    std::string expected = PublicKey(KeyPath(name), "", &status);
    ASSERT_EQ(status, "exit status 0") << expected;
    std::string actual = PublicKey(Reference(name), config_, &status);
    EXPECT_EQ(status, "exit status 0") << actual;
    EXPECT_EQ(actual, expected);
  }
}

TEST_F(ModuleCliTest, PkeyPuboutReadsKeycellUri) {
  std::string status;
  std::string expected = PublicKey(KeyPath("p256"), "", &status);
  ASSERT_EQ(status, "exit status 0") << expected;
  std::string actual = PublicKey(
      "keycell:p256?socket=" + daemon_->socket_path(), config_, &status);
  EXPECT_EQ(status, "exit status 0") << actual;
  EXPECT_EQ(actual, expected);
}

TEST_F(ModuleCliTest, PkeyWithoutModuleFailsClearly) {
  std::string config = dir_.File("default-only.cnf");
  std::string text =
      "openssl_conf = openssl_init\n[openssl_init]\nproviders = "
      "provider_sect\n[provider_sect]\ndefault = default_sect\n"
      "[default_sect]\nactivate = 1\n";
  std::string error;
  ASSERT_TRUE(WriteFile(config, text.data(), text.size(), &error)) << error;
  std::string status;
  std::string output = PublicKey(Reference("p256"), config, &status);
  EXPECT_EQ(status, "exit status 1") << output;
  EXPECT_NE(output.find("Could not read key"), std::string::npos) << output;
}

TEST_F(ModuleCliTest, SServerHandshakesWithReferenceKeys) {
  for (const char *name : {"rsa2048", "p256", "ed25519"}) {
    for (const char *version : {"-tls1_2", "-tls1_3"}) {
      ExpectHandshake(config_, name, Reference(name), version);
    }
  }
  EXPECT_GE(daemon_->sign_requests(), 6);
}

TEST_F(ModuleCliTest, SServerHandshakesWithKeycellUri) {
  ExpectHandshake(config_, "p256",
                  "keycell:p256?socket=" + daemon_->socket_path(), "-tls1_3");
  EXPECT_GE(daemon_->sign_requests(), 1);
}

}  // namespace
}  // namespace keycell_test
