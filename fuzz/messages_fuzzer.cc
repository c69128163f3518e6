// Fuzzes every message decoder. The first input byte selects the message
// type and the rest is its payload. A message that decodes is encoded again
// and must come back byte for byte, because every decoder accepts exactly
// one encoding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "protocol/codec.h"
#include "protocol/messages.h"

namespace {

namespace protocol = kc::protocol;

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

template <typename Message>
void RoundTrip(std::span<const uint8_t> payload) {
  Message message;
  if (!protocol::Decode(payload, message)) {
    return;
  }
  protocol::WipingBuffer encoded;
  protocol::Writer writer(encoded);
  protocol::Encode(writer, message);
  Check(encoded.size() == payload.size());
  Check(payload.empty() ||
        std::memcmp(encoded.data(), payload.data(), payload.size()) == 0);
  Message again;
  Check(protocol::Decode(encoded.span(), again));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  std::span<const uint8_t> payload(data + 1, size - 1);
  switch (data[0] % 10) {
    case 0:
      RoundTrip<protocol::LoadKeyRequest>(payload);
      break;
    case 1:
      RoundTrip<protocol::LoadKeyReply>(payload);
      break;
    case 2:
      RoundTrip<protocol::SignRequest>(payload);
      break;
    case 3:
      RoundTrip<protocol::SignReply>(payload);
      break;
    case 4:
      RoundTrip<protocol::DecryptRequest>(payload);
      break;
    case 5:
      RoundTrip<protocol::DecryptReply>(payload);
      break;
    case 6:
      RoundTrip<protocol::ReleaseKeyRequest>(payload);
      break;
    case 7:
      RoundTrip<protocol::DropPrivilegesRequest>(payload);
      break;
    case 8:
      RoundTrip<protocol::ErrorReply>(payload);
      break;
    case 9:
      RoundTrip<protocol::SealRequest>(payload);
      break;
  }
  return 0;
}
