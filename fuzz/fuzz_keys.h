// The key store and reply checks that the dispatcher and size-prefixed
// fuzz targets share.
#ifndef KEYCELL_FUZZ_FUZZ_KEYS_H
#define KEYCELL_FUZZ_FUZZ_KEYS_H

#include <cstdint>
#include <span>

#include "cell/key_store.h"

namespace kc::fuzz {

// Aborts the fuzzing process, which libFuzzer reports as a finding, unless
// |condition| is true.
void Check(bool condition);

// Fills |store| with keys from tests/data when bit 0 of |selector| is set,
// and leaves it empty otherwise. Key ids: 1 RSA 2048 with decryption
// allowed, 2 RSA 2048 without, 3 P-256, 4 Ed25519, 5 Ed448, 6 RSA 2048 that
// signs only with PSS and SHA-256. The keys are read once, on first use.
void FillStore(uint8_t selector, cell::KeyStore &store);

// Checks that |reply| is exactly one reply frame for |request_id| and that
// an error reply carries a well-formed message.
void CheckReply(std::span<const uint8_t> reply, uint64_t request_id);

}  // namespace kc::fuzz

#endif  // KEYCELL_FUZZ_FUZZ_KEYS_H
