// h2o's neverbleed API on top of a keycell cell.
//
// An iobuf carries one keycell frame (docs/PROTOCOL.md in the protocol
// headers' terms: a 16-byte header and a message). The descriptor that
// neverbleed_get_fd returns is a cell connection opened with
// protocol::Framing::kSizePrefixed, so the cell reads the size_t byte count
// that neverbleed's callers write before each iobuf and writes one before
// each reply.
#include <dirent.h>
#include <sched.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "client/cell_client.h"
#include "keycell-neverbleed/neverbleed.h"
#include "neverbleed/connection.h"
#include "neverbleed/iobuf.h"
#include "protocol/frame.h"
#include "provider/key.h"
#include "provider/provider.h"

using kc::Code;
using kc::Result;
using kc::Status;
namespace client = kc::client;
namespace protocol = kc::protocol;
namespace provider = kc::provider;
using kc::neverbleed::BuildFailingRequest;
using kc::neverbleed::BuildFrame;
using kc::neverbleed::BuildRequest;
using kc::neverbleed::Contents;
using kc::neverbleed::DescriptorForThisThread;
using kc::neverbleed::ParseReply;
using kc::neverbleed::ReadExactly;
using kc::neverbleed::Reserve;
using kc::neverbleed::WriteAll;

extern "C" {
void (*neverbleed_post_fork_cb)(void) = nullptr;
void (*neverbleed_transaction_cb)(neverbleed_iobuf_t *, int) = nullptr;
enum neverbleed_offload_type neverbleed_offload = NEVERBLEED_OFFLOAD_OFF;
}

namespace {

// The largest iobuf a reply may fill: one frame of the maximum size.
constexpr size_t kMaxFrameSize = protocol::kHeaderSize + protocol::kMaxPayload;

std::atomic<uint64_t> next_serial{1};

// Every state that neverbleed_init created. neverbleed has no function that
// frees a neverbleed_t, so each state lives until the process exits, and
// this list keeps it reachable when the caller's neverbleed_t goes away.
std::mutex states_mutex;
std::vector<std::unique_ptr<keycell_neverbleed_state>> *states =
    new std::vector<std::unique_ptr<keycell_neverbleed_state>>;
// The cell key id stored in the EVP_PKEY ex_data of every key that
// neverbleed_load_private_key_file() loads, for the asynchronous interface.
struct KeyInfo {
  uint32_t key_id = 0;
  protocol::KeyType type = protocol::KeyType::kRsa;
};

int key_info_index = -1;
std::once_flag key_info_once;

void FreeKeyInfo(void *parent, void *pointer, CRYPTO_EX_DATA *data, int index,
                 long argl, void *argp) {
  delete static_cast<KeyInfo *>(pointer);
}

int KeyInfoIndex() {
  std::call_once(key_info_once, [] {
    key_info_index =
        EVP_PKEY_get_ex_new_index(0, nullptr, nullptr, nullptr, FreeKeyInfo);
  });
  return key_info_index;
}

const KeyInfo *FindKeyInfo(EVP_PKEY *pkey) {
  if (pkey == nullptr || !provider::IsCellKey(pkey) || KeyInfoIndex() < 0) {
    return nullptr;
  }
  return static_cast<const KeyInfo *>(
      EVP_PKEY_get_ex_data(pkey, KeyInfoIndex()));
}

void WriteError(char *errbuf, const std::string &message) {
  if (errbuf != nullptr) {
    std::snprintf(errbuf, NEVERBLEED_ERRBUF_SIZE, "%s", message.c_str());
  }
}

// Sends a request through neverbleed_transaction_cb when it is set; the
// provider calls this for every operation of a key this API loaded.
bool CallbackTransport(protocol::MessageType type,
                       std::span<const uint8_t> payload, client::Reply *reply,
                       Status &status) {
  void (*callback)(neverbleed_iobuf_t *, int) = neverbleed_transaction_cb;
  if (callback == nullptr) {
    return false;
  }
  neverbleed_iobuf_t buf{};
  try {
    BuildFrame(&buf, type, payload);
  } catch (const std::bad_alloc &) {
    neverbleed_iobuf_dispose(&buf);
    status = Status(Code::kInternal, "out of memory");
    return true;
  }
  if (reply == nullptr) {
    // The callback owns the buffer's memory from here on.
    callback(&buf, 1);
    status = Status::Ok();
    return true;
  }
  callback(&buf, 0);
  status = ParseReply(Contents(&buf), type, *reply);
  neverbleed_iobuf_dispose(&buf);
  return true;
}

// Sends a request through neverbleed_transaction_cb or the cell's
// per-thread connection.
template <typename Message>
Status Transact(client::CellClient &cell, protocol::MessageType type,
                const Message &request, client::Reply &reply) {
  protocol::WipingBuffer payload;
  protocol::Writer writer(payload);
  protocol::Encode(writer, request);
  Status status;
  if (CallbackTransport(type, payload.span(), &reply, status)) {
    return status;
  }
  return cell.Call(type, request, reply);
}

// Stores the payload of a successful reply of |type| in |buf| into
// |*output|, allocated with malloc. Returns false if the reply is not one.
template <typename ReplyMessage>
bool FinishReply(neverbleed_iobuf_t *buf, protocol::MessageType type,
                 std::span<const uint8_t> ReplyMessage::*field, void **output,
                 size_t *output_length) {
  client::Reply reply;
  if (!ParseReply(Contents(buf), type, reply).ok()) {
    return false;
  }
  ReplyMessage message;
  if (!protocol::Decode(reply.payload, message)) {
    return false;
  }
  std::span<const uint8_t> bytes = message.*field;
  void *copy = std::malloc(bytes.empty() ? 1 : bytes.size());
  if (copy == nullptr) {
    return false;
  }
  std::memcpy(copy, bytes.data(), bytes.size());
  *output = copy;
  *output_length = bytes.size();
  return true;
}

template <typename ReplyMessage>
void Finish(neverbleed_iobuf_t *buf, protocol::MessageType type,
            std::span<const uint8_t> ReplyMessage::*field, void **output,
            size_t *output_length) {
  if (output != nullptr) {
    *output = nullptr;
  }
  if (output_length != nullptr) {
    *output_length = 0;
  }
  if (buf == nullptr) {
    return;
  }
  if (output != nullptr && output_length != nullptr) {
    (void)FinishReply(buf, type, field, output, output_length);
  }
  neverbleed_iobuf_dispose(buf);
}

// Clears |buf| as neverbleed does before building a request: every field,
// |next| and |processing| included.
void ResetIobuf(neverbleed_iobuf_t *buf) {
  *buf = neverbleed_iobuf_t{};
}

// Builds the SignRequest of neverbleed_start_digestsign. Returns false when
// the arguments do not make a valid request.
bool BuildSignRequest(neverbleed_iobuf_t *buf, EVP_PKEY *pkey, const EVP_MD *md,
                      const void *input, size_t length, int rsa_pss) {
  const KeyInfo *info = FindKeyInfo(pkey);
  if (info == nullptr || (input == nullptr && length != 0)) {
    return false;
  }
  static const uint8_t kEmpty = 0;
  std::span<const uint8_t> message(
      input != nullptr ? static_cast<const uint8_t *>(input) : &kEmpty, length);
  protocol::SignRequest request;
  request.key_id = info->key_id;
  if (info->type == protocol::KeyType::kEd25519 ||
      info->type == protocol::KeyType::kEd448) {
    if (md != nullptr) {
      return false;
    }
    request.input = message;
    BuildRequest(buf, protocol::MessageType::kSign, request);
    return true;
  }

  if (md == nullptr) {
    md = EVP_sha256();
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  if (EVP_Digest(message.data(), message.size(), digest, &digest_length, md,
                 nullptr) != 1) {
    ERR_clear_error();
    return false;
  }
  std::string digest_name = EVP_MD_get0_name(md);
  request.digest = digest_name;
  request.input = {digest, digest_length};
  if (info->type == protocol::KeyType::kRsa) {
    request.padding =
        rsa_pss != 0 ? protocol::kPaddingPss : protocol::kPaddingPkcs1;
    if (rsa_pss != 0) {
      request.salt_length = RSA_PSS_SALTLEN_DIGEST;
      request.mgf1_digest = digest_name;
    }
  }
  BuildRequest(buf, protocol::MessageType::kSign, request);
  OPENSSL_cleanse(digest, sizeof(digest));
  return true;
}

std::string AbsolutePath(const char *path) {
  if (path[0] == '/') {
    return path;
  }
  char directory[PATH_MAX];
  if (getcwd(directory, sizeof(directory)) == nullptr) {
    return path;
  }
  return std::string(directory) + "/" + path;
}

// Loads |path| in the cell and returns its EVP_PKEY, with the KeyInfo that
// the asynchronous interface needs.
Result<EVP_PKEY *> LoadKey(keycell_neverbleed_state &state, const char *path) {
  std::string absolute_path = AbsolutePath(path);
  protocol::LoadKeyRequest request;
  request.path = absolute_path;
  request.policy.allow_decrypt = true;
  client::Reply reply;
  Status status =
      Transact(*state.cell, protocol::MessageType::kLoadKey, request, reply);
  if (!status.ok()) {
    return status;
  }
  protocol::LoadKeyReply message;
  if (!protocol::Decode(reply.payload, message)) {
    return Status(Code::kProtocol, "the cell sent a malformed key reply");
  }
  Result<EVP_PKEY *> pkey =
      provider::NewCellKey(state.cell, message.key_id, message.type,
                           message.public_key, CallbackTransport);
  if (!pkey.ok()) {
    return pkey;
  }
  auto *info = new KeyInfo{message.key_id, message.type};
  if (KeyInfoIndex() < 0 ||
      EVP_PKEY_set_ex_data(pkey.value(), KeyInfoIndex(), info) != 1) {
    delete info;
    EVP_PKEY_free(pkey.value());
    return Status(Code::kInternal, "cannot attach key data to the EVP_PKEY");
  }
  return pkey;
}

}  // namespace

extern "C" {

int neverbleed_init(neverbleed_t *nb, char *errbuf) {
  if (nb == nullptr) {
    WriteError(errbuf, "neverbleed_init: nb is NULL");
    return -1;
  }
  *nb = neverbleed_t{};
  if (neverbleed_offload != NEVERBLEED_OFFLOAD_OFF) {
    WriteError(errbuf,
               "neverbleed_init: QAT offload is not supported by keycell; "
               "set neverbleed_offload to NEVERBLEED_OFFLOAD_OFF");
    return -1;
  }

  Status loaded = provider::EnsureLoaded();
  if (!loaded.ok()) {
    WriteError(errbuf, "neverbleed_init: " + loaded.message());
    return -1;
  }
  if (KeyInfoIndex() < 0) {
    WriteError(errbuf, "neverbleed_init: cannot allocate EVP_PKEY ex_data");
    return -1;
  }

  client::StartOptions options;
  options.post_fork = neverbleed_post_fork_cb;
  Result<std::shared_ptr<client::CellClient>> cell =
      client::CellClient::Start(options);
  if (!cell.ok()) {
    WriteError(errbuf, "neverbleed_init: cannot start the cell: " +
                           cell.status().message());
    return -1;
  }
  auto *state = new (std::nothrow) keycell_neverbleed_state;
  if (state == nullptr) {
    WriteError(errbuf, "neverbleed_init: out of memory");
    return -1;
  }

  state->cell = std::move(cell.value());
  state->serial = next_serial.fetch_add(1);
  try {
    std::lock_guard lock(states_mutex);
    states->emplace_back(state);
  } catch (const std::bad_alloc &) {
    delete state;
    WriteError(errbuf, "neverbleed_init: out of memory");
    return -1;
  }
  nb->state = state;
  nb->daemon_pid = state->cell->pid();
  return 0;
}

int neverbleed_load_private_key_file(neverbleed_t *nb, SSL_CTX *ctx,
                                     const char *fn, char *errbuf) {
  if (nb == nullptr || nb->state == nullptr || ctx == nullptr ||
      fn == nullptr || fn[0] == '\0') {
    WriteError(errbuf,
               "neverbleed_load_private_key_file: an initialized "
               "neverbleed_t, an SSL_CTX and a file name are required");
    return -1;
  }
  Result<EVP_PKEY *> pkey = Status(Code::kInternal, "out of memory");
  try {
    pkey = LoadKey(*nb->state, fn);
  } catch (const std::bad_alloc &) {
  }
  if (!pkey.ok()) {
    WriteError(errbuf, pkey.status().message());
    return -1;
  }
  ERR_clear_error();
  int used = SSL_CTX_use_PrivateKey(ctx, pkey.value());
  EVP_PKEY_free(pkey.value());
  if (used != 1) {
    unsigned long error = ERR_peek_last_error();
    const char *reason = error != 0 ? ERR_reason_error_string(error) : nullptr;
    WriteError(errbuf,
               std::string(fn) + ": SSL_CTX_use_PrivateKey failed (OpenSSL: " +
                   (reason != nullptr ? reason : "unknown error") + ")");
    return 0;
  }
  return 1;
}

int neverbleed_setuidgid(neverbleed_t *nb, const char *user,
                         int change_socket_ownership) {
  if (nb == nullptr || nb->state == nullptr || user == nullptr ||
      user[0] == '\0') {
    return -1;
  }
  protocol::DropPrivilegesRequest request{user};
  client::Reply reply;
  try {
    Status status =
        Transact(*nb->state->cell, protocol::MessageType::kDropPrivileges,
                 request, reply);
    return status.ok() ? 0 : -1;
  } catch (const std::bad_alloc &) {
    return -1;
  }
}

void neverbleed_start_digestsign(neverbleed_iobuf_t *buf, EVP_PKEY *pkey,
                                 const EVP_MD *md, const void *input,
                                 size_t len, int rsa_pss) {
  if (buf == nullptr) {
    return;
  }
  ResetIobuf(buf);
  try {
    if (!BuildSignRequest(buf, pkey, md, input, len, rsa_pss)) {
      neverbleed_iobuf_dispose(buf);
      BuildFailingRequest(buf);
    }
  } catch (const std::bad_alloc &) {
    neverbleed_iobuf_dispose(buf);
  }
}

void neverbleed_finish_digestsign(neverbleed_iobuf_t *buf, void **digest,
                                  size_t *digest_len) {
  Finish(buf, protocol::MessageType::kSign, &protocol::SignReply::signature,
         digest, digest_len);
}

void neverbleed_start_decrypt(neverbleed_iobuf_t *buf, EVP_PKEY *pkey,
                              const void *input, size_t len) {
  if (buf == nullptr) {
    return;
  }
  ResetIobuf(buf);
  try {
    const KeyInfo *info = FindKeyInfo(pkey);
    if (info == nullptr || info->type != protocol::KeyType::kRsa ||
        input == nullptr || len == 0) {
      BuildFailingRequest(buf);
      return;
    }
    protocol::DecryptRequest request;
    request.key_id = info->key_id;
    request.padding = protocol::kPaddingPkcs1;
    request.ciphertext = {static_cast<const uint8_t *>(input), len};
    BuildRequest(buf, protocol::MessageType::kDecrypt, request);
  } catch (const std::bad_alloc &) {
    neverbleed_iobuf_dispose(buf);
  }
}

void neverbleed_finish_decrypt(neverbleed_iobuf_t *buf, void **digest,
                               size_t *digest_len) {
  Finish(buf, protocol::MessageType::kDecrypt,
         &protocol::DecryptReply::plaintext, digest, digest_len);
}

#if NEVERBLEED_HAS_PTHREAD_SETAFFINITY_NP
int neverbleed_setaffinity(neverbleed_t *nb, NEVERBLEED_CPU_SET_T *cpuset) {
  if (nb == nullptr || nb->state == nullptr || cpuset == nullptr ||
      nb->state->cell->gone()) {
    return -1;
  }
  // The cell's main thread creates the worker threads, and a new thread
  // inherits its creator's affinity. Pinning the main thread first means a
  // worker created later is pinned too, and one created earlier is listed.
  pid_t cell_pid = nb->state->cell->pid();
  if (sched_setaffinity(cell_pid, sizeof(*cpuset), cpuset) != 0) {
    return -1;
  }
  std::string directory = "/proc/" + std::to_string(cell_pid) + "/task";
  DIR *tasks = opendir(directory.c_str());
  if (tasks == nullptr) {
    return -1;
  }
  bool failed = false;
  while (dirent *entry = readdir(tasks)) {
    if (entry->d_name[0] == '.') {
      continue;
    }
    pid_t tid = static_cast<pid_t>(std::strtol(entry->d_name, nullptr, 10));
    if (sched_setaffinity(tid, sizeof(*cpuset), cpuset) != 0) {
      failed = true;
    }
  }
  closedir(tasks);
  return failed ? -1 : 0;
}
#endif

int neverbleed_get_fd(neverbleed_t *nb) {
  if (nb == nullptr || nb->state == nullptr) {
    return -1;
  }
  try {
    return DescriptorForThisThread(*nb->state);
  } catch (const std::bad_alloc &) {
    return -1;
  }
}

void neverbleed_iobuf_dispose(neverbleed_iobuf_t *buf) {
  if (buf == nullptr) {
    return;
  }
  if (buf->buf != nullptr && buf->capacity != 0) {
    OPENSSL_cleanse(buf->buf, buf->capacity);
  }
  std::free(buf->buf);
  buf->buf = nullptr;
  buf->start = nullptr;
  buf->end = nullptr;
  buf->capacity = 0;
}

void neverbleed_transaction_write(neverbleed_t *nb, neverbleed_iobuf_t *buf) {
  if (buf == nullptr) {
    return;
  }
  int fd = neverbleed_get_fd(nb);
  if (fd < 0) {
    return;
  }
  size_t size = neverbleed_iobuf_size(buf);
  if (WriteAll(fd, &size, sizeof(size)) && size != 0) {
    (void)WriteAll(fd, buf->start, size);
  }
}

void neverbleed_transaction_read(neverbleed_t *nb, neverbleed_iobuf_t *buf) {
  if (buf == nullptr) {
    return;
  }
  neverbleed_iobuf_dispose(buf);
  int fd = neverbleed_get_fd(nb);
  if (fd < 0) {
    return;
  }

  unsigned timeout_ms = nb->state->cell->timeout_ms();
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  // NOTE: after a timeout the late reply stays in the stream, so the next
  // read on this thread's descriptor returns it in place of its own reply.
  size_t size = 0;
  if (!ReadExactly(fd, &size, sizeof(size), deadline, timeout_ms != 0) ||
      size > kMaxFrameSize) {
    return;
  }

  try {
    Reserve(buf, size == 0 ? 1 : size);
  } catch (const std::bad_alloc &) {
    return;
  }
  buf->start = buf->buf;
  buf->end = buf->buf;
  if (!ReadExactly(fd, buf->buf, size, deadline, timeout_ms != 0)) {
    neverbleed_iobuf_dispose(buf);
    return;
  }
  buf->end = buf->buf + size;
}

}  // extern "C"
