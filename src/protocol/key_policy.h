// Digest names and bits of a key's policy (protocol::KeyPolicy), shared by
// the client that sets a policy and the cell that enforces it.
#ifndef KEYCELL_PROTOCOL_KEY_POLICY_H
#define KEYCELL_PROTOCOL_KEY_POLICY_H

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "protocol/messages.h"

namespace kc::protocol {

// The name used for kDigestNone in digest lists: a sign request that names
// no digest.
inline constexpr const char *kNoDigestName = "none";

// Returns the KeyPolicy::digests bit of the digest that a sign request
// names: kDigestNone for an empty name, the bit of the table entry that
// OpenSSL fetches under |name| with |properties| (any of its aliases), or 0
// for a digest outside the table or one OpenSSL does not know.
uint32_t DigestBitOf(std::string_view name, const char *properties);

// Parses digest names separated by |separators| into KeyPolicy::digests
// bits. A name is "none" or an OpenSSL digest name or alias of a digest in
// the table; case does not matter. Fails with Code::kInvalidArgument naming
// the first unknown name, or for an empty list.
Result<uint32_t> ParseDigestList(std::string_view list,
                                 std::string_view separators);

// Returns the table's name for the digest of |bit|, a single bit of
// KeyPolicy::digests, or nullptr for any other value.
const char *DigestName(uint32_t bit);

// Returns the names of the digests in |digests|, separated by spaces, in
// table order.
std::string DigestListNames(uint32_t digests);

// Returns "PKCS#1 v1.5" or "PSS" for a padding of a sign request; a
// kPaddingNone RSA signature uses PKCS#1 v1.5.
const char *SignPaddingName(uint8_t padding);

}  // namespace kc::protocol

#endif  // KEYCELL_PROTOCOL_KEY_POLICY_H
