// The start/finish C API for event loops that do not use OpenSSL's ASYNC
// jobs: many operations in flight from one thread, completed in any order.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

constexpr int kInFlight = Iterations(48, 12);

struct OperationDeleter {
  void operator()(keycell_operation *operation) const {
    keycell_operation_free(operation);
  }
};
using OperationPtr = std::unique_ptr<keycell_operation, OperationDeleter>;

// Waits until every operation's descriptor is readable.
bool WaitForAll(const std::vector<OperationPtr> &operations) {
  std::vector<pollfd> waits;
  for (const OperationPtr &operation : operations) {
    waits.push_back({keycell_operation_fd(operation.get()), POLLIN, 0});
  }
  for (pollfd &wait : waits) {
    while (wait.revents == 0) {
      int ready = poll(&wait, 1, 30000);
      if (ready == 0) {
        return false;
      }
    }
  }
  return true;
}

bool Verify(EVP_PKEY *public_key, const char *digest, int padding,
            const std::string &message, const std::vector<unsigned char> &sig) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                              EVP_MD_CTX_free);
  EVP_PKEY_CTX *pctx = nullptr;
  if (EVP_DigestVerifyInit_ex(ctx.get(), &pctx, digest, nullptr, nullptr,
                              public_key, nullptr) != 1) {
    return false;
  }
  if (padding == RSA_PKCS1_PSS_PADDING &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, padding) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    return false;
  }
  return EVP_DigestVerify(
             ctx.get(), sig.data(), sig.size(),
             reinterpret_cast<const unsigned char *>(message.data()),
             message.size()) == 1;
}

struct SignCase {
  const char *key;
  const char *digest;
  int padding;
};

class AsyncApi : public ::testing::Test {
 protected:
  void SetUp() override {
    cell_ = StartCell(nullptr, &error_);
    ASSERT_NE(cell_, nullptr) << error_;
  }

  CellPtr cell_;
  std::string error_;
  char err_[KEYCELL_ERROR_SIZE] = {};
};

TEST_F(AsyncApi, SignManyInFlight) {
  const SignCase cases[] = {
      {"rsa2048", "SHA256", 0}, {"rsa2048", "SHA384", RSA_PKCS1_PSS_PADDING},
      {"p256", "SHA256", 0},    {"p384", "SHA384", 0},
      {"ed25519", nullptr, 0},  {"ed448", nullptr, 0},
  };
  for (const SignCase &sign_case : cases) {
    SCOPED_TRACE(sign_case.key);
    EvpPkeyPtr key =
        LoadCellKey(cell_.get(), KeyPath(sign_case.key), nullptr, &error_);
    ASSERT_NE(key, nullptr) << error_;
    EvpPkeyPtr public_key =
        ReadCertificatePublicKey(CertPath(sign_case.key), &error_);
    ASSERT_NE(public_key, nullptr) << error_;

    std::vector<std::string> messages;
    std::vector<OperationPtr> operations;
    for (int i = 0; i < kInFlight; ++i) {
      messages.push_back("message number " + std::to_string(i));
      const std::string &message = messages.back();
      operations.emplace_back(keycell_sign_start(
          key.get(), sign_case.digest, sign_case.padding,
          reinterpret_cast<const unsigned char *>(message.data()),
          message.size(), err_, sizeof(err_)));
      ASSERT_NE(operations.back(), nullptr) << err_;
    }
    ASSERT_TRUE(WaitForAll(operations));

    for (int i = 0; i < kInFlight; ++i) {
      std::vector<unsigned char> signature(EVP_PKEY_get_size(key.get()));
      size_t length = signature.size();
      ASSERT_EQ(keycell_operation_finish(operations[i].get(), signature.data(),
                                         &length, err_, sizeof(err_)),
                1)
          << err_;
      signature.resize(length);
      EXPECT_TRUE(Verify(public_key.get(), sign_case.digest, sign_case.padding,
                         messages[i], signature))
          << "signature " << i << " does not verify";
    }
  }
}

TEST_F(AsyncApi, DecryptInFlight) {
  KeyOptionsPtr options = NewDecryptionKeyOptions();
  EvpPkeyPtr key =
      LoadCellKey(cell_.get(), KeyPath("rsa2048"), options.get(), &error_);
  ASSERT_NE(key, nullptr) << error_;
  EvpPkeyPtr public_key =
      ReadCertificatePublicKey(CertPath("rsa2048"), &error_);
  ASSERT_NE(public_key, nullptr) << error_;

  std::vector<std::vector<unsigned char>> plaintexts;
  std::vector<int> paddings;
  std::vector<OperationPtr> operations;
  for (int i = 0; i < kInFlight; ++i) {
    int padding = i % 2 == 0 ? RSA_PKCS1_PADDING : RSA_PKCS1_OAEP_PADDING;
    std::vector<unsigned char> plaintext(32, static_cast<unsigned char>(i));
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
        EVP_PKEY_CTX_new_from_pkey(nullptr, public_key.get(), nullptr),
        EVP_PKEY_CTX_free);
    ASSERT_EQ(EVP_PKEY_encrypt_init(ctx.get()), 1);
    ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), padding), 1);
    std::vector<unsigned char> ciphertext(256);
    size_t length = ciphertext.size();
    ASSERT_EQ(EVP_PKEY_encrypt(ctx.get(), ciphertext.data(), &length,
                               plaintext.data(), plaintext.size()),
              1);
    operations.emplace_back(keycell_decrypt_start(
        key.get(), padding, ciphertext.data(), length, err_, sizeof(err_)));
    ASSERT_NE(operations.back(), nullptr) << err_;
    plaintexts.push_back(plaintext);
  }
  ASSERT_TRUE(WaitForAll(operations));
  for (int i = 0; i < kInFlight; ++i) {
    std::vector<unsigned char> out(256);
    size_t length = out.size();
    ASSERT_EQ(keycell_operation_finish(operations[i].get(), out.data(), &length,
                                       err_, sizeof(err_)),
              1)
        << err_;
    out.resize(length);
    EXPECT_EQ(out, plaintexts[i]) << "decryption " << i;
  }
}

TEST_F(AsyncApi, DecryptRejectedWithoutPermission) {
  EvpPkeyPtr key =
      LoadCellKey(cell_.get(), KeyPath("rsa2048"), nullptr, &error_);
  ASSERT_NE(key, nullptr) << error_;
  std::vector<unsigned char> ciphertext(256, 1);
  OperationPtr operation(
      keycell_decrypt_start(key.get(), RSA_PKCS1_PADDING, ciphertext.data(),
                            ciphertext.size(), err_, sizeof(err_)));
  ASSERT_NE(operation, nullptr) << err_;
  std::vector<OperationPtr> one;
  one.push_back(std::move(operation));
  ASSERT_TRUE(WaitForAll(one));
  std::vector<unsigned char> out(256);
  size_t length = out.size();
  EXPECT_EQ(keycell_operation_finish(one[0].get(), out.data(), &length, err_,
                                     sizeof(err_)),
            0);
  EXPECT_NE(std::string(err_).find("does not allow RSA decryption"),
            std::string::npos)
      << err_;
}

TEST_F(AsyncApi, FinishBeforeCompletion) {
  EvpPkeyPtr key = LoadCellKey(cell_.get(), KeyPath("p256"), nullptr, &error_);
  ASSERT_NE(key, nullptr) << error_;
  pid_t cell_pid = keycell_cell_pid(cell_.get());
  ASSERT_TRUE(StopProcess(cell_pid));
  const unsigned char message[] = "stopped";
  OperationPtr operation(keycell_sign_start(
      key.get(), "SHA256", 0, message, sizeof(message), err_, sizeof(err_)));
  std::vector<unsigned char> signature(EVP_PKEY_get_size(key.get()));
  size_t length = signature.size();
  int early = operation == nullptr
                  ? 0
                  : keycell_operation_finish(operation.get(), signature.data(),
                                             &length, err_, sizeof(err_));
  ASSERT_EQ(kill(cell_pid, SIGCONT), 0);
  ASSERT_NE(operation, nullptr) << err_;
  EXPECT_EQ(early, -1);
  EXPECT_EQ(length, signature.size()) << "nothing is written before the end";

  std::vector<OperationPtr> one;
  one.push_back(std::move(operation));
  ASSERT_TRUE(WaitForAll(one));
  EXPECT_EQ(keycell_operation_finish(one[0].get(), signature.data(), &length,
                                     err_, sizeof(err_)),
            1)
      << err_;
}

TEST_F(AsyncApi, CellDeathFailsPending) {
  ScopedAlarm watchdog(60, "AsyncApi.CellDeathFailsPending did not finish");
  EvpPkeyPtr key =
      LoadCellKey(cell_.get(), KeyPath("rsa4096"), nullptr, &error_);
  ASSERT_NE(key, nullptr) << error_;
  pid_t cell_pid = keycell_cell_pid(cell_.get());
  ASSERT_TRUE(StopProcess(cell_pid));
  std::vector<OperationPtr> operations;
  const unsigned char message[] = "never signed";
  for (int i = 0; i < 8; ++i) {
    operations.emplace_back(keycell_sign_start(
        key.get(), "SHA256", 0, message, sizeof(message), err_, sizeof(err_)));
    ASSERT_NE(operations.back(), nullptr) << err_;
  }
  ASSERT_EQ(kill(cell_pid, SIGKILL), 0);
  ASSERT_TRUE(WaitForAll(operations));
  for (const OperationPtr &operation : operations) {
    std::vector<unsigned char> signature(EVP_PKEY_get_size(key.get()));
    size_t length = signature.size();
    EXPECT_EQ(keycell_operation_finish(operation.get(), signature.data(),
                                       &length, err_, sizeof(err_)),
              0);
    EXPECT_NE(std::string(err_).find("cell process is not running"),
              std::string::npos)
        << err_;
  }
  EXPECT_EQ(keycell_sign_start(key.get(), "SHA256", 0, message, sizeof(message),
                               err_, sizeof(err_)),
            nullptr);
}

// Requests pipelined on one connection run on different workers, so a
// quick signature overtakes a slow one sent before it.
TEST(AsyncApiOrder, QuickSignatureOvertakesSlowOne) {
  std::string error;
  std::unique_ptr<keycell_options, decltype(&keycell_options_free)> options(
      keycell_options_new(), keycell_options_free);
  ASSERT_NE(options, nullptr);
  ASSERT_EQ(keycell_options_set_workers(options.get(), 4), 1);
  CellPtr cell = StartCell(options.get(), &error);
  ASSERT_NE(cell, nullptr) << error;
  EvpPkeyPtr slow_key =
      LoadCellKey(cell.get(), KeyPath("rsa8192"), nullptr, &error);
  ASSERT_NE(slow_key, nullptr) << error;
  EvpPkeyPtr quick_key =
      LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(quick_key, nullptr) << error;

  char err[KEYCELL_ERROR_SIZE] = {};
  const unsigned char message[] = "order";
  std::vector<OperationPtr> slow;
  for (int i = 0; i < 3; ++i) {
    slow.emplace_back(keycell_sign_start(slow_key.get(), "SHA256", 0, message,
                                         sizeof(message), err, sizeof(err)));
    ASSERT_NE(slow.back(), nullptr) << err;
  }
  std::vector<OperationPtr> quick;
  quick.emplace_back(keycell_sign_start(quick_key.get(), "SHA256", 0, message,
                                        sizeof(message), err, sizeof(err)));
  ASSERT_NE(quick.back(), nullptr) << err;

  ASSERT_TRUE(WaitForAll(quick));
  // Three RSA-8192 signatures take far longer than one P-256 signature, so
  // at least the last of them is still running.
  pollfd last{keycell_operation_fd(slow.back().get()), POLLIN, 0};
  EXPECT_EQ(poll(&last, 1, 0), 0)
      << "the P-256 signature waited for the RSA-8192 ones sent before it";
  ASSERT_TRUE(WaitForAll(slow));
}

TEST_F(AsyncApi, InvalidArguments) {
  EvpPkeyPtr cell_key =
      LoadCellKey(cell_.get(), KeyPath("p256"), nullptr, &error_);
  ASSERT_NE(cell_key, nullptr) << error_;
  EvpPkeyPtr ed_key =
      LoadCellKey(cell_.get(), KeyPath("ed25519"), nullptr, &error_);
  ASSERT_NE(ed_key, nullptr) << error_;
  EvpPkeyPtr ordinary = ReadPrivateKeyInProcess(KeyPath("p256"), &error_);
  ASSERT_NE(ordinary, nullptr) << error_;
  const unsigned char message[] = "m";

  EXPECT_EQ(
      keycell_sign_start(nullptr, "SHA256", 0, message, 1, err_, sizeof(err_)),
      nullptr);
  EXPECT_NE(std::string(err_).find("NULL"), std::string::npos) << err_;

  EXPECT_EQ(keycell_sign_start(ordinary.get(), "SHA256", 0, message, 1, err_,
                               sizeof(err_)),
            nullptr);
  EXPECT_NE(std::string(err_).find("not a private key served by a cell"),
            std::string::npos)
      << err_;

  EXPECT_EQ(keycell_sign_start(ed_key.get(), "SHA256", 0, message, 1, err_,
                               sizeof(err_)),
            nullptr);
  EXPECT_NE(std::string(err_).find("no digest"), std::string::npos) << err_;

  EXPECT_EQ(keycell_sign_start(cell_key.get(), nullptr, 0, message, 1, err_,
                               sizeof(err_)),
            nullptr);
  EXPECT_NE(std::string(err_).find("need a digest"), std::string::npos) << err_;

  EXPECT_EQ(keycell_sign_start(cell_key.get(), "SHA256", RSA_PKCS1_PSS_PADDING,
                               message, 1, err_, sizeof(err_)),
            nullptr);
  EXPECT_NE(std::string(err_).find("invalid padding"), std::string::npos)
      << err_;

  EXPECT_EQ(keycell_sign_start(cell_key.get(), "NO-SUCH-DIGEST", 0, message, 1,
                               err_, sizeof(err_)),
            nullptr);
  EXPECT_NE(std::string(err_).find("unknown digest"), std::string::npos)
      << err_;

  EXPECT_EQ(keycell_decrypt_start(cell_key.get(), RSA_NO_PADDING, message, 1,
                                  err_, sizeof(err_)),
            nullptr);
  EXPECT_NE(std::string(err_).find("invalid padding"), std::string::npos)
      << err_;

  EXPECT_EQ(keycell_operation_fd(nullptr), -1);
  size_t length = 0;
  EXPECT_EQ(
      keycell_operation_finish(nullptr, nullptr, &length, err_, sizeof(err_)),
      0);
  keycell_operation_free(nullptr);

  OperationPtr operation(keycell_sign_start(cell_key.get(), "SHA256", 0,
                                            message, 1, err_, sizeof(err_)));
  ASSERT_NE(operation, nullptr) << err_;
  std::vector<OperationPtr> one;
  one.push_back(std::move(operation));
  ASSERT_TRUE(WaitForAll(one));
  unsigned char small[8];
  length = sizeof(small);
  EXPECT_EQ(keycell_operation_finish(one[0].get(), small, &length, err_,
                                     sizeof(err_)),
            0);
  EXPECT_NE(std::string(err_).find("has room for 8 bytes"), std::string::npos)
      << err_;
}

}  // namespace
}  // namespace keycell_test
