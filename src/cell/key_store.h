// The keys a cell holds, by id.
#ifndef KEYCELL_CELL_KEY_STORE_H
#define KEYCELL_CELL_KEY_STORE_H

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>

#include "cell/key_loader.h"

namespace kc::cell {

struct CellKey {
  UniquePkey pkey;
  protocol::KeyType type = protocol::KeyType::kRsa;
  bool allow_decrypt = false;
};

class KeyStore {
 public:
  // Adds |key| and returns its id. Ids are never reused.
  uint32_t Add(std::shared_ptr<const CellKey> key);
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
