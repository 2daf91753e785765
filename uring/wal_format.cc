#include "uring/wal_format.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>

#include "uring/crc32c.h"

namespace ringq::uring {

void EncodeRecord(uint64_t lsn, uint8_t type, std::string_view payload, std::string* out) {
  if (payload.size() > kRecordPayloadBytesMax || lsn == 0 || type == 0) {
    std::fprintf(stderr, "ringq: bug: bad WAL record (lsn %llu type %u payload %zu)\n",
                 static_cast<unsigned long long>(lsn), type, payload.size());
    std::abort();
  }
  RecordHeader h;
  h.length = static_cast<uint32_t>(kRecordFixedAfterCrc + payload.size());
  h.lsn = lsn;
  h.type = type;
  uint32_t crc = Crc32c(0, reinterpret_cast<const uint8_t*>(&h) + 8, kRecordFixedAfterCrc);
  h.crc = Crc32c(crc, payload.data(), payload.size());
  const size_t at = out->size();
  out->append(reinterpret_cast<const char*>(&h), sizeof h);
  out->append(payload);
  // Read back what was encoded (validation in pairs).
  ScannedRecord check;
  std::string why;
  std::span<const uint8_t> buf(reinterpret_cast<const uint8_t*>(out->data()), out->size());
  if (CheckRecordAt(buf, at, lsn, &check, &why) != sizeof h + payload.size()) {
    std::fprintf(stderr, "ringq: bug: encoded WAL record does not check: %s\n", why.c_str());
    std::abort();
  }
}

size_t CheckRecordAt(std::span<const uint8_t> buf, size_t offset, uint64_t expect_lsn,
                     ScannedRecord* out, std::string* why) {
  const size_t left = buf.size() - offset;
  if (left < kRecordHeaderBytes) {
    *why = "partial header (" + std::to_string(left) + " bytes)";
    return 0;
  }
  RecordHeader h;
  std::memcpy(&h, buf.data() + offset, sizeof h);
  if (h.length < kRecordFixedAfterCrc || h.length > kRecordFixedAfterCrc + kRecordPayloadBytesMax) {
    *why = "bad length " + std::to_string(h.length);
    return 0;
  }
  const size_t total = 8 + static_cast<size_t>(h.length);
  if (total > left) {
    *why = "record of " + std::to_string(total) + " bytes runs past the end (" +
           std::to_string(left) + " left)";
    return 0;
  }
  const uint32_t crc = Crc32c(0, buf.data() + offset + 8, h.length);
  if (crc != h.crc) {
    *why = "crc mismatch";
    return 0;
  }
  if (h.lsn == 0 || h.type == 0) {
    *why = "zero lsn or type";
    return 0;
  }
  if (expect_lsn != 0 && h.lsn != expect_lsn) {
    *why = "lsn " + std::to_string(h.lsn) + " where " + std::to_string(expect_lsn) +
           " was expected";
    return 0;
  }
  out->lsn = h.lsn;
  out->type = h.type;
  out->payload = std::string_view(reinterpret_cast<const char*>(buf.data() + offset) +
                                      kRecordHeaderBytes,
                                  total - kRecordHeaderBytes);
  out->offset = offset;
  return total;
}

size_t FindValidRecordAfter(std::span<const uint8_t> buf, size_t from, uint64_t after_lsn) {
  for (size_t off = from; off + kRecordHeaderBytes <= buf.size(); ++off) {
    uint32_t len;
    std::memcpy(&len, buf.data() + off, 4);
    if (len < kRecordFixedAfterCrc || len > kRecordFixedAfterCrc + kRecordPayloadBytesMax) continue;
    ScannedRecord rec;
    std::string why;
    if (CheckRecordAt(buf, off, 0, &rec, &why) != 0 && rec.lsn > after_lsn) return off;
  }
  return SIZE_MAX;
}

ScanResult ClassifyStop(std::span<const uint8_t> buf, size_t off, ScanResult r, bool zero,
                        std::string why, size_t torn_window) {
  r.bad_offset = off;
  r.reason = std::move(why);
  // The window is never widened from the bad record's own length field: that
  // field is unchecked, and a flipped bit in it must not hide corruption.
  const size_t far_from = off + torn_window;
  const size_t far = far_from < buf.size() ? FindValidRecordAfter(buf, far_from, r.last_lsn)
                                           : SIZE_MAX;
  if (far != SIZE_MAX) {
    r.stop = ScanStop::kCorrupt;
    r.next_good_offset = far;
    return r;
  }
  if (zero && FindValidRecordAfter(buf, off, r.last_lsn) == SIZE_MAX) {
    r.stop = ScanStop::kEnd;  // preallocated zeros: nothing was written here
    return r;
  }
  r.stop = ScanStop::kTorn;
  return r;
}

std::string SegmentName(uint64_t first_lsn) {
  char name[32];
  std::snprintf(name, sizeof name, "%020llu.wal", static_cast<unsigned long long>(first_lsn));
  return name;
}

bool ParseSegmentName(std::string_view name, uint64_t* first_lsn) {
  if (name.size() != 24 || !name.ends_with(".wal")) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < 20; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    const uint64_t d = static_cast<uint64_t>(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;  // would wrap
    v = v * 10 + d;
  }
  *first_lsn = v;
  return true;
}

}  // namespace ringq::uring
