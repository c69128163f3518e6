// The private-key operations the cell performs for its clients.
#ifndef KEYCELL_CELL_OPERATIONS_H
#define KEYCELL_CELL_OPERATIONS_H

#include <cstddef>

#include "base/status.h"
#include "cell/key_store.h"
#include "protocol/codec.h"
#include "protocol/messages.h"

namespace kc::cell {

// Signs |request.input| with |key| and appends the signature to |out|.
// Fails with Code::kForbidden, naming the key and the rejected value, when
// the key's policy does not allow signing, the digest, the MGF1 digest or
// the RSA padding. Every RSA signature is verified with the public key before
// it is returned, so a fault during signing cannot leak the key.
Status Sign(const CellKey &key, const protocol::SignRequest &request,
            std::vector<uint8_t> &out);

// Decrypts |request.ciphertext| with |key| into |out|. Fails with
// Code::kForbidden unless the key's policy allows RSA decryption.
Status Decrypt(const CellKey &key, const protocol::DecryptRequest &request,
               protocol::WipingBuffer &out);

}  // namespace kc::cell

#endif  // KEYCELL_CELL_OPERATIONS_H
