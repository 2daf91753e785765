// Status: the outcome of one ringq client call, for both protocols.
//
// `code` has gRPC's values and meanings (0 OK .. 16 UNAUTHENTICATED): over
// gRPC it is the call's status, over RQP the code of the ERROR frame
// (proto/PROTOCOL.md 5.3). The client adds its own only for what never
// reached the server: UNAVAILABLE (cannot connect, connection lost),
// DEADLINE_EXCEEDED (Options::call_timeout_ms), CANCELLED (Client or
// Subscription destroyed), RESOURCE_EXHAUSTED (a frame above the server's
// frame_bytes_max) and INVALID_ARGUMENT (a bad server URL).
//
// Thread: a value type; no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringq::client {

enum class StatusCode : uint32_t {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};
inline constexpr uint32_t kStatusCodeMax = 16;

// "OK", "NOT_FOUND", ... as gRPC spells them; "CODE_<n>" past 16.
const char* StatusCodeName(StatusCode code);
// A wire value as a StatusCode; values past 16 become kUnknown.
StatusCode StatusCodeFromWire(uint32_t code);

struct [[nodiscard]] Status {
  StatusCode code = StatusCode::kOk;
  std::string message;

  Status() = default;
  Status(StatusCode c, std::string m) : code(c), message(std::move(m)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code == StatusCode::kOk; }
  // "NOT_FOUND: job 42 does not exist" (just "OK" when ok).
  std::string ToString() const;
};

}  // namespace ringq::client
