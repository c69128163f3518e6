// Key file formats that keycell reads, the errors for bad inputs, and the
// API's handling of NULL and invalid arguments.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// How a test supplies the passphrase of an encrypted key.
enum class Passphrase { kNone, kFile, kCallback };

// Passphrase callback whose userdata is the passphrase to return; counts
// its calls in |passphrase_callback_calls|.
int passphrase_callback_calls = 0;

int PassphraseCallback(char *buffer, int size, int rwflag, void *userdata) {
  passphrase_callback_calls++;
  const char *passphrase = static_cast<const char *>(userdata);
  int length = static_cast<int>(std::strlen(passphrase));
  if (length > size) {
    return -1;
  }
  std::memcpy(buffer, passphrase, length);
  return length;
}

class CellKeyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    passphrase_callback_calls = 0;
    ASSERT_FALSE(temp_dir_.path().empty()) << "mkdtemp failed";
    cell_ = StartCell(nullptr, &error_);
    ASSERT_NE(cell_, nullptr) << error_;
  }

  // Returns key options for |passphrase|: the passphrase file in the data
  // directory or a callback that returns |callback_passphrase|.
  KeyOptionsPtr NewKeyOptions(Passphrase passphrase,
                              const char *callback_passphrase = kPassphrase) {
    KeyOptionsPtr options(keycell_key_options_new());
    EXPECT_NE(options, nullptr);
    if (options == nullptr) {
      return options;
    }
    if (passphrase == Passphrase::kFile) {
      EXPECT_EQ(keycell_key_options_set_passphrase_file(
                    options.get(), DataPath("passphrase.txt").c_str()),
                1);
    } else if (passphrase == Passphrase::kCallback) {
      EXPECT_EQ(keycell_key_options_set_passphrase_cb(
                    options.get(), PassphraseCallback,
                    const_cast<char *>(callback_passphrase)),
                1);
    }
    return options;
  }

  // Loads |path| with keycell_load_private_key() and signs with it, then
  // installs it with keycell_use_private_key_file() next to the certificate
  // of |key_name| and runs a TLS 1.3 handshake.
  void ExpectUsable(const std::string &path, const std::string &key_name,
                    Passphrase passphrase = Passphrase::kNone) {
    SCOPED_TRACE(path);
    KeyOptionsPtr options = NewKeyOptions(passphrase);
    ASSERT_NE(options, nullptr);
    EvpPkeyPtr key = LoadCellKey(cell_.get(), path, options.get(), &error_);
    ASSERT_NE(key, nullptr) << error_;
    EXPECT_EQ(keycell_is_cell_key(key.get()), 1);
    EvpPkeyPtr public_key =
        ReadCertificatePublicKey(CertPath(key_name), &error_);
    ASSERT_NE(public_key, nullptr) << error_;
    EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(),
                              DefaultDigest(key.get()), &error_))
        << error_;

    SslCtxPtr server = NewServerContext(
        PinnedVersion(TLS1_3_VERSION), CertPath(key_name),
        CellKeyInstaller(cell_.get(), path, options.get()), &error_);
    ASSERT_NE(server, nullptr) << error_;
    SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                        {CertPath(key_name)}, &error_);
    ASSERT_NE(client, nullptr) << error_;
    HandshakeResult result = RunHandshake(server.get(), client.get());
    EXPECT_TRUE(result.ok) << Describe(result);
  }

  // Expects both loading functions to reject |path| with a message of the
  // form "keycell: <path>: <reason>" where the reason contains |reason|.
  void ExpectLoadError(const std::string &path, const std::string &reason,
                       const keycell_key_options *options = nullptr) {
    SCOPED_TRACE(path);
    char message[KEYCELL_ERROR_SIZE] = "";
    EvpPkeyPtr key(keycell_load_private_key(cell_.get(), path.c_str(), options,
                                            message, sizeof(message)));
    EXPECT_EQ(key, nullptr);
    EXPECT_THAT(message, StartsWith("keycell: " + path + ": "));
    EXPECT_THAT(message, HasSubstr(reason));

    SslCtxPtr ctx = NewServerContext(TlsSettings{}, &error_);
    ASSERT_NE(ctx, nullptr) << error_;
    char use_message[KEYCELL_ERROR_SIZE] = "";
    EXPECT_EQ(
        keycell_use_private_key_file(cell_.get(), ctx.get(), path.c_str(),
                                     options, use_message, sizeof(use_message)),
        0);
    EXPECT_THAT(use_message, HasSubstr(path));
    EXPECT_THAT(use_message, HasSubstr(reason));
    EXPECT_EQ(SSL_CTX_get0_privatekey(ctx.get()), nullptr);
    ERR_clear_error();
  }

  // Writes the first |numerator|/|denominator| of the data file |name| to
  // a temporary file and returns its path.
  std::string WritePrefix(const std::string &name, size_t numerator,
                          size_t denominator) {
    std::vector<unsigned char> contents;
    EXPECT_TRUE(ReadFile(DataPath(name), &contents, &error_)) << error_;
    contents.resize(contents.size() * numerator / denominator);
    std::string path = temp_dir_.File("cut-" + name);
    EXPECT_TRUE(WriteFile(path, contents.data(), contents.size(), &error_))
        << error_;
    return path;
  }

  std::string WriteText(const std::string &name, const std::string &text) {
    std::string path = temp_dir_.File(name);
    EXPECT_TRUE(WriteFile(path, text.data(), text.size(), &error_)) << error_;
    return path;
  }

  TempDir temp_dir_;
  CellPtr cell_;
  std::string error_;
};

// The protocol carries paths of up to 4096 bytes; a longer one is rejected
// before it reaches the cell, and the cell keeps serving.
TEST_F(CellKeyFile, OverlongPathRejected) {
  std::string path = "/" + std::string(5000, 'k');
  EvpPkeyPtr key = LoadCellKey(cell_.get(), path, nullptr, &error_);
  EXPECT_EQ(key, nullptr);
  EXPECT_NE(error_.find("longer than 4096 bytes"), std::string::npos) << error_;
  EvpPkeyPtr next = LoadCellKey(cell_.get(), KeyPath("p256"), nullptr, &error_);
  EXPECT_NE(next, nullptr) << error_;
}

TEST_F(CellKeyFile, Pkcs8Pem) {
  for (const char *key_name : {"rsa2048", "rsa3072", "rsa4096", "rsa8192",
                               "p256", "p384", "p521", "ed25519", "ed448"}) {
    ExpectUsable(KeyPath(key_name), key_name);
  }
}

TEST_F(CellKeyFile, Pkcs1Pem) {
  ExpectUsable(DataPath("rsa2048-pkcs1.pem"), "rsa2048");
}

TEST_F(CellKeyFile, Pkcs1Der) {
  ExpectUsable(DataPath("rsa2048-pkcs1.der"), "rsa2048");
}

TEST_F(CellKeyFile, Sec1Pem) {
  ExpectUsable(DataPath("p256-sec1.pem"), "p256");
}

TEST_F(CellKeyFile, Sec1Der) {
  ExpectUsable(DataPath("p256-sec1.der"), "p256");
}

TEST_F(CellKeyFile, Pkcs8Der) {
  for (const char *key_name : {"rsa2048", "p256", "ed25519"}) {
    ExpectUsable(DataPath(std::string(key_name) + "-pkcs8.der"), key_name);
  }
}

TEST_F(CellKeyFile, EncryptedPkcs8PassphraseFile) {
  for (const char *name : {"rsa2048-pkcs8-enc.pem", "rsa2048-pkcs8-enc.der"}) {
    ExpectUsable(DataPath(name), "rsa2048", Passphrase::kFile);
  }
  for (const char *name : {"p256-pkcs8-enc.pem", "p256-pkcs8-enc.der"}) {
    ExpectUsable(DataPath(name), "p256", Passphrase::kFile);
  }
  EXPECT_EQ(passphrase_callback_calls, 0);
}

TEST_F(CellKeyFile, EncryptedPkcs8PassphraseCallback) {
  for (const char *name : {"rsa2048-pkcs8-enc.pem", "rsa2048-pkcs8-enc.der"}) {
    ExpectUsable(DataPath(name), "rsa2048", Passphrase::kCallback);
  }
  for (const char *name : {"p256-pkcs8-enc.pem", "p256-pkcs8-enc.der"}) {
    ExpectUsable(DataPath(name), "p256", Passphrase::kCallback);
  }
  EXPECT_GE(passphrase_callback_calls, 4);
}

TEST_F(CellKeyFile, TraditionalEncryptedPem) {
  ExpectUsable(DataPath("rsa2048-trad-enc.pem"), "rsa2048", Passphrase::kFile);
  ExpectUsable(DataPath("p256-trad-enc.pem"), "p256", Passphrase::kFile);
  ExpectUsable(DataPath("rsa2048-trad-enc.pem"), "rsa2048",
               Passphrase::kCallback);
  ExpectUsable(DataPath("p256-trad-enc.pem"), "p256", Passphrase::kCallback);
}

// The callback runs only for encrypted keys.
TEST_F(CellKeyFile, CallbackUnusedForPlainKey) {
  ExpectUsable(KeyPath("p256"), "p256", Passphrase::kCallback);
  EXPECT_EQ(passphrase_callback_calls, 0);
}

TEST_F(CellKeyFile, CertificateThenKey) {
  ExpectUsable(DataPath("rsa2048-cert-key.pem"), "rsa2048");
}

TEST_F(CellKeyFile, CrlfLineEndings) {
  ExpectUsable(DataPath("p256-crlf.pem"), "p256");
}

TEST_F(CellKeyFile, MissingFile) {
  ExpectLoadError(temp_dir_.File("no-such-key.pem"), "not found");
}

TEST_F(CellKeyFile, Directory) {
  std::string path = temp_dir_.File("directory.pem");
  ASSERT_EQ(mkdir(path.c_str(), 0755), 0) << std::strerror(errno);
  ExpectLoadError(path, "is a directory");
}

// The cell runs with the credentials of the process that started it. Root
// reads any file, so as root the cell first switches to the user "nobody".
TEST_F(CellKeyFile, Unreadable) {
  ASSERT_EQ(chmod(temp_dir_.path().c_str(), 0755), 0) << std::strerror(errno);
  std::vector<unsigned char> contents;
  ASSERT_TRUE(ReadFile(KeyPath("p256"), &contents, &error_)) << error_;
  std::string path = temp_dir_.File("unreadable.pem");
  ASSERT_TRUE(WriteFile(path, contents.data(), contents.size(), &error_))
      << error_;
  ASSERT_EQ(chmod(path.c_str(), 0), 0) << std::strerror(errno);
  if (geteuid() == 0) {
    char message[KEYCELL_ERROR_SIZE] = "";
    ASSERT_EQ(keycell_drop_privileges(cell_.get(), "nobody", message,
                                      sizeof(message)),
              1)
        << message;
  }
  ExpectLoadError(path, "permission denied");
}

TEST_F(CellKeyFile, EmptyFile) {
  ExpectLoadError(WriteText("empty.pem", ""), "empty");
}

TEST_F(CellKeyFile, CertificateOnly) {
  ExpectLoadError(CertPath("rsa2048"), "no private key");
}

TEST_F(CellKeyFile, RandomText) {
  ExpectLoadError(WriteText("text.pem",
                            "This file is not a key.\nNor is "
                            "this line.\n"),
                  "no private key");
}

TEST_F(CellKeyFile, TruncatedPem) {
  ExpectLoadError(WritePrefix("rsa2048-key.pem", 1, 2), "truncated");
  ExpectLoadError(WritePrefix("p256-sec1.pem", 1, 2), "truncated");
}

TEST_F(CellKeyFile, TruncatedDer) {
  ExpectLoadError(WritePrefix("rsa2048-pkcs8.der", 1, 2), "truncated");
  ExpectLoadError(WritePrefix("p256-sec1.der", 1, 2), "truncated");
}

TEST_F(CellKeyFile, WrongPassphraseCallback) {
  KeyOptionsPtr options =
      NewKeyOptions(Passphrase::kCallback, "not the passphrase");
  ASSERT_NE(options, nullptr);
  ExpectLoadError(DataPath("rsa2048-pkcs8-enc.pem"), "wrong passphrase",
                  options.get());
  ExpectLoadError(DataPath("p256-trad-enc.pem"), "wrong passphrase",
                  options.get());
}

TEST_F(CellKeyFile, WrongPassphraseFile) {
  std::string passphrase_file =
      WriteText("wrong-passphrase.txt", "not the passphrase\n");
  KeyOptionsPtr options(keycell_key_options_new());
  ASSERT_NE(options, nullptr);
  ASSERT_EQ(keycell_key_options_set_passphrase_file(options.get(),
                                                    passphrase_file.c_str()),
            1);
  ExpectLoadError(DataPath("rsa2048-pkcs8-enc.der"), "wrong passphrase",
                  options.get());
  ExpectLoadError(DataPath("rsa2048-trad-enc.pem"), "wrong passphrase",
                  options.get());
}

TEST_F(CellKeyFile, PassphraseRequired) {
  for (const char *name : {"rsa2048-pkcs8-enc.pem", "rsa2048-pkcs8-enc.der",
                           "p256-trad-enc.pem"}) {
    ExpectLoadError(DataPath(name), "passphrase required");
  }
}

TEST_F(CellKeyFile, PassphraseFileNotFound) {
  std::string passphrase_file = temp_dir_.File("no-such-passphrase.txt");
  KeyOptionsPtr options(keycell_key_options_new());
  ASSERT_NE(options, nullptr);
  ASSERT_EQ(keycell_key_options_set_passphrase_file(options.get(),
                                                    passphrase_file.c_str()),
            1);
  char message[KEYCELL_ERROR_SIZE] = "";
  EvpPkeyPtr key(keycell_load_private_key(
      cell_.get(), DataPath("p256-pkcs8-enc.pem").c_str(), options.get(),
      message, sizeof(message)));
  EXPECT_EQ(key, nullptr);
  EXPECT_THAT(message, HasSubstr(passphrase_file));
  EXPECT_THAT(message, HasSubstr("not found"));
}

TEST_F(CellKeyFile, UnsupportedKeyType) {
  ExpectLoadError(DataPath("dsa2048-key.pem"), "unsupported key type");
  ExpectLoadError(DataPath("x25519-key.pem"), "unsupported key type");
}

// keycell_use_private_key_file() compares the key with a certificate of the
// same type that the context already contains.
TEST_F(CellKeyFile, KeyDoesNotMatchCertificate) {
  struct Case {
    const char *cert_name;
    const char *key_name;
  };
  for (const Case &test_case :
       {Case{"rsa2048", "rsa3072"}, Case{"p256", "p384"}}) {
    std::string path = KeyPath(test_case.key_name);
    SCOPED_TRACE(path);
    SslCtxPtr ctx = NewServerContext(TlsSettings{}, &error_);
    ASSERT_NE(ctx, nullptr) << error_;
    ASSERT_TRUE(
        UseCertificateFile(ctx.get(), CertPath(test_case.cert_name), &error_))
        << error_;
    char message[KEYCELL_ERROR_SIZE] = "";
    EXPECT_EQ(keycell_use_private_key_file(cell_.get(), ctx.get(), path.c_str(),
                                           nullptr, message, sizeof(message)),
              0);
    EXPECT_THAT(message, StartsWith("keycell: " + path + ": "));
    EXPECT_THAT(message, HasSubstr("does not match the certificate"));
    ERR_clear_error();
  }
}

class CellApi : public CellKeyFile {};

TEST_F(CellApi, LoadNullArguments) {
  std::string path = KeyPath("p256");
  char message[KEYCELL_ERROR_SIZE] = "";
  EXPECT_EQ(keycell_load_private_key(nullptr, path.c_str(), nullptr, message,
                                     sizeof(message)),
            nullptr);
  EXPECT_STRNE(message, "") << "no message for a NULL cell";

  message[0] = '\0';
  EXPECT_EQ(keycell_load_private_key(cell_.get(), nullptr, nullptr, message,
                                     sizeof(message)),
            nullptr);
  EXPECT_STRNE(message, "") << "no message for a NULL path";

  message[0] = '\0';
  EXPECT_EQ(keycell_load_private_key(cell_.get(), "", nullptr, message,
                                     sizeof(message)),
            nullptr);
  EXPECT_STRNE(message, "") << "no message for an empty path";
}

TEST_F(CellApi, UseNullArguments) {
  std::string path = KeyPath("p256");
  SslCtxPtr ctx = NewServerContext(TlsSettings{}, &error_);
  ASSERT_NE(ctx, nullptr) << error_;
  char message[KEYCELL_ERROR_SIZE] = "";
  EXPECT_EQ(keycell_use_private_key_file(nullptr, ctx.get(), path.c_str(),
                                         nullptr, message, sizeof(message)),
            0);
  EXPECT_STRNE(message, "") << "no message for a NULL cell";

  message[0] = '\0';
  EXPECT_EQ(keycell_use_private_key_file(cell_.get(), nullptr, path.c_str(),
                                         nullptr, message, sizeof(message)),
            0);
  EXPECT_STRNE(message, "") << "no message for a NULL SSL_CTX";

  message[0] = '\0';
  EXPECT_EQ(keycell_use_private_key_file(cell_.get(), ctx.get(), nullptr,
                                         nullptr, message, sizeof(message)),
            0);
  EXPECT_STRNE(message, "") << "no message for a NULL path";
  EXPECT_EQ(SSL_CTX_get0_privatekey(ctx.get()), nullptr);
}

TEST_F(CellApi, DropPrivilegesInvalidArguments) {
  char message[KEYCELL_ERROR_SIZE] = "";
  EXPECT_EQ(
      keycell_drop_privileges(nullptr, "nobody", message, sizeof(message)), 0);
  EXPECT_STRNE(message, "") << "no message for a NULL cell";

  message[0] = '\0';
  EXPECT_EQ(
      keycell_drop_privileges(cell_.get(), nullptr, message, sizeof(message)),
      0);
  EXPECT_STRNE(message, "") << "no message for a NULL user";

  message[0] = '\0';
  EXPECT_EQ(keycell_drop_privileges(cell_.get(), "keycell-no-such-user",
                                    message, sizeof(message)),
            0);
  EXPECT_THAT(message, HasSubstr("keycell-no-such-user"));

  // The failed calls leave the cell working.
  std::string load_error;
  EXPECT_NE(LoadCellKey(cell_.get(), KeyPath("p256"), nullptr, &load_error),
            nullptr)
      << load_error;
}

// |err| may be NULL, and a short buffer receives a truncated, terminated
// message.
TEST_F(CellApi, ErrorBuffer) {
  std::string path = temp_dir_.File("no-such-key.pem");
  EXPECT_EQ(
      keycell_load_private_key(cell_.get(), path.c_str(), nullptr, nullptr, 0),
      nullptr);
  EXPECT_EQ(keycell_load_private_key(cell_.get(), path.c_str(), nullptr,
                                     nullptr, 100),
            nullptr);

  char message[16];
  std::memset(message, 'x', sizeof(message));
  EXPECT_EQ(
      keycell_load_private_key(cell_.get(), path.c_str(), nullptr, message, 8),
      nullptr);
  EXPECT_LT(strnlen(message, sizeof(message)), 8u);
  EXPECT_EQ(message[8], 'x') << "wrote past |err_len|";
  EXPECT_THAT(message, StartsWith("keycel"));
}

TEST_F(CellApi, OptionValues) {
  OptionsPtr options(keycell_options_new());
  ASSERT_NE(options, nullptr);
  EXPECT_EQ(keycell_options_set_workers(options.get(), 1024), 1);
  EXPECT_EQ(keycell_options_set_workers(options.get(), 1025), 0);
  EXPECT_EQ(keycell_options_set_workers(options.get(), 0), 1);
  EXPECT_EQ(keycell_options_set_timeout(options.get(), 0), 1);
  EXPECT_EQ(keycell_options_set_timeout(options.get(), 5000), 1);

  KeyOptionsPtr key_options(keycell_key_options_new());
  ASSERT_NE(key_options, nullptr);
  EXPECT_EQ(keycell_key_options_set_passphrase_file(key_options.get(), nullptr),
            0);
  EXPECT_EQ(keycell_key_options_set_passphrase_file(key_options.get(), ""), 0);
  EXPECT_EQ(keycell_key_options_allow_rsa_decryption(key_options.get(), 1), 1);
  EXPECT_EQ(keycell_key_options_set_passphrase_cb(key_options.get(), nullptr,
                                                  nullptr),
            1);

  keycell_free(nullptr);
  keycell_options_free(nullptr);
  keycell_key_options_free(nullptr);
}

// A cell started with explicit options serves keys like the default one.
TEST_F(CellApi, StartWithOptions) {
  OptionsPtr options(keycell_options_new());
  ASSERT_NE(options, nullptr);
  ASSERT_EQ(keycell_options_set_workers(options.get(), 2), 1);
  ASSERT_EQ(keycell_options_set_timeout(options.get(), 10000), 1);
  CellPtr cell = StartCell(options.get(), &error_);
  ASSERT_NE(cell, nullptr) << error_;
  options.reset();  // keycell_start() does not retain the options.
  EXPECT_NE(keycell_cell_pid(cell.get()), keycell_cell_pid(cell_.get()));
  EvpPkeyPtr key =
      LoadCellKey(cell.get(), KeyPath("ed25519"), nullptr, &error_);
  ASSERT_NE(key, nullptr) << error_;
  EvpPkeyPtr public_key =
      ReadCertificatePublicKey(CertPath("ed25519"), &error_);
  ASSERT_NE(public_key, nullptr) << error_;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), nullptr, &error_))
      << error_;
}

TEST_F(CellApi, IsCellKeyNull) {
  EXPECT_EQ(keycell_is_cell_key(nullptr), 0);
}

}  // namespace
}  // namespace keycell_test
