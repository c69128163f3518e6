// Latency and throughput of one signature with EVP_DigestSign, with the key
// in this process and in a keycell cell.
//
// sign_latency/KEY/MODE times every signature on one thread. It reports
// the 50th and 99th percentiles as the counters p50_us and p99_us, and the
// Time column is the mean. sign_throughput/KEY/MODE/threads:N signs from N
// threads at once and reports signatures per second as items_per_second.
//
// Each signature is what a TLS 1.3 server makes for CertificateVerify: a
// new EVP_DigestSignInit() and one EVP_DigestSign() over 130 bytes, with
// RSA-PSS and SHA-256 (salt length equal to the digest length), ECDSA with
// SHA-256, or Ed25519.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "keycell/keycell.h"

#ifndef KEYCELL_BENCH_DATA_DIR
#error "KEYCELL_BENCH_DATA_DIR must name the directory of the key files"
#endif

namespace {

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY *pkey) const { EVP_PKEY_free(pkey); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX *ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;

// Size of the content a TLS 1.3 server signs for CertificateVerify: 64
// spaces, the 33-byte context string and a zero byte, and a SHA-256
// transcript hash.
constexpr size_t kMessageSize = 64 + 33 + 1 + 32;

struct KeySpec {
  const char *name;
  const char *digest;  // nullptr for Ed25519, which hashes internally.
  bool pss;
};

constexpr KeySpec kKeys[] = {
    {"rsa2048", "SHA256", true},
    {"p256", "SHA256", false},
    {"ed25519", nullptr, false},
};

std::string DrainOpenSslErrors() {
  std::string text;
  unsigned long code;
  char buffer[256];
  while ((code = ERR_get_error()) != 0) {
    ERR_error_string_n(code, buffer, sizeof(buffer));
    if (!text.empty()) {
      text += "; ";
    }
    text += buffer;
  }
  return text;
}

// Signs |message| once with a fresh signing context. Returns false with the
// OpenSSL errors in |error|.
bool SignOnce(EVP_MD_CTX *ctx, EVP_PKEY *pkey, const KeySpec &spec,
              const unsigned char *message, unsigned char *signature,
              size_t signature_size, std::string *error) {
  EVP_MD_CTX_reset(ctx);
  EVP_PKEY_CTX *pctx = nullptr;
  if (EVP_DigestSignInit_ex(ctx, &pctx, spec.digest, nullptr, nullptr, pkey,
                            nullptr) != 1) {
    *error = "EVP_DigestSignInit_ex failed: " + DrainOpenSslErrors();
    return false;
  }
  if (spec.pss &&
      (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
       EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
    *error = "setting RSA-PSS failed: " + DrainOpenSslErrors();
    return false;
  }
  size_t length = signature_size;
  if (EVP_DigestSign(ctx, signature, &length, message, kMessageSize) != 1) {
    *error = "EVP_DigestSign failed: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

// Per-thread signing state shared by both benchmarks.
class Signer {
 public:
  Signer(EVP_PKEY *pkey, const KeySpec &spec)
      : pkey_(pkey),
        spec_(spec),
        ctx_(EVP_MD_CTX_new()),
        signature_(static_cast<size_t>(EVP_PKEY_get_size(pkey))) {
    std::memset(message_, 0x20, sizeof(message_));
  }

  bool Sign(std::string *error) {
    if (!ctx_) {
      *error = "EVP_MD_CTX_new failed";
      return false;
    }
    return SignOnce(ctx_.get(), pkey_, spec_, message_, signature_.data(),
                    signature_.size(), error);
  }

 private:
  EVP_PKEY *pkey_;
  const KeySpec &spec_;
  EvpMdCtxPtr ctx_;
  unsigned char message_[kMessageSize];
  std::vector<unsigned char> signature_;
};

double Percentile(std::vector<double> &sorted, double fraction) {
  if (sorted.empty()) {
    return 0;
  }
  size_t index = static_cast<size_t>(fraction * (sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)];
}

void SignLatency(benchmark::State &state, EVP_PKEY *pkey, const KeySpec *spec) {
  Signer signer(pkey, *spec);
  std::string error;
  // The first signature on a thread opens its connection to the cell.
  if (!signer.Sign(&error)) {
    state.SkipWithError(error.c_str());
    return;
  }
  std::vector<double> samples_us;
  samples_us.reserve(static_cast<size_t>(state.max_iterations));
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    bool ok = signer.Sign(&error);
    auto end = std::chrono::steady_clock::now();
    if (!ok) {
      state.SkipWithError(error.c_str());
      break;
    }
    double seconds = std::chrono::duration<double>(end - start).count();
    state.SetIterationTime(seconds);
    samples_us.push_back(seconds * 1e6);
  }
  std::sort(samples_us.begin(), samples_us.end());
  state.counters["p50_us"] = Percentile(samples_us, 0.50);
  state.counters["p99_us"] = Percentile(samples_us, 0.99);
}

void SignThroughput(benchmark::State &state, EVP_PKEY *pkey,
                    const KeySpec *spec) {
  Signer signer(pkey, *spec);
  std::string error;
  if (!signer.Sign(&error)) {
    state.SkipWithError(error.c_str());
    return;
  }
  for (auto _ : state) {
    if (!signer.Sign(&error)) {
      state.SkipWithError(error.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

EvpPkeyPtr ReadKeyInProcess(const std::string &path) {
  FILE *file = std::fopen(path.c_str(), "re");
  if (file == nullptr) {
    std::fprintf(stderr, "error: cannot open %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return nullptr;
  }
  EvpPkeyPtr pkey(PEM_read_PrivateKey(file, nullptr, nullptr, nullptr));
  std::fclose(file);
  if (!pkey) {
    std::fprintf(stderr, "error: reading %s failed: %s\n", path.c_str(),
                 DrainOpenSslErrors().c_str());
  }
  return pkey;
}

bool ParseUnsigned(std::string_view text, unsigned *out) {
  std::string copy(text);
  char *end = nullptr;
  unsigned long value = std::strtoul(copy.c_str(), &end, 10);
  if (copy.empty() || *end != '\0' || value > 1024) {
    return false;
  }
  *out = static_cast<unsigned>(value);
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  unsigned workers = 0;
  std::string data_dir = KEYCELL_BENCH_DATA_DIR;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with("--cell-workers=") &&
        ParseUnsigned(arg.substr(std::strlen("--cell-workers=")), &workers)) {
      continue;
    }
    if (arg.starts_with("--data-dir=") && arg.size() > 11) {
      data_dir = std::string(arg.substr(11));
      continue;
    }
    std::fprintf(stderr,
                 "error: invalid flag '%s'. Besides Google Benchmark's "
                 "flags this program takes\n"
                 "  --cell-workers=N  worker threads of the cell, 0 for one "
                 "per online CPU (default 0)\n"
                 "  --data-dir=DIR    directory of NAME-key.pem (default "
                 "%s)\n",
                 argv[i], KEYCELL_BENCH_DATA_DIR);
    return 2;
  }

  // The cell starts before any benchmark thread exists.
  keycell_options *options = keycell_options_new();
  if (options == nullptr ||
      keycell_options_set_workers(options, workers) != 1) {
    std::fprintf(stderr, "error: invalid cell options\n");
    keycell_options_free(options);
    return 1;
  }
  char message[KEYCELL_ERROR_SIZE];
  keycell *cell = keycell_start(options, message, sizeof(message));
  keycell_options_free(options);
  if (cell == nullptr) {
    std::fprintf(stderr, "error: keycell_start failed: %s\n", message);
    return 1;
  }

  std::vector<EvpPkeyPtr> keys;
  for (const KeySpec &spec : kKeys) {
    std::string path = data_dir + "/" + spec.name + "-key.pem";
    EvpPkeyPtr in_process = ReadKeyInProcess(path);
    EvpPkeyPtr in_cell(keycell_load_private_key(cell, path.c_str(), nullptr,
                                                message, sizeof(message)));
    if (!in_process || !in_cell) {
      if (!in_cell) {
        std::fprintf(stderr, "error: keycell_load_private_key failed: %s\n",
                     message);
      }
      keycell_free(cell);
      return 1;
    }
    std::string suffix = std::string(spec.name);
    struct Variant {
      const char *mode;
      EVP_PKEY *pkey;
    };
    for (Variant variant : {Variant{"in-process", in_process.get()},
                            Variant{"cell", in_cell.get()}}) {
      std::string name = suffix + "/" + variant.mode;
      benchmark::RegisterBenchmark(("sign_latency/" + name).c_str(),
                                   SignLatency, variant.pkey, &spec)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("sign_throughput/" + name).c_str(),
                                   SignThroughput, variant.pkey, &spec)
          ->Threads(1)
          ->Threads(2)
          ->Threads(4)
          ->Threads(8)
          ->Threads(16)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
    keys.push_back(std::move(in_process));
    keys.push_back(std::move(in_cell));
  }

  std::printf("cell pid %d, %s\n", static_cast<int>(keycell_cell_pid(cell)),
              OpenSSL_version(OPENSSL_VERSION));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  keys.clear();
  keycell_free(cell);
  return 0;
}
