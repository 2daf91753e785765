// The status codes of the ringq protocols: gRPC's values and meanings, carried
// as the gRPC status of a call and in RQP's ERROR, GOAWAY and SUBSCRIBE_END
// frames (proto/PROTOCOL.md 5.3). One definition for the RQP frame codec
// (uring/rqp_frame.h) and the client library (client/cpp/status.h).
#pragma once

#include <cstdint>

namespace ringq {

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
inline constexpr uint32_t kStatusCodeMax = 16;  // the highest code defined

}  // namespace ringq
