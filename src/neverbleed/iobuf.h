// The contents of neverbleed iobufs: growing them, and the keycell frames
// they carry as requests and replies.
#ifndef KEYCELL_NEVERBLEED_IOBUF_H
#define KEYCELL_NEVERBLEED_IOBUF_H

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/status.h"
#include "client/cell_client.h"
#include "keycell-neverbleed/neverbleed.h"
#include "protocol/frame.h"

namespace kc::neverbleed {

// Makes room for |extra| more bytes after |buf->end|. The old allocation is
// wiped before it is freed. Throws std::bad_alloc when memory runs out.
void Reserve(neverbleed_iobuf_t *buf, size_t extra);

// Appends |length| bytes at |data|, which may be null when |length| is 0.
void Append(neverbleed_iobuf_t *buf, const void *data, size_t length);

// Returns the bytes from |buf->start| to |buf->end|.
std::span<const uint8_t> Contents(const neverbleed_iobuf_t *buf);

// Appends a request frame of |type| that carries |payload|, with a new
// request id.
void BuildFrame(neverbleed_iobuf_t *buf, protocol::MessageType type,
                std::span<const uint8_t> payload);

template <typename Message>
void BuildRequest(neverbleed_iobuf_t *buf, protocol::MessageType type,
                  const Message &message) {
  protocol::WipingBuffer payload;
  protocol::Writer writer(payload);
  protocol::Encode(writer, message);
  BuildFrame(buf, type, payload.span());
}

// Appends a request whose reply makes neverbleed_finish_* fail: a ping, to
// which the cell replies without touching any key.
void BuildFailingRequest(neverbleed_iobuf_t *buf);

// Parses the single frame in |bytes| as the reply to a request of |type|.
// A reply with a nonzero status becomes a Status with the cell's message.
Status ParseReply(std::span<const uint8_t> bytes, protocol::MessageType type,
                  client::Reply &reply);

}  // namespace kc::neverbleed

#endif  // KEYCELL_NEVERBLEED_IOBUF_H
