// Turns request frames into reply frames. One Dispatcher serves every
// connection of a cell and is safe to call from many threads at once.
#ifndef KEYCELL_CELL_DISPATCHER_H
#define KEYCELL_CELL_DISPATCHER_H

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>

#include "cell/key_catalog.h"
#include "cell/key_store.h"
#include "protocol/frame.h"

namespace kc::cell {

// Counters of what a cell did.
struct CellCounters {
  std::atomic<uint64_t> signatures{0};
  std::atomic<uint64_t> decryptions{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> bad_frames{0};
};

class Dispatcher {
 public:
  // |log| receives one line per rejected or failed request; it may be
  // empty. Lines never contain key material, passphrases or signed data.
  Dispatcher(KeyStore &keys, std::function<void(const std::string &)> log);
  // A dispatcher in daemon mode: keys come from |catalog| by name through
  // open-key requests, load-key and drop-privileges requests are forbidden,
  // and every request needs its connection's context.
  Dispatcher(KeyCatalog &catalog, std::function<void(const std::string &)> log);

  enum class Outcome { kReplied, kClose };

  // Handles one request and appends exactly one reply frame to |out|. On
  // kClose the request was malformed: the reply reports that and the caller
  // closes the connection after sending it.
  // In daemon mode, |context| is the connection's peer and opened keys.
  Outcome Handle(const protocol::Frame &request, protocol::WipingBuffer &out,
                 ConnectionContext *context = nullptr);

  // Appends the reply to a frame whose header announced a payload above
  // protocol::kMaxPayload; the caller then closes the connection. A daemon
  // passes the connection's |context|, whose peer the log line names.
  void RejectOversized(protocol::WipingBuffer &out,
                       const ConnectionContext *context = nullptr);

  // Appends the reply to a size prefix that disagrees with the frame after
  // it; the caller then closes the connection.
  void RejectSizePrefix(const std::string &reason, protocol::WipingBuffer &out,
                        const ConnectionContext *context = nullptr);

  const CellCounters &counters() const { return counters_; }

 private:
  Outcome HandleLoadKey(const protocol::Frame &request,
                        protocol::WipingBuffer &out);
  Outcome HandleSign(const protocol::Frame &request,
                     protocol::WipingBuffer &out, ConnectionContext *context);
  Outcome HandleDecrypt(const protocol::Frame &request,
                        protocol::WipingBuffer &out,
                        ConnectionContext *context);
  Outcome HandleReleaseKey(const protocol::Frame &request,
                           protocol::WipingBuffer &out,
                           ConnectionContext *context);
  Outcome HandleDropPrivileges(const protocol::Frame &request,
                               protocol::WipingBuffer &out);
  Outcome HandleOpenKey(const protocol::Frame &request,
                        ConnectionContext &context,
                        protocol::WipingBuffer &out);
  Outcome HandleStatus(const protocol::Frame &request,
                       protocol::WipingBuffer &out,
                       const ConnectionContext *context);
  Outcome HandleSeal(const protocol::Frame &request,
                     protocol::WipingBuffer &out);
  // Returns why a load of |path| is rejected before the file is opened:
  // the cell is sealed or contains KeyStore::kMaxKeys keys. The caller holds
  // seal_mutex_.
  Status LoadRejection(const std::string &path) const;
  static Status FullStoreStatus(const std::string &path);
  // Finds the key that a sign or decrypt request names. In daemon mode the
  // connection must have opened it and still be allowed to use it, and
  // |counters| receives the key's counters.
  Status FindUsableKey(uint32_t id, ConnectionContext *context,
                       std::shared_ptr<const CellKey> &key,
                       std::shared_ptr<KeyCounters> &counters);
  Outcome Reject(const protocol::Frame &request, const std::string &reason,
                 protocol::WipingBuffer &out,
                 const ConnectionContext *context = nullptr);
  // Logs that a connection closes after a malformed request, naming the
  // peer when |context| is set.
  void LogClose(const std::string &what, const ConnectionContext *context);
  // Counts a failed operation in the cell's counters and, when the key is
  // known, in the key's.
  void CountFailure(KeyCounters *key_counters);
  void ReplyError(const protocol::Frame &request, const Status &status,
                  protocol::WipingBuffer &out);

  KeyStore &keys_;
  KeyStore unused_keys_;  // keys_ in daemon mode, where it stays empty.
  KeyCatalog *catalog_ = nullptr;  // Set in daemon mode only.
  std::function<void(const std::string &)> log_;
  CellCounters counters_;
  // A seal locks it exclusively. A load locks it shared from its check of
  // sealed_ until its key is stored.
  mutable std::shared_mutex seal_mutex_;
  bool sealed_ = false;
};

// Builds the cell's key from a key loaded from a file. |name| names the key
// in messages. RSA decryption stays off for keys that are not RSA. Fails with
// Code::kKeyLoadFailed when the policy leaves the key no operation.
Result<std::shared_ptr<CellKey>> NewCellKey(UniquePkey pkey,
                                            protocol::KeyType type,
                                            const protocol::KeyPolicy &policy,
                                            const std::string &name);

// Describes a keycelld peer for logs: "pid P uid U gid G".
std::string DescribePeer(const ConnectionContext &peer);

// Switches the process to |user|'s uid, primary group and supplementary
// groups, and checks that it cannot regain root.
Status SwitchUser(std::string_view user);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_DISPATCHER_H
