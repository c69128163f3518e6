// Error values used inside keycell. Nothing here crosses the C boundary:
// the public API turns a Status into a message in the caller's buffer, and
// the provider turns it into an entry on OpenSSL's error queue.
#ifndef KEYCELL_BASE_STATUS_H
#define KEYCELL_BASE_STATUS_H

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace kc {

// Error categories. The values from kBadRequest to kUnsupportedVersion also
// travel on the wire as a reply's status, so they are fixed.
enum class Code : uint16_t {
  kOk = 0,
  kBadRequest = 1,
  kUnknownKey = 2,
  kForbidden = 3,
  kKeyLoadFailed = 4,
  kOperationFailed = 5,
  kPassphraseRequired = 6,
  kUnsupportedVersion = 7,
  kInternal = 8,
  // Local to one end; never sent.
  kCellGone = 100,
  kTimedOut = 101,
  kProtocol = 102,
  kInvalidArgument = 103,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string &message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Status status) : state_(std::move(status)) {}

  bool ok() const { return std::holds_alternative<T>(state_); }
  T &value() { return std::get<T>(state_); }
  const T &value() const { return std::get<T>(state_); }
  T &operator*() { return value(); }
  T *operator->() { return &value(); }

  // Returns the error; only valid when !ok().
  const Status &status() const { return std::get<Status>(state_); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace kc

#endif  // KEYCELL_BASE_STATUS_H
