// The named keys of keycelld and the policy for each: who may open a key,
// and counters of its use. A reload swaps in a new set of keys at once.
#ifndef KEYCELL_CELL_KEY_CATALOG_H
#define KEYCELL_CELL_KEY_CATALOG_H

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "cell/key_store.h"

namespace kc::cell {

// Operation counts of one key name. They survive reloads that keep the key.
struct KeyCounters {
  std::atomic<uint64_t> signatures{0};
  std::atomic<uint64_t> decryptions{0};
  std::atomic<uint64_t> failures{0};
};

struct CatalogKey {
  uint32_t id = 0;  // Assigned by KeyCatalog::Replace.
  std::string name;
  std::shared_ptr<const CellKey> key;
  std::vector<uint8_t> public_key;  // DER SubjectPublicKeyInfo.
  std::string fingerprint;          // SHA-256 of public_key, lowercase hex.
  std::vector<uid_t> allow_users;
  std::vector<gid_t> allow_groups;
  std::shared_ptr<KeyCounters> counters;  // Assigned by Replace.
};

// The peer of one daemon connection, from SO_PEERCRED and SO_PEERGROUPS,
// and the key ids it opened.
struct ConnectionContext {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // Supplementary groups.

  std::mutex mutex;  // Guards opened_keys.
  std::set<uint32_t> opened_keys;
};

// True if the key's allow-list contains the peer's uid, its primary gid or
// one of its supplementary groups.
bool PeerAllowed(const CatalogKey &key, const ConnectionContext &peer);

class KeyCatalog {
 public:
  // Replaces every key with |keys|. A key whose name and public key both
  // match a current key keeps that key's id and counters, so connections
  // that opened it keep using it. Every other key gets a new id.
  void Replace(std::vector<CatalogKey> keys);

  std::shared_ptr<const CatalogKey> FindById(uint32_t id) const;
  std::shared_ptr<const CatalogKey> FindByName(const std::string &name) const;
  // Returns the current keys in name order.
  std::vector<std::shared_ptr<const CatalogKey>> Snapshot() const;

 private:
  mutable std::shared_mutex mutex_;
  std::map<std::string, std::shared_ptr<const CatalogKey>> by_name_;
  std::map<uint32_t, std::shared_ptr<const CatalogKey>> by_id_;
  uint32_t next_id_ = 1;
};

}  // namespace kc::cell

#endif  // KEYCELL_CELL_KEY_CATALOG_H
