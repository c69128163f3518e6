// The confinement of a running cell, as /proc shows it.
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

// Returns the fields of /proc/<pid>/status by name.
std::map<std::string, std::string> ProcessStatus(pid_t pid) {
  std::map<std::string, std::string> fields;
  std::ifstream file("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(file, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    size_t value = line.find_first_not_of(" \t", colon + 1);
    fields[line.substr(0, colon)] =
        value == std::string::npos ? "" : line.substr(value);
  }
  return fields;
}

TEST(CellSandbox, SeccompFilterInstalled) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  // A key load and a signature show that the filter allows the cell's work.
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;

  std::map<std::string, std::string> status =
      ProcessStatus(keycell_cell_pid(cell.get()));
  EXPECT_EQ(status["Seccomp"], "2") << "2 is SECCOMP_MODE_FILTER";
  EXPECT_EQ(status["Seccomp_filters"], "1");
  EXPECT_EQ(status["NoNewPrivs"], "1");
}

TEST(CellSandbox, KeysLoadAfterPrivilegeDrop) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  char err[KEYCELL_ERROR_SIZE] = {};
  ASSERT_EQ(keycell_drop_privileges(cell.get(), "nobody", err, sizeof(err)), 1)
      << err;
  // A world-readable copy of the key, in a directory that every user can
  // enter, so that the filter, not the credentials, decides whether the
  // cell can still open and parse it.
  TempDir dir;
  ASSERT_NE(dir.path(), "");
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  std::vector<unsigned char> contents;
  ASSERT_TRUE(ReadFile(KeyPath("ed25519"), &contents, &error)) << error;
  std::string copy = dir.File("ed25519-key.pem");
  ASSERT_TRUE(WriteFile(copy, contents.data(), contents.size(), &error))
      << error;
  ASSERT_EQ(chmod(copy.c_str(), 0644), 0);
  EvpPkeyPtr key = LoadCellKey(cell.get(), copy, nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("ed25519"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), nullptr, &error))
      << error;
}

}  // namespace
}  // namespace keycell_test
