// Attacks on the cell by a compromised server process: malformed and
// oversized frames, connection floods, reading the cell's memory, and
// requests that try to misuse a key. Every attack must fail, and the cell
// must go on serving its honest clients.
//
// Frames are built by hand with the protocol codec and sent on dedicated
// connections from CellClient::OpenDedicatedConnection. Each wait is bounded
// by a poll timeout or a ScopedAlarm watchdog, so a hang fails the test.
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/cell_client.h"
#include "protocol/codec.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "provider/provider.h"
#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

namespace protocol = kc::protocol;
using kc::Code;
using kc::UniqueFd;
using kc::client::CellClient;
using protocol::MessageType;

// Milliseconds to wait for one reply or for the cell to close a connection.
constexpr int kReplyTimeoutMs = 10000;

// Read by process_vm_readv from the cell, which is forked from this process
// without exec and so has this variable at the same address.
volatile uint64_t memory_marker = 0x6b657963656c6c21;

uint8_t TypeByte(MessageType type) {
  return static_cast<uint8_t>(type);
}

std::span<const uint8_t> AsBytes(std::string_view text) {
  return {reinterpret_cast<const uint8_t *>(text.data()), text.size()};
}

// Returns the bytes of one frame carrying |message|.
template <typename Message>
std::vector<uint8_t> FrameBytes(uint8_t type, uint64_t id,
                                const Message &message, uint16_t status = 0) {
  protocol::WipingBuffer buffer;
  protocol::AppendFrame(buffer, type, status, id, message);
  return {buffer.data(), buffer.data() + buffer.size()};
}

// Returns a frame header announcing |length| payload bytes.
std::vector<uint8_t> HeaderBytes(uint32_t length, uint8_t type, uint64_t id) {
  // EncodeHeader writes any length; only DecodeHeader checks the maximum.
  protocol::FrameHeader header;
  header.length = length;
  header.type = type;
  header.id = id;
  std::vector<uint8_t> bytes(protocol::kHeaderSize);
  protocol::EncodeHeader(header, bytes.data());
  return bytes;
}

enum class ReadOutcome { kFrame, kClosed, kTimedOut, kError };

struct RawReply {
  ReadOutcome outcome = ReadOutcome::kError;
  protocol::FrameHeader header;
  std::vector<uint8_t> payload;
};

// Reads exactly |size| bytes, waiting at most |timeout_ms| for each read.
ReadOutcome ReadExactly(int fd, uint8_t *data, size_t size, int timeout_ms) {
  size_t done = 0;
  while (done < size) {
    pollfd entry{fd, POLLIN, 0};
    int ready = poll(&entry, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) {
      continue;
    }
    if (ready < 0) {
      return ReadOutcome::kError;
    }
    if (ready == 0) {
      return ReadOutcome::kTimedOut;
    }
    ssize_t n = recv(fd, data + done, size - done, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      continue;
    }
    if (n < 0 && errno == ECONNRESET) {
      return ReadOutcome::kClosed;
    }
    if (n < 0) {
      return ReadOutcome::kError;
    }
    if (n == 0) {
      return ReadOutcome::kClosed;
    }
    done += static_cast<size_t>(n);
  }
  return ReadOutcome::kFrame;
}

// Reads one reply frame from a raw connection.
RawReply ReadRawReply(int fd, int timeout_ms = kReplyTimeoutMs) {
  RawReply reply;
  uint8_t header[protocol::kHeaderSize];
  reply.outcome = ReadExactly(fd, header, sizeof(header), timeout_ms);
  if (reply.outcome != ReadOutcome::kFrame) {
    return reply;
  }
  std::optional<protocol::FrameHeader> decoded = protocol::DecodeHeader(header);
  if (!decoded) {
    reply.outcome = ReadOutcome::kError;
    return reply;
  }
  reply.header = *decoded;
  reply.payload.resize(decoded->length);
  if (!reply.payload.empty()) {
    reply.outcome =
        ReadExactly(fd, reply.payload.data(), reply.payload.size(), timeout_ms);
  }
  return reply;
}

// Returns the message of an error reply, or "" if the payload is not one.
std::string ErrorMessage(const RawReply &reply) {
  protocol::ErrorReply error;
  if (!protocol::Decode(reply.payload, error)) {
    return "";
  }
  return std::string(error.message);
}

// Sends |bytes| in full. Returns false on error, including a connection that
// the cell closed, which raises no SIGPIPE.
bool SendBytes(int fd, const std::vector<uint8_t> &bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n =
        send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// Returns the value of a "Name:\tvalue" line of /proc/<pid>/status, or "".
std::string ProcStatusField(pid_t pid, const std::string &name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) == 0) {
      size_t start = line.find_first_not_of(" \t", name.size() + 1);
      return start == std::string::npos ? "" : line.substr(start);
    }
  }
  return "";
}

// Returns the resident set size of |pid| in KiB, or -1.
long ResidentKib(pid_t pid) {
  std::string value = ProcStatusField(pid, "VmRSS");
  if (value.empty()) {
    return -1;
  }
  return std::stol(value);
}

// Returns the line of /proc/<pid>/limits that starts with |name|, or "".
std::string ProcLimitsLine(pid_t pid, const std::string &name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) == 0) {
      return line;
    }
  }
  return "";
}

// Removes CAP_SYS_PTRACE from the calling thread's effective capabilities
// until destroyed. With it, root may ptrace and read any process, dumpable
// or not; without it, PR_SET_DUMPABLE 0 is what protects the cell.
class ScopedNoPtraceCapability {
 public:
  ScopedNoPtraceCapability() {
    header_.version = _LINUX_CAPABILITY_VERSION_3;
    header_.pid = 0;
    ok_ = syscall(SYS_capget, &header_, saved_) == 0;
    if (!ok_) {
      return;
    }
    __user_cap_data_struct reduced[2];
    std::memcpy(reduced, saved_, sizeof(reduced));
    reduced[CAP_TO_INDEX(CAP_SYS_PTRACE)].effective &=
        ~CAP_TO_MASK(CAP_SYS_PTRACE);
    ok_ = syscall(SYS_capset, &header_, reduced) == 0;
  }
  ScopedNoPtraceCapability(const ScopedNoPtraceCapability &) = delete;
  ScopedNoPtraceCapability &operator=(const ScopedNoPtraceCapability &) =
      delete;
  ~ScopedNoPtraceCapability() {
    if (ok_) {
      syscall(SYS_capset, &header_, saved_);
    }
  }
  bool ok() const { return ok_; }

 private:
  __user_cap_header_struct header_{};
  __user_cap_data_struct saved_[2]{};
  bool ok_ = false;
};

// Removes CAP_SYS_PTRACE from the calling thread's permitted and effective
// capabilities for good. Opening /proc/<pid>/mem needs the target's
// permitted capabilities to be a subset of the opener's effective ones
// unless the opener has CAP_SYS_PTRACE.
void DropPermittedPtraceCapability() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) {
    return;
  }
  uint32_t mask = CAP_TO_MASK(CAP_SYS_PTRACE);
  data[CAP_TO_INDEX(CAP_SYS_PTRACE)].effective &= ~mask;
  data[CAP_TO_INDEX(CAP_SYS_PTRACE)].permitted &= ~mask;
  data[CAP_TO_INDEX(CAP_SYS_PTRACE)].inheritable &= ~mask;
  syscall(SYS_capset, &header, data);
}

// Forks a dumpable child that only waits to be killed: a process that the
// same credentials can ptrace, which shows that an attack on the cell fails
// because of the cell's hardening and not because the attack is wrong.
class DumpableChild {
 public:
  DumpableChild() {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) {
      return;
    }
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
      DropPermittedPtraceCapability();
      char byte = 1;
      (void)write(ready[1], &byte, 1);
      for (;;) {
        pause();
      }
    }
    close(ready[1]);
    char byte = 0;
    // The child is usable once it has set itself up.
    if (pid_ > 0 && read(ready[0], &byte, 1) != 1) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    close(ready[0]);
  }
  DumpableChild(const DumpableChild &) = delete;
  DumpableChild &operator=(const DumpableChild &) = delete;
  ~DumpableChild() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Attaches to |pid| with ptrace. Returns 0 on success, after detaching
// again, or the errno of the failed attach.
int TryPtraceAttach(pid_t pid) {
  if (ptrace(PTRACE_ATTACH, pid, nullptr, nullptr) != 0) {
    return errno;
  }
  int status = 0;
  waitpid(pid, &status, __WALL);
  ptrace(PTRACE_DETACH, pid, nullptr, nullptr);
  return 0;
}

// Reads memory_marker from |pid| with process_vm_readv. Returns 0 when the
// value read matches, or the errno of the failure (EIO for a mismatch).
int TryProcessVmRead(pid_t pid) {
  uint64_t value = 0;
  iovec local{&value, sizeof(value)};
  iovec remote{const_cast<uint64_t *>(&memory_marker), sizeof(value)};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n < 0) {
    return errno;
  }
  return n == sizeof(value) && value == memory_marker ? 0 : EIO;
}

// Opens /proc/<pid>/mem and reads memory_marker from it. Returns 0 when the
// value read matches, or the errno of the failed open or read.
int TryProcMemRead(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/mem";
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno;
  }
  uint64_t value = 0;
  ssize_t n = pread(fd, &value, sizeof(value),
                    static_cast<off_t>(reinterpret_cast<uintptr_t>(
                        const_cast<uint64_t *>(&memory_marker))));
  int error = n < 0 ? errno : 0;
  close(fd);
  if (n < 0) {
    return error;
  }
  return n == sizeof(value) && value == memory_marker ? 0 : EIO;
}

// A cell started through CellClient, with an RSA key loaded for signing and
// helpers that exercise it the way an honest client does.
class AttackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The flood test opens 1000 connections. Both ends of each count
    // against the open file limit, which the cell inherits at fork.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < 4096) {
      files.rlim_cur = std::min<rlim_t>(4096, files.rlim_max);
      setrlimit(RLIMIT_NOFILE, &files);
    }
    ASSERT_TRUE(kc::provider::EnsureLoaded().ok());
    kc::client::StartOptions options;
    options.workers = 2;
    options.timeout_ms = 20000;
    kc::Result<std::shared_ptr<CellClient>> started =
        CellClient::Start(options);
    ASSERT_TRUE(started.ok()) << started.status().message();
    cell_ = started.value();
    ASSERT_TRUE(LoadKey("rsa2048-key.pem", {}, &rsa_key_id_, &rsa_public_key_));
  }

  void TearDown() override {
    if (cell_) {
      cell_->Stop();
    }
  }

  // Loads a key file of the test data through the cell. Returns false with a
  // test failure if the cell rejects it.
  bool LoadKey(const std::string &name, const protocol::KeyPolicy &policy,
               uint32_t *key_id, std::vector<uint8_t> *public_key) {
    std::string path = DataPath(name);
    protocol::LoadKeyRequest request;
    request.path = path;
    request.policy = policy;
    kc::client::Reply reply;
    kc::Status status = cell_->Call(MessageType::kLoadKey, request, reply);
    EXPECT_TRUE(status.ok()) << name << ": " << status.message();
    if (!status.ok()) {
      return false;
    }
    protocol::LoadKeyReply loaded;
    EXPECT_TRUE(protocol::Decode(reply.payload, loaded)) << name;
    *key_id = loaded.key_id;
    public_key->assign(loaded.public_key.begin(), loaded.public_key.end());
    return true;
  }

  UniqueFd OpenConnection() {
    kc::Result<UniqueFd> fd = cell_->OpenDedicatedConnection();
    EXPECT_TRUE(fd.ok()) << fd.status().message();
    return fd.ok() ? std::move(fd.value()) : UniqueFd();
  }

  // Signs a SHA-256 digest with the RSA key through the client's own
  // connection and verifies the signature. Returns "" on success or what
  // failed.
  std::string SignAndCheck() {
    uint8_t digest[32];
    std::memset(digest, 0x5a, sizeof(digest));
    protocol::SignRequest request;
    request.key_id = rsa_key_id_;
    request.digest = "SHA256";
    request.padding = protocol::kPaddingPkcs1;
    request.input = digest;
    kc::client::Reply reply;
    kc::Status status = cell_->Call(MessageType::kSign, request, reply);
    if (!status.ok()) {
      return "sign request failed: " + status.message();
    }
    protocol::SignReply signature;
    if (!protocol::Decode(reply.payload, signature)) {
      return "invalid sign reply";
    }
    return VerifyRsaSignature(digest, signature.signature);
  }

  // Verifies an RSA PKCS#1 v1.5 SHA-256 signature over |digest| with the
  // RSA key's public half. Returns "" on success.
  std::string VerifyRsaSignature(std::span<const uint8_t> digest,
                                 std::span<const uint8_t> signature) {
    EvpPkeyPtr public_key = RsaPublicKey();
    if (!public_key) {
      return "cannot parse the public key";
    }
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
        EVP_PKEY_CTX_new(public_key.get(), nullptr), EVP_PKEY_CTX_free);
    if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1) {
      return "cannot set up verification: " + DrainOpenSslErrors();
    }
    if (EVP_PKEY_verify(ctx.get(), signature.data(), signature.size(),
                        digest.data(), digest.size()) != 1) {
      return "signature does not verify: " + DrainOpenSslErrors();
    }
    return "";
  }

  EvpPkeyPtr RsaPublicKey() const {
    const unsigned char *der = rsa_public_key_.data();
    return EvpPkeyPtr(
        d2i_PUBKEY(nullptr, &der, static_cast<long>(rsa_public_key_.size())));
  }

  // Runs one TLS handshake whose server signs with the cell's RSA key.
  // Returns "" on success or a description of the failure.
  std::string RunTlsHandshake() {
    kc::Result<EVP_PKEY *> created = kc::provider::NewCellKey(
        cell_, rsa_key_id_, protocol::KeyType::kRsa, rsa_public_key_);
    if (!created.ok()) {
      return "cannot create the cell key: " + created.status().message();
    }
    EvpPkeyPtr key(created.value());
    std::string error;
    SslCtxPtr server =
        NewServerContext(TlsSettings{}, CertPath("rsa2048"), key.get(), &error);
    if (!server) {
      return "server context: " + error;
    }
    SslCtxPtr client =
        NewClientContext(TlsSettings{}, {CertPath("rsa2048")}, &error);
    if (!client) {
      return "client context: " + error;
    }
    HandshakeResult result = RunHandshake(server.get(), client.get());
    return result.ok ? "" : Describe(result);
  }

  std::shared_ptr<CellClient> cell_;
  uint32_t rsa_key_id_ = 0;
  std::vector<uint8_t> rsa_public_key_;
};

struct MalformedCase {
  const char *name;
  std::vector<uint8_t> bytes;
  // Half-closes the connection after the bytes, so the cell reads end of
  // file in the middle of a frame.
  bool shutdown_write = false;
  // The status of the error reply, or kOk when the cell closes the
  // connection without a reply.
  Code expected_status = Code::kBadRequest;
};

std::vector<MalformedCase> MalformedCases(uint32_t key_id) {
  std::vector<MalformedCase> cases;

  std::string_view http = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  cases.push_back({"garbage text", {http.begin(), http.end()}});

  // Bytes from a fixed linear congruential generator, after a zero length so
  // that the frame is complete and reaches the dispatcher.
  std::vector<uint8_t> noise(4 + 12 + 48, 0);
  uint32_t state = 12345;
  for (size_t i = 4; i < noise.size(); ++i) {
    state = state * 1103515245 + 12345;
    noise[i] = static_cast<uint8_t>(state >> 16);
  }
  noise[3] = 48;
  noise[4] = protocol::kVersion;
  noise[5] = TypeByte(MessageType::kSign);
  noise[6] = 0;
  noise[7] = 0;
  cases.push_back({"garbage sign payload", noise});

  protocol::SignRequest sign;
  sign.key_id = key_id;
  sign.digest = "SHA256";
  sign.padding = protocol::kPaddingPkcs1;
  static const uint8_t kDigest[32] = {};
  sign.input = kDigest;
  std::vector<uint8_t> valid =
      FrameBytes(TypeByte(MessageType::kSign), 1, sign);

  std::vector<uint8_t> truncated(valid.begin(), valid.begin() + 30);
  cases.push_back({"truncated frame", truncated, true, Code::kOk});

  std::vector<uint8_t> short_payload = valid;
  // The header announces 5 bytes fewer than the encoded request.
  short_payload[3] = static_cast<uint8_t>(short_payload[3] - 5);
  short_payload.resize(short_payload.size() - 5);
  cases.push_back({"payload shorter than fields", short_payload});

  std::vector<uint8_t> forged_version = valid;
  forged_version[4] = protocol::kVersion + 1;
  cases.push_back(
      {"forged version", forged_version, false, Code::kUnsupportedVersion});

  std::vector<uint8_t> version_zero = valid;
  version_zero[4] = 0;
  cases.push_back(
      {"version zero", version_zero, false, Code::kUnsupportedVersion});

  std::vector<uint8_t> unknown_type = valid;
  unknown_type[5] = 0xee;
  cases.push_back({"unknown type", unknown_type});

  std::vector<uint8_t> type_zero = valid;
  type_zero[5] = 0;
  cases.push_back({"type zero", type_zero});

  cases.push_back(
      {"nonzero status", FrameBytes(TypeByte(MessageType::kSign), 1, sign,
                                    static_cast<uint16_t>(Code::kUnknownKey))});

  std::vector<uint8_t> ping_with_payload =
      HeaderBytes(4, TypeByte(MessageType::kPing), 1);
  ping_with_payload.insert(ping_with_payload.end(), {1, 2, 3, 4});
  cases.push_back({"ping with payload", ping_with_payload});

  cases.push_back(
      {"oversized frame", HeaderBytes(protocol::kMaxPayload + 1,
                                      TypeByte(MessageType::kSign), 1)});
  return cases;
}

TEST_F(AttackTest, MalformedFramesCloseOnlyTheirConnection) {
  ScopedAlarm alarm(90, "malformed frame test hung");
  UniqueFd bystander = OpenConnection();
  ASSERT_TRUE(bystander.valid());

  for (const MalformedCase &attack : MalformedCases(rsa_key_id_)) {
    SCOPED_TRACE(attack.name);
    UniqueFd fd = OpenConnection();
    ASSERT_TRUE(fd.valid());
    ASSERT_TRUE(SendBytes(fd.get(), attack.bytes));
    if (attack.shutdown_write) {
      ASSERT_EQ(shutdown(fd.get(), SHUT_WR), 0);
    }

    if (attack.expected_status != Code::kOk) {
      RawReply reply = ReadRawReply(fd.get());
      ASSERT_EQ(reply.outcome, ReadOutcome::kFrame);
      EXPECT_EQ(reply.header.status,
                static_cast<uint16_t>(attack.expected_status));
      EXPECT_FALSE(ErrorMessage(reply).empty());
    }
    RawReply after = ReadRawReply(fd.get());
    EXPECT_EQ(after.outcome, ReadOutcome::kClosed);

    // The connection opened before the attack still works.
    std::vector<uint8_t> ping;
    protocol::WipingBuffer buffer;
    protocol::AppendEmptyFrame(buffer, TypeByte(MessageType::kPing), 0, 77);
    ping.assign(buffer.data(), buffer.data() + buffer.size());
    ASSERT_TRUE(SendBytes(bystander.get(), ping));
    RawReply pong = ReadRawReply(bystander.get());
    ASSERT_EQ(pong.outcome, ReadOutcome::kFrame);
    EXPECT_EQ(pong.header.status, 0);
    EXPECT_EQ(pong.header.id, 77u);

    EXPECT_EQ(SignAndCheck(), "");
  }
  EXPECT_EQ(RunTlsHandshake(), "");
}

TEST_F(AttackTest, FourGibFrameIsRejected) {
  ScopedAlarm alarm(60, "4 GiB frame test hung");
  long rss_before = ResidentKib(cell_->pid());
  ASSERT_GT(rss_before, 0);

  UniqueFd fd = OpenConnection();
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(SendBytes(
      fd.get(), HeaderBytes(UINT32_MAX, TypeByte(MessageType::kSign), 1)));
  // Payload bytes behind the header are never read as part of a frame.
  std::vector<uint8_t> filler(64 * 1024, 0x41);
  (void)SendBytes(fd.get(), filler);

  RawReply reply = ReadRawReply(fd.get());
  ASSERT_EQ(reply.outcome, ReadOutcome::kFrame);
  EXPECT_EQ(reply.header.status, static_cast<uint16_t>(Code::kBadRequest));
  EXPECT_EQ(reply.header.id, 0u);
  EXPECT_NE(ErrorMessage(reply).find("too large"), std::string::npos)
      << ErrorMessage(reply);
  EXPECT_EQ(ReadRawReply(fd.get()).outcome, ReadOutcome::kClosed);

  // The cell allocated nothing near the announced size. 16 MiB covers the
  // 64 KiB of filler and the allocator's slack many times over.
  long rss_after = ResidentKib(cell_->pid());
  EXPECT_LT(rss_after - rss_before, 16 * 1024)
      << "before " << rss_before << " KiB, after " << rss_after << " KiB";
  EXPECT_EQ(SignAndCheck(), "");
}

TEST_F(AttackTest, StalledMaximumFramesDoNotStarveClients) {
  constexpr int kConnections = 1000;
  ScopedAlarm alarm(110, "stalled connection test hung");
  long rss_before = ResidentKib(cell_->pid());
  ASSERT_GT(rss_before, 0);

  std::vector<UniqueFd> stalled;
  stalled.reserve(kConnections);
  std::vector<uint8_t> header =
      HeaderBytes(protocol::kMaxPayload, TypeByte(MessageType::kSign), 1);
  for (int i = 0; i < kConnections; ++i) {
    UniqueFd fd = OpenConnection();
    ASSERT_TRUE(fd.valid()) << "connection " << i;
    ASSERT_TRUE(SendBytes(fd.get(), header)) << "connection " << i;
    stalled.push_back(std::move(fd));
  }

  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(SignAndCheck(), "") << "signature " << i;
  }
  // A ping on a connection opened after the others shows the cell has taken
  // every earlier connection and its header off the control socket.
  UniqueFd last = OpenConnection();
  ASSERT_TRUE(last.valid());
  protocol::WipingBuffer ping;
  protocol::AppendEmptyFrame(ping, TypeByte(MessageType::kPing), 0, 5);
  ASSERT_TRUE(SendBytes(last.get(), {ping.data(), ping.data() + ping.size()}));
  ASSERT_EQ(ReadRawReply(last.get()).outcome, ReadOutcome::kFrame);

  // Each stalled connection buffers a 16-byte header. The bound allows 8 KiB
  // per connection for the connection object, the allocator's slack and
  // thread stacks touched meanwhile, far below the 256 KiB payload that
  // each header announces. Sanitizer runtimes add shadow memory and
  // bookkeeping to every allocation and mutex, so they get 64 KiB, still a
  // quarter of one payload.
  long rss_after = ResidentKib(cell_->pid());
  EXPECT_LT(rss_after - rss_before, kConnections * Iterations(8, 64))
      << "before " << rss_before << " KiB, after " << rss_after << " KiB";

  stalled.clear();
  EXPECT_EQ(SignAndCheck(), "");
  EXPECT_EQ(RunTlsHandshake(), "");
}

// ASan keeps freed memory in quarantine and TSan in its own allocator, so
// released buffers stay resident in sanitizer builds and this measure of the
// production allocator does not apply there.
#ifndef KEYCELL_SANITIZER_BUILD
TEST_F(AttackTest, IdleConnectionsReleaseLargeBuffers) {
  constexpr int kConnections = 100;
  ScopedAlarm alarm(110, "idle connection test hung");
  uint32_t ed25519_key_id = 0;
  std::vector<uint8_t> ed25519_public_key;
  ASSERT_TRUE(
      LoadKey("ed25519-key.pem", {}, &ed25519_key_id, &ed25519_public_key));
  long rss_before = ResidentKib(cell_->pid());
  ASSERT_GT(rss_before, 0);

  // An Ed25519 sign request signs its whole input, so it can fill a
  // maximum-size frame: 17 bytes of fields and the message.
  std::vector<uint8_t> message(protocol::kMaxPayload - 17, 0x6d);
  protocol::SignRequest request;
  request.key_id = ed25519_key_id;
  request.input = message;
  std::vector<uint8_t> frame =
      FrameBytes(TypeByte(MessageType::kSign), 1, request);
  ASSERT_EQ(frame.size(), protocol::kHeaderSize + protocol::kMaxPayload);

  std::vector<UniqueFd> idle;
  for (int i = 0; i < kConnections; ++i) {
    UniqueFd fd = OpenConnection();
    ASSERT_TRUE(fd.valid()) << "connection " << i;
    ASSERT_TRUE(SendBytes(fd.get(), frame)) << "connection " << i;
    RawReply reply = ReadRawReply(fd.get());
    ASSERT_EQ(reply.outcome, ReadOutcome::kFrame) << "connection " << i;
    ASSERT_EQ(reply.header.status, 0) << "connection " << i;
    idle.push_back(std::move(fd));
  }

  // Each connection has been served and is idle with empty buffers. The
  // bound allows 80 KiB per connection, below the 256 KiB frame that each
  // one carried.
  long rss_after = ResidentKib(cell_->pid());
  EXPECT_LT(rss_after - rss_before, kConnections * 80)
      << "before " << rss_before << " KiB, after " << rss_after << " KiB";
  EXPECT_EQ(SignAndCheck(), "");
}
#endif  // KEYCELL_SANITIZER_BUILD

TEST_F(AttackTest, PipelinedUnreadRepliesDoNotBlockClients) {
  ScopedAlarm alarm(110, "pipelining test hung");
  UniqueFd flood = OpenConnection();
  ASSERT_TRUE(flood.valid());
  int flags = fcntl(flood.get(), F_GETFL);
  ASSERT_EQ(fcntl(flood.get(), F_SETFL, flags | O_NONBLOCK), 0);

  uint8_t digest[32] = {};
  protocol::SignRequest sign;
  sign.key_id = rsa_key_id_;
  sign.digest = "SHA256";
  sign.padding = protocol::kPaddingPkcs1;
  sign.input = digest;
  std::vector<uint8_t> frame =
      FrameBytes(TypeByte(MessageType::kSign), 1, sign);

  // An honest client signs while the flood goes on.
  std::atomic<bool> flood_done{false};
  std::atomic<int> signatures_during_flood{0};
  std::string client_failure;
  std::thread client([&] {
    while (!flood_done.load()) {
      std::string result = SignAndCheck();
      if (!result.empty()) {
        client_failure = result;
        return;
      }
      signatures_during_flood++;
    }
  });

  // Write requests, never reading a reply, until the socket stays full for
  // a second: the cell has stopped reading because its unsent replies
  // reached their limit.
  uint64_t frames_sent = 0;
  size_t offset = 0;
  for (;;) {
    ssize_t n = send(flood.get(), frame.data() + offset, frame.size() - offset,
                     MSG_NOSIGNAL);
    if (n > 0) {
      offset += static_cast<size_t>(n);
      if (offset == frame.size()) {
        offset = 0;
        frames_sent++;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    int error = errno;
    ASSERT_LT(n, 0);
    ASSERT_EQ(error, EAGAIN) << std::strerror(error);
    pollfd entry{flood.get(), POLLOUT, 0};
    if (poll(&entry, 1, 3000) == 0) {
      break;
    }
  }
  flood_done = true;
  client.join();
  EXPECT_EQ(client_failure, "")
      << "after " << signatures_during_flood.load() << " signatures";

  // The cell stops reading only once 1 MiB of replies, each under 300
  // bytes, is unsent.
  EXPECT_GT(frames_sent, 3000u);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(SignAndCheck(), "") << "signature " << i << " after the flood";
  }
  EXPECT_EQ(RunTlsHandshake(), "");
}

// Returns |bytes| preceded by |declared| as a native-endian size_t, the
// framing of connections opened by the neverbleed API.
std::vector<uint8_t> Prefixed(const std::vector<uint8_t> &bytes,
                              size_t declared) {
  std::vector<uint8_t> out(sizeof(declared) + bytes.size());
  std::memcpy(out.data(), &declared, sizeof(declared));
  if (!bytes.empty()) {
    std::memcpy(out.data() + sizeof(declared), bytes.data(), bytes.size());
  }
  return out;
}

std::vector<uint8_t> Prefixed(const std::vector<uint8_t> &bytes) {
  return Prefixed(bytes, bytes.size());
}

// Reads one size-prefixed reply. A prefix that disagrees with the frame
// after it is reported as kError.
RawReply ReadPrefixedReply(int fd, int timeout_ms = kReplyTimeoutMs) {
  RawReply reply;
  size_t declared = 0;
  reply.outcome = ReadExactly(fd, reinterpret_cast<uint8_t *>(&declared),
                              sizeof(declared), timeout_ms);
  if (reply.outcome != ReadOutcome::kFrame) {
    return reply;
  }
  reply = ReadRawReply(fd, timeout_ms);
  if (reply.outcome == ReadOutcome::kFrame &&
      declared != protocol::kHeaderSize + reply.payload.size()) {
    reply.outcome = ReadOutcome::kError;
  }
  return reply;
}

// Malformed input on size-prefixed connections: prefixes that disagree with
// the frame header or exceed the maximum, truncated prefixes and frames,
// garbage, and every malformed frame of the plain framing with a prefix
// that matches its length.
std::vector<MalformedCase> MalformedPrefixedCases(uint32_t key_id) {
  std::vector<MalformedCase> cases;
  protocol::SignRequest sign;
  sign.key_id = key_id;
  sign.digest = "SHA256";
  sign.padding = protocol::kPaddingPkcs1;
  static const uint8_t kDigest[32] = {};
  sign.input = kDigest;
  std::vector<uint8_t> valid =
      FrameBytes(TypeByte(MessageType::kSign), 1, sign);

  std::vector<uint8_t> longer = valid;
  longer.insert(longer.end(), {0, 0, 0, 0});
  cases.push_back({"prefix above the frame length", Prefixed(longer)});
  std::vector<uint8_t> shorter(valid.begin(), valid.end() - 4);
  cases.push_back({"prefix below the frame length", Prefixed(shorter)});
  // The 4 bytes after the frame are left in the socket; the reply comes
  // before the cell reads them.
  std::vector<uint8_t> below_then_rest = Prefixed(valid, valid.size() - 4);
  cases.push_back({"prefix cutting the frame", below_then_rest});
  cases.push_back(
      {"prefix one above the maximum frame",
       Prefixed({}, protocol::kHeaderSize + protocol::kMaxPayload + 1)});
  cases.push_back({"prefix of SIZE_MAX", Prefixed({}, SIZE_MAX)});
  cases.push_back({"prefix of zero", Prefixed({}, 0)});

  std::vector<uint8_t> truncated = Prefixed(valid);
  truncated.resize(sizeof(size_t) + 30);
  cases.push_back({"truncated frame", truncated, true, Code::kOk});
  cases.push_back({"truncated prefix", {0x40, 0, 0}, true, Code::kOk});

  // Text read as a size_t is far above the maximum frame.
  std::string_view http = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  cases.push_back({"garbage text", {http.begin(), http.end()}});

  for (MalformedCase plain : MalformedCases(key_id)) {
    MalformedCase prefixed;
    prefixed.name = plain.name;
    prefixed.bytes = Prefixed(plain.bytes);
    prefixed.shutdown_write = plain.shutdown_write;
    // A truncated frame behind a prefix that counts only the bytes sent
    // disagrees with the header, which gets a reply.
    prefixed.expected_status = plain.expected_status == Code::kOk
                                   ? Code::kBadRequest
                                   : plain.expected_status;
    cases.push_back(prefixed);
  }
  return cases;
}

TEST_F(AttackTest, SizePrefixedValidRequestSigns) {
  ScopedAlarm alarm(60, "size-prefixed signing test hung");
  kc::Result<UniqueFd> fd =
      cell_->OpenDedicatedConnection(protocol::Framing::kSizePrefixed);
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  uint8_t digest[32];
  std::memset(digest, 0x33, sizeof(digest));
  protocol::SignRequest sign;
  sign.key_id = rsa_key_id_;
  sign.digest = "SHA256";
  sign.padding = protocol::kPaddingPkcs1;
  sign.input = digest;
  // Two requests in one write, and a key release between them that gets no
  // reply.
  std::vector<uint8_t> bytes =
      Prefixed(FrameBytes(TypeByte(MessageType::kSign), 21, sign));
  std::vector<uint8_t> release = Prefixed(FrameBytes(
      TypeByte(MessageType::kReleaseKey), 22, protocol::ReleaseKeyRequest{0}));
  std::vector<uint8_t> second =
      Prefixed(FrameBytes(TypeByte(MessageType::kSign), 23, sign));
  bytes.insert(bytes.end(), release.begin(), release.end());
  bytes.insert(bytes.end(), second.begin(), second.end());
  ASSERT_TRUE(SendBytes(fd->get(), bytes));
  for (uint64_t id : {21u, 23u}) {
    RawReply reply = ReadPrefixedReply(fd->get());
    ASSERT_EQ(reply.outcome, ReadOutcome::kFrame) << "request " << id;
    EXPECT_EQ(reply.header.id, id);
    ASSERT_EQ(reply.header.status, 0) << ErrorMessage(reply);
    protocol::SignReply signature;
    ASSERT_TRUE(protocol::Decode(reply.payload, signature));
    EXPECT_EQ(VerifyRsaSignature(digest, signature.signature), "");
  }
}

TEST_F(AttackTest, SizePrefixedMalformedInputClosesOnlyItsConnection) {
  ScopedAlarm alarm(90, "size-prefixed malformed input test hung");
  UniqueFd bystander = OpenConnection();
  ASSERT_TRUE(bystander.valid());
  kc::Result<UniqueFd> prefixed_bystander =
      cell_->OpenDedicatedConnection(protocol::Framing::kSizePrefixed);
  ASSERT_TRUE(prefixed_bystander.ok()) << prefixed_bystander.status().message();

  uint64_t ping_id = 100;
  for (const MalformedCase &attack : MalformedPrefixedCases(rsa_key_id_)) {
    SCOPED_TRACE(attack.name);
    kc::Result<UniqueFd> fd =
        cell_->OpenDedicatedConnection(protocol::Framing::kSizePrefixed);
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    ASSERT_TRUE(SendBytes(fd->get(), attack.bytes));
    if (attack.shutdown_write) {
      ASSERT_EQ(shutdown(fd->get(), SHUT_WR), 0);
    }

    if (attack.expected_status != Code::kOk) {
      RawReply reply = ReadPrefixedReply(fd->get());
      ASSERT_EQ(reply.outcome, ReadOutcome::kFrame);
      EXPECT_EQ(reply.header.status,
                static_cast<uint16_t>(attack.expected_status));
      EXPECT_FALSE(ErrorMessage(reply).empty());
    }
    EXPECT_EQ(ReadRawReply(fd->get()).outcome, ReadOutcome::kClosed);

    // Connections opened before the attack, plain and size-prefixed, still
    // work.
    protocol::WipingBuffer ping;
    protocol::AppendEmptyFrame(ping, TypeByte(MessageType::kPing), 0,
                               ++ping_id);
    std::vector<uint8_t> ping_bytes(ping.data(), ping.data() + ping.size());
    ASSERT_TRUE(SendBytes(bystander.get(), ping_bytes));
    RawReply pong = ReadRawReply(bystander.get());
    ASSERT_EQ(pong.outcome, ReadOutcome::kFrame);
    EXPECT_EQ(pong.header.id, ping_id);
    ASSERT_TRUE(SendBytes(prefixed_bystander->get(), Prefixed(ping_bytes)));
    RawReply prefixed_pong = ReadPrefixedReply(prefixed_bystander->get());
    ASSERT_EQ(prefixed_pong.outcome, ReadOutcome::kFrame);
    EXPECT_EQ(prefixed_pong.header.status, 0);
    EXPECT_EQ(prefixed_pong.header.id, ping_id);

    EXPECT_EQ(SignAndCheck(), "");
  }
  EXPECT_EQ(RunTlsHandshake(), "");
}

TEST_F(AttackTest, SizePrefixedHugePrefixIsRejectedWithoutAllocating) {
  ScopedAlarm alarm(60, "size-prefixed huge prefix test hung");
  long rss_before = ResidentKib(cell_->pid());
  ASSERT_GT(rss_before, 0);
  std::vector<UniqueFd> fds;
  for (size_t declared :
       {size_t{UINT32_MAX}, size_t{UINT32_MAX} + 17, SIZE_MAX / 2}) {
    kc::Result<UniqueFd> fd =
        cell_->OpenDedicatedConnection(protocol::Framing::kSizePrefixed);
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    std::vector<uint8_t> filler(64 * 1024, 0x41);
    ASSERT_TRUE(SendBytes(fd->get(), Prefixed({}, declared)));
    (void)SendBytes(fd->get(), filler);
    RawReply reply = ReadPrefixedReply(fd->get());
    ASSERT_EQ(reply.outcome, ReadOutcome::kFrame) << declared;
    EXPECT_EQ(reply.header.status, static_cast<uint16_t>(Code::kBadRequest));
    EXPECT_EQ(reply.header.id, 0u);
    EXPECT_NE(ErrorMessage(reply).find("too large"), std::string::npos)
        << ErrorMessage(reply);
    EXPECT_EQ(ReadRawReply(fd->get()).outcome, ReadOutcome::kClosed);
  }
  // 16 MiB covers the filler and the allocator's slack many times over,
  // and is far below the 4 GiB and more that the prefixes announce.
  long rss_after = ResidentKib(cell_->pid());
  EXPECT_LT(rss_after - rss_before, 16 * 1024)
      << "before " << rss_before << " KiB, after " << rss_after << " KiB";
  EXPECT_EQ(SignAndCheck(), "");
}

TEST_F(AttackTest, SizePrefixedUnreadRepliesDoNotBlockClients) {
  ScopedAlarm alarm(110, "size-prefixed pipelining test hung");
  kc::Result<UniqueFd> opened =
      cell_->OpenDedicatedConnection(protocol::Framing::kSizePrefixed);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  UniqueFd flood = std::move(opened.value());
  int flags = fcntl(flood.get(), F_GETFL);
  ASSERT_EQ(fcntl(flood.get(), F_SETFL, flags | O_NONBLOCK), 0);

  uint8_t digest[32] = {};
  protocol::SignRequest sign;
  sign.key_id = rsa_key_id_;
  sign.digest = "SHA256";
  sign.padding = protocol::kPaddingPkcs1;
  sign.input = digest;
  std::vector<uint8_t> frame =
      Prefixed(FrameBytes(TypeByte(MessageType::kSign), 1, sign));

  std::atomic<bool> flood_done{false};
  std::atomic<int> signatures_during_flood{0};
  std::string client_failure;
  std::thread client([&] {
    while (!flood_done.load()) {
      std::string result = SignAndCheck();
      if (!result.empty()) {
        client_failure = result;
        return;
      }
      signatures_during_flood++;
    }
  });

  // Write requests, never reading a reply, until the socket stays full for
  // three seconds. One read turn of about 3000 RSA signatures can take more
  // than a second on a loaded machine, and the socket stays full meanwhile.
  uint64_t frames_sent = 0;
  size_t offset = 0;
  for (;;) {
    ssize_t n = send(flood.get(), frame.data() + offset, frame.size() - offset,
                     MSG_NOSIGNAL);
    if (n > 0) {
      offset += static_cast<size_t>(n);
      if (offset == frame.size()) {
        offset = 0;
        frames_sent++;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    int error = errno;
    ASSERT_LT(n, 0);
    ASSERT_EQ(error, EAGAIN) << std::strerror(error);
    pollfd entry{flood.get(), POLLOUT, 0};
    if (poll(&entry, 1, 3000) == 0) {
      break;
    }
  }
  flood_done = true;
  client.join();
  EXPECT_EQ(client_failure, "")
      << "after " << signatures_during_flood.load() << " signatures";
  EXPECT_GT(frames_sent, 2000u);

  // The flooding connection still gets its replies, in order, once it reads.
  ASSERT_EQ(fcntl(flood.get(), F_SETFL, flags), 0);
  for (int i = 0; i < 100; ++i) {
    RawReply reply = ReadPrefixedReply(flood.get());
    ASSERT_EQ(reply.outcome, ReadOutcome::kFrame) << "reply " << i;
    ASSERT_EQ(reply.header.status, 0) << "reply " << i;
  }
  flood.reset();
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(SignAndCheck(), "") << "signature " << i << " after the flood";
  }
  EXPECT_EQ(RunTlsHandshake(), "");
}

TEST_F(AttackTest, DecryptRejectedWithoutPermission) {
  ScopedAlarm alarm(60, "decryption test hung");
  uint32_t decrypt_key_id = 0;
  std::vector<uint8_t> decrypt_public_key;
  protocol::KeyPolicy decrypt_policy;
  decrypt_policy.allow_decrypt = true;
  ASSERT_TRUE(LoadKey("rsa2048-key.pem", decrypt_policy, &decrypt_key_id,
                      &decrypt_public_key));

  // A valid PKCS#1 v1.5 ciphertext for the RSA key, so that only the
  // permission can stop its decryption.
  EvpPkeyPtr public_key = RsaPublicKey();
  ASSERT_NE(public_key, nullptr);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new(public_key.get(), nullptr), EVP_PKEY_CTX_free);
  ASSERT_EQ(EVP_PKEY_encrypt_init(ctx.get()), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING), 1);
  std::string_view secret = "premaster secret of a recorded session";
  std::vector<uint8_t> ciphertext(256);
  size_t ciphertext_size = ciphertext.size();
  ASSERT_EQ(EVP_PKEY_encrypt(ctx.get(), ciphertext.data(), &ciphertext_size,
                             AsBytes(secret).data(), secret.size()),
            1);
  ciphertext.resize(ciphertext_size);

  protocol::DecryptRequest request;
  request.padding = protocol::kPaddingPkcs1;
  request.ciphertext = ciphertext;

  UniqueFd fd = OpenConnection();
  ASSERT_TRUE(fd.valid());
  request.key_id = rsa_key_id_;
  ASSERT_TRUE(SendBytes(
      fd.get(), FrameBytes(TypeByte(MessageType::kDecrypt), 11, request)));
  RawReply rejected = ReadRawReply(fd.get());
  ASSERT_EQ(rejected.outcome, ReadOutcome::kFrame);
  EXPECT_EQ(rejected.header.id, 11u);
  EXPECT_EQ(rejected.header.status, static_cast<uint16_t>(Code::kForbidden));
  std::string message = ErrorMessage(rejected);
  EXPECT_FALSE(message.empty());
  EXPECT_EQ(message.find(secret), std::string::npos);
  std::string payload(rejected.payload.begin(), rejected.payload.end());
  EXPECT_EQ(payload.find(secret), std::string::npos);

  // The same key file loaded with decryption allowed decrypts the same
  // ciphertext on the same connection, so the rejection above came from the
  // permission alone.
  request.key_id = decrypt_key_id;
  ASSERT_TRUE(SendBytes(
      fd.get(), FrameBytes(TypeByte(MessageType::kDecrypt), 12, request)));
  RawReply allowed = ReadRawReply(fd.get());
  ASSERT_EQ(allowed.outcome, ReadOutcome::kFrame);
  EXPECT_EQ(allowed.header.status, 0);
  protocol::DecryptReply plaintext;
  ASSERT_TRUE(protocol::Decode(allowed.payload, plaintext));
  EXPECT_EQ(std::string(plaintext.plaintext.begin(), plaintext.plaintext.end()),
            secret);
}

TEST_F(AttackTest, UnknownKeyIdGetsNoSignature) {
  ScopedAlarm alarm(60, "unknown key test hung");
  uint32_t ec_key_id = 0;
  std::vector<uint8_t> ec_public_key;
  ASSERT_TRUE(LoadKey("p256-key.pem", {}, &ec_key_id, &ec_public_key));

  uint8_t digest[32] = {7};
  protocol::SignRequest request;
  request.digest = "SHA256";
  request.input = digest;

  UniqueFd fd = OpenConnection();
  ASSERT_TRUE(fd.valid());
  const uint32_t unknown_ids[] = {0, ec_key_id + 1, ec_key_id + 1000,
                                  UINT32_MAX};
  uint64_t id = 100;
  for (uint32_t key_id : unknown_ids) {
    SCOPED_TRACE("key id " + std::to_string(key_id));
    request.key_id = key_id;
    ASSERT_TRUE(SendBytes(
        fd.get(), FrameBytes(TypeByte(MessageType::kSign), ++id, request)));
    RawReply reply = ReadRawReply(fd.get());
    ASSERT_EQ(reply.outcome, ReadOutcome::kFrame);
    EXPECT_EQ(reply.header.id, id);
    EXPECT_EQ(reply.header.status, static_cast<uint16_t>(Code::kUnknownKey));
    EXPECT_NE(ErrorMessage(reply).find("no key with id"), std::string::npos);
  }

  // A released key is gone for good: its id does not fall through to the
  // RSA key that remains loaded.
  protocol::ReleaseKeyRequest release{ec_key_id};
  ASSERT_TRUE(SendBytes(
      fd.get(), FrameBytes(TypeByte(MessageType::kReleaseKey), ++id, release)));
  RawReply released = ReadRawReply(fd.get());
  ASSERT_EQ(released.outcome, ReadOutcome::kFrame);
  EXPECT_EQ(released.header.status, 0);

  request.key_id = ec_key_id;
  ASSERT_TRUE(SendBytes(
      fd.get(), FrameBytes(TypeByte(MessageType::kSign), ++id, request)));
  RawReply reply = ReadRawReply(fd.get());
  ASSERT_EQ(reply.outcome, ReadOutcome::kFrame);
  EXPECT_EQ(reply.header.status, static_cast<uint16_t>(Code::kUnknownKey));

  EXPECT_EQ(SignAndCheck(), "");
}

TEST_F(AttackTest, RawRsaSignatureIsForbidden) {
  ScopedAlarm alarm(60, "raw RSA test hung");
  // A private-key operation without padding on a chosen value is RSA
  // decryption, so signing must not offer it under any padding value other
  // than PKCS#1 v1.5 and PSS.
  std::vector<uint8_t> value(256, 0x01);
  value[0] = 0x00;
  protocol::SignRequest request;
  request.key_id = rsa_key_id_;
  request.input = value;

  UniqueFd fd = OpenConnection();
  ASSERT_TRUE(fd.valid());
  const uint8_t paddings[] = {RSA_NO_PADDING,
                              2,
                              RSA_X931_PADDING,
                              protocol::kPaddingOaep,
                              protocol::kPaddingPkcs1Tls,
                              0xff};
  uint64_t id = 200;
  for (uint8_t padding : paddings) {
    SCOPED_TRACE("padding " + std::to_string(padding));
    request.padding = padding;
    ASSERT_TRUE(SendBytes(
        fd.get(), FrameBytes(TypeByte(MessageType::kSign), ++id, request)));
    RawReply reply = ReadRawReply(fd.get());
    ASSERT_EQ(reply.outcome, ReadOutcome::kFrame);
    EXPECT_EQ(reply.header.id, id);
    EXPECT_EQ(reply.header.status, static_cast<uint16_t>(Code::kForbidden));
    EXPECT_FALSE(ErrorMessage(reply).empty());
  }
}

TEST_F(AttackTest, PtraceAttachFails) {
  ScopedNoPtraceCapability no_ptrace;
  ASSERT_TRUE(no_ptrace.ok()) << std::strerror(errno);
  DumpableChild control;
  ASSERT_GT(control.pid(), 0);
  ASSERT_EQ(TryPtraceAttach(control.pid()), 0)
      << "the control process could not be traced: the test cannot tell "
         "the cell's protection from a system-wide one";

  EXPECT_EQ(TryPtraceAttach(cell_->pid()), EPERM);
  EXPECT_EQ(SignAndCheck(), "");
}

TEST_F(AttackTest, ProcessVmReadvFails) {
  ScopedNoPtraceCapability no_ptrace;
  ASSERT_TRUE(no_ptrace.ok()) << std::strerror(errno);
  DumpableChild control;
  ASSERT_GT(control.pid(), 0);
  ASSERT_EQ(TryProcessVmRead(control.pid()), 0);

  EXPECT_EQ(TryProcessVmRead(cell_->pid()), EPERM);
}

// Returns this process's end of the cell's control socket, the only
// SOCK_SEQPACKET socket it has open, or -1.
int FindControlSocket() {
  int found = -1;
  for (const auto &entry :
       std::filesystem::directory_iterator("/proc/self/fd")) {
    int fd = std::stoi(entry.path().filename().string());
    int type = 0;
    socklen_t length = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 &&
        type == SOCK_SEQPACKET) {
      if (found != -1) {
        return -1;
      }
      found = fd;
    }
  }
  return found;
}

// Sends one control message that carries |fds| as SCM_RIGHTS.
bool SendDescriptors(int control, const std::vector<int> &fds) {
  char byte = 0;
  iovec iov{&byte, 1};
  std::vector<char> space(CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = space.data();
  message.msg_controllen = space.size();
  cmsghdr *header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  return sendmsg(control, &message, MSG_NOSIGNAL) == 1;
}

TEST_F(AttackTest, ExtraControlDescriptorsAreClosed) {
  ScopedAlarm alarm(60, "control descriptor test hung");
  if (CountDescriptors(cell_->pid()) < 0) {
    GTEST_SKIP() << "listing the cell's descriptors needs CAP_SYS_PTRACE";
  }
  int control = FindControlSocket();
  ASSERT_GE(control, 0) << "cannot identify the control socket";

  // A ping on a connection opened after the control messages shows that
  // the cell has taken them off the control socket, which is ordered.
  auto ping = [this](uint64_t id) {
    UniqueFd fd = OpenConnection();
    protocol::WipingBuffer frame;
    protocol::AppendEmptyFrame(frame, TypeByte(MessageType::kPing), 0, id);
    EXPECT_TRUE(
        SendBytes(fd.get(), {frame.data(), frame.data() + frame.size()}));
    EXPECT_EQ(ReadRawReply(fd.get()).outcome, ReadOutcome::kFrame);
    return fd;
  };
  UniqueFd first = ping(1);
  int before = CountDescriptors(cell_->pid());
  ASSERT_GT(before, 0);

  // Messages with two descriptors each, which the cell does not serve.
  for (int i = 0; i < 20; ++i) {
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    ASSERT_TRUE(SendDescriptors(control, {pair[0], pair[1]}));
    close(pair[0]);
    close(pair[1]);
  }
  UniqueFd second = ping(2);

  // The only new descriptors in the cell are the second ping's connection,
  // which the cell has open twice: once for reading and once for waiting for
  // room to write.
  EXPECT_EQ(CountDescriptors(cell_->pid()), before + 2);
  EXPECT_EQ(SignAndCheck(), "");
}

// NOTE: as root, this test does not isolate PR_SET_DUMPABLE. Opening
// /proc/<pid>/mem without CAP_SYS_PTRACE also fails when the target's
// permitted capabilities exceed the opener's effective ones, as the cell's
// do here. SameUserCannotReadCell covers a cell without capabilities.
TEST_F(AttackTest, ProcMemReadFails) {
  ScopedNoPtraceCapability no_ptrace;
  ASSERT_TRUE(no_ptrace.ok()) << std::strerror(errno);
  DumpableChild control;
  ASSERT_GT(control.pid(), 0);
  ASSERT_EQ(TryProcMemRead(control.pid()), 0);

  EXPECT_EQ(TryProcMemRead(cell_->pid()), EACCES);
}

TEST_F(AttackTest, NoCoreDumpsAndNoNewPrivileges) {
  pid_t pid = cell_->pid();
  std::string core = ProcLimitsLine(pid, "Max core file size");
  ASSERT_FALSE(core.empty());
  std::istringstream fields(core.substr(std::strlen("Max core file size")));
  std::string soft;
  std::string hard;
  fields >> soft >> hard;
  EXPECT_EQ(soft, "0") << core;
  EXPECT_EQ(hard, "0") << core;

  EXPECT_EQ(ProcStatusField(pid, "NoNewPrivs"), "1");
}

// Exit codes of the attacking child in the privilege drop test.
enum AttackExit {
  kAllAttacksFailed = 0,
  kSetupFailed = 10,
  kControlFailed = 11,
  kPtraceSucceeded = 12,
  kProcMemSucceeded = 13,
  kVmReadSucceeded = 14,
};

// Runs in a child switched to |user|: attacks |cell_pid| and returns an
// AttackExit value.
int AttackAs(const passwd &user, pid_t cell_pid) {
  if (setgroups(0, nullptr) != 0 || setgid(user.pw_gid) != 0 ||
      setuid(user.pw_uid) != 0) {
    return kSetupFailed;
  }
  // setuid made this process non-dumpable; its control child must be
  // traceable.
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  {
    DumpableChild control;
    if (control.pid() < 0 || TryPtraceAttach(control.pid()) != 0 ||
        TryProcMemRead(control.pid()) != 0) {
      return kControlFailed;
    }
  }
  if (TryPtraceAttach(cell_pid) == 0) {
    return kPtraceSucceeded;
  }
  if (TryProcMemRead(cell_pid) == 0) {
    return kProcMemSucceeded;
  }
  if (TryProcessVmRead(cell_pid) == 0) {
    return kVmReadSucceeded;
  }
  return kAllAttacksFailed;
}

TEST(AttackAfterDropTest, SameUserCannotReadCell) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "switching to the nobody user needs root";
  }
  passwd *found = getpwnam("nobody");
  ASSERT_NE(found, nullptr) << "no user named nobody";
  passwd nobody = *found;
  ScopedAlarm alarm(60, "privilege drop attack test hung");

  std::string error;
  CellPtr cell = StartCell(nullptr, &error);
  ASSERT_NE(cell, nullptr) << error;
  EvpPkeyPtr key = LoadCellKey(cell.get(), KeyPath("p256"), nullptr, &error);
  ASSERT_NE(key, nullptr) << error;
  char message[KEYCELL_ERROR_SIZE] = {};
  ASSERT_EQ(
      keycell_drop_privileges(cell.get(), "nobody", message, sizeof(message)),
      1)
      << message;
  pid_t cell_pid = keycell_cell_pid(cell.get());
  std::string uid = std::to_string(nobody.pw_uid);
  EXPECT_EQ(ProcStatusField(cell_pid, "Uid"),
            uid + "\t" + uid + "\t" + uid + "\t" + uid);

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    _exit(AttackAs(nobody, cell_pid));
  }
  EXPECT_EQ(WaitForChild(child), "exit status 0")
      << "exit codes: 10 setup failed, 11 control process not traceable, "
         "12 ptrace attached, 13 /proc/<pid>/mem read, 14 process_vm_readv "
         "read";

  EvpPkeyPtr public_key = ReadCertificatePublicKey(CertPath("p256"), &error);
  ASSERT_NE(public_key, nullptr) << error;
  EXPECT_TRUE(SignAndVerify(key.get(), public_key.get(), "SHA256", &error))
      << error;
}

}  // namespace
}  // namespace keycell_test
