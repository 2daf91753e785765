#include "client/cpp/status.h"

#include <array>

namespace ringq::client {

namespace {
constexpr std::array<const char*, kStatusCodeMax + 1> kNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};
}  // namespace

const char* StatusCodeName(StatusCode code) {
  const auto i = static_cast<uint32_t>(code);
  return i <= kStatusCodeMax ? kNames[i] : "UNKNOWN";
}

StatusCode StatusCodeFromWire(uint32_t code) {
  return code <= kStatusCodeMax ? static_cast<StatusCode>(code) : StatusCode::kUnknown;
}

std::string Status::ToString() const {
  std::string s = StatusCodeName(code);
  if (!message.empty()) {
    s += ": ";
    s += message;
  }
  return s;
}

}  // namespace ringq::client
