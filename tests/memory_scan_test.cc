// Searches the memory of a process that used a key through keycell for the
// key's secret values. A control process that loads the same key in-process
// must contain them, which shows that the search finds what it looks for.
//
// Both scanning processes are forked before this process reads the key
// file, so they cannot inherit the secrets. The secrets reach them only
// XOR-masked with a random mask, and the scan compares memory ^ mask with
// the masked value, so the plain secret never exists in a scanning process
// unless it came from the key itself. Each test uses a key that no other
// test in this file reads.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

using Bytes = std::vector<unsigned char>;

// At most this many needles per scan: the secret forms plus the canary.
constexpr uint32_t kMaxNeedles = 8;

// Mappings larger than this are not scanned. ASan and TSan reserve
// terabytes of shadow memory, which would take hours to read. The heap and
// the stacks of a test process are far smaller.
constexpr uint64_t kMaxRegionSize = uint64_t{1} << 30;

// A value searched for, as sent to a scanning process.
struct MaskedNeedle {
  Bytes mask;
  Bytes masked;  // value ^ mask
};

// What a scanning process reports back through its pipe.
struct ScanReport {
  int32_t ok;  // 1 when the key was used and the scan completed
  uint32_t needle_count;
  uint64_t hits[kMaxNeedles];
  uint64_t bytes_scanned;
  uint64_t regions_scanned;
  uint64_t regions_skipped;
  char message[512];
};

// Which way a scanning process uses the key before it scans.
enum class KeyUse { kKeycell, kInProcess };

struct ScannerProcess {
  pid_t pid = -1;
  int needle_fd = -1;  // The test writes the needles here.
  int report_fd = -1;  // The scanner writes its ScanReport here.
};

bool SendNeedles(int fd, const std::vector<MaskedNeedle> &needles) {
  uint32_t count = static_cast<uint32_t>(needles.size());
  if (!WriteAll(fd, &count, sizeof(count))) {
    return false;
  }
  for (const MaskedNeedle &needle : needles) {
    uint32_t size = static_cast<uint32_t>(needle.mask.size());
    if (!WriteAll(fd, &size, sizeof(size)) ||
        !WriteAll(fd, needle.mask.data(), size) ||
        !WriteAll(fd, needle.masked.data(), size)) {
      return false;
    }
  }
  return true;
}

bool ReceiveNeedles(int fd, std::vector<MaskedNeedle> *needles) {
  uint32_t count = 0;
  if (!ReadAll(fd, &count, sizeof(count)) || count > kMaxNeedles) {
    return false;
  }
  needles->resize(count);
  for (MaskedNeedle &needle : *needles) {
    uint32_t size = 0;
    if (!ReadAll(fd, &size, sizeof(size)) || size == 0 || size > 4096) {
      return false;
    }
    needle.mask.resize(size);
    needle.masked.resize(size);
    if (!ReadAll(fd, needle.mask.data(), size) ||
        !ReadAll(fd, needle.masked.data(), size)) {
      return false;
    }
  }
  return true;
}

// Counts the occurrences of each needle in |data|. Sanitizer
// instrumentation of this loop would make the scan take minutes, and the
// buffer it reads is owned by the caller.
__attribute__((no_sanitize("address", "thread", "undefined"))) void CountHits(
    const unsigned char *data, size_t size,
    const std::vector<MaskedNeedle> &needles, uint64_t *hits) {
  for (size_t n = 0; n < needles.size(); n++) {
    const MaskedNeedle &needle = needles[n];
    const size_t length = needle.mask.size();
    if (size < length) {
      continue;
    }
    const unsigned char first = needle.masked[0] ^ needle.mask[0];
    for (size_t i = 0; i + length <= size; i++) {
      if (data[i] != first) {
        continue;
      }
      size_t j = 1;
      while (j < length && (data[i + j] ^ needle.mask[j]) == needle.masked[j]) {
        j++;
      }
      if (j == length) {
        hits[n]++;
      }
    }
  }
}

// Scans every readable mapping of this process through /proc/self/mem.
// Mappings that cannot be read, such as [vvar], are counted as skipped.
bool ScanOwnMemory(const std::vector<MaskedNeedle> &needles,
                   ScanReport *report) {
  std::string maps;
  {
    std::vector<unsigned char> contents;
    std::string error;
    if (!ReadFile("/proc/self/maps", &contents, &error)) {
      std::snprintf(report->message, sizeof(report->message), "%s",
                    error.c_str());
      return false;
    }
    maps.assign(contents.begin(), contents.end());
  }
  int mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
  if (mem_fd < 0) {
    std::snprintf(report->message, sizeof(report->message),
                  "cannot open /proc/self/mem: %s", std::strerror(errno));
    return false;
  }
  size_t max_length = 0;
  for (const MaskedNeedle &needle : needles) {
    max_length = std::max(max_length, needle.mask.size());
  }
  // A chunk overlaps the previous one by max_length - 1 bytes, so a needle
  // across a chunk border is found once.
  const size_t chunk_size = size_t{1} << 20;
  void *buffer = mmap(nullptr, chunk_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buffer == MAP_FAILED) {
    close(mem_fd);
    std::snprintf(report->message, sizeof(report->message), "mmap failed");
    return false;
  }
  unsigned char *chunk = static_cast<unsigned char *>(buffer);

  size_t line_start = 0;
  while (line_start < maps.size()) {
    size_t line_end = maps.find('\n', line_start);
    if (line_end == std::string::npos) {
      line_end = maps.size();
    }
    std::string line = maps.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    uint64_t start = 0;
    uint64_t end = 0;
    char permissions[5] = "";
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %4s", &start, &end,
                    permissions) != 3) {
      continue;
    }
    if (permissions[0] != 'r' || end - start > kMaxRegionSize ||
        start > static_cast<uint64_t>(INT64_MAX)) {
      report->regions_skipped++;
      continue;
    }
    bool region_read = false;
    uint64_t address = start;
    while (address < end) {
      size_t size =
          static_cast<size_t>(std::min<uint64_t>(chunk_size, end - address));
      ssize_t count = pread(mem_fd, chunk, size, static_cast<off_t>(address));
      if (count <= 0) {
        break;
      }
      region_read = true;
      report->bytes_scanned += static_cast<uint64_t>(count);
      CountHits(chunk, static_cast<size_t>(count), needles, report->hits);
      uint64_t advance = static_cast<uint64_t>(count);
      if (address + advance < end && advance > max_length) {
        advance -= max_length - 1;
      }
      address += advance;
    }
    if (region_read) {
      report->regions_scanned++;
    } else {
      report->regions_skipped++;
    }
  }
  munmap(buffer, chunk_size);
  close(mem_fd);
  return true;
}

// Uses the key |key_name| for a few handshakes in this process, through
// keycell or in-process. Returns false with a message in |error|.
bool UseKey(KeyUse use, const std::string &key_name, CellPtr *cell,
            EvpPkeyPtr *in_process_key, SslCtxPtr *server, std::string *error) {
  if (use == KeyUse::kKeycell) {
    *cell = StartCell(nullptr, error);
    if (*cell == nullptr) {
      return false;
    }
    *server = NewServerContext(TlsSettings{}, CertPath(key_name),
                               CellKeyInstaller(cell->get(), KeyPath(key_name)),
                               error);
  } else {
    *in_process_key = ReadPrivateKeyInProcess(KeyPath(key_name), error);
    if (*in_process_key == nullptr) {
      return false;
    }
    *server = NewServerContext(TlsSettings{}, CertPath(key_name),
                               in_process_key->get(), error);
  }
  if (*server == nullptr) {
    return false;
  }
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SslCtxPtr client =
        NewClientContext(PinnedVersion(version), {CertPath(key_name)}, error);
    if (client == nullptr) {
      return false;
    }
    for (int i = 0; i < 3; i++) {
      HandshakeResult result = RunHandshake(server->get(), client.get());
      if (!result.ok) {
        *error = Describe(result);
        return false;
      }
    }
  }
  return true;
}

Bytes *planted_canary = nullptr;

// Body of a scanning process: uses the key, receives the needles, plants
// the canary, scans and reports. Never returns.
[[noreturn]] void RunScanner(KeyUse use, const std::string &key_name,
                             int needle_fd, int report_fd) {
  ScanReport report = {};
  CellPtr cell;
  EvpPkeyPtr in_process_key;
  SslCtxPtr server;
  std::string error;
  std::vector<MaskedNeedle> needles;
  if (!UseKey(use, key_name, &cell, &in_process_key, &server, &error)) {
    std::snprintf(report.message, sizeof(report.message), "%s", error.c_str());
  } else if (!ReceiveNeedles(needle_fd, &needles) || needles.empty()) {
    std::snprintf(report.message, sizeof(report.message),
                  "receiving the needles failed");
  } else {
    // The last needle is the canary: a random value that this process
    // writes into its heap so that the scan must find it. The global
    // pointer keeps the compiler from removing the unread copy.
    const MaskedNeedle &canary_needle = needles.back();
    planted_canary = new Bytes(canary_needle.mask.size());
    for (size_t i = 0; i < planted_canary->size(); i++) {
      (*planted_canary)[i] = canary_needle.mask[i] ^ canary_needle.masked[i];
    }
    report.needle_count = static_cast<uint32_t>(needles.size());
    report.ok = ScanOwnMemory(needles, &report) ? 1 : 0;
  }
  bool sent = WriteAll(report_fd, &report, sizeof(report));
  _exit(sent ? EXIT_SUCCESS : EXIT_FAILURE);
}

ScannerProcess ForkScanner(KeyUse use, const std::string &key_name) {
  ScannerProcess scanner;
  int needle_pipe[2];
  int report_pipe[2];
  if (pipe2(needle_pipe, O_CLOEXEC) != 0) {
    return scanner;
  }
  if (pipe2(report_pipe, O_CLOEXEC) != 0) {
    close(needle_pipe[0]);
    close(needle_pipe[1]);
    return scanner;
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(needle_pipe[1]);
    close(report_pipe[0]);
    RunScanner(use, key_name, needle_pipe[0], report_pipe[1]);
  }
  close(needle_pipe[0]);
  close(report_pipe[1]);
  scanner.pid = pid;
  scanner.needle_fd = needle_pipe[1];
  scanner.report_fd = report_pipe[0];
  return scanner;
}

// A secret value of a key, big-endian, and its name for messages.
struct Secret {
  std::string name;
  Bytes value;
};

// Appends |value| and its byte reversal, masked with fresh random masks,
// and their names to |names|. BIGNUMs keep their limbs little-endian on
// x86-64 and AArch64, while DER and raw encodings are big-endian.
void AddNeedleForms(const std::string &name, const Bytes &value,
                    std::vector<MaskedNeedle> *needles,
                    std::vector<std::string> *names) {
  const Bytes reversed(value.rbegin(), value.rend());
  names->push_back(name + " (big-endian)");
  names->push_back(name + " (little-endian)");
  for (const Bytes *form : {&value, &reversed}) {
    MaskedNeedle needle;
    needle.mask.resize(form->size());
    needle.masked.resize(form->size());
    if (RAND_bytes(needle.mask.data(), static_cast<int>(needle.mask.size())) !=
        1) {
      needles->clear();
      return;
    }
    for (size_t i = 0; i < form->size(); i++) {
      needle.masked[i] = (*form)[i] ^ needle.mask[i];
    }
    needles->push_back(needle);
  }
}

// Reads the BIGNUM parameter |name| of |key| as a big-endian number of
// exactly |size| bytes.
Bytes BignumParameter(EVP_PKEY *key, const char *name, int size) {
  BIGNUM *value = nullptr;
  Bytes bytes(size);
  if (EVP_PKEY_get_bn_param(key, name, &value) != 1 ||
      BN_bn2binpad(value, bytes.data(), size) != size) {
    bytes.clear();
  }
  BN_clear_free(value);
  return bytes;
}

class MemoryScan : public ::testing::Test {
 protected:
  // Runs a keycell scanner and a control scanner for |key_name|, whose
  // secret values |extract_secrets| returns as big-endian byte strings.
  void ExpectSecretsOnlyInControl(
      const std::string &key_name,
      const std::function<std::vector<Secret>(EVP_PKEY *)> &extract_secrets) {
    ScannerProcess keycell_scanner = ForkScanner(KeyUse::kKeycell, key_name);
    ScannerProcess control_scanner = ForkScanner(KeyUse::kInProcess, key_name);
    ASSERT_GT(keycell_scanner.pid, 0) << "fork failed";
    ASSERT_GT(control_scanner.pid, 0) << "fork failed";

    // Only now, with both scanners forked, does this process read the key.
    std::vector<MaskedNeedle> needles;
    std::vector<std::string> names;
    {
      std::string error;
      EvpPkeyPtr key = ReadPrivateKeyInProcess(KeyPath(key_name), &error);
      ASSERT_NE(key, nullptr) << error;
      std::vector<Secret> secrets = extract_secrets(key.get());
      for (Secret &secret : secrets) {
        ASSERT_FALSE(secret.value.empty())
            << "reading " << secret.name << " failed";
        AddNeedleForms(secret.name, secret.value, &needles, &names);
        OPENSSL_cleanse(secret.value.data(), secret.value.size());
      }
      Bytes canary(32);
      ASSERT_EQ(RAND_bytes(canary.data(), static_cast<int>(canary.size())), 1);
      std::vector<MaskedNeedle> canary_needles;
      std::vector<std::string> canary_names;
      AddNeedleForms("canary", canary, &canary_needles, &canary_names);
      ASSERT_FALSE(canary_needles.empty());
      needles.push_back(canary_needles.front());
    }
    ASSERT_LE(needles.size(), kMaxNeedles);
    secret_needles_ = needles.size() - 1;

    ScanReport keycell_report = {};
    ScanReport control_report = {};
    Collect(keycell_scanner, needles, &keycell_report);
    Collect(control_scanner, needles, &control_report);
    ASSERT_EQ(keycell_report.ok, 1) << keycell_report.message;
    ASSERT_EQ(control_report.ok, 1) << control_report.message;
    ASSERT_EQ(keycell_report.needle_count, needles.size());
    ASSERT_EQ(control_report.needle_count, needles.size());

    // Both scans found their planted canary and covered a comparable amount
    // of memory.
    EXPECT_GE(keycell_report.hits[secret_needles_], 1u)
        << "the keycell scan missed its own canary";
    EXPECT_GE(control_report.hits[secret_needles_], 1u)
        << "the control scan missed its own canary";
    EXPECT_GT(keycell_report.bytes_scanned, uint64_t{1} << 20);
    EXPECT_GE(keycell_report.bytes_scanned, control_report.bytes_scanned / 2)
        << "the keycell scan covered much less memory than the control";

    RecordProperty("keycell_bytes_scanned",
                   std::to_string(keycell_report.bytes_scanned));
    RecordProperty("control_bytes_scanned",
                   std::to_string(control_report.bytes_scanned));

    uint64_t control_hits = 0;
    for (size_t n = 0; n < secret_needles_; n++) {
      control_hits += control_report.hits[n];
      EXPECT_EQ(keycell_report.hits[n], 0u)
          << names[n] << " found in the memory of the process that used "
          << "the key through keycell";
    }
    RecordProperty("control_hits", std::to_string(control_hits));
    EXPECT_GT(control_hits, 0u)
        << "the control process loaded the key but no secret form was "
           "found, so the scan cannot detect the secret";
  }

  // Sends the needles to |scanner|, reads its report and waits for it.
  void Collect(const ScannerProcess &scanner,
               const std::vector<MaskedNeedle> &needles, ScanReport *report) {
    bool sent = SendNeedles(scanner.needle_fd, needles);
    close(scanner.needle_fd);
    bool received = ReadAll(scanner.report_fd, report, sizeof(*report));
    close(scanner.report_fd);
    EXPECT_EQ(WaitForChild(scanner.pid), "exit status 0");
    EXPECT_TRUE(sent) << "sending the needles failed";
    EXPECT_TRUE(received) << "the scanner sent no report";
  }

  size_t secret_needles_ = 0;
};

TEST_F(MemoryScan, RsaPrimesAbsent) {
  ExpectSecretsOnlyInControl("rsa2048", [](EVP_PKEY *key) {
    const int prime_size = EVP_PKEY_get_bits(key) / 16;
    return std::vector<Secret>{
        {"prime p",
         BignumParameter(key, OSSL_PKEY_PARAM_RSA_FACTOR1, prime_size)},
        {"prime q",
         BignumParameter(key, OSSL_PKEY_PARAM_RSA_FACTOR2, prime_size)},
    };
  });
}

TEST_F(MemoryScan, EcScalarAbsent) {
  ExpectSecretsOnlyInControl("p384", [](EVP_PKEY *key) {
    const int scalar_size = (EVP_PKEY_get_bits(key) + 7) / 8;
    return std::vector<Secret>{
        {"private scalar",
         BignumParameter(key, OSSL_PKEY_PARAM_PRIV_KEY, scalar_size)},
    };
  });
}

TEST_F(MemoryScan, Ed25519SeedAbsent) {
  ExpectSecretsOnlyInControl("ed25519", [](EVP_PKEY *key) {
    Bytes seed(32);
    size_t size = seed.size();
    if (EVP_PKEY_get_raw_private_key(key, seed.data(), &size) != 1 ||
        size != seed.size()) {
      seed.clear();
    }
    return std::vector<Secret>{{"seed", seed}};
  });
}

}  // namespace
}  // namespace keycell_test
