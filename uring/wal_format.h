// The WAL record format and its scanner (DESIGN.md, WAL format).
//
//   [u32 length][u32 crc32c][u64 lsn][u8 type][payload]
//
// `length` counts the bytes after the crc (lsn + type + payload, >= 9); the
// crc covers those same bytes. Little-endian. Records are packed back to back
// in segment files named by their first LSN (%020llu.wal) and preallocated
// with zeros, so a zero length marks the end of what was written.
//
// Validation happens in pairs around the disk (STYLE.md): EncodeRecord checks
// what it writes; the scanner checks every record it reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringq::uring {

struct __attribute__((packed)) RecordHeader {
  uint32_t length;  // bytes after crc: sizeof(lsn) + sizeof(type) + payload
  uint32_t crc;
  uint64_t lsn;
  uint8_t type;
};
static_assert(sizeof(RecordHeader) == 17, "on-disk record header is 17 bytes");

inline constexpr size_t kRecordHeaderBytes = sizeof(RecordHeader);
inline constexpr size_t kRecordFixedAfterCrc = 9;  // lsn + type
// Largest payload one record may carry (a job with a 64 MiB payload fits).
inline constexpr uint32_t kRecordPayloadBytesMax = 80u << 20;

// Appends one encoded record to `out`.
void EncodeRecord(uint64_t lsn, uint8_t type, std::string_view payload, std::string* out);
inline size_t EncodedSize(size_t payload_bytes) { return kRecordHeaderBytes + payload_bytes; }

struct ScannedRecord {
  uint64_t lsn;
  uint8_t type;
  std::string_view payload;  // points into the scanned buffer
  size_t offset;             // of the record in the buffer
};

// Only the last write can be torn: the writer submits the next write only
// after the previous write and its fdatasync completed, and one write carries
// at most kWriteBytesMax. So valid records within kWriteBytesMax after a bad
// one may be pieces of that same unsynced write (pages persist in any order);
// a valid record further on was written after a completed sync, and the bad
// record before it is corruption, not a torn tail.
inline constexpr size_t kWriteBytesMax = 2u << 20;

enum class ScanStop : uint8_t {
  kEnd,      // clean end: zeros (preallocated space) or the end of the buffer exactly
  kTorn,     // a partial or bad record with nothing valid past the last write: a torn tail
  kCorrupt,  // a bad record followed by a valid one past the last write: not a torn tail
};

struct ScanResult {
  ScanStop stop = ScanStop::kEnd;
  size_t valid_bytes = 0;    // bytes of whole good records from the start
  uint64_t last_lsn = 0;     // of the last good record, 0 if none
  size_t bad_offset = 0;     // kTorn / kCorrupt: where the bad record starts
  size_t next_good_offset = 0;  // kCorrupt: where the valid record after it starts
  std::string reason;        // what was wrong at bad_offset
};


// Non-template core: checks one record at `offset`. Returns the record's
// total size, or 0 with `why` set if it is not a good record.
size_t CheckRecordAt(std::span<const uint8_t> buf, size_t offset, uint64_t expect_lsn,
                     ScannedRecord* out, std::string* why);
// After a bad record at `from`, looks for any good record further on whose
// lsn is above `after_lsn`. Returns its offset or SIZE_MAX.
size_t FindValidRecordAfter(std::span<const uint8_t> buf, size_t from, uint64_t after_lsn);

// Classifies the stop at a bad or zero record at `off` (see kWriteBytesMax).
ScanResult ClassifyStop(std::span<const uint8_t> buf, size_t off, ScanResult r, bool zero,
                        std::string why, size_t torn_window);

// Scans records in buf. `expect_lsn` is the LSN the first record must carry
// (0: any); each next one must be the previous plus one. Calls fn(record) for
// each good record in order.
template <typename Fn>
ScanResult ScanRecords(std::span<const uint8_t> buf, uint64_t expect_lsn, Fn&& fn,
                       size_t torn_window = kWriteBytesMax) {
  ScanResult r;
  size_t off = 0;
  uint64_t want = expect_lsn;
  while (off < buf.size()) {
    if (buf.size() - off >= 4) {
      uint32_t len;
      __builtin_memcpy(&len, buf.data() + off, 4);
      if (len == 0) return ClassifyStop(buf, off, std::move(r), true, "zero length", torn_window);
    } else {
      // Fewer bytes than a length field left: zeros are the segment's end.
      bool zeros = true;
      for (size_t k = off; k < buf.size(); ++k) zeros = zeros && buf[k] == 0;
      if (zeros) return r;
    }
    ScannedRecord rec;
    std::string why;
    const size_t n = CheckRecordAt(buf, off, want, &rec, &why);
    if (n == 0) return ClassifyStop(buf, off, std::move(r), false, std::move(why), torn_window);
    fn(rec);
    r.last_lsn = rec.lsn;
    want = rec.lsn + 1;
    off += n;
    r.valid_bytes = off;
  }
  return r;
}

// Segment file name for a first LSN, and back.
std::string SegmentName(uint64_t first_lsn);
bool ParseSegmentName(std::string_view name, uint64_t* first_lsn);

}  // namespace ringq::uring
