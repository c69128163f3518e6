// The keys a cell holds, by id.
#ifndef KEYCELL_CELL_KEY_STORE_H
#define KEYCELL_CELL_KEY_STORE_H

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>

#include "cell/key_loader.h"

namespace kc::cell {

struct CellKey {
  UniquePkey pkey;
  protocol::KeyType type = protocol::KeyType::kRsa;
  protocol::KeyPolicy policy;
  // Names the key in messages: its path in the embedded cell, its
  // configured name in keycelld.
  std::string name;
};

class KeyStore {
 public:
  // The maximum number of keys in a store at once.
  static constexpr size_t kMaxKeys = 4096;

  // Adds |key| and returns its id, or nothing when the store already
  // contains kMaxKeys keys. Ids are never reused.
  std::optional<uint32_t> Add(std::shared_ptr<const CellKey> key);
  // True when the store contains kMaxKeys keys.
  bool Full() const;
  // Returns the key with |id|, or nullptr. The key stays valid for as long
  // as the caller keeps the pointer, even if it is removed meanwhile.
  std::shared_ptr<const CellKey> Find(uint32_t id) const;
  // Returns false if there is no key with |id|.
  bool Remove(uint32_t id);

 private:
  mutable std::shared_mutex mutex_;
  std::map<uint32_t, std::shared_ptr<const CellKey>> keys_;
  uint32_t next_id_ = 1;
};

}  // namespace kc::cell

#endif  // KEYCELL_CELL_KEY_STORE_H
