#include "cell/key_store.h"

#include <mutex>

namespace kc::cell {

std::optional<uint32_t> KeyStore::Add(std::shared_ptr<const CellKey> key) {
  std::unique_lock lock(mutex_);
  if (keys_.size() >= kMaxKeys) {
    return std::nullopt;
  }
  uint32_t id = next_id_++;
  keys_.emplace(id, std::move(key));
  return id;
}

bool KeyStore::Full() const {
  std::shared_lock lock(mutex_);
  return keys_.size() >= kMaxKeys;
}

std::shared_ptr<const CellKey> KeyStore::Find(uint32_t id) const {
  std::shared_lock lock(mutex_);
  auto it = keys_.find(id);
  return it == keys_.end() ? nullptr : it->second;
}

bool KeyStore::Remove(uint32_t id) {
  std::unique_lock lock(mutex_);
  return keys_.erase(id) == 1;
}

}  // namespace kc::cell
