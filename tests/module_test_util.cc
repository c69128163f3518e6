#include "module_test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>

#include "protocol/frame.h"
#include "protocol/messages.h"
#include "protocol/reference.h"
#include "test_util.h"

namespace keycell_test {
namespace {

using kc::protocol::WipingBuffer;

using kc::protocol::ErrorReply;
using kc::protocol::KeyType;

KeyType KeyTypeOf(EVP_PKEY *key) {
  if (EVP_PKEY_is_a(key, "RSA")) {
    return KeyType::kRsa;
  }
  if (EVP_PKEY_is_a(key, "EC")) {
    return KeyType::kEc;
  }
  if (EVP_PKEY_is_a(key, "ED25519")) {
    return KeyType::kEd25519;
  }
  return KeyType::kEd448;
}

// Signs as keycelld does: the digest for RSA and ECDSA, the message for
// EdDSA. Returns an empty vector on failure.
std::vector<uint8_t> Sign(EVP_PKEY *key, const kc::protocol::SignRequest &r) {
  std::vector<uint8_t> signature;
  size_t length = 0;
  if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448")) {
    EVP_MD_CTX *md_ctx = EVP_MD_CTX_new();
    bool ok = EVP_DigestSignInit_ex(md_ctx, nullptr, nullptr, nullptr, nullptr,
                                    key, nullptr) == 1 &&
              EVP_DigestSign(md_ctx, nullptr, &length, r.input.data(),
                             r.input.size()) == 1;
    signature.resize(length);
    ok = ok && EVP_DigestSign(md_ctx, signature.data(), &length, r.input.data(),
                              r.input.size()) == 1;
    EVP_MD_CTX_free(md_ctx);
    signature.resize(ok ? length : 0);
    return signature;
  }

  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr);
  EVP_MD *md =
      r.digest.empty()
          ? nullptr
          : EVP_MD_fetch(nullptr, std::string(r.digest).c_str(), nullptr);
  EVP_MD *mgf1 =
      r.mgf1_digest.empty()
          ? nullptr
          : EVP_MD_fetch(nullptr, std::string(r.mgf1_digest).c_str(), nullptr);

  bool ok = ctx != nullptr && EVP_PKEY_sign_init(ctx) == 1;
  ok = ok && (md == nullptr || EVP_PKEY_CTX_set_signature_md(ctx, md) == 1);
  if (ok && r.padding != 0) {
    ok = EVP_PKEY_CTX_set_rsa_padding(ctx, r.padding) == 1;
  }
  if (ok && r.padding == RSA_PKCS1_PSS_PADDING) {
    ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, r.salt_length) == 1 &&
         (mgf1 == nullptr || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, mgf1) == 1);
  }

  ok = ok && EVP_PKEY_sign(ctx, nullptr, &length, r.input.data(),
                           r.input.size()) == 1;
  signature.resize(length);
  ok = ok && EVP_PKEY_sign(ctx, signature.data(), &length, r.input.data(),
                           r.input.size()) == 1;
  EVP_MD_free(md);
  EVP_MD_free(mgf1);
  EVP_PKEY_CTX_free(ctx);
  ERR_clear_error();
  signature.resize(ok ? length : 0);
  return signature;
}

}  // namespace

FakeDaemon::FakeDaemon(std::string socket_path)
    : socket_path_(std::move(socket_path)) {}

FakeDaemon::~FakeDaemon() {
  Stop(true);
  for (auto &[name, key] : keys_) {
    EVP_PKEY_free(key);
  }
}

void FakeDaemon::AddKey(const std::string &name, EVP_PKEY *key) {
  EVP_PKEY_up_ref(key);
  keys_[name] = key;
}

bool FakeDaemon::Start(std::string *error) {
  ::unlink(socket_path_.c_str());
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path_.c_str(),
               sizeof(address.sun_path) - 1);
  if (listener < 0 ||
      bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof(address)) !=
          0 ||
      listen(listener, 64) != 0 || pipe2(stop_pipe_, O_CLOEXEC) != 0) {
    *error = "cannot listen on " + socket_path_ + ": " + std::strerror(errno);
    if (listener >= 0) {
      ::close(listener);
    }
    return false;
  }
  listener_ = listener;
  ++starts_;
  acceptor_ =
      std::thread(&FakeDaemon::AcceptLoop, this, listener_, stop_pipe_[0]);
  return true;
}

void FakeDaemon::Stop(bool remove_socket) {
  if (listener_ >= 0) {
    char byte = 0;
    (void)!write(stop_pipe_[1], &byte, 1);
    acceptor_.join();
    ::close(listener_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    listener_ = -1;
    {
      std::lock_guard lock(mutex_);
      for (int fd : connections_) {
        shutdown(fd, SHUT_RDWR);
      }
    }
    for (std::thread &server : servers_) {
      server.join();
    }
    servers_.clear();
    std::lock_guard lock(mutex_);
    for (int fd : connections_) {
      ::close(fd);
    }
    connections_.clear();
  }
  if (remove_socket) {
    ::unlink(socket_path_.c_str());
  }
}

void FakeDaemon::AcceptLoop(int listener, int stop_fd) {
  uint32_t next_first_id = starts_ * 1000;
  for (;;) {
    pollfd fds[2] = {{listener, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 || (fds[1].revents & POLLIN) != 0) {
      return;
    }
    int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      continue;
    }
    std::lock_guard lock(mutex_);
    connections_.push_back(fd);
    next_first_id += 10;
    servers_.emplace_back(&FakeDaemon::Serve, this, fd, next_first_id);
  }
}

void FakeDaemon::Serve(int fd, uint32_t first_id) {
  std::map<uint32_t, EVP_PKEY *> opened;
  uint32_t next_id = first_id;
  WipingBuffer in;
  for (;;) {
    kc::protocol::Frame frame;
    kc::protocol::SplitResult split =
        kc::protocol::SplitFrame(in.span(), frame);
    if (split == kc::protocol::SplitResult::kTooLarge) {
      return;
    }
    if (split == kc::protocol::SplitResult::kNeedMore) {
      uint8_t *space = in.Reserve(16 * 1024);
      ssize_t n = recv(fd, space, 16 * 1024, 0);
      if (n <= 0) {
        return;
      }
      in.Commit(static_cast<size_t>(n));
      continue;
    }
    WipingBuffer out;
    const kc::protocol::FrameHeader &header = frame.header;
    if (header.type ==
        static_cast<uint8_t>(kc::protocol::MessageType::kOpenKey)) {
      ++open_requests_;
      kc::protocol::OpenKeyRequest request;
      bool valid = kc::protocol::Decode(frame.payload, request);
      std::string name(valid ? request.name : "");
      auto key = keys_.find(name);
      if (!valid || key == keys_.end()) {
        kc::protocol::AppendFrame(out, header.type, 2, header.id,
                                  ErrorReply{"no key named " + name});
      } else {
        unsigned char *der = nullptr;
        int length = i2d_PUBKEY(key->second, &der);
        uint32_t id = next_id++;
        opened[id] = key->second;
        kc::protocol::AppendFrame(
            out, header.type, 0, header.id,
            kc::protocol::OpenKeyReply{id,
                                       KeyTypeOf(key->second),
                                       {der, static_cast<size_t>(length)}});
        OPENSSL_free(der);
      }
    } else if (header.type ==
               static_cast<uint8_t>(kc::protocol::MessageType::kSign)) {
      ++sign_requests_;
      kc::protocol::SignRequest request;
      auto key = opened.end();
      if (kc::protocol::Decode(frame.payload, request)) {
        key = opened.find(request.key_id);
      }
      std::vector<uint8_t> signature;
      if (key != opened.end()) {
        signature = Sign(key->second, request);
      }
      if (key == opened.end()) {
        kc::protocol::AppendFrame(out, header.type, 2, header.id,
                                  ErrorReply{"unknown key id"});
      } else if (signature.empty()) {
        kc::protocol::AppendFrame(out, header.type, 5, header.id,
                                  ErrorReply{"signing failed"});
      } else {
        kc::protocol::AppendFrame(out, header.type, 0, header.id,
                                  kc::protocol::SignReply{signature});
      }
    } else {
      kc::protocol::AppendFrame(out, header.type, 1, header.id,
                                ErrorReply{"unsupported request"});
    }
    in.Consume(frame.size());
    if (!WriteAll(fd, out.data(), out.size())) {
      return;
    }
  }
}

bool WriteReferenceFile(const std::string &path, const std::string &socket_path,
                        const std::string &name, EVP_PKEY *key,
                        std::string *error) {
  unsigned char *der = nullptr;
  int length = i2d_PUBKEY(key, &der);
  if (length <= 0) {
    *error = "i2d_PUBKEY failed";
    return false;
  }
  kc::protocol::KeyReference reference;
  reference.socket_path = socket_path;
  reference.key_name = name;
  reference.public_key.assign(der, der + length);
  OPENSSL_free(der);
  kc::Result<std::string> pem = kc::protocol::EncodeReference(reference);
  if (!pem.ok()) {
    *error = pem.status().message();
    return false;
  }
  return WriteFile(path, pem->data(), pem->size(), error);
}

bool WriteModuleConfig(const std::string &path) {
  std::ofstream out(path);
  out << "openssl_conf = openssl_init\n"
         "[openssl_init]\n"
         "providers = provider_sect\n"
         "[provider_sect]\n"
         "default = default_sect\n"
         "keycell = keycell_sect\n"
         "[default_sect]\n"
         "activate = 1\n"
         "[keycell_sect]\n"
         "module = "
      << ModulePath()
      << "\n"
         "activate = 1\n";
  return out.good();
}

Child StartOpenssl(const std::vector<std::string> &args,
                   const std::string &config) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return {};
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, STDIN_FILENO);
    if (config.empty()) {
      unsetenv("OPENSSL_CONF");
    } else {
      setenv("OPENSSL_CONF", config.c_str(), 1);
    }
    std::vector<char *> argv;
    argv.push_back(const_cast<char *>("openssl"));
    for (const std::string &arg : args) {
      argv.push_back(const_cast<char *>(arg.c_str()));
    }
    argv.push_back(nullptr);
    execvp("openssl", argv.data());
    _exit(127);
  }
  ::close(pipe_fds[1]);
  return {pid, pipe_fds[0]};
}

std::string ReadOutput(int fd, const std::string &marker, int timeout_ms) {
  std::string text;
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (marker.empty() || text.find(marker) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd readable{fd, POLLIN, 0};
    if (left.count() <= 0 ||
        poll(&readable, 1, static_cast<int>(left.count())) <= 0) {
      break;
    }
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) {
      break;
    }
    text.append(chunk, static_cast<size_t>(n));
  }
  return text;
}

std::string RunProgram(const std::vector<std::string> &argv,
                       std::string *output) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return "pipe failed";
  }
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    std::vector<char *> pointers;
    for (const std::string &arg : argv) {
      pointers.push_back(const_cast<char *>(arg.c_str()));
    }
    pointers.push_back(nullptr);
    execv(pointers[0], pointers.data());
    _exit(127);
  }
  ::close(pipe_fds[1]);
  *output = ReadOutput(pipe_fds[0], "", 30000);
  ::close(pipe_fds[0]);
  return WaitForChild(pid);
}

std::string RunOpenssl(const std::vector<std::string> &args,
                       const std::string &config, std::string *output) {
  Child child = StartOpenssl(args, config);
  if (child.pid < 0) {
    return "fork failed";
  }
  *output = ReadOutput(child.output, "", 30000);
  ::close(child.output);
  return WaitForChild(child.pid);
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

void ExpectHandshake(const std::string &config, const std::string &name,
                     const std::string &key, const std::string &version,
                     const std::vector<std::string> &client_options) {
  SCOPED_TRACE(name + " " + version);
  int port = FreePort();
  ASSERT_GT(port, 0);
  std::string address = "127.0.0.1:" + std::to_string(port);
  Child server =
      StartOpenssl({"s_server", "-accept", address, "-cert", CertPath(name),
                    "-key", key, "-naccept", "1", "-www", version},
                   config);
  ASSERT_GT(server.pid, 0);
  std::string server_output = ReadOutput(server.output, "ACCEPT", 10000);
  ASSERT_NE(server_output.find("ACCEPT"), std::string::npos) << server_output;

  std::string client_output;
  std::vector<std::string> client_args = {
      "s_client", "-connect",     address,
      "-CAfile",  CertPath(name), "-verify_return_error",
      "-brief",   version};
  client_args.insert(client_args.end(), client_options.begin(),
                     client_options.end());
  std::string client_status = RunOpenssl(client_args, "", &client_output);
  server_output += ReadOutput(server.output, "", 2000);
  EXPECT_EQ(client_status, "exit status 0") << client_output << "\nserver:\n"
                                            << server_output;
  EXPECT_NE(client_output.find("Verification: OK"), std::string::npos)
      << client_output;
  std::string protocol = version == "-tls1_3" ? "TLSv1.3" : "TLSv1.2";
  EXPECT_NE(client_output.find("Protocol version: " + protocol),
            std::string::npos)
      << client_output;
  for (size_t i = 0; i + 1 < client_options.size(); ++i) {
    if (client_options[i] == "-cipher") {
      EXPECT_NE(client_output.find("Ciphersuite: " + client_options[i + 1]),
                std::string::npos)
          << client_output;
    }
  }

  ::close(server.output);
  kill(server.pid, SIGTERM);
  WaitForChild(server.pid);
  EXPECT_EQ(server_output.find("error"), std::string::npos) << server_output;
}

const char *ModulePath() {
  return KEYCELL_MODULE_PATH;
}

}  // namespace keycell_test
