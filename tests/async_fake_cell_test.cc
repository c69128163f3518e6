// Pipelined operations against a fake cell that this process runs. The fake
// cell speaks the frame protocol on the connections that the client library
// passes to it. It keeps each request until the test replies to it, in any
// order, late, twice, malformed or never. Signatures come from the cell's
// own signing code and a real key of this process.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "async_util.h"
#include "cell/key_store.h"
#include "cell/operations.h"
#include "client/cell_client.h"
#include "keycell/keycell.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "provider/provider.h"
#include "test_util.h"
#include "tls_util.h"

namespace keycell_test {
namespace {

namespace protocol = kc::protocol;
using kc::client::CellClient;

// One request that the fake cell received and holds.
struct Request {
  int fd = -1;  // The fake cell's end of the connection it came on.
  uint64_t id = 0;
  uint8_t type = 0;
  std::vector<uint8_t> payload;
};

class FakeCell {
 public:
  // Serves |key| as key id 1. Operations of the client time out after
  // |timeout_ms|.
  FakeCell(EVP_PKEY *key, unsigned timeout_ms) {
    EVP_PKEY_up_ref(key);
    key_.pkey.reset(key);
    for (protocol::KeyType type :
         {protocol::KeyType::kRsa, protocol::KeyType::kEc,
          protocol::KeyType::kEd25519, protocol::KeyType::kEd448}) {
      if (EVP_PKEY_is_a(key, protocol::KeyTypeName(type))) {
        key_.type = type;
      }
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0) {
      control_ = pair[1];
      client_ = CellClient::AttachForTesting(kc::UniqueFd(pair[0]), getpid(),
                                             timeout_ms);
      acceptor_ = std::thread(&FakeCell::AcceptLoop, this);
    }
  }

  ~FakeCell() {
    if (client_ != nullptr) {
      client_->Stop();
    }
    ::shutdown(control_, SHUT_RDWR);
    if (acceptor_.joinable()) {
      acceptor_.join();
    }
    {
      std::lock_guard lock(mutex_);
      for (int fd : connections_) {
        ::shutdown(fd, SHUT_RDWR);
      }
    }
    for (std::thread &server : servers_) {
      server.join();
    }
    for (int fd : connections_) {
      ::close(fd);
    }
    ::close(control_);
  }

  const std::shared_ptr<CellClient> &client() const { return client_; }

  // Returns a new EVP_PKEY of the client library for the fake cell's key.
  EvpPkeyPtr NewKey(std::string *error) {
    kc::Status loaded = kc::provider::EnsureLoaded();
    if (!loaded.ok()) {
      *error = loaded.message();
      return nullptr;
    }
    unsigned char *der = nullptr;
    int length = i2d_PUBKEY(key_.pkey.get(), &der);
    if (length <= 0) {
      *error = "i2d_PUBKEY failed";
      return nullptr;
    }
    kc::Result<EVP_PKEY *> pkey = kc::provider::NewCellKey(
        client_, 1, key_.type,
        std::span<const uint8_t>(der, static_cast<size_t>(length)));
    OPENSSL_free(der);
    if (!pkey.ok()) {
      *error = pkey.status().message();
      return nullptr;
    }
    return EvpPkeyPtr(pkey.value());
  }

  // Waits until |count| requests are held, for at most 20 seconds, and
  // hands them over in the order they arrived.
  std::vector<Request> Take(size_t count) {
    std::unique_lock lock(mutex_);
    arrived_.wait_for(lock, std::chrono::seconds(20),
                      [&] { return held_.size() >= count; });
    std::vector<Request> taken;
    while (!held_.empty() && taken.size() < count) {
      taken.push_back(std::move(held_.front()));
      held_.pop_front();
    }
    return taken;
  }

  // Signs as the cell would and sends the reply to |request|.
  void Answer(const Request &request) {
    protocol::SignRequest sign;
    protocol::WipingBuffer frame;
    std::vector<uint8_t> signature;
    kc::Status status = kc::Status(kc::Code::kBadRequest, "not a signature");
    if (request.type == static_cast<uint8_t>(protocol::MessageType::kSign) &&
        protocol::Decode(request.payload, sign)) {
      status = kc::cell::Sign(key_, sign, signature);
    }
    if (status.ok()) {
      protocol::AppendFrame(frame, request.type, 0, request.id,
                            protocol::SignReply{signature});
    } else {
      protocol::AppendFrame(frame, request.type,
                            static_cast<uint16_t>(status.code()), request.id,
                            protocol::ErrorReply{status.message()});
    }
    Send(request.fd, frame.span());
  }

  // Sends a reply to |request| with status zero whose payload is not a
  // signature.
  void AnswerMalformed(const Request &request) {
    protocol::WipingBuffer frame;
    protocol::AppendEmptyFrame(frame, request.type, 0, request.id);
    frame.Append("\x01\x02\x03", 3);
    protocol::FrameHeader header = *protocol::DecodeHeader(frame.data());
    header.length = 3;
    protocol::EncodeHeader(header, frame.data());
    Send(request.fd, frame.span());
  }

  // Sends the reply to |request| under the id |id| instead of its own.
  void AnswerAs(const Request &request, uint64_t id) {
    Request renamed = request;
    renamed.id = id;
    Answer(renamed);
  }

  // Sends a header whose payload length is above the maximum.
  void SendOversizedHeader(int fd) {
    protocol::FrameHeader header;
    header.length = protocol::kMaxPayload + 1;
    header.type = static_cast<uint8_t>(protocol::MessageType::kSign);
    header.id = 1;
    uint8_t bytes[protocol::kHeaderSize];
    protocol::EncodeHeader(header, bytes);
    Send(fd, {bytes, sizeof(bytes)});
  }

 private:
  static void Send(int fd, std::span<const uint8_t> bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n =
          send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        return;
      }
      sent += static_cast<size_t>(n);
    }
  }

  // Takes the connections that the client passes over the control socket.
  void AcceptLoop() {
    for (;;) {
      char byte = 0;
      iovec iov{&byte, 1};
      alignas(cmsghdr) char space[CMSG_SPACE(sizeof(int))] = {};
      msghdr message{};
      message.msg_iov = &iov;
      message.msg_iovlen = 1;
      message.msg_control = space;
      message.msg_controllen = sizeof(space);
      ssize_t n = recvmsg(control_, &message, MSG_CMSG_CLOEXEC);
      if (n <= 0) {
        return;
      }
      cmsghdr *header = CMSG_FIRSTHDR(&message);
      if (header == nullptr || header->cmsg_type != SCM_RIGHTS) {
        continue;
      }
      int fd;
      std::memcpy(&fd, CMSG_DATA(header), sizeof(fd));
      std::lock_guard lock(mutex_);
      connections_.push_back(fd);
      servers_.emplace_back(&FakeCell::Serve, this, fd);
    }
  }

  // Holds every signature and decryption request of one connection; other
  // requests (key releases) get no reply.
  void Serve(int fd) {
    protocol::WipingBuffer buffer;
    for (;;) {
      protocol::Frame frame;
      protocol::SplitResult split = protocol::SplitFrame(buffer.span(), frame);
      if (split == protocol::SplitResult::kTooLarge) {
        return;
      }
      if (split == protocol::SplitResult::kFrame) {
        if (frame.header.type ==
                static_cast<uint8_t>(protocol::MessageType::kSign) ||
            frame.header.type ==
                static_cast<uint8_t>(protocol::MessageType::kDecrypt)) {
          Request request;
          request.fd = fd;
          request.id = frame.header.id;
          request.type = frame.header.type;
          request.payload.assign(frame.payload.begin(), frame.payload.end());
          std::lock_guard lock(mutex_);
          held_.push_back(std::move(request));
          arrived_.notify_all();
        }
        buffer.Consume(frame.size());
        continue;
      }
      uint8_t *space = buffer.Reserve(16 * 1024);
      ssize_t n = recv(fd, space, 16 * 1024, 0);
      if (n <= 0) {
        return;
      }
      buffer.Commit(static_cast<size_t>(n));
    }
  }

  kc::cell::CellKey key_;
  int control_ = -1;
  std::shared_ptr<CellClient> client_;
  std::thread acceptor_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<Request> held_;
  std::vector<int> connections_;
  std::vector<std::thread> servers_;
};

// Answers |requests| on a thread of its own in the order of |order|,
// waiting a few milliseconds, chosen by |seed|, before each reply.
std::thread AnswerLater(FakeCell &cell, std::vector<Request> requests,
                        std::vector<size_t> order, unsigned seed) {
  return std::thread([&cell, requests = std::move(requests),
                      order = std::move(order), seed] {
    std::mt19937 random(seed);
    std::uniform_int_distribution<int> delay_ms(0, 8);
    for (size_t index : order) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
      cell.Answer(requests[index]);
    }
  });
}

std::vector<size_t> Reversed(size_t count) {
  std::vector<size_t> order(count);
  for (size_t i = 0; i < count; ++i) {
    order[i] = count - 1 - i;
  }
  return order;
}

std::vector<size_t> Shuffled(size_t count, unsigned seed) {
  std::vector<size_t> order(count);
  for (size_t i = 0; i < count; ++i) {
    order[i] = i;
  }
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  return order;
}

EvpPkeyPtr ReadKey(const char *name, std::string *error) {
  return ReadPrivateKeyInProcess(KeyPath(name), error);
}

struct HandshakeCase {
  const char *key;
  bool reversed;
};

class FakeCellHandshake : public ::testing::TestWithParam<HandshakeCase> {};

// Every handshake pauses for its signature before any reply comes; the
// replies then arrive reversed or shuffled, with delays between them, and
// each client verifies the signature it receives.
TEST_P(FakeCellHandshake, ReorderedDelayedRepliesComplete) {
  ScopedAlarm watchdog(100, "ReorderedDelayedRepliesComplete did not finish");
  const int kHandshakes = Iterations(32, 12);
  std::string error;
  EvpPkeyPtr key = ReadKey(GetParam().key, &error);
  ASSERT_NE(key, nullptr) << error;
  FakeCell cell(key.get(), 30000);
  ASSERT_NE(cell.client(), nullptr);
  EvpPkeyPtr cell_key = cell.NewKey(&error);
  ASSERT_NE(cell_key, nullptr) << error;
  SslCtxPtr server =
      NewServerContext(PinnedVersion(TLS1_3_VERSION), CertPath(GetParam().key),
                       cell_key.get(), &error);
  ASSERT_NE(server, nullptr) << error;
  SSL_CTX_set_mode(server.get(), SSL_MODE_ASYNC);
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                      {CertPath(GetParam().key)}, &error);
  ASSERT_NE(client, nullptr) << error;

  std::vector<Pair> pairs(kHandshakes);
  for (Pair &pair : pairs) {
    ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
  }
  EXPECT_EQ(RunUntilPaused(pairs), pairs.size());
  std::vector<Request> requests = cell.Take(pairs.size());
  ASSERT_EQ(requests.size(), pairs.size());
  for (const Request &request : requests) {
    EXPECT_EQ(request.fd, requests.front().fd)
        << "the requests of one thread share one connection";
  }
  std::thread answers =
      AnswerLater(cell, requests,
                  GetParam().reversed ? Reversed(requests.size())
                                      : Shuffled(requests.size(), 7),
                  11);
  DriveStats stats = DriveAll(pairs);
  answers.join();
  EXPECT_EQ(stats.completed, kHandshakes)
      << (stats.errors.empty() ? "" : stats.errors.front());
  for (const Pair &pair : pairs) {
    EXPECT_EQ(SSL_get_verify_result(pair.client.get()), X509_V_OK);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Orders, FakeCellHandshake,
    ::testing::Values(HandshakeCase{"rsa2048", true},
                      HandshakeCase{"rsa2048", false},
                      HandshakeCase{"p256", false},
                      HandshakeCase{"ed25519", true}),
    [](const ::testing::TestParamInfo<HandshakeCase> &case_info) {
      return std::string(case_info.param.key) +
             (case_info.param.reversed ? "Reversed" : "Shuffled");
    });

// A handshake whose reply never comes fails with the timeout, and one whose
// reply is malformed fails with that; the others on the same connection
// complete.
TEST(FakeCellHandshakeFault, MissingAndMalformedRepliesFailOnlyTheirOwn) {
  ScopedAlarm watchdog(100, "MissingAndMalformedReplies did not finish");
  std::string error;
  EvpPkeyPtr key = ReadKey("p256", &error);
  ASSERT_NE(key, nullptr) << error;
  // The timeout leaves the answered requests ample time on a loaded machine.
  FakeCell cell(key.get(), 2000);
  ASSERT_NE(cell.client(), nullptr);
  EvpPkeyPtr cell_key = cell.NewKey(&error);
  ASSERT_NE(cell_key, nullptr) << error;
  SslCtxPtr server = NewServerContext(PinnedVersion(TLS1_3_VERSION),
                                      CertPath("p256"), cell_key.get(), &error);
  ASSERT_NE(server, nullptr) << error;
  SSL_CTX_set_mode(server.get(), SSL_MODE_ASYNC);
  SslCtxPtr client = NewClientContext(PinnedVersion(TLS1_3_VERSION),
                                      {CertPath("p256")}, &error);
  ASSERT_NE(client, nullptr) << error;

  std::vector<Pair> pairs(8);
  for (Pair &pair : pairs) {
    ASSERT_TRUE(NewPair(server.get(), client.get(), pair));
  }
  EXPECT_EQ(RunUntilPaused(pairs), pairs.size());
  std::vector<Request> requests = cell.Take(pairs.size());
  ASSERT_EQ(requests.size(), pairs.size());
  // Request 3 is never answered and request 5 gets a malformed reply.
  cell.AnswerMalformed(requests[5]);
  std::vector<size_t> order;
  for (size_t index : Shuffled(requests.size(), 3)) {
    if (index != 3 && index != 5) {
      order.push_back(index);
    }
  }
  std::thread answers = AnswerLater(cell, requests, order, 5);
  DriveStats stats = DriveAll(pairs);
  answers.join();
  EXPECT_EQ(stats.completed, 6);
  EXPECT_EQ(stats.failed, 2);
  std::string errors;
  for (const std::string &message : stats.errors) {
    errors += message + "\n";
  }
  EXPECT_NE(errors.find("did not reply within 2000 ms"), std::string::npos)
      << errors;
  EXPECT_NE(errors.find("malformed signature"), std::string::npos) << errors;
}

struct OperationDeleter {
  void operator()(keycell_operation *operation) const {
    keycell_operation_free(operation);
  }
};
using OperationPtr = std::unique_ptr<keycell_operation, OperationDeleter>;

// Waits until the descriptor of every operation is readable, at most 30
// seconds each.
bool WaitForAll(const std::vector<OperationPtr> &operations) {
  for (const OperationPtr &operation : operations) {
    pollfd wait{keycell_operation_fd(operation.get()), POLLIN, 0};
    int ready;
    do {
      ready = poll(&wait, 1, 30000);
    } while (ready < 0);
    if (ready == 0) {
      return false;
    }
  }
  return true;
}

bool Verify(EVP_PKEY *public_key, const std::string &message,
            const std::vector<unsigned char> &signature) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                              EVP_MD_CTX_free);
  return EVP_DigestVerifyInit_ex(ctx.get(), nullptr, "SHA256", nullptr, nullptr,
                                 public_key, nullptr) == 1 &&
         EVP_DigestVerify(
             ctx.get(), signature.data(), signature.size(),
             reinterpret_cast<const unsigned char *>(message.data()),
             message.size()) == 1;
}

// The start/finish API against the fake cell with one key.
class FakeCellApi : public ::testing::Test {
 protected:
  void Open(const char *name, unsigned timeout_ms) {
    std::string error;
    key_ = ReadKey(name, &error);
    ASSERT_NE(key_, nullptr) << error;
    cell_ = std::make_unique<FakeCell>(key_.get(), timeout_ms);
    ASSERT_NE(cell_->client(), nullptr);
    cell_key_ = cell_->NewKey(&error);
    ASSERT_NE(cell_key_, nullptr) << error;
  }

  // Starts |count| SHA-256 signatures of distinct messages.
  void Start(int count) {
    for (int i = 0; i < count; ++i) {
      messages_.push_back("message " + std::to_string(messages_.size()));
      const std::string &message = messages_.back();
      operations_.emplace_back(keycell_sign_start(
          cell_key_.get(), "SHA256", 0,
          reinterpret_cast<const unsigned char *>(message.data()),
          message.size(), err_, sizeof(err_)));
      ASSERT_NE(operations_.back(), nullptr) << err_;
    }
  }

  // Finishes operation |index|: 1 with a signature that verifies, else 0
  // with the message in err_.
  int Finish(size_t index) {
    std::vector<unsigned char> signature(EVP_PKEY_get_size(key_.get()));
    size_t length = signature.size();
    err_[0] = '\0';
    int result =
        keycell_operation_finish(operations_[index].get(), signature.data(),
                                 &length, err_, sizeof(err_));
    if (result == 1) {
      signature.resize(length);
      EXPECT_TRUE(Verify(key_.get(), messages_[index], signature))
          << "signature " << index << " does not verify";
    }
    return result;
  }

  EvpPkeyPtr key_;
  std::unique_ptr<FakeCell> cell_;
  EvpPkeyPtr cell_key_;
  std::vector<std::string> messages_;
  std::vector<OperationPtr> operations_;
  char err_[KEYCELL_ERROR_SIZE] = {};
};

TEST_F(FakeCellApi, ReversedDelayedRepliesVerify) {
  ScopedAlarm watchdog(60, "ReversedDelayedRepliesVerify did not finish");
  for (const char *name : {"rsa2048", "p256"}) {
    SCOPED_TRACE(name);
    messages_.clear();
    operations_.clear();
    ASSERT_NO_FATAL_FAILURE(Open(name, 30000));
    const int kInFlight = Iterations(40, 12);
    ASSERT_NO_FATAL_FAILURE(Start(kInFlight));
    std::vector<Request> requests = cell_->Take(kInFlight);
    ASSERT_EQ(requests.size(), static_cast<size_t>(kInFlight));
    std::thread answers =
        AnswerLater(*cell_, requests, Reversed(requests.size()), 17);
    answers.join();
    ASSERT_TRUE(WaitForAll(operations_));
    for (int i = 0; i < kInFlight; ++i) {
      EXPECT_EQ(Finish(i), 1) << err_;
    }
    cell_key_.reset();
    cell_.reset();
  }
}

// A reply with an id that no request has fails the connection: every
// operation still pending on it fails, and the next one uses a new
// connection.
TEST_F(FakeCellApi, UnknownIdFailsTheConnection) {
  ScopedAlarm watchdog(60, "UnknownIdFailsTheConnection did not finish");
  ASSERT_NO_FATAL_FAILURE(Open("p256", 30000));
  ASSERT_NO_FATAL_FAILURE(Start(4));
  std::vector<Request> requests = cell_->Take(4);
  ASSERT_EQ(requests.size(), 4u);
  cell_->Answer(requests[2]);
  cell_->AnswerAs(requests[0], requests[3].id + 1000);
  ASSERT_TRUE(WaitForAll(operations_));
  EXPECT_EQ(Finish(2), 1) << err_;
  for (size_t index : {0, 1, 3}) {
    EXPECT_EQ(Finish(index), 0);
    EXPECT_NE(std::string(err_).find("reply to a request that was not made"),
              std::string::npos)
        << err_;
  }
  ASSERT_NO_FATAL_FAILURE(Start(1));
  std::vector<Request> next = cell_->Take(1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_NE(next[0].fd, requests[0].fd);
  cell_->Answer(next[0]);
  ASSERT_TRUE(WaitForAll(operations_));
  EXPECT_EQ(Finish(4), 1) << err_;
}

// A second reply to the same request fails the connection like a reply to
// an unknown id, and the operation keeps the first reply.
TEST_F(FakeCellApi, DuplicateReplyFailsTheConnection) {
  ScopedAlarm watchdog(60, "DuplicateReplyFailsTheConnection did not finish");
  ASSERT_NO_FATAL_FAILURE(Open("p256", 30000));
  ASSERT_NO_FATAL_FAILURE(Start(3));
  std::vector<Request> requests = cell_->Take(3);
  ASSERT_EQ(requests.size(), 3u);
  cell_->Answer(requests[1]);
  cell_->Answer(requests[1]);
  ASSERT_TRUE(WaitForAll(operations_));
  EXPECT_EQ(Finish(1), 1) << err_;
  for (size_t index : {0, 2}) {
    EXPECT_EQ(Finish(index), 0);
    EXPECT_NE(std::string(err_).find("reply to a request that was not made"),
              std::string::npos)
        << err_;
  }
}

// A reply whose payload is not a signature fails only its own operation;
// a frame header above the maximum size fails the connection.
TEST_F(FakeCellApi, MalformedRepliesFailCleanly) {
  ScopedAlarm watchdog(60, "MalformedRepliesFailCleanly did not finish");
  ASSERT_NO_FATAL_FAILURE(Open("p256", 30000));
  ASSERT_NO_FATAL_FAILURE(Start(3));
  std::vector<Request> requests = cell_->Take(3);
  ASSERT_EQ(requests.size(), 3u);
  cell_->AnswerMalformed(requests[1]);
  cell_->Answer(requests[2]);
  cell_->Answer(requests[0]);
  ASSERT_TRUE(WaitForAll(operations_));
  EXPECT_EQ(Finish(0), 1) << err_;
  EXPECT_EQ(Finish(1), 0);
  EXPECT_NE(std::string(err_).find("malformed reply"), std::string::npos)
      << err_;
  EXPECT_EQ(Finish(2), 1) << err_;

  ASSERT_NO_FATAL_FAILURE(Start(2));
  requests = cell_->Take(2);
  ASSERT_EQ(requests.size(), 2u);
  cell_->SendOversizedHeader(requests[0].fd);
  ASSERT_TRUE(WaitForAll(operations_));
  for (size_t index : {3, 4}) {
    EXPECT_EQ(Finish(index), 0);
    EXPECT_NE(std::string(err_).find("above the maximum size"),
              std::string::npos)
        << err_;
  }
}

// A reply that never comes fails its operation after the timeout; the
// connection stays, the late reply is discarded and the next operation
// travels on the same connection.
TEST_F(FakeCellApi, MissingReplyTimesOut) {
  ScopedAlarm watchdog(60, "MissingReplyTimesOut did not finish");
  // The timeout leaves the answered requests ample time on a loaded machine.
  ASSERT_NO_FATAL_FAILURE(Open("rsa2048", 2000));
  ASSERT_NO_FATAL_FAILURE(Start(3));
  std::vector<Request> requests = cell_->Take(3);
  ASSERT_EQ(requests.size(), 3u);
  cell_->Answer(requests[2]);
  cell_->Answer(requests[0]);
  ASSERT_TRUE(WaitForAll(operations_));
  EXPECT_EQ(Finish(0), 1) << err_;
  EXPECT_EQ(Finish(1), 0);
  EXPECT_NE(std::string(err_).find("did not reply within 2000 ms"),
            std::string::npos)
      << err_;
  EXPECT_EQ(Finish(2), 1) << err_;

  cell_->Answer(requests[1]);
  ASSERT_NO_FATAL_FAILURE(Start(1));
  std::vector<Request> next = cell_->Take(1);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].fd, requests[0].fd);
  cell_->Answer(next[0]);
  ASSERT_TRUE(WaitForAll(operations_));
  EXPECT_EQ(Finish(3), 1) << err_;
}

}  // namespace
}  // namespace keycell_test
