#include "protocol/key_policy.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <strings.h>

#include <array>

namespace kc::protocol {
namespace {

// The digests that OpenSSL 3.0 lists for RSA signatures, which include
// every digest of ECDSA, in bit order. Entry 0 is kDigestNone. SM3 signs
// only in builds that enable it for RSA (3.0.19 on Debian 12 does not),
// and MD4, MD2 and MDC2 need the legacy provider, which a server may load
// before it starts the cell.
constexpr std::array<const char *, kDigestCount> kDigestNames = {
    kNoDigestName, "MD5",      "SHA1",     "MD5-SHA1",   "SHA224",
    "SHA256",      "SHA384",   "SHA512",   "SHA512-224", "SHA512-256",
    "SHA3-224",    "SHA3-256", "SHA3-384", "SHA3-512",   "RIPEMD160",
    "SM3",         "MD4",      "MD2",      "MDC2",
};

// Returns the bit of the table entry that |md| is, or 0.
uint32_t BitOfFetched(const EVP_MD *md) {
  for (size_t i = 1; i < kDigestNames.size(); ++i) {
    if (EVP_MD_is_a(md, kDigestNames[i])) {
      return 1u << i;
    }
  }
  return 0;
}

// Returns the bit of the table entry named |name| (case-insensitive), or 0.
uint32_t BitOfName(const std::string &name) {
  for (size_t i = 0; i < kDigestNames.size(); ++i) {
    if (strcasecmp(name.c_str(), kDigestNames[i]) == 0) {
      return 1u << i;
    }
  }
  return 0;
}

uint32_t FetchBit(const std::string &name, const char *properties) {
  ERR_set_mark();
  EVP_MD *md = EVP_MD_fetch(nullptr, name.c_str(), properties);
  ERR_pop_to_mark();
  if (md == nullptr) {
    return 0;
  }
  uint32_t bit = BitOfFetched(md);
  EVP_MD_free(md);
  return bit;
}

}  // namespace

uint32_t DigestBitOf(std::string_view name, const char *properties) {
  if (name.empty()) {
    return kDigestNone;
  }
  return FetchBit(std::string(name), properties);
}

Result<uint32_t> ParseDigestList(std::string_view list,
                                 std::string_view separators) {
  uint32_t digests = 0;
  size_t start = 0;
  while (start < list.size()) {
    size_t end = list.find_first_of(separators, start);
    if (end == std::string_view::npos) {
      end = list.size();
    }
    std::string name(list.substr(start, end - start));
    start = end + 1;
    if (name.empty()) {
      continue;
    }
    // The table's own spelling also covers digests whose provider is not
    // loaded in this process, such as MD4 without the legacy provider.
    uint32_t bit = BitOfName(name);
    if (bit == 0) {
      bit = FetchBit(name, nullptr);
    }
    if (bit == 0) {
      return Status(Code::kInvalidArgument, "unknown digest '" + name +
                                                "'; expected " +
                                                DigestListNames(kAllDigests));
    }
    digests |= bit;
  }
  if (digests == 0) {
    return Status(Code::kInvalidArgument,
                  "the digest list is empty; expected one or more of " +
                      DigestListNames(kAllDigests));
  }
  return digests;
}

const char *DigestName(uint32_t bit) {
  for (size_t i = 0; i < kDigestNames.size(); ++i) {
    if (bit == 1u << i) {
      return kDigestNames[i];
    }
  }
  return nullptr;
}

std::string DigestListNames(uint32_t digests) {
  std::string names;
  for (size_t i = 0; i < kDigestNames.size(); ++i) {
    if ((digests & (1u << i)) != 0) {
      if (!names.empty()) {
        names += ' ';
      }
      names += kDigestNames[i];
    }
  }
  return names;
}

const char *SignPaddingName(uint8_t padding) {
  return padding == kPaddingPss ? "PSS" : "PKCS#1 v1.5";
}

}  // namespace kc::protocol
