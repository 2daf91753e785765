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

#include "proto/status_code.h"

namespace ringq::client {

using ::ringq::kStatusCodeMax;
using ::ringq::StatusCode;

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
