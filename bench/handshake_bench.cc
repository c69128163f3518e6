// Full TLS handshakes per second over TCP on 127.0.0.1, with the server's
// private key in the server process, in a keycell cell, and in a keycelld
// started from the build tree.
//
// Two kinds of server run the handshakes: threads that each serve one
// connection at a time with blocking I/O, and one thread that runs an epoll
// event loop over non-blocking connections, with or without SSL_MODE_ASYNC.
//
// The program forks a client process first, then starts the cell and the
// server in the parent. Every measurement runs the server with one mode and
// one (protocol version, key type) pair, while the client process opens new
// connections from a fixed number of threads for a fixed time. The server's
// CPU time comes from getrusage(RUSAGE_SELF), which excludes the client and
// the cell because both are separate processes; the cell's comes from
// /proc/<pid>/stat. Modes alternate within each round, and the report quotes
// medians over the rounds.
//
// Session resumption is off on both sides (SSL_OP_NO_TICKET, no tickets,
// session cache off), so every handshake is a full one in which the server
// signs once: TLS 1.3 CertificateVerify or the TLS 1.2 ECDHE
// ServerKeyExchange. The server counts those messages as it sends them and
// checks SSL_session_reused() on every connection. The report prints signed
// messages per handshake, and the program exits with status 1 unless that
// is exactly 1 for every row.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>

#include "keycell/keycell.h"

#ifndef KEYCELL_BENCH_DATA_DIR
#error "KEYCELL_BENCH_DATA_DIR must name the directory of the key files"
#endif
#if !defined(KEYCELL_BENCH_KEYCELLD) || !defined(KEYCELL_BENCH_CLI) || \
    !defined(KEYCELL_BENCH_MODULE)
#error "KEYCELL_BENCH_KEYCELLD, _CLI and _MODULE must name the built programs"
#endif

namespace {

using Clock = std::chrono::steady_clock;

// Seconds that one blocking socket operation of either side may wait.
constexpr int kSocketTimeoutSeconds = 10;

// ---------------------------------------------------------------------------
// Flags

struct Flags {
  int rounds = 5;
  double seconds = 1.0;
  double warmup_seconds = 0.25;
  int server_threads = 2;
  int client_threads = 4;
  unsigned cell_workers = 0;
  std::vector<std::string> versions = {"1.3", "1.2"};
  std::vector<std::string> keys = {"rsa2048", "p256", "ed25519"};
  std::vector<std::string> modes = {
      "in-process",         "cell",   "async-cell",  "sync-cell-1thread",
      "in-process-1thread", "daemon", "async-daemon"};
  std::string data_dir = KEYCELL_BENCH_DATA_DIR;
  std::string keycelld = KEYCELL_BENCH_KEYCELLD;
  std::string keycell_cli = KEYCELL_BENCH_CLI;
  std::string module = KEYCELL_BENCH_MODULE;
};

void PrintUsage(const char *program) {
  std::printf(
      "Usage: %s [FLAG...]\n"
      "Measures full TLS handshakes per second over TCP on 127.0.0.1.\n"
      "\n"
      "  --rounds=N          rounds; each runs every mode once per version\n"
      "                      and key (default 5)\n"
      "  --seconds=S         length of one measurement, in seconds "
      "(default 1)\n"
      "  --warmup=S          unreported run before round 1 for each mode,\n"
      "                      version and key, in seconds (default 0.25)\n"
      "  --server-threads=N  server threads of the in-process and cell modes\n"
      "                      that accept and handshake (default 2); the\n"
      "                      other modes run one event-loop thread\n"
      "  --client-threads=N  client threads in the client process "
      "(default 4)\n"
      "  --cell-workers=N    worker threads of the cell; 0 is one per online\n"
      "                      CPU (default 0)\n"
      "  --versions=LIST     comma-separated, of 1.3 and 1.2 (default "
      "1.3,1.2)\n"
      "  --keys=LIST         comma-separated, of rsa2048, p256 and ed25519\n"
      "                      (default all three)\n"
      "  --modes=LIST        comma-separated, of in-process, cell, "
      "async-cell,\n"
      "                      sync-cell-1thread, in-process-1thread, daemon\n"
      "                      and async-daemon (default all seven)\n"
      "  --data-dir=DIR      directory of NAME-key.pem and NAME-cert.pem\n"
      "                      (default %s)\n"
      "  --keycelld=PATH     keycelld of the daemon modes (default %s)\n"
      "  --keycell=PATH      keycell command that writes reference files\n"
      "                      (default %s)\n"
      "  --module=PATH       keycell.so that loads them (default %s)\n"
      "  --help              print this text\n"
      "\n"
      "The default run takes %d measurements of 1 s plus warm-up: about\n"
      "4 minutes.\n",
      program, KEYCELL_BENCH_DATA_DIR, KEYCELL_BENCH_KEYCELLD,
      KEYCELL_BENCH_CLI, KEYCELL_BENCH_MODULE, 5 * 2 * 3 * 7);
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) {
      comma = text.size();
    }
    if (comma > start) {
      items.emplace_back(text.substr(start, comma - start));
    }
    start = comma + 1;
  }
  return items;
}

bool ParseInt(std::string_view value, int min, int max, int *out) {
  std::string text(value);
  char *end = nullptr;
  errno = 0;
  long number = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || number < min ||
      number > max) {
    return false;
  }
  *out = static_cast<int>(number);
  return true;
}

bool ParseSeconds(std::string_view value, double min, double *out) {
  std::string text(value);
  char *end = nullptr;
  errno = 0;
  double number = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !(number >= min) ||
      number > 3600) {
    return false;
  }
  *out = number;
  return true;
}

bool CheckListValues(const char *flag, const std::vector<std::string> &values,
                     const std::vector<std::string> &allowed) {
  if (values.empty()) {
    std::fprintf(stderr, "error: %s is empty\n", flag);
    return false;
  }
  for (const std::string &value : values) {
    if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
      std::fprintf(stderr, "error: invalid value '%s' in %s; see --help\n",
                   value.c_str(), flag);
      return false;
    }
  }
  return true;
}

// Parses argv into |flags|. Returns 0 to run, 1 on an invalid flag and -1
// after --help.
int ParseFlags(int argc, char **argv, Flags *flags) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(argv[0]);
      return -1;
    }
    size_t equals = arg.find('=');
    std::string_view name = arg.substr(0, equals);
    std::string_view value =
        equals == std::string_view::npos ? "" : arg.substr(equals + 1);
    bool ok = equals != std::string_view::npos;
    int workers = 0;
    if (!ok) {
      // Reported below.
    } else if (name == "--rounds") {
      ok = ParseInt(value, 1, 1000, &flags->rounds);
    } else if (name == "--seconds") {
      ok = ParseSeconds(value, 0.1, &flags->seconds);
    } else if (name == "--warmup") {
      ok = ParseSeconds(value, 0.0, &flags->warmup_seconds);
    } else if (name == "--server-threads") {
      ok = ParseInt(value, 1, 256, &flags->server_threads);
    } else if (name == "--client-threads") {
      ok = ParseInt(value, 1, 256, &flags->client_threads);
    } else if (name == "--cell-workers") {
      ok = ParseInt(value, 0, 1024, &workers);
      flags->cell_workers = static_cast<unsigned>(workers);
    } else if (name == "--versions") {
      flags->versions = SplitList(value);
      ok = CheckListValues("--versions", flags->versions, {"1.3", "1.2"});
    } else if (name == "--keys") {
      flags->keys = SplitList(value);
      ok = CheckListValues("--keys", flags->keys,
                           {"rsa2048", "p256", "ed25519"});
    } else if (name == "--modes") {
      flags->modes = SplitList(value);
      ok = CheckListValues(
          "--modes", flags->modes,
          {"in-process", "cell", "async-cell", "sync-cell-1thread",
           "in-process-1thread", "daemon", "async-daemon"});
    } else if (name == "--data-dir") {
      flags->data_dir = std::string(value);
      ok = !flags->data_dir.empty();
    } else if (name == "--keycelld") {
      flags->keycelld = std::string(value);
      ok = !flags->keycelld.empty();
    } else if (name == "--keycell") {
      flags->keycell_cli = std::string(value);
      ok = !flags->keycell_cli.empty();
    } else if (name == "--module") {
      flags->module = std::string(value);
      ok = !flags->module.empty();
    } else {
      std::fprintf(stderr, "error: unknown flag '%s'; see --help\n", argv[i]);
      return 1;
    }
    if (!ok) {
      std::fprintf(stderr, "error: invalid flag '%s'; see --help\n", argv[i]);
      return 1;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------
// OpenSSL and socket helpers

struct SslCtxDeleter {
  void operator()(SSL_CTX *ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

struct SslDeleter {
  void operator()(SSL *ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// Closes a file descriptor when it goes out of scope.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ScopedFd(const ScopedFd &) = delete;
  ScopedFd &operator=(const ScopedFd &) = delete;
  ~ScopedFd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      close(fd_);
    }
    fd_ = fd;
  }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Removes every entry of this thread's OpenSSL error queue and returns them
// as one line, or "" when the queue was empty.
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

std::string DescribeSslFailure(SSL *ssl, int result, const char *step) {
  int ssl_error = SSL_get_error(ssl, result);
  std::string text =
      std::string(step) + " failed: SSL error " + std::to_string(ssl_error);
  if (ssl_error == SSL_ERROR_SYSCALL) {
    text += std::string(" (") + std::strerror(errno) + ")";
  }
  std::string queue = DrainOpenSslErrors();
  if (!queue.empty()) {
    text += ": " + queue;
  }
  return text;
}

int ProtocolVersion(const std::string &name) {
  return name == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION;
}

// Applies what both sides share: one pinned protocol version, ECDHE cipher
// suites for TLS 1.2, and no session resumption of any kind.
bool ConfigureCommon(SSL_CTX *ctx, int version, std::string *error) {
  if (SSL_CTX_set_min_proto_version(ctx, version) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, version) != 1) {
    *error = "setting the protocol version failed: " + DrainOpenSslErrors();
    return false;
  }
  // TLS 1.2 RSA key exchange signs nothing; ECDHE makes the server sign its
  // ServerKeyExchange, as TLS 1.3 makes it sign CertificateVerify.
  if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM") != 1) {
    *error = "SSL_CTX_set_cipher_list failed: " + DrainOpenSslErrors();
    return false;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_set_num_tickets(ctx, 0) != 1) {
    *error = "SSL_CTX_set_num_tickets failed: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

void SetSocketTimeouts(int fd) {
  timeval timeout{};
  timeout.tv_sec = kSocketTimeoutSeconds;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  return address;
}

// Opens a non-blocking listening socket on 127.0.0.1 with a port the kernel
// chooses. Returns -1 with a message in |error| on failure.
int Listen(uint16_t *port, std::string *error) {
  ScopedFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    *error = std::string("socket failed: ") + std::strerror(errno);
    return -1;
  }
  sockaddr_in address = Loopback(0);
  if (bind(fd.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
          0 ||
      listen(fd.get(), 1024) != 0) {
    *error = std::string("binding 127.0.0.1 failed: ") + std::strerror(errno);
    return -1;
  }
  socklen_t length = sizeof(address);
  if (getsockname(fd.get(), reinterpret_cast<sockaddr *>(&address), &length) !=
      0) {
    *error = std::string("getsockname failed: ") + std::strerror(errno);
    return -1;
  }
  *port = ntohs(address.sin_port);
  return fd.release();
}

// ---------------------------------------------------------------------------
// CPU time

// Returns the CPU time (user + system) of this process, in seconds.
double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval &time) {
    return static_cast<double>(time.tv_sec) +
           static_cast<double>(time.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Returns the CPU time (user + system) of process |pid|, in seconds, or a
// negative value if it cannot be read. It reads the process's CPU-time clock,
// which counts nanoseconds, and falls back to utime + stime of
// /proc/<pid>/stat, which counts clock ticks (10 ms with USER_HZ 100): too
// coarse for the few tens of milliseconds that a cell spends on ECDSA in one
// measurement.
double ProcessCpuSeconds(pid_t pid) {
  clockid_t clock;
  timespec time{};
  if (clock_getcpuclockid(pid, &clock) == 0 &&
      clock_gettime(clock, &time) == 0) {
    return static_cast<double>(time.tv_sec) +
           static_cast<double>(time.tv_nsec) / 1e9;
  }
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(file, line)) {
    return -1;
  }
  // The command name in parentheses may contain spaces; fields after it are
  // numbered from 3 (state), so utime (14) and stime (15) follow 11 others.
  size_t close_paren = line.rfind(')');
  if (close_paren == std::string::npos) {
    return -1;
  }
  std::istringstream fields(line.substr(close_paren + 1));
  std::string skipped;
  for (int i = 0; i < 11; ++i) {
    fields >> skipped;
  }
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  if (!(fields >> utime >> stime)) {
    return -1;
  }
  return static_cast<double>(utime + stime) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Returns the CPU time that all processes on the machine have spent, in
// seconds, or a negative value if it cannot be read. It sums every field of
// the "cpu" line of /proc/stat except idle and iowait.
double MachineBusySeconds() {
  std::ifstream file("/proc/stat");
  std::string label;
  unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
  if (!(file >> label >> user >> nice >> system >> idle >> iowait >> irq >>
        softirq >> steal) ||
      label != "cpu") {
    return -1;
  }
  return static_cast<double>(user + nice + system + irq + softirq + steal) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

// ---------------------------------------------------------------------------
// Client process

// A request from the parent to the client process, sent as one
// SOCK_SEQPACKET message. A job with |port| 0 makes the client exit.
struct ClientJob {
  uint16_t port = 0;
  int32_t version = 0;
  uint32_t duration_ms = 0;
  uint32_t threads = 0;
  char trusted_cert[1024] = {};
};

// The client's result for one job.
struct ClientReport {
  uint64_t handshakes = 0;
  uint64_t failures = 0;
  uint64_t resumed = 0;
  double cpu_seconds = 0;  // The client process's, during the job.
  char first_error[512] = {};
};

SslCtxPtr NewClientContext(const ClientJob &job, std::string *error) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    *error = "SSL_CTX_new failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  if (!ConfigureCommon(ctx.get(), job.version, error)) {
    return nullptr;
  }
  if (SSL_CTX_load_verify_locations(ctx.get(), job.trusted_cert, nullptr) !=
      1) {
    *error = std::string("loading ") + job.trusted_cert +
             " failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  return ctx;
}

// Runs one client connection: a full handshake that verifies the server's
// certificate, reads the one byte the server sends after its handshake, and
// closes. Returns false with a message in |error|.
bool RunClientConnection(SSL_CTX *ctx, uint16_t port, bool *resumed,
                         std::string *error) {
  ScopedFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    *error = std::string("socket failed: ") + std::strerror(errno);
    return false;
  }
  SetSocketTimeouts(fd.get());
  // Closing with a reset leaves no TIME_WAIT entry, so a long run does not
  // exhaust the ephemeral ports of 127.0.0.1.
  linger abort_on_close{1, 0};
  setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort_on_close,
             sizeof(abort_on_close));
  sockaddr_in address = Loopback(port);
  if (connect(fd.get(), reinterpret_cast<sockaddr *>(&address),
              sizeof(address)) != 0) {
    *error =
        std::string("connect to 127.0.0.1 failed: ") + std::strerror(errno);
    return false;
  }
  SslPtr ssl(SSL_new(ctx));
  if (!ssl || SSL_set_fd(ssl.get(), fd.get()) != 1 ||
      SSL_set1_host(ssl.get(), "localhost") != 1) {
    *error = "creating the client SSL failed: " + DrainOpenSslErrors();
    return false;
  }
  int result = SSL_connect(ssl.get());
  if (result != 1) {
    *error = DescribeSslFailure(ssl.get(), result, "SSL_connect");
    return false;
  }
  *resumed = SSL_session_reused(ssl.get()) != 0;
  char byte;
  result = SSL_read(ssl.get(), &byte, 1);
  if (result != 1) {
    *error = DescribeSslFailure(ssl.get(), result, "SSL_read");
    return false;
  }
  SSL_shutdown(ssl.get());
  return true;
}

ClientReport RunClientJob(const ClientJob &job) {
  ClientReport report;
  double cpu_before = SelfCpuSeconds();
  std::string error;
  SslCtxPtr ctx = NewClientContext(job, &error);
  if (!ctx) {
    report.failures = 1;
    std::snprintf(report.first_error, sizeof(report.first_error), "%s",
                  error.c_str());
    return report;
  }

  std::atomic<uint64_t> handshakes{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> resumed{0};
  std::mutex error_mutex;
  std::string first_error;
  Clock::time_point deadline =
      Clock::now() + std::chrono::milliseconds(job.duration_ms);

  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < job.threads; ++i) {
    threads.emplace_back([&] {
      while (Clock::now() < deadline) {
        bool was_resumed = false;
        std::string connection_error;
        if (RunClientConnection(ctx.get(), job.port, &was_resumed,
                                &connection_error)) {
          handshakes.fetch_add(1, std::memory_order_relaxed);
          if (was_resumed) {
            resumed.fetch_add(1, std::memory_order_relaxed);
          }
          continue;
        }
        failures.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(error_mutex);
        if (first_error.empty()) {
          first_error = connection_error;
        }
      }
    });
  }
  for (std::thread &thread : threads) {
    thread.join();
  }
  report.handshakes = handshakes.load();
  report.failures = failures.load();
  report.resumed = resumed.load();
  report.cpu_seconds = SelfCpuSeconds() - cpu_before;
  std::snprintf(report.first_error, sizeof(report.first_error), "%s",
                first_error.c_str());
  return report;
}

// Serves jobs from |control| until the parent sends a stop job or closes
// its end.
[[noreturn]] void ClientProcessMain(int control) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  for (;;) {
    ClientJob job;
    ssize_t received = recv(control, &job, sizeof(job), 0);
    if (received != static_cast<ssize_t>(sizeof(job)) || job.port == 0) {
      _exit(0);
    }
    job.trusted_cert[sizeof(job.trusted_cert) - 1] = '\0';
    ClientReport report = RunClientJob(job);
    if (send(control, &report, sizeof(report), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(sizeof(report))) {
      _exit(1);
    }
  }
}

// The parent's handle to the client process.
class ClientProcess {
 public:
  // Forks the client process. Call it before any thread or cell starts.
  bool Start(std::string *error) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
      *error = std::string("socketpair failed: ") + std::strerror(errno);
      return false;
    }
    std::fflush(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
      *error = std::string("fork failed: ") + std::strerror(errno);
      close(fds[0]);
      close(fds[1]);
      return false;
    }
    if (pid == 0) {
      close(fds[0]);
      ClientProcessMain(fds[1]);
    }
    close(fds[1]);
    control_.reset(fds[0]);
    pid_ = pid;
    return true;
  }

  // Runs |job| and waits for its report, at most the job's duration plus
  // a margin for the connections still open at its end.
  bool Run(const ClientJob &job, ClientReport *report, std::string *error) {
    if (send(control_.get(), &job, sizeof(job), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(sizeof(job))) {
      *error = std::string("sending a job to the client failed: ") +
               std::strerror(errno);
      return false;
    }
    pollfd readable{control_.get(), POLLIN, 0};
    int timeout_ms =
        static_cast<int>(job.duration_ms) + 3 * kSocketTimeoutSeconds * 1000;
    if (poll(&readable, 1, timeout_ms) != 1) {
      *error = "the client process did not report within " +
               std::to_string(timeout_ms) + " ms";
      return false;
    }
    if (recv(control_.get(), report, sizeof(*report), 0) !=
        static_cast<ssize_t>(sizeof(*report))) {
      *error = "the client process exited without a report";
      return false;
    }
    report->first_error[sizeof(report->first_error) - 1] = '\0';
    return true;
  }

  void Stop() {
    if (pid_ <= 0) {
      return;
    }
    ClientJob stop;
    send(control_.get(), &stop, sizeof(stop), MSG_NOSIGNAL);
    control_.reset();
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  ~ClientProcess() { Stop(); }

 private:
  ScopedFd control_;
  pid_t pid_ = -1;
};

// ---------------------------------------------------------------------------
// Server

// What the server observed during one measurement.
struct ServerCounters {
  std::atomic<uint64_t> handshakes{0};
  std::atomic<uint64_t> signed_messages{0};
  std::atomic<uint64_t> resumed{0};
  std::atomic<uint64_t> failures{0};
  // Maximum number of connections of an event-loop server whose ASYNC_JOB
  // was paused at the same time.
  std::atomic<int> max_paused_jobs{0};
  std::mutex error_mutex;
  std::string first_error;

  void RecordFailure(std::string error) {
    failures.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(error_mutex);
    if (first_error.empty()) {
      first_error = std::move(error);
    }
  }
};

// Counts the handshake messages that carry the server's signature as the
// server sends them: CertificateVerify in TLS 1.3 and ServerKeyExchange in
// TLS 1.2 with ECDHE. Installed with SSL_CTX_set_msg_callback().
void CountSignedMessages(int write_p, int version, int content_type,
                         const void *buf, size_t len, SSL *ssl, void *arg) {
  if (write_p == 0 || content_type != SSL3_RT_HANDSHAKE || len == 0 ||
      arg == nullptr) {
    return;
  }
  unsigned char type = static_cast<const unsigned char *>(buf)[0];
  if (type == SSL3_MT_CERTIFICATE_VERIFY ||
      type == SSL3_MT_SERVER_KEY_EXCHANGE) {
    static_cast<ServerCounters *>(arg)->signed_messages.fetch_add(
        1, std::memory_order_relaxed);
  }
}

// Serves one accepted connection in blocking mode: the handshake, one byte
// of application data, then waits for the client to close.
void ServeConnection(SSL_CTX *ctx, int fd, ServerCounters *counters) {
  ScopedFd connection(fd);
  SetSocketTimeouts(fd);
  SslPtr ssl(SSL_new(ctx));
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    counters->RecordFailure("creating the server SSL failed: " +
                            DrainOpenSslErrors());
    return;
  }
  int result = SSL_accept(ssl.get());
  if (result != 1) {
    counters->RecordFailure(
        DescribeSslFailure(ssl.get(), result, "SSL_accept"));
    return;
  }
  counters->handshakes.fetch_add(1, std::memory_order_relaxed);
  if (SSL_session_reused(ssl.get()) != 0) {
    counters->resumed.fetch_add(1, std::memory_order_relaxed);
  }
  // The client closes first, so the server keeps no TIME_WAIT entry. What
  // happens after the handshake is not measured, and its errors (a reset
  // from the client) are expected.
  char byte = 'x';
  if (SSL_write(ssl.get(), &byte, 1) == 1) {
    SSL_read(ssl.get(), &byte, 1);
  }
  ERR_clear_error();
}

// A server of |threads| threads that each accept a connection from a shared
// listening socket and serve it with blocking I/O.
class BlockingServer {
 public:
  void Start(SSL_CTX *ctx, int listener, int threads,
             ServerCounters *counters) {
    stop_.store(false);
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back(
          [this, ctx, listener, counters] { Serve(ctx, listener, counters); });
    }
  }

  void Stop() {
    stop_.store(true);
    for (std::thread &thread : threads_) {
      thread.join();
    }
    threads_.clear();
  }

 private:
  void Serve(SSL_CTX *ctx, int listener, ServerCounters *counters) {
    while (!stop_.load(std::memory_order_relaxed)) {
      pollfd readable{listener, POLLIN, 0};
      if (poll(&readable, 1, 50) != 1) {
        continue;
      }
      int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        // Another thread took the connection (EAGAIN), or the client gave
        // up on it.
        continue;
      }
      ServeConnection(ctx, fd, counters);
    }
  }

  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// A server of one thread that runs an epoll event loop over non-blocking
// connections. Each connection goes through the handshake, sends one byte
// and reads until the client closes, as in ServeConnection().
//
// When the SSL_CTX has SSL_MODE_ASYNC, a key operation that has to wait
// pauses the handshake's ASYNC_JOB and SSL_do_handshake() returns
// SSL_ERROR_WANT_ASYNC. The loop then watches the job's wait descriptors
// (SSL_get_changed_async_fds) instead of the socket and resumes the
// handshake when one becomes readable, so other connections progress
// meanwhile. Without SSL_MODE_ASYNC, a key operation blocks the loop.
class EventLoopServer {
 public:
  void Start(SSL_CTX *ctx, int listener, ServerCounters *counters) {
    stop_.store(false);
    thread_ = std::thread(
        [this, ctx, listener, counters] { Serve(ctx, listener, counters); });
  }

  void Stop() {
    stop_.store(true);
    thread_.join();
  }

 private:
  enum class Phase { kHandshake, kWrite, kDrain };

  struct Connection {
    uint64_t id = 0;
    ScopedFd fd;
    SslPtr ssl;
    Phase phase = Phase::kHandshake;
    // The socket's epoll events; 0 when the socket is not in the epoll set.
    uint32_t socket_events = 0;
    std::vector<int> async_fds;  // Wait descriptors in the epoll set.
  };

  // The epoll_event data of the listener. A connection's socket has
  // id << 1 and its wait descriptors have id << 1 | 1, so an event that
  // arrives after its connection closed finds no connection.
  static constexpr uint64_t kListenerToken = 0;

  // Runs the loop until Stop(). On Stop() it stops accepting, then lets
  // paused jobs finish for at most kSocketTimeoutSeconds before it frees
  // every connection.
  void Serve(SSL_CTX *ctx, int listener, ServerCounters *counters) {
    ctx_ = ctx;
    counters_ = counters;
    async_ = (SSL_CTX_get_mode(ctx) & SSL_MODE_ASYNC) != 0;
    paused_ = 0;
    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (epoll_.get() < 0) {
      counters->RecordFailure(std::string("epoll_create1 failed: ") +
                              std::strerror(errno));
      return;
    }
    epoll_event listen_event{};
    listen_event.events = EPOLLIN;
    listen_event.data.u64 = kListenerToken;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener, &listen_event) != 0) {
      counters->RecordFailure(
          std::string("epoll_ctl on the listener failed: ") +
          std::strerror(errno));
      return;
    }

    bool accepting = true;
    Clock::time_point drain_deadline;
    epoll_event events[64];
    for (;;) {
      if (accepting && stop_.load(std::memory_order_relaxed)) {
        accepting = false;
        epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener, nullptr);
        drain_deadline =
            Clock::now() + std::chrono::seconds(kSocketTimeoutSeconds);
      }
      if (!accepting && (paused_ == 0 || Clock::now() >= drain_deadline)) {
        break;
      }
      int count = epoll_wait(epoll_.get(), events, 64, 50);
      if (count < 0 && errno != EINTR) {
        counters->RecordFailure(std::string("epoll_wait failed: ") +
                                std::strerror(errno));
        break;
      }
      for (int i = 0; i < count; ++i) {
        uint64_t token = events[i].data.u64;
        if (token == kListenerToken) {
          AcceptAll(listener);
          continue;
        }
        auto found = connections_.find(token >> 1);
        if (found == connections_.end()) {
          continue;
        }
        Connection *connection = found->second.get();
        bool async_event = (token & 1) != 0;
        if (!async_event && SSL_waiting_for_async(connection->ssl.get())) {
          continue;
        }
        if (!Advance(connection)) {
          Close(connection);
        }
      }
    }
    // NOTE: SSL_free() of a connection whose job is still paused (the cell
    // did not reply before the deadline) leaks that job's stack.
    for (auto &[id, connection] : connections_) {
      ForgetAsyncFds(connection.get());
    }
    connections_.clear();
    epoll_.reset();
  }

  void AcceptAll(int listener) {
    for (;;) {
      int fd =
          accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        // EAGAIN once the backlog is empty; a client that gave up on its
        // connection is the client's failure to report.
        return;
      }
      auto connection = std::make_unique<Connection>();
      connection->id = next_id_++;
      connection->fd.reset(fd);
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      connection->ssl.reset(SSL_new(ctx_));
      if (!connection->ssl || SSL_set_fd(connection->ssl.get(), fd) != 1) {
        counters_->RecordFailure("creating the server SSL failed: " +
                                 DrainOpenSslErrors());
        continue;
      }
      SSL_set_accept_state(connection->ssl.get());
      Connection *raw = connection.get();
      connections_.emplace(raw->id, std::move(connection));
      // The ClientHello often arrives with the connection, so try at once.
      if (!Advance(raw)) {
        Close(raw);
      }
    }
  }

  // Runs |connection| as far as it goes without waiting. Returns false once
  // the connection is finished or failed and should be closed.
  bool Advance(Connection *connection) {
    SSL *ssl = connection->ssl.get();
    for (;;) {
      ERR_clear_error();
      bool was_paused = SSL_waiting_for_async(ssl) != 0;
      int result = 0;
      switch (connection->phase) {
        case Phase::kHandshake:
          result = SSL_do_handshake(ssl);
          break;
        case Phase::kWrite: {
          char byte = 'x';
          result = SSL_write(ssl, &byte, 1);
          break;
        }
        case Phase::kDrain: {
          char byte;
          result = SSL_read(ssl, &byte, 1);
          break;
        }
      }
      bool is_paused = SSL_waiting_for_async(ssl) != 0;
      paused_ += static_cast<int>(is_paused) - static_cast<int>(was_paused);
      if (paused_ >
          counters_->max_paused_jobs.load(std::memory_order_relaxed)) {
        counters_->max_paused_jobs.store(paused_, std::memory_order_relaxed);
      }
      if (async_ && !UpdateAsyncFds(connection)) {
        return false;
      }
      if (result > 0) {
        if (connection->phase == Phase::kHandshake) {
          counters_->handshakes.fetch_add(1, std::memory_order_relaxed);
          if (SSL_session_reused(ssl) != 0) {
            counters_->resumed.fetch_add(1, std::memory_order_relaxed);
          }
          connection->phase = Phase::kWrite;
        } else {
          connection->phase = Phase::kDrain;
        }
        continue;
      }
      int reason = SSL_get_error(ssl, result);
      if (reason == SSL_ERROR_WANT_READ) {
        return WatchSocket(connection, EPOLLIN);
      }
      if (reason == SSL_ERROR_WANT_WRITE) {
        return WatchSocket(connection, EPOLLOUT);
      }
      if (reason == SSL_ERROR_WANT_ASYNC) {
        // Only the job's wait descriptors can resume it.
        return WatchSocket(connection, 0);
      }
      // What happens after the handshake is not measured, and its errors (a
      // reset from the client) are expected.
      if (connection->phase == Phase::kHandshake) {
        counters_->RecordFailure(
            DescribeSslFailure(ssl, result, "SSL_do_handshake"));
      }
      ERR_clear_error();
      return false;
    }
  }

  // Sets the socket's epoll events; 0 takes the socket out of the set.
  bool WatchSocket(Connection *connection, uint32_t events) {
    if (events == connection->socket_events) {
      return true;
    }
    int operation = events == 0                      ? EPOLL_CTL_DEL
                    : connection->socket_events == 0 ? EPOLL_CTL_ADD
                                                     : EPOLL_CTL_MOD;
    epoll_event event{};
    event.events = events;
    event.data.u64 = connection->id << 1;
    if (epoll_ctl(epoll_.get(), operation, connection->fd.get(), &event) != 0) {
      counters_->RecordFailure(
          std::string("epoll_ctl on a connection failed: ") +
          std::strerror(errno));
      return false;
    }
    connection->socket_events = events;
    return true;
  }

  // Applies the wait descriptors that the connection's ASYNC_JOB added and
  // removed to the epoll set.
  //
  // OpenSSL 3.0 resets the lists of SSL_get_changed_async_fds() only when a
  // paused job resumes, so a removed descriptor is reported again after
  // later SSL calls, when keycell has closed it and its number may belong to
  // another connection's descriptor. Only descriptors that this connection
  // registered are therefore removed, and removals come before additions,
  // because a number may be removed and added again in one report.
  bool UpdateAsyncFds(Connection *connection) {
    SSL *ssl = connection->ssl.get();
    size_t added = 0;
    size_t deleted = 0;
    if (SSL_get_changed_async_fds(ssl, nullptr, &added, nullptr, &deleted) !=
        1) {
      return true;
    }
    if (added == 0 && deleted == 0) {
      return true;
    }
    std::vector<OSSL_ASYNC_FD> added_fds(added);
    std::vector<OSSL_ASYNC_FD> deleted_fds(deleted);
    SSL_get_changed_async_fds(ssl, added_fds.data(), &added, deleted_fds.data(),
                              &deleted);
    std::vector<int> &watched = connection->async_fds;
    for (OSSL_ASYNC_FD fd : deleted_fds) {
      auto found = std::find(watched.begin(), watched.end(), fd);
      if (found == watched.end()) {
        continue;
      }
      watched.erase(found);
      // keycell may have closed the descriptor already, which removed it
      // from the epoll set, so EBADF and ENOENT are expected.
      epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    }
    for (OSSL_ASYNC_FD fd : added_fds) {
      if (std::find(watched.begin(), watched.end(), fd) != watched.end()) {
        continue;
      }
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u64 = connection->id << 1 | 1;
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
        counters_->RecordFailure(
            std::string("epoll_ctl on an async descriptor failed: ") +
            std::strerror(errno));
        return false;
      }
      watched.push_back(fd);
    }
    return true;
  }

  // Takes the wait descriptors of |connection| out of the epoll set. They
  // stay open, because the job that owns them may still be paused.
  void ForgetAsyncFds(Connection *connection) {
    for (int fd : connection->async_fds) {
      epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    }
    connection->async_fds.clear();
  }

  void Close(Connection *connection) {
    if (SSL_waiting_for_async(connection->ssl.get())) {
      --paused_;
    }
    ForgetAsyncFds(connection);
    // Closing the socket also removes it from the epoll set.
    connections_.erase(connection->id);
  }

  std::atomic<bool> stop_{false};
  std::thread thread_;
  // The fields below belong to the loop's thread.
  SSL_CTX *ctx_ = nullptr;
  ServerCounters *counters_ = nullptr;
  bool async_ = false;
  int paused_ = 0;  // Connections whose job is paused.
  uint64_t next_id_ = 1;
  ScopedFd epoll_;
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
};

// ---------------------------------------------------------------------------
// Modes: where the server's private key lives and how the server runs.

// One way of running the server. A mode installs the private key in the
// server's SSL_CTX and runs the server on a listening socket; modes that
// keep the key in another process name that process so its CPU time is
// reported.
class ServerMode {
 public:
  virtual ~ServerMode() = default;
  virtual const char *name() const = 0;
  // Empty when the mode runs in this build, otherwise why it does not.
  virtual std::string unavailable_reason() const { return ""; }
  // Installs the private key in |path| into |ctx|, which already has the
  // key's certificate.
  virtual bool InstallKey(SSL_CTX *ctx, const std::string &path,
                          std::string *error) = 0;
  // Process whose CPU time is reported as the cell's; 0 for none.
  virtual pid_t cell_pid() const { return 0; }
  // Starts serving on |listener| until Stop().
  virtual void Start(SSL_CTX *ctx, int listener, ServerCounters *counters) = 0;
  virtual void Stop() = 0;
};

bool InstallInProcessKey(SSL_CTX *ctx, const std::string &path,
                         std::string *error) {
  if (SSL_CTX_use_PrivateKey_file(ctx, path.c_str(), SSL_FILETYPE_PEM) != 1) {
    *error = "SSL_CTX_use_PrivateKey_file(" + path +
             ") failed: " + DrainOpenSslErrors();
    return false;
  }
  return true;
}

bool InstallCellKey(keycell *cell, SSL_CTX *ctx, const std::string &path,
                    std::string *error) {
  char message[KEYCELL_ERROR_SIZE];
  if (keycell_use_private_key_file(cell, ctx, path.c_str(), nullptr, message,
                                   sizeof(message)) != 1) {
    *error = message;
    return false;
  }
  return true;
}

// A mode served by BlockingServer with a fixed number of threads.
class BlockingThreadsMode : public ServerMode {
 public:
  explicit BlockingThreadsMode(int threads) : threads_(threads) {}
  void Start(SSL_CTX *ctx, int listener, ServerCounters *counters) override {
    server_.Start(ctx, listener, threads_, counters);
  }
  void Stop() override { server_.Stop(); }

 private:
  int threads_;
  BlockingServer server_;
};

// The key in the server process, from SSL_CTX_use_PrivateKey_file().
class InProcessMode : public BlockingThreadsMode {
 public:
  using BlockingThreadsMode::BlockingThreadsMode;
  const char *name() const override { return "in-process"; }
  bool InstallKey(SSL_CTX *ctx, const std::string &path,
                  std::string *error) override {
    return InstallInProcessKey(ctx, path, error);
  }
};

// The key in a cell forked by keycell_start(), with blocking server threads.
class EmbeddedCellMode : public BlockingThreadsMode {
 public:
  EmbeddedCellMode(int threads, keycell *cell)
      : BlockingThreadsMode(threads), cell_(cell) {}
  const char *name() const override { return "cell"; }
  bool InstallKey(SSL_CTX *ctx, const std::string &path,
                  std::string *error) override {
    return InstallCellKey(cell_, ctx, path, error);
  }
  pid_t cell_pid() const override { return keycell_cell_pid(cell_); }

 private:
  keycell *cell_;
};

// A mode served by one EventLoopServer thread. The key is in |cell|, or in
// the server process when |cell| is null. With |async|, the SSL_CTX gets
// SSL_MODE_ASYNC, so a cell key operation pauses its handshake instead of
// blocking the loop.
class EventLoopMode : public ServerMode {
 public:
  EventLoopMode(const char *mode_name, keycell *cell, bool async)
      : name_(mode_name), cell_(cell), async_(async) {}
  const char *name() const override { return name_; }
  bool InstallKey(SSL_CTX *ctx, const std::string &path,
                  std::string *error) override {
    bool installed = cell_ != nullptr ? InstallCellKey(cell_, ctx, path, error)
                                      : InstallInProcessKey(ctx, path, error);
    if (installed && async_) {
      SSL_CTX_set_mode(ctx, SSL_MODE_ASYNC);
    }
    return installed;
  }
  pid_t cell_pid() const override {
    return cell_ != nullptr ? keycell_cell_pid(cell_) : 0;
  }
  void Start(SSL_CTX *ctx, int listener, ServerCounters *counters) override {
    server_.Start(ctx, listener, counters);
  }
  void Stop() override { server_.Stop(); }

 private:
  const char *name_;
  keycell *cell_;
  bool async_;
  EventLoopServer server_;
};

// keycelld for the daemon modes, started from the build tree in a
// temporary directory. Its configuration serves the benchmark's keys to the
// current user. keycell.so is loaded into this process, and the server reads
// each key from a reference file that `keycell wrap` writes.
class KeycelldService {
 public:
  KeycelldService() = default;
  KeycelldService(const KeycelldService &) = delete;
  KeycelldService &operator=(const KeycelldService &) = delete;
  ~KeycelldService() { Stop(); }

  // Starts keycelld with |key_paths| under their file names without
  // "-key.pem", and waits until its socket accepts connections.
  bool Start(const Flags &flags, const std::vector<std::string> &key_paths,
             std::string *error) {
    for (const std::string *program :
         {&flags.keycelld, &flags.keycell_cli, &flags.module}) {
      if (access(program->c_str(), R_OK) != 0) {
        *error = *program +
                 " not found; build the default preset or set "
                 "--keycelld, --keycell and --module";
        return false;
      }
    }
    keycell_cli_ = flags.keycell_cli;
    char pattern[] = "/tmp/keycell-bench-XXXXXX";
    if (mkdtemp(pattern) == nullptr) {
      *error = std::string("mkdtemp failed: ") + std::strerror(errno);
      return false;
    }
    directory_ = pattern;
    socket_ = directory_ + "/keycelld.sock";
    log_ = directory_ + "/keycelld.log";
    const passwd *user = getpwuid(geteuid());
    if (user == nullptr) {
      *error = "the current user has no name";
      return false;
    }
    std::string text = "socket " + socket_ + "\nsocket_mode 0600\n";
    if (flags.cell_workers != 0) {
      text += "workers " + std::to_string(flags.cell_workers) + "\n";
    }
    for (const std::string &path : key_paths) {
      std::string name = KeyName(path);
      names_[path] = name;
      text += "key " + name + " {\n  file " + path + "\n  allow_users " +
              user->pw_name + "\n}\n";
    }
    std::string config = directory_ + "/keycelld.conf";
    if (!WriteText(config, text, error)) {
      return false;
    }
    pid_ = Spawn({flags.keycelld, "--config", config, "--foreground"});
    if (pid_ < 0) {
      *error = "cannot start " + flags.keycelld;
      return false;
    }
    bool up = false;
    for (int i = 0; i < 1000 && !up; ++i) {
      up = SocketAccepts();
      if (!up) {
        if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (!up) {
      *error = "keycelld did not start; its log is " + log_;
      keep_log_ = true;
      return false;
    }
    if (OSSL_PROVIDER_load(nullptr, "default") == nullptr ||
        OSSL_PROVIDER_load(nullptr, flags.module.c_str()) == nullptr) {
      *error = "cannot load " + flags.module + ": " + DrainOpenSslErrors();
      return false;
    }
    return true;
  }

  // Writes the reference file of the key file |path| and installs the key
  // that the module reads from it into |ctx|.
  bool InstallKey(SSL_CTX *ctx, const std::string &path, std::string *error) {
    auto name = names_.find(path);
    if (name == names_.end()) {
      *error = path + " is not a key of keycelld's configuration";
      return false;
    }
    std::string reference = directory_ + "/" + name->second + "-ref.pem";
    pid_t wrap = Spawn({keycell_cli_, "wrap", "--socket", socket_, "--key",
                        name->second, "--out", reference});
    int status = 0;
    if (wrap < 0 || waitpid(wrap, &status, 0) != wrap || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      *error = "keycell wrap failed for key " + name->second +
               "; its output is in " + log_;
      keep_log_ = true;
      return false;
    }
    BIO *bio = BIO_new_file(reference.c_str(), "r");
    EVP_PKEY *key =
        bio != nullptr ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr)
                       : nullptr;
    BIO_free(bio);
    bool used = key != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1;
    EVP_PKEY_free(key);
    if (!used) {
      *error = "cannot install the key of " + reference + ": " +
               DrainOpenSslErrors();
    }
    return used;
  }

  pid_t pid() const { return pid_ > 0 ? pid_ : 0; }

  // Stops keycelld and removes the temporary directory, unless an error
  // message names the log in it.
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (directory_.empty() || keep_log_) {
      return;
    }
    for (const auto &[path, name] : names_) {
      unlink((directory_ + "/" + name + "-ref.pem").c_str());
    }
    for (const char *file :
         {"keycelld.conf", "keycelld.sock", "keycelld.log"}) {
      unlink((directory_ + "/" + file).c_str());
    }
    rmdir(directory_.c_str());
    directory_.clear();
  }

 private:
  // Returns "p256" for ".../p256-key.pem".
  static std::string KeyName(const std::string &path) {
    std::string name = path.substr(path.find_last_of('/') + 1);
    size_t suffix = name.rfind("-key.pem");
    return suffix == std::string::npos ? name : name.substr(0, suffix);
  }

  static bool WriteText(const std::string &path, const std::string &text,
                        std::string *error) {
    std::ofstream out(path);
    out << text;
    out.close();
    if (!out) {
      *error = "cannot write " + path;
      return false;
    }
    return true;
  }

  // Starts |argv| with stdout and stderr appended to the log and no other
  // inherited descriptors. Returns its pid, or -1.
  pid_t Spawn(const std::vector<std::string> &argv) const {
    std::vector<char *> args;
    for (const std::string &arg : argv) {
      args.push_back(const_cast<char *>(arg.c_str()));
    }
    args.push_back(nullptr);
    int log =
        open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log < 0) {
      return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_RDONLY);
      dup2(null, STDIN_FILENO);
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      close_range(3, ~0U, 0);
      execv(args[0], args.data());
      _exit(127);
    }
    close(log);
    return pid;
  }

  bool SocketAccepts() const {
    ScopedFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s",
                  socket_.c_str());
    return connect(fd.get(), reinterpret_cast<sockaddr *>(&address),
                   sizeof(address)) == 0;
  }

  std::string keycell_cli_;
  std::string directory_;
  std::string socket_;
  std::string log_;
  std::map<std::string, std::string> names_;  // Key file path to key name.
  pid_t pid_ = -1;
  bool keep_log_ = false;
};

// The key in keycelld, with blocking server threads: each thread's
// connection to keycelld carries one request at a time.
class DaemonMode : public BlockingThreadsMode {
 public:
  DaemonMode(int threads, KeycelldService *service)
      : BlockingThreadsMode(threads), service_(service) {}
  const char *name() const override { return "daemon"; }
  bool InstallKey(SSL_CTX *ctx, const std::string &path,
                  std::string *error) override {
    return service_->InstallKey(ctx, path, error);
  }
  pid_t cell_pid() const override { return service_->pid(); }

 private:
  KeycelldService *service_;
};

// The key in keycelld, with one event-loop thread and SSL_MODE_ASYNC: each
// request pauses its handshake's ASYNC_JOB, and the requests share the
// thread's pipelined connection to keycelld.
class AsyncDaemonMode : public ServerMode {
 public:
  explicit AsyncDaemonMode(KeycelldService *service) : service_(service) {}
  const char *name() const override { return "async-daemon"; }
  bool InstallKey(SSL_CTX *ctx, const std::string &path,
                  std::string *error) override {
    if (!service_->InstallKey(ctx, path, error)) {
      return false;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ASYNC);
    return true;
  }
  pid_t cell_pid() const override { return service_->pid(); }
  void Start(SSL_CTX *ctx, int listener, ServerCounters *counters) override {
    server_.Start(ctx, listener, counters);
  }
  void Stop() override { server_.Stop(); }

 private:
  KeycelldService *service_;
  EventLoopServer server_;
};

// ---------------------------------------------------------------------------
// Measurement

// One measurement of one mode with one version and key.
struct Sample {
  double wall_seconds = 0;
  double server_cpu_seconds = 0;
  double cell_cpu_seconds = 0;  // Negative when the mode has no cell.
  double client_cpu_seconds = 0;
  // CPU time of every process on the machine, negative if unknown.
  double machine_busy_seconds = 0;
  uint64_t handshakes = 0;
  uint64_t signed_messages = 0;
  uint64_t resumed = 0;
  uint64_t server_failures = 0;
  uint64_t client_handshakes = 0;
  uint64_t client_failures = 0;
  int max_paused_jobs = 0;
  std::string first_error;

  double handshakes_per_second() const {
    return static_cast<double>(handshakes) / wall_seconds;
  }
  double server_us_per_handshake() const {
    return 1e6 * server_cpu_seconds / static_cast<double>(handshakes);
  }
  double cell_us_per_handshake() const {
    return 1e6 * cell_cpu_seconds / static_cast<double>(handshakes);
  }
  double total_us_per_handshake() const {
    return server_us_per_handshake() +
           (cell_cpu_seconds > 0 ? cell_us_per_handshake() : 0);
  }
  double client_us_per_handshake() const {
    return 1e6 * client_cpu_seconds / static_cast<double>(handshakes);
  }
  // CPUs' worth of time that processes other than the server, the cell and
  // the client used during the measurement: other load on the machine.
  double other_cpus() const {
    if (machine_busy_seconds < 0) {
      return 0;
    }
    double ours = server_cpu_seconds + client_cpu_seconds +
                  std::max(cell_cpu_seconds, 0.0);
    return std::max(machine_busy_seconds - ours, 0.0) / wall_seconds;
  }
};

// One (version, key) pair, with a server context per mode.
struct Config {
  std::string version_name;
  int version = 0;
  std::string key_name;
  std::string cert_path;
  std::vector<SslCtxPtr> contexts;  // Indexed like the modes.
  std::vector<std::vector<Sample>> samples;
};

SslCtxPtr NewServerContext(const Config &config, ServerMode *mode,
                           const std::string &key_path, std::string *error) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    *error = "SSL_CTX_new failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  if (!ConfigureCommon(ctx.get(), config.version, error)) {
    return nullptr;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), config.cert_path.c_str()) !=
      1) {
    *error = "loading " + config.cert_path + " failed: " + DrainOpenSslErrors();
    return nullptr;
  }
  if (!mode->InstallKey(ctx.get(), key_path, error)) {
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    *error = key_path + " does not match " + config.cert_path + ": " +
             DrainOpenSslErrors();
    return nullptr;
  }
  SSL_CTX_set_msg_callback(ctx.get(), CountSignedMessages);
  return ctx;
}

bool Measure(ClientProcess *client, int listener, uint16_t port,
             const Config &config, SSL_CTX *ctx, ServerMode *mode,
             double seconds, int client_threads, Sample *sample,
             std::string *error) {
  ServerCounters counters;
  SSL_CTX_set_msg_callback_arg(ctx, &counters);

  ClientJob job;
  job.port = port;
  job.version = config.version;
  job.duration_ms = static_cast<uint32_t>(seconds * 1000);
  job.threads = static_cast<uint32_t>(client_threads);
  std::snprintf(job.trusted_cert, sizeof(job.trusted_cert), "%s",
                config.cert_path.c_str());

  mode->Start(ctx, listener, &counters);
  pid_t cell = mode->cell_pid();
  double cell_before = cell > 0 ? ProcessCpuSeconds(cell) : -1;
  double server_before = SelfCpuSeconds();
  double machine_before = MachineBusySeconds();
  Clock::time_point start = Clock::now();

  ClientReport report;
  bool ok = client->Run(job, &report, error);

  Clock::time_point end = Clock::now();
  double server_after = SelfCpuSeconds();
  double machine_after = MachineBusySeconds();
  double cell_after = cell > 0 ? ProcessCpuSeconds(cell) : -1;
  mode->Stop();
  SSL_CTX_set_msg_callback_arg(ctx, nullptr);
  if (!ok) {
    return false;
  }

  sample->wall_seconds = std::chrono::duration<double>(end - start).count();
  sample->server_cpu_seconds = server_after - server_before;
  sample->cell_cpu_seconds =
      cell_before >= 0 && cell_after >= 0 ? cell_after - cell_before : -1;
  sample->client_cpu_seconds = report.cpu_seconds;
  sample->machine_busy_seconds = machine_before >= 0 && machine_after >= 0
                                     ? machine_after - machine_before
                                     : -1;
  sample->handshakes = counters.handshakes.load();
  sample->signed_messages = counters.signed_messages.load();
  sample->resumed = counters.resumed.load() + report.resumed;
  sample->server_failures = counters.failures.load();
  sample->client_handshakes = report.handshakes;
  sample->client_failures = report.failures;
  sample->max_paused_jobs = counters.max_paused_jobs.load();
  sample->first_error = !counters.first_error.empty()
                            ? "server: " + counters.first_error
                        : report.first_error[0] != '\0'
                            ? std::string("client: ") + report.first_error
                            : "";
  if (sample->handshakes == 0) {
    *error = "no handshake completed";
    if (!sample->first_error.empty()) {
      *error += "; first error: " + sample->first_error;
    }
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Report

double Median(std::vector<double> values) {
  if (values.empty()) {
    return 0;
  }
  std::sort(values.begin(), values.end());
  size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle]
                                : (values[middle - 1] + values[middle]) / 2;
}

using SampleValue = double (Sample::*)() const;

double MedianOf(const std::vector<Sample> &samples, SampleValue value) {
  std::vector<double> values;
  for (const Sample &sample : samples) {
    values.push_back((sample.*value)());
  }
  return Median(values);
}

// Median over rounds of the per-round ratio value(mode) / value(baseline).
// Each round measures both modes back to back, so taking the ratio within a
// round cancels slow drifts of the machine's load.
double MedianRatio(const std::vector<Sample> &mode,
                   const std::vector<Sample> &baseline, SampleValue value) {
  std::vector<double> ratios;
  for (size_t i = 0; i < mode.size() && i < baseline.size(); ++i) {
    ratios.push_back((mode[i].*value)() / (baseline[i].*value)());
  }
  return Median(ratios);
}

void PrintHeader() {
  std::printf("\n%-7s %-8s %-18s %7s %7s %7s %7s %6s %6s %6s %7s %6s %6s %s\n",
              "", "", "", "", "server", "cell", "total", "hs/s", "server",
              "total", "client", "other", "sig", "");
  std::printf("%-7s %-8s %-18s %7s %7s %7s %7s %6s %6s %6s %7s %6s %6s %s\n",
              "version", "key", "mode", "hs/s", "us/hs", "us/hs", "us/hs",
              "ratio", "ratio", "ratio", "us/hs", "CPUs", "per hs", "failed");
}

// Prints one row of a mode that ran and returns false if a check failed:
// a handshake that did not sign exactly once, a resumed session or a failed
// connection.
bool PrintRow(const Config &config, const ServerMode &mode,
              const std::vector<Sample> &samples,
              const std::vector<Sample> *baseline) {
  uint64_t handshakes = 0;
  uint64_t signed_messages = 0;
  uint64_t resumed = 0;
  uint64_t failed = 0;
  for (const Sample &sample : samples) {
    handshakes += sample.handshakes;
    signed_messages += sample.signed_messages;
    resumed += sample.resumed;
    failed += sample.server_failures + sample.client_failures;
  }

  char cell_us[16] = "-";
  if (!samples.empty() && samples[0].cell_cpu_seconds >= 0) {
    std::snprintf(cell_us, sizeof(cell_us), "%.0f",
                  MedianOf(samples, &Sample::cell_us_per_handshake));
  }
  char rate_ratio[16] = "-";
  char server_ratio[16] = "-";
  char total_ratio[16] = "-";
  if (baseline != nullptr) {
    std::snprintf(
        rate_ratio, sizeof(rate_ratio), "%.2f",
        MedianRatio(samples, *baseline, &Sample::handshakes_per_second));
    std::snprintf(
        server_ratio, sizeof(server_ratio), "%.2f",
        MedianRatio(samples, *baseline, &Sample::server_us_per_handshake));
    std::snprintf(
        total_ratio, sizeof(total_ratio), "%.2f",
        MedianRatio(samples, *baseline, &Sample::total_us_per_handshake));
  }
  std::printf(
      "TLS%-4s %-8s %-18s %7.0f %7.0f %7s %7.0f %6s %6s %6s %7.0f %6.2f "
      "%6.3f %llu\n",
      config.version_name.c_str(), config.key_name.c_str(), mode.name(),
      MedianOf(samples, &Sample::handshakes_per_second),
      MedianOf(samples, &Sample::server_us_per_handshake), cell_us,
      MedianOf(samples, &Sample::total_us_per_handshake), rate_ratio,
      server_ratio, total_ratio,
      MedianOf(samples, &Sample::client_us_per_handshake),
      MedianOf(samples, &Sample::other_cpus),
      static_cast<double>(signed_messages) / static_cast<double>(handshakes),
      static_cast<unsigned long long>(failed));

  if (signed_messages == handshakes && resumed == 0 && failed == 0) {
    return true;
  }
  std::printf(
      "  check failed: %llu handshakes, %llu signed messages, %llu "
      "resumed, %llu failed connections\n",
      static_cast<unsigned long long>(handshakes),
      static_cast<unsigned long long>(signed_messages),
      static_cast<unsigned long long>(resumed),
      static_cast<unsigned long long>(failed));
  return false;
}

// Prints the table of medians. Returns false if any check failed.
bool PrintReport(const std::vector<Config> &configs,
                 const std::vector<std::unique_ptr<ServerMode>> &modes,
                 int baseline) {
  PrintHeader();
  bool checks_passed = true;
  for (const Config &config : configs) {
    for (size_t m = 0; m < modes.size(); ++m) {
      std::string reason = modes[m]->unavailable_reason();
      if (!reason.empty()) {
        std::printf("TLS%-4s %-8s %-18s not available in this build (%s)\n",
                    config.version_name.c_str(), config.key_name.c_str(),
                    modes[m]->name(), reason.c_str());
        continue;
      }
      const std::vector<Sample> *base =
          baseline >= 0 ? &config.samples[baseline] : nullptr;
      if (!PrintRow(config, *modes[m], config.samples[m], base)) {
        checks_passed = false;
      }
    }
  }
  std::printf(
      "\nMedians over the rounds. hs/s: full handshakes per second that the "
      "server\ncompleted. us/hs: CPU microseconds (user + system) per "
      "handshake of the server\nprocess, the cell process, their sum "
      "(total) and the client process. Ratios:\nthis mode's value divided "
      "by the in-process value of the same round. other\nCPUs: CPU time of "
      "all other processes on the machine per second of wall time.\nsig per "
      "hs: signed handshake messages (CertificateVerify or\n"
      "ServerKeyExchange) that the server sent per handshake.\n");
  return checks_passed;
}

// Returns the index of the mode called |name| that runs in this build, or
// -1.
int FindMode(const std::vector<std::unique_ptr<ServerMode>> &modes,
             std::string_view name) {
  for (size_t m = 0; m < modes.size(); ++m) {
    if (name == modes[m]->name() && modes[m]->unavailable_reason().empty()) {
      return static_cast<int>(m);
    }
  }
  return -1;
}

// Prints the single-threaded event-loop servers side by side: the
// async-cell mode's handshakes per second divided by those of the same loop
// without SSL_MODE_ASYNC, and by those of the loop with an in-process key.
void PrintEventLoopReport(
    const std::vector<Config> &configs,
    const std::vector<std::unique_ptr<ServerMode>> &modes) {
  int async = FindMode(modes, "async-cell");
  int sync = FindMode(modes, "sync-cell-1thread");
  int in_process = FindMode(modes, "in-process-1thread");
  if (async < 0 || sync < 0) {
    return;
  }
  std::printf(
      "\nOne event-loop thread: async-cell against the same server without "
      "SSL_MODE_ASYNC\n");
  std::printf("%-7s %-8s %10s %10s %10s %10s %10s %7s\n", "", "", "async-cell",
              "sync-cell", "in-proc", "async /", "async /", "max");
  std::printf("%-7s %-8s %10s %10s %10s %10s %10s %7s\n", "version", "key",
              "hs/s", "hs/s", "hs/s", "sync", "in-proc", "paused");
  for (const Config &config : configs) {
    const std::vector<Sample> &async_samples = config.samples[async];
    const std::vector<Sample> &sync_samples = config.samples[sync];
    char in_process_rate[16] = "-";
    char in_process_ratio[16] = "-";
    if (in_process >= 0) {
      const std::vector<Sample> &in_process_samples =
          config.samples[in_process];
      std::snprintf(
          in_process_rate, sizeof(in_process_rate), "%.0f",
          MedianOf(in_process_samples, &Sample::handshakes_per_second));
      std::snprintf(in_process_ratio, sizeof(in_process_ratio), "%.2f",
                    MedianRatio(async_samples, in_process_samples,
                                &Sample::handshakes_per_second));
    }
    int max_paused = 0;
    for (const Sample &sample : async_samples) {
      max_paused = std::max(max_paused, sample.max_paused_jobs);
    }
    std::printf("TLS%-4s %-8s %10.0f %10.0f %10s %10.2f %10s %7d\n",
                config.version_name.c_str(), config.key_name.c_str(),
                MedianOf(async_samples, &Sample::handshakes_per_second),
                MedianOf(sync_samples, &Sample::handshakes_per_second),
                in_process_rate,
                MedianRatio(async_samples, sync_samples,
                            &Sample::handshakes_per_second),
                in_process_ratio, max_paused);
  }
  std::printf(
      "\nhs/s: medians over the rounds, of async-cell, sync-cell-1thread and "
      "in-process-1thread.\nRatios: median over the rounds of async-cell's "
      "hs/s divided by the other mode's\nhs/s of the same round. max paused: "
      "the most connections whose ASYNC_JOB\nwaited for the cell at the same "
      "time, over all rounds.\n");
}

// ---------------------------------------------------------------------------

std::vector<std::unique_ptr<ServerMode>> CreateModes(const Flags &flags,
                                                     keycell *cell,
                                                     KeycelldService *service) {
  std::vector<std::unique_ptr<ServerMode>> modes;
  for (const std::string &name : flags.modes) {
    if (name == "in-process") {
      modes.push_back(std::make_unique<InProcessMode>(flags.server_threads));
    } else if (name == "cell") {
      modes.push_back(
          std::make_unique<EmbeddedCellMode>(flags.server_threads, cell));
    } else if (name == "async-cell") {
      modes.push_back(std::make_unique<EventLoopMode>("async-cell", cell,
                                                      /*async=*/true));
    } else if (name == "sync-cell-1thread") {
      modes.push_back(std::make_unique<EventLoopMode>("sync-cell-1thread", cell,
                                                      /*async=*/false));
    } else if (name == "in-process-1thread") {
      modes.push_back(std::make_unique<EventLoopMode>(
          "in-process-1thread", nullptr, /*async=*/false));
    } else if (name == "daemon") {
      modes.push_back(
          std::make_unique<DaemonMode>(flags.server_threads, service));
    } else if (name == "async-daemon") {
      modes.push_back(std::make_unique<AsyncDaemonMode>(service));
    }
  }
  return modes;
}

int Run(const Flags &flags) {
  std::string error;
  ClientProcess client;
  if (!client.Start(&error)) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);

  keycell_options *options = keycell_options_new();
  if (options == nullptr ||
      keycell_options_set_workers(options, flags.cell_workers) != 1) {
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
  std::unique_ptr<keycell, void (*)(keycell *)> cell_owner(cell, keycell_free);

  KeycelldService service;
  bool daemon_modes = false;
  for (const std::string &name : flags.modes) {
    daemon_modes |= name == "daemon" || name == "async-daemon";
  }
  if (daemon_modes) {
    std::vector<std::string> key_paths;
    for (const std::string &key : flags.keys) {
      key_paths.push_back(flags.data_dir + "/" + key + "-key.pem");
    }
    if (!service.Start(flags, key_paths, &error)) {
      std::fprintf(stderr, "error: %s\n", error.c_str());
      return 1;
    }
  }
  std::vector<std::unique_ptr<ServerMode>> modes =
      CreateModes(flags, cell, &service);
  int baseline = -1;
  for (size_t m = 0; m < modes.size(); ++m) {
    if (std::string_view(modes[m]->name()) == "in-process") {
      baseline = static_cast<int>(m);
    }
  }

  std::vector<Config> configs;
  for (const std::string &version : flags.versions) {
    for (const std::string &key : flags.keys) {
      Config config;
      config.version_name = version;
      config.version = ProtocolVersion(version);
      config.key_name = key;
      config.cert_path = flags.data_dir + "/" + key + "-cert.pem";
      std::string key_path = flags.data_dir + "/" + key + "-key.pem";
      for (const std::unique_ptr<ServerMode> &mode : modes) {
        SslCtxPtr ctx;
        if (mode->unavailable_reason().empty()) {
          ctx = NewServerContext(config, mode.get(), key_path, &error);
          if (!ctx) {
            std::fprintf(stderr, "error: TLS %s %s %s: %s\n", version.c_str(),
                         key.c_str(), mode->name(), error.c_str());
            return 1;
          }
        }
        config.contexts.push_back(std::move(ctx));
        config.samples.emplace_back();
      }
      configs.push_back(std::move(config));
    }
  }

  uint16_t port = 0;
  ScopedFd listener(Listen(&port, &error));
  if (listener.get() < 0) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }

  std::printf(
      "keycell handshake benchmark: %d rounds of %.2f s per mode, %d server "
      "threads, %d client threads, cell pid %d, %s\n",
      flags.rounds, flags.seconds, flags.server_threads, flags.client_threads,
      static_cast<int>(keycell_cell_pid(cell)),
      OpenSSL_version(OPENSSL_VERSION));
  std::fflush(stdout);

  // Warm-up, then the rounds. Odd rounds run the modes in reverse order so
  // that no mode always follows the same one.
  for (int round = -1; round < flags.rounds; ++round) {
    bool warmup = round < 0;
    if (warmup && flags.warmup_seconds <= 0) {
      continue;
    }
    double seconds = warmup ? flags.warmup_seconds : flags.seconds;
    for (Config &config : configs) {
      for (size_t i = 0; i < modes.size(); ++i) {
        size_t m = round % 2 == 1 ? modes.size() - 1 - i : i;
        if (!config.contexts[m]) {
          continue;
        }
        Sample sample;
        if (!Measure(&client, listener.get(), port, config,
                     config.contexts[m].get(), modes[m].get(), seconds,
                     flags.client_threads, &sample, &error)) {
          std::fprintf(stderr, "error: TLS %s %s %s: %s\n",
                       config.version_name.c_str(), config.key_name.c_str(),
                       modes[m]->name(), error.c_str());
          return 1;
        }
        if (!sample.first_error.empty()) {
          std::fprintf(stderr, "warning: TLS %s %s %s: %llu failed: %s\n",
                       config.version_name.c_str(), config.key_name.c_str(),
                       modes[m]->name(),
                       static_cast<unsigned long long>(sample.server_failures +
                                                       sample.client_failures),
                       sample.first_error.c_str());
        }
        if (warmup) {
          continue;
        }
        std::fprintf(
            stderr,
            "round %d TLS%s %-8s %-18s %8.0f hs/s  server %6.0f "
            "us/hs  cell %6.0f us/hs\n",
            round + 1, config.version_name.c_str(), config.key_name.c_str(),
            modes[m]->name(), sample.handshakes_per_second(),
            sample.server_us_per_handshake(),
            sample.cell_cpu_seconds >= 0 ? sample.cell_us_per_handshake()
                                         : 0.0);
        config.samples[m].push_back(std::move(sample));
      }
    }
  }

  bool passed = PrintReport(configs, modes, baseline);
  PrintEventLoopReport(configs, modes);
  client.Stop();
  if (!passed) {
    std::printf("\nFAILED: see the check lines above\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  Flags flags;
  int parsed = ParseFlags(argc, argv, &flags);
  if (parsed != 0) {
    return parsed < 0 ? 0 : 2;
  }
  return Run(flags);
}
