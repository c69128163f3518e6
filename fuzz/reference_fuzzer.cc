// Fuzzes the decoder of keycelld reference files ("KEYCELL PRIVATE KEY"
// PEM), which the OpenSSL module runs on any file a server names as its key.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "protocol/reference.h"

namespace {

void Check(bool condition) {
  if (!condition) {
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  kc::Result<kc::protocol::KeyReference> decoded =
      kc::protocol::DecodeReference(text);
  (void)kc::protocol::DecodeReferenceBody({data, size});
  if (!decoded.ok()) {
    return 0;
  }
  // A reference that decodes encodes again, and that encoding decodes to
  // the same reference.
  kc::Result<std::string> encoded = kc::protocol::EncodeReference(*decoded);
  Check(encoded.ok());
  kc::Result<kc::protocol::KeyReference> again =
      kc::protocol::DecodeReference(*encoded);
  Check(again.ok());
  Check(again->socket_path == decoded->socket_path);
  Check(again->key_name == decoded->key_name);
  Check(again->public_key == decoded->public_key);
  return 0;
}
