// Self-checking payloads for crash tests: a unique tag, filler, and 8 hex
// digits of a hash of the rest, so any changed byte is detected wherever
// the payload comes back (delivery, GetJob, after recovery).
#pragma once

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>

namespace ringq::testing {

inline uint32_t Fnv32(std::string_view s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

// Exactly `bytes` bytes when bytes >= the tag's length + 8.
inline std::string MakePayload(std::mt19937_64& rng, uint64_t tag, size_t bytes) {
  std::string body = "tag=" + std::to_string(tag) + ";";
  while (body.size() + 8 < bytes) body.push_back(static_cast<char>('a' + rng() % 26));
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", Fnv32(body));
  return body + hex;
}

inline bool PayloadOk(const std::string& p) {
  if (p.size() < 9) return false;
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", Fnv32(std::string_view(p).substr(0, p.size() - 8)));
  return p.compare(p.size() - 8, 8, hex) == 0;
}

}  // namespace ringq::testing
