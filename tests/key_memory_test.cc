// Checks where the embedded cell keeps private keys: in OpenSSL's secure
// heap, a mapping that is locked (VmFlags "lo") and excluded from core
// dumps ("dd"), and nowhere else in the cell's memory.
//
// Each test starts its cell before this process reads the key file, so the
// cell cannot have inherited the key's secrets through fork. Reading
// /proc/<cell>/mem of the non-dumpable cell needs CAP_SYS_PTRACE, which
// the tests have as root, as in CI.
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

using Bytes = std::vector<unsigned char>;

// Size of the embedded cell's secure heap arena (kEmbeddedArenaSize).
constexpr uint64_t kArenaSize = uint64_t{1} << 20;

struct Mapping {
  uint64_t start = 0;
  uint64_t end = 0;
  bool readable = false;
  std::string name;
  std::string flags;  // The VmFlags line, without its label.
};

std::vector<Mapping> ReadMappings(pid_t pid) {
  std::vector<Mapping> mappings;
  std::vector<unsigned char> contents;
  std::string error;
  if (!ReadFile("/proc/" + std::to_string(pid) + "/smaps", &contents, &error)) {
    return mappings;
  }
  std::string text(contents.begin(), contents.end());
  size_t line_start = 0;
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) {
      line_end = text.size();
    }
    std::string line = text.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    uint64_t start = 0;
    uint64_t end = 0;
    char permissions[5] = "";
    int name_offset = 0;
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %4s %*s %*s %*s%n",
                    &start, &end, permissions, &name_offset) == 3) {
      Mapping mapping;
      mapping.start = start;
      mapping.end = end;
      mapping.readable = permissions[0] == 'r';
      std::string name = line.substr(static_cast<size_t>(name_offset));
      mapping.name =
          name.substr(std::min(name.find_first_not_of(' '), name.size()));
      mappings.push_back(mapping);
    } else if (line.starts_with("VmFlags:") && !mappings.empty()) {
      mappings.back().flags = line.substr(8) + " ";
    }
  }
  return mappings;
}

bool HasFlag(const Mapping &mapping, const char *flag) {
  return mapping.flags.find(std::string(" ") + flag + " ") != std::string::npos;
}

// Returns the cell's secure heap arena: the anonymous mapping of the arena's
// size that is excluded from core dumps.
const Mapping *FindArena(const std::vector<Mapping> &mappings) {
  for (const Mapping &mapping : mappings) {
    if (mapping.end - mapping.start == kArenaSize && mapping.name.empty() &&
        HasFlag(mapping, "dd")) {
      return &mapping;
    }
  }
  return nullptr;
}

TEST(KeyMemory, EmbeddedArenaLockedAndNotDumped) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  // The tests run as root, whose CAP_IPC_LOCK lifts RLIMIT_MEMLOCK.
  EXPECT_EQ(keycell_key_memory_locked(cell.get()), 1);
  std::vector<Mapping> mappings = ReadMappings(keycell_cell_pid(cell.get()));
  const Mapping *arena = FindArena(mappings);
  ASSERT_NE(arena, nullptr)
      << "no " << kArenaSize << "-byte mapping with VmFlags dd in the cell";
  EXPECT_TRUE(HasFlag(*arena, "lo")) << "VmFlags:" << arena->flags;
}

#ifndef KEYCELL_SANITIZER_BUILD
// The scans for secrets run only without sanitizers. ASan keeps freed
// blocks in quarantine instead of reusing them, so freed copies that a
// plain build overwrites stay readable, and each scan of a sanitized cell
// takes tens of seconds.

// A secret value of a key and where copies of it were found.
struct Secret {
  Secret(std::string secret_name, Bytes secret_value)
      : name(std::move(secret_name)), value(std::move(secret_value)) {}

  std::string name;
  Bytes value;
  int in_arena = 0;
  int elsewhere = 0;
  std::string where;  // The mappings of the copies outside the arena.
};

void AddBignum(EVP_PKEY *key, const char *param, const std::string &name,
               std::vector<Secret> *secrets) {
  BIGNUM *value = nullptr;
  if (EVP_PKEY_get_bn_param(key, param, &value) != 1) {
    secrets->push_back({name, {}});
    return;
  }
  Bytes big_endian(static_cast<size_t>(BN_num_bytes(value)));
  BN_bn2bin(value, big_endian.data());
  BN_clear_free(value);
  // BIGNUM limbs are little-endian on x86-64 and AArch64, so a BIGNUM in
  // memory contains the reversed bytes.
  Bytes little_endian(big_endian.rbegin(), big_endian.rend());
  secrets->push_back({name + " (big-endian)", big_endian});
  secrets->push_back({name + " (little-endian)", little_endian});
}

std::vector<Secret> KeySecrets(EVP_PKEY *key) {
  std::vector<Secret> secrets;
  if (EVP_PKEY_is_a(key, "RSA")) {
    AddBignum(key, OSSL_PKEY_PARAM_RSA_D, "d", &secrets);
    AddBignum(key, OSSL_PKEY_PARAM_RSA_FACTOR1, "p", &secrets);
    AddBignum(key, OSSL_PKEY_PARAM_RSA_FACTOR2, "q", &secrets);
    AddBignum(key, OSSL_PKEY_PARAM_RSA_EXPONENT1, "dP", &secrets);
    AddBignum(key, OSSL_PKEY_PARAM_RSA_EXPONENT2, "dQ", &secrets);
    AddBignum(key, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, "qInv", &secrets);
  } else if (EVP_PKEY_is_a(key, "EC")) {
    AddBignum(key, OSSL_PKEY_PARAM_PRIV_KEY, "private scalar", &secrets);
  } else {
    size_t length = 0;
    Bytes raw;
    if (EVP_PKEY_get_raw_private_key(key, nullptr, &length) == 1) {
      raw.resize(length);
      if (EVP_PKEY_get_raw_private_key(key, raw.data(), &length) != 1) {
        raw.clear();
      }
    }
    secrets.push_back({"private key", raw});
  }
  return secrets;
}

// Mappings larger than this are not scanned: ASan and TSan reserve
// terabytes of shadow memory, while the cell's heap, stacks and arena are
// far smaller.
constexpr uint64_t kMaxScannedMapping = uint64_t{1} << 30;

// Reads every readable mapping of |pid| up to kMaxScannedMapping bytes,
// except [vvar] and [vsyscall], and counts the copies of each secret inside
// and outside |arena|.
bool ScanProcess(pid_t pid, const std::vector<Mapping> &mappings,
                 const Mapping &arena, std::vector<Secret> *secrets,
                 std::string *error) {
  int fd = open(("/proc/" + std::to_string(pid) + "/mem").c_str(),
                O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error =
        std::string("cannot open /proc/<cell>/mem: ") + std::strerror(errno);
    return false;
  }
  for (const Mapping &mapping : mappings) {
    if (!mapping.readable || mapping.name == "[vvar]" ||
        mapping.name == "[vvar_vclock]" || mapping.name == "[vsyscall]" ||
        mapping.end - mapping.start > kMaxScannedMapping) {
      continue;
    }
    Bytes memory(mapping.end - mapping.start);
    ssize_t count = pread(fd, memory.data(), memory.size(),
                          static_cast<off_t>(mapping.start));
    if (count <= 0) {
      continue;
    }
    memory.resize(static_cast<size_t>(count));
    bool in_arena = mapping.start == arena.start;
    for (Secret &secret : *secrets) {
      auto it = memory.begin();
      while ((it = std::search(it, memory.end(), secret.value.begin(),
                               secret.value.end())) != memory.end()) {
        if (in_arena) {
          secret.in_arena++;
        } else {
          secret.elsewhere++;
          char address[32];
          std::snprintf(address, sizeof(address), "%" PRIx64,
                        mapping.start + (it - memory.begin()));
          secret.where += std::string(" ") + address + " in " +
                          (mapping.name.empty() ? "anonymous" : mapping.name);
        }
        ++it;
      }
    }
    OPENSSL_cleanse(memory.data(), memory.size());
  }
  close(fd);
  return true;
}

struct Scan {
  bool locked = false;
  Mapping arena;
  std::vector<Secret> secrets;
};

// Starts a cell, loads |key_name| through it, signs with the key a few times
// and scans the cell's memory for the key's secrets.
void ScanCell(const std::string &key_name, Scan *scan) {
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  scan->locked = keycell_key_memory_locked(cell.get()) == 1;
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath(key_name), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath(key_name), &error);
  ASSERT_NE(public_key, nullptr) << error;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(SignAndVerify(key.get(), public_key.get(),
                              DefaultDigest(key.get()), &error))
        << error;
  }

  // Only now, with the cell forked and the key in use, does this process
  // read the key file.
  EvpPkeyPtr in_process = ReadPrivateKeyInProcess(KeyPath(key_name), &error);
  ASSERT_NE(in_process, nullptr) << error;
  scan->secrets = KeySecrets(in_process.get());
  for (const Secret &secret : scan->secrets) {
    ASSERT_FALSE(secret.value.empty()) << "reading " << secret.name;
  }

  pid_t pid = keycell_cell_pid(cell.get());
  std::vector<Mapping> mappings = ReadMappings(pid);
  const Mapping *arena = FindArena(mappings);
  ASSERT_NE(arena, nullptr)
      << "no " << kArenaSize << "-byte mapping with VmFlags dd in the cell";
  scan->arena = *arena;
  ASSERT_TRUE(ScanProcess(pid, mappings, *arena, &scan->secrets, &error))
      << error;
  for (Secret &secret : scan->secrets) {
    OPENSSL_cleanse(secret.value.data(), secret.value.size());
  }
}

const Secret *FindSecret(const Scan &scan, const std::string &name) {
  for (const Secret &secret : scan.secrets) {
    if (secret.name == name) {
      return &secret;
    }
  }
  return nullptr;
}

// RSA: every private value is in the arena. OpenSSL 3.0 also caches a
// Montgomery context for each prime (RSA_FLAG_CACHE_PRIVATE) in the
// ordinary heap from the first private-key operation on, so p and q have
// one more copy each, which lives as long as the key.
void ExpectRsaLayout(const std::string &key_name) {
  Scan scan;
  ScanCell(key_name, &scan);
  for (const char *name : {"d", "dP", "dQ", "qInv", "p", "q"}) {
    const Secret *little =
        FindSecret(scan, std::string(name) + " (little-endian)");
    const Secret *big = FindSecret(scan, std::string(name) + " (big-endian)");
    ASSERT_NE(little, nullptr);
    ASSERT_NE(big, nullptr);
    EXPECT_EQ(little->in_arena, 1) << name;
    EXPECT_EQ(big->elsewhere, 0) << name << " at" << big->where;
    bool prime = std::string(name) == "p" || std::string(name) == "q";
    EXPECT_LE(little->elsewhere, prime ? 1 : 0)
        << name << " at" << little->where;
  }
}

TEST(KeyMemory, Rsa2048SecretsInArena) {
  ExpectRsaLayout("rsa2048");
}

TEST(KeyMemory, Rsa4096SecretsInArena) {
  ExpectRsaLayout("rsa4096");
}

// EC: the scalar as a BIGNUM is in the arena only. The big-endian scalar
// of the decoded SEC1 structure is freed without being wiped, so copies of
// it may remain in freed heap memory until reused; that is not asserted.
void ExpectEcLayout(const std::string &key_name) {
  Scan scan;
  ScanCell(key_name, &scan);
  const Secret *little = FindSecret(scan, "private scalar (little-endian)");
  ASSERT_NE(little, nullptr);
  EXPECT_EQ(little->in_arena, 1);
  EXPECT_EQ(little->elsewhere, 0) << "at" << little->where;
}

TEST(KeyMemory, P256ScalarInArena) {
  ExpectEcLayout("p256");
}

TEST(KeyMemory, P384ScalarInArena) {
  ExpectEcLayout("p384");
}

// Ed25519 and Ed448: the private key (the seed) is in the arena only.
void ExpectEdLayout(const std::string &key_name) {
  Scan scan;
  ScanCell(key_name, &scan);
  ASSERT_EQ(scan.secrets.size(), 1u);
  EXPECT_EQ(scan.secrets[0].in_arena, 1);
  EXPECT_EQ(scan.secrets[0].elsewhere, 0) << "at" << scan.secrets[0].where;
}

TEST(KeyMemory, Ed25519SeedInArena) {
  ExpectEdLayout("ed25519");
}

TEST(KeyMemory, Ed448SeedInArena) {
  ExpectEdLayout("ed448");
}
#endif  // KEYCELL_SANITIZER_BUILD

// Removes CAP_IPC_LOCK from this process's effective and permitted sets,
// so that RLIMIT_MEMLOCK applies to it even as root.
bool DropIpcLock() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    return false;
  }
  data[0].effective &= ~(1u << CAP_IPC_LOCK);
  data[0].permitted &= ~(1u << CAP_IPC_LOCK);
  data[0].inheritable &= ~(1u << CAP_IPC_LOCK);
  return syscall(SYS_capset, &header, data) == 0;
}

// Runs in a child that may not lock memory. Returns the first failed check,
// or an empty string.
std::string CheckUnlockedCell() {
  rlimit none = {0, 0};
  if (setrlimit(RLIMIT_MEMLOCK, &none) != 0 || !DropIpcLock()) {
    return "cannot forbid mlock in the test process";
  }
  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  if (cell == nullptr) {
    return error;
  }
  if (keycell_key_memory_locked(cell.get()) != 0) {
    return "keycell_key_memory_locked returned 1 with RLIMIT_MEMLOCK 0";
  }
  std::vector<Mapping> mappings = ReadMappings(keycell_cell_pid(cell.get()));
  const Mapping *arena = FindArena(mappings);
  if (arena == nullptr) {
    return "no arena with VmFlags dd";
  }
  if (HasFlag(*arena, "lo")) {
    return "the arena is locked";
  }
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  if (key == nullptr) {
    return error;
  }
  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  if (public_key == nullptr ||
      !SignAndVerify(key.get(), public_key.get(), "SHA256", &error)) {
    return error;
  }
  return "";
}

TEST(KeyMemory, UnlockedArenaStillServes) {
  int report[2];
  ASSERT_EQ(pipe2(report, O_CLOEXEC), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(report[0]);
    std::string failure = CheckUnlockedCell();
    bool sent = WriteAll(report[1], failure.data(), failure.size());
    _exit(sent && failure.empty() ? 0 : 1);
  }
  close(report[1]);
  std::string failure;
  char buffer[512];
  ssize_t n;
  while ((n = read(report[0], buffer, sizeof(buffer))) > 0) {
    failure.append(buffer, static_cast<size_t>(n));
  }
  close(report[0]);
  EXPECT_EQ(failure, "");
  EXPECT_EQ(WaitForChild(child), "exit status 0");
}

TEST(KeyMemory, NullHandleNotLocked) {
  EXPECT_EQ(keycell_key_memory_locked(nullptr), 0);
}

}  // namespace
}  // namespace keycell_test
