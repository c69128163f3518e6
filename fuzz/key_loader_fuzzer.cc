// Fuzzes the cell's key file loader. The first input byte selects where the
// passphrase comes from, and the rest is written to a key file that
// cell::LoadKeyFile reads:
//   0: no passphrase
//   1: the right passphrase, sent by the client
//   2: the right passphrase, read from a passphrase file
//   3: a wrong passphrase, sent by the client
//   4: the rest of the input is split at its first NUL byte into a
//      passphrase sent by the client and the key file
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "cell/key_loader.h"

namespace {

namespace cell = kc::cell;

constexpr char kPassphrase[] = "keycell test passphrase";
constexpr char kWrongPassphrase[] = "not the passphrase";

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

// A directory of its own for the key and passphrase files, on tmpfs when
// /dev/shm exists.
const std::string &WorkDir() {
  static const std::string *dir = [] {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string pattern = std::string(base) + "/keycell-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      perror("mkdtemp");
      abort();
    }
    return new std::string(pattern);
  }();
  return *dir;
}

void WriteFile(const std::string &path, const void *data, size_t size) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  Check(fd >= 0);
  const auto *bytes = static_cast<const uint8_t *>(data);
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, bytes + done, size - done);
    Check(n > 0);
    done += static_cast<size_t>(n);
  }
  close(fd);
}

// Checks that an error message does not repeat a fixed passphrase.
void CheckNoPassphrase(const std::string &message, const char *passphrase) {
  Check(message.find(passphrase) == std::string::npos);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv) {
  std::string passphrase_file = WorkDir() + "/passphrase.txt";
  std::string contents = std::string(kPassphrase) + "\n";
  WriteFile(passphrase_file, contents.data(), contents.size());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  std::span<const uint8_t> file(data + 1, size - 1);
  std::string passphrase_file = WorkDir() + "/passphrase.txt";
  cell::PassphraseSource source;
  switch (data[0] % 5) {
    case 0:
      break;
    case 1:
      source.bytes = {reinterpret_cast<const uint8_t *>(kPassphrase),
                      sizeof(kPassphrase) - 1};
      source.has_bytes = true;
      break;
    case 2:
      source.file = passphrase_file;
      break;
    case 3:
      source.bytes = {reinterpret_cast<const uint8_t *>(kWrongPassphrase),
                      sizeof(kWrongPassphrase) - 1};
      source.has_bytes = true;
      break;
    case 4: {
      const void *nul = std::memchr(file.data(), 0, file.size());
      size_t length =
          nul == nullptr ? 0
                         : static_cast<size_t>(
                               static_cast<const uint8_t *>(nul) - file.data());
      if (nul != nullptr) {
        source.bytes = file.first(length);
        source.has_bytes = true;
        file = file.subspan(length + 1);
      }
      break;
    }
  }

  std::string key_path = WorkDir() + "/key";
  WriteFile(key_path, file.data(), file.size());
  kc::Result<cell::LoadedKey> loaded = cell::LoadKeyFile(key_path, source);
  if (loaded.ok()) {
    Check(loaded->pkey != nullptr);
    Check(!loaded->public_key.empty());
  } else {
    const std::string &message = loaded.status().message();
    Check(message.rfind(key_path, 0) == 0 ||
          message.rfind("passphrase file " + passphrase_file, 0) == 0);
    CheckNoPassphrase(message, kPassphrase);
    CheckNoPassphrase(message, kWrongPassphrase);
  }
  return 0;
}
