#include "cell/key_catalog.h"

#include <algorithm>

namespace kc::cell {

bool PeerAllowed(const CatalogKey &key, const ConnectionContext &peer) {
  if (std::find(key.allow_users.begin(), key.allow_users.end(), peer.uid) !=
      key.allow_users.end()) {
    return true;
  }
  for (gid_t gid : key.allow_groups) {
    if (gid == peer.gid || std::find(peer.groups.begin(), peer.groups.end(),
                                     gid) != peer.groups.end()) {
      return true;
    }
  }
  return false;
}

void KeyCatalog::Replace(std::vector<CatalogKey> keys) {
  std::unique_lock lock(mutex_);
  std::map<std::string, std::shared_ptr<const CatalogKey>> by_name;
  std::map<uint32_t, std::shared_ptr<const CatalogKey>> by_id;
  for (CatalogKey &key : keys) {
    auto current = by_name_.find(key.name);
    if (current != by_name_.end() &&
        current->second->public_key == key.public_key) {
      key.id = current->second->id;
      key.counters = current->second->counters;
    } else {
      key.id = next_id_++;
      key.counters = std::make_shared<KeyCounters>();
    }
    auto shared = std::make_shared<const CatalogKey>(std::move(key));
    by_id.emplace(shared->id, shared);
    by_name.emplace(shared->name, shared);
  }
  by_name_.swap(by_name);
  by_id_.swap(by_id);
}

std::shared_ptr<const CatalogKey> KeyCatalog::FindById(uint32_t id) const {
  std::shared_lock lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::shared_ptr<const CatalogKey> KeyCatalog::FindByName(
    const std::string &name) const {
  std::shared_lock lock(mutex_);
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const CatalogKey>> KeyCatalog::Snapshot() const {
  std::shared_lock lock(mutex_);
  std::vector<std::shared_ptr<const CatalogKey>> keys;
  keys.reserve(by_name_.size());
  for (const auto &[name, key] : by_name_) {
    keys.push_back(key);
  }
  return keys;
}

}  // namespace kc::cell
