// Tests of the group-commit WAL writer (wal.h), run once per SyncBackend
// (io_uring on its own ring, io_uring on a shared Ring (ring.h) as the shard
// loop runs it, both skipped with a reason where io_uring cannot be set up,
// and portable), against real files in a fresh directory under /tmp per test.
// Each test appends, drives Reap() until the records are durable (waiting on
// event_fd() with a bounded poll, or with a shared ring on
// Ring::SubmitAndWait as the shard loop does: a lost wakeup fails the test
// after 5 s instead of hanging), then reads the segment files back with
// ScanRecords.
// Batch-mode tests drive a fake clock so their sync counts are exact.
#include "uring/wal.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "uring/ring.h"
#include "uring/wal_format.h"

namespace ringq::uring {

// gtest prints scan verdicts by name (the same definition is in wal_format_test.cc).
inline void PrintTo(ScanStop s, std::ostream* os) {
  *os << (s == ScanStop::kEnd ? "kEnd" : s == ScanStop::kTorn ? "kTorn" : "kCorrupt");
}

// How the test's Wal does its I/O: a SyncBackend kind, and for io_uring
// whether on its own ring or on a shared Ring (WalOptions::ring).
enum class WalMode : uint8_t { kUring, kUringShared, kPortable };

inline const char* WalModeName(WalMode m) {
  return m == WalMode::kUring ? "Uring" : m == WalMode::kUringShared ? "UringShared" : "Portable";
}
inline void PrintTo(WalMode m, std::ostream* os) { *os << WalModeName(m); }

namespace {

constexpr uint64_t kSeed = 0x3a1'5eed'77ull;
constexpr uint64_t kWaitMsMax = 5000;  // per Drain: a stuck writer fails, never hangs
constexpr int kDrainIterationsMax = 100'000;
constexpr uint64_t kNoWake = std::numeric_limits<uint64_t>::max();

// The shared ring the current test's Wal runs on (WalMode::kUringShared), or
// nullptr: the waits below drive it as the shard loop would. Set by the
// fixture (and by a forked death-test child for its own ring).
Ring* g_shared_ring = nullptr;

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

std::string RandomPayload(std::mt19937_64& rng, size_t n) {
  std::string p(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return p;
}

// What the test appended, indexed by lsn - base.
struct Appended {
  uint64_t base = 0;  // lsn of recs[0]
  struct Rec {
    uint8_t type;
    std::string payload;
  };
  std::vector<Rec> recs;

  uint64_t Add(Wal& wal, uint8_t type, std::string payload) {
    const uint64_t lsn = wal.Append(type, payload);
    if (recs.empty()) base = lsn;
    EXPECT_EQ(lsn, base + recs.size()) << "Append must return consecutive LSNs";
    recs.push_back(Rec{type, std::move(payload)});
    return lsn;
  }
  uint64_t AddRandom(Wal& wal, std::mt19937_64& rng, size_t payload_min, size_t payload_max) {
    const size_t n = payload_min + rng() % (payload_max - payload_min + 1);
    return Add(wal, static_cast<uint8_t>(1 + rng() % 255), RandomPayload(rng, n));
  }
  uint64_t last() const { return base + recs.size() - 1; }
};

// Waits up to timeout_ms for the Wal's I/O to make progress: on the shared
// ring one SubmitAndWait (which also submits what Reap prepared), else a poll
// of event_fd(). >0: something completed (or may have), 0: timeout, <0: -errno.
int WaitForWal(const Wal& wal, uint64_t timeout_ms) {
  if (g_shared_ring != nullptr) {
    if (wal.event_fd() != -1) return -EINVAL;  // a shared-ring Wal has no eventfd
    return g_shared_ring->SubmitAndWait(timeout_ms) > 0 ? 1 : 0;
  }
  pollfd p{wal.event_fd(), POLLIN, 0};
  const int rc = poll(&p, 1, static_cast<int>(timeout_ms));
  return rc < 0 ? -errno : rc;
}

// Reaps until everything appended is written (durable_lsn == last_lsn and
// nothing queued), collecting committed chunks into `committed` if given.
::testing::AssertionResult Drain(Wal& wal, std::vector<CommittedChunk>* committed = nullptr,
                                 const std::function<uint64_t()>& clock = NowMs) {
  const uint64_t deadline = NowMs() + kWaitMsMax;
  for (int i = 0; i < kDrainIterationsMax; ++i) {
    wal.Reap(clock());
    if (wal.durable_lsn() > wal.last_lsn()) {
      return ::testing::AssertionFailure()
             << "durable_lsn " << wal.durable_lsn() << " > last_lsn " << wal.last_lsn();
    }
    if (committed != nullptr) {
      for (auto& c : wal.TakeCommitted()) committed->push_back(std::move(c));
    }
    if (wal.durable_lsn() == wal.last_lsn() && wal.idle()) return ::testing::AssertionSuccess();
    const uint64_t now = NowMs();
    if (now >= deadline) break;
    const int rc = WaitForWal(wal, deadline - now);
    if (rc < 0 && rc != -EINTR) {
      return ::testing::AssertionFailure() << "waiting for the WAL: " << std::strerror(-rc);
    }
    if (rc == 0) {
      return ::testing::AssertionFailure()
             << "no completion within " << kWaitMsMax << " ms while durable_lsn "
             << wal.durable_lsn() << " < last_lsn " << wal.last_lsn() << " (lost wakeup?)";
    }
  }
  return ::testing::AssertionFailure() << "not durable after " << kWaitMsMax << " ms: durable_lsn "
                                       << wal.durable_lsn() << ", last_lsn " << wal.last_lsn();
}

struct SegmentFile {
  uint64_t first_lsn;
  std::string name;
  std::string bytes;
};

std::vector<SegmentFile> ReadSegments(const std::string& dir) {
  std::vector<SegmentFile> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    SegmentFile f;
    f.name = e.path().filename().string();
    if (!ParseSegmentName(f.name, &f.first_lsn)) continue;
    std::ifstream in(e.path(), std::ios::binary);
    f.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(),
            [](const SegmentFile& a, const SegmentFile& b) { return a.first_lsn < b.first_lsn; });
  return out;
}

std::vector<uint64_t> SegmentFirstLsns(const std::string& dir) {
  std::vector<uint64_t> firsts;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    uint64_t first;
    if (ParseSegmentName(e.path().filename().string(), &first)) firsts.push_back(first);
  }
  std::sort(firsts.begin(), firsts.end());
  return firsts;
}

// Bytes of every file in the directory (segments and the spare), as the
// space limit must count them.
uint64_t FileBytesInDir(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    struct stat st;
    if (stat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_size);
    }
  }
  return total;
}

// Scans every segment file in order: each must be a clean end (kEnd), start
// at the LSN in its name, and together they must hold exactly the records
// want[from - base ..] with their types and payloads, LSNs continuous across
// files.
::testing::AssertionResult LogOnDiskIs(const std::string& dir, const Appended& want,
                                       uint64_t from) {
  uint64_t next = from;
  const auto segments = ReadSegments(dir);
  if (segments.empty()) return ::testing::AssertionFailure() << "no segment files in " << dir;
  for (const SegmentFile& seg : segments) {
    std::span<const uint8_t> buf(reinterpret_cast<const uint8_t*>(seg.bytes.data()),
                                 seg.bytes.size());
    std::string mismatch;
    uint64_t count = 0;
    const ScanResult r = ScanRecords(buf, seg.first_lsn, [&](const ScannedRecord& rec) {
      ++count;
      if (!mismatch.empty()) return;
      if (rec.lsn != next) {
        mismatch =
            "lsn " + std::to_string(rec.lsn) + " where " + std::to_string(next) + " was expected";
      } else if (rec.lsn < want.base || rec.lsn > want.last()) {
        mismatch = "lsn " + std::to_string(rec.lsn) + " was never appended";
      } else {
        const auto& w = want.recs[rec.lsn - want.base];
        if (rec.type != w.type || rec.payload != w.payload) {
          mismatch = "lsn " + std::to_string(rec.lsn) + " has the wrong type or payload";
        }
      }
      ++next;
    });
    if (!mismatch.empty()) return ::testing::AssertionFailure() << seg.name << ": " << mismatch;
    if (r.stop != ScanStop::kEnd) {
      return ::testing::AssertionFailure()
             << seg.name << " (" << seg.bytes.size() << " bytes) does not scan cleanly: stop "
             << ::testing::PrintToString(r.stop) << " at " << r.bad_offset << " (" << r.reason
             << "), valid_bytes " << r.valid_bytes;
    }
    if (count == 0 && &seg != &segments.back()) {
      return ::testing::AssertionFailure() << seg.name << " is an older segment with no records";
    }
  }
  if (next != want.last() + 1) {
    return ::testing::AssertionFailure()
           << "segments hold LSNs " << from << ".." << next - 1 << ", want through " << want.last();
  }
  return ::testing::AssertionSuccess();
}

// Checks one committed chunk: its bytes are exactly its records, in order.
::testing::AssertionResult ChunkHolds(const CommittedChunk& c, const Appended& want) {
  std::span<const uint8_t> buf(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size());
  uint64_t next = c.first_lsn;
  bool same = true;
  const ScanResult r = ScanRecords(buf, c.first_lsn, [&](const ScannedRecord& rec) {
    const auto& w = want.recs[rec.lsn - want.base];
    same = same && rec.lsn == next && rec.type == w.type && rec.payload == w.payload;
    ++next;
  });
  if (r.stop != ScanStop::kEnd || r.valid_bytes != c.bytes.size() || r.last_lsn != c.last_lsn ||
      !same) {
    return ::testing::AssertionFailure()
           << "chunk " << c.first_lsn << ".." << c.last_lsn << " (" << c.bytes.size()
           << " bytes) scans as " << ::testing::PrintToString(r.stop) << " through lsn "
           << r.last_lsn << (same ? "" : ", with a wrong record");
  }
  return ::testing::AssertionSuccess();
}

// A small shared ring, as a shard would create (without its network).
std::unique_ptr<Ring> MakeTestRing(std::string* why) {
  RingOptions ro;
  ro.entries = 64;
  return Ring::Create(ro, why);
}

class WalTest : public ::testing::TestWithParam<WalMode> {
 protected:
  void SetUp() override {
    if (GetParam() != WalMode::kPortable && MakeUringBackend() == nullptr) {
      GTEST_SKIP() << "io_uring cannot be set up here (old kernel, kernel.io_uring_disabled, or "
                      "a seccomp profile); the portable backend case still runs";
    }
    if (GetParam() == WalMode::kUringShared) {
      std::string why;
      ring_ = MakeTestRing(&why);
      if (ring_ == nullptr) GTEST_SKIP() << "shared Ring cannot be set up here: " << why;
      g_shared_ring = ring_.get();
    }
    char tmpl[] = "/tmp/ringq_wal_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    g_shared_ring = nullptr;
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  WalOptions Options() const {
    WalOptions o;
    o.dir = dir_;
    o.backend = GetParam() == WalMode::kPortable ? IoBackendKind::kPortable : IoBackendKind::kUring;
    o.ring = ring_.get();
    o.segment_bytes = 1 << 20;
    o.durability = Durability::kSync;
    o.sync_interval_ms = 10;
    o.wal_bytes_max = 1ull << 30;
    return o;
  }

  // Appends `count` records of payload_min..payload_max bytes in bursts of
  // `burst`, draining after each burst (so each burst is one chunk).
  void AppendInBursts(Wal& wal, Appended& log, std::mt19937_64& rng, int count, int burst,
                      size_t payload_min, size_t payload_max) {
    for (int i = 0; i < count; i += burst) {
      for (int k = i; k < std::min(count, i + burst); ++k) {
        log.AddRandom(wal, rng, payload_min, payload_max);
      }
      ASSERT_TRUE(Drain(wal));
    }
  }

  std::string dir_;
  std::unique_ptr<Ring> ring_;  // kUringShared only; outlives every Wal of the test
};

// Goal: K records appended and reaped are durable and on disk in order: one
// segment named by the constructor's next_lsn, scanning cleanly to exactly
// those records, with the stats counting each record once.
TEST_P(WalTest, AppendedRecordsBecomeDurableAndScanBackFromDisk) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 8 << 20;
  Wal wal(o, 1001);
  EXPECT_EQ(wal.last_lsn(), 1000u);
  EXPECT_EQ(wal.durable_lsn(), 1000u);
  EXPECT_TRUE(wal.idle());
  Appended log;
  uint64_t bytes = 0;
  for (int i = 0; i < 2000; ++i) {
    log.AddRandom(wal, rng, 0, 2048);
    bytes += EncodedSize(log.recs.back().payload.size());
  }
  EXPECT_EQ(log.base, 1001u);
  EXPECT_EQ(wal.durable_lsn(), 1000u) << "nothing is durable before a Reap";
  ASSERT_TRUE(Drain(wal));
  EXPECT_EQ(wal.durable_lsn(), 3000u);
  EXPECT_EQ(wal.last_lsn(), 3000u);
  const Wal::SyncStats stats = wal.TakeStats();
  EXPECT_EQ(stats.records, 2000u);
  EXPECT_EQ(stats.bytes, bytes);
  EXPECT_GE(stats.syncs, 1u);
  EXPECT_EQ(SegmentFirstLsns(dir_), std::vector<uint64_t>{1001});
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1001));
}

// Goal: group commit. Records appended while a write is in flight ride the
// next write, so syncs are far fewer than records: first with one write in
// flight while 5000 records arrive (expect 2 syncs), then with 100 bursts of
// 100 records and a Reap between bursts (at most one sync per burst).
TEST_P(WalTest, GroupCommitSyncsFarFewerTimesThanRecords) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 8 << 20;
  Wal wal(o, 1);
  Appended log;
  log.AddRandom(wal, rng, 64, 64);
  wal.Reap(NowMs());  // starts the write of record 1
  EXPECT_FALSE(wal.idle());
  for (int i = 0; i < 5000; ++i) log.AddRandom(wal, rng, 64, 64);
  ASSERT_TRUE(Drain(wal));
  Wal::SyncStats stats = wal.TakeStats();
  EXPECT_EQ(stats.records, 5001u);
  EXPECT_LE(stats.syncs, 2u) << "5000 records appended during one write need one more sync";

  for (int burst = 0; burst < 100; ++burst) {
    for (int i = 0; i < 100; ++i) log.AddRandom(wal, rng, 0, 200);
    wal.Reap(NowMs());
  }
  ASSERT_TRUE(Drain(wal));
  stats = wal.TakeStats();
  EXPECT_EQ(stats.records, 10000u);
  EXPECT_LE(stats.syncs, 101u);
  EXPECT_GE(stats.syncs, 1u);
  std::printf("[ INFO     ] 10000 records in bursts of 100: %llu syncs\n",
              static_cast<unsigned long long>(stats.syncs));
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
}

// Goal: TakeCommitted hands out chunks covering every LSN exactly once, in
// order, each only once durable, each holding exactly its records and at most
// kWriteBytesMax; method: ~6 MiB of records of up to 16 KiB in bursts, taking
// chunks after every Reap.
TEST_P(WalTest, TakeCommittedCoversEveryLsnOnceInOrder) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 4 << 20;
  Wal wal(o, 500);
  Appended log;
  std::vector<CommittedChunk> chunks;
  const uint64_t deadline = NowMs() + kWaitMsMax;
  for (int burst = 0; burst < 100; ++burst) {
    for (int i = 0; i < 8; ++i) log.AddRandom(wal, rng, 0, 16 << 10);
    wal.Reap(NowMs());
    for (auto& c : wal.TakeCommitted()) {
      EXPECT_LE(c.last_lsn, wal.durable_lsn()) << "a chunk handed out before it is durable";
      chunks.push_back(std::move(c));
    }
    ASSERT_LT(NowMs(), deadline);
  }
  ASSERT_TRUE(Drain(wal, &chunks));
  EXPECT_TRUE(wal.TakeCommitted().empty());
  ASSERT_FALSE(chunks.empty());
  uint64_t next = 500;
  for (const CommittedChunk& c : chunks) {
    ASSERT_EQ(c.first_lsn, next) << "chunks must be contiguous, in order, each LSN once";
    ASSERT_LE(c.first_lsn, c.last_lsn);
    EXPECT_LE(c.bytes.size(), kWriteBytesMax);
    EXPECT_TRUE(ChunkHolds(c, log));
    next = c.last_lsn + 1;
  }
  EXPECT_EQ(next, wal.last_lsn() + 1);
  EXPECT_GT(chunks.size(), 3u) << "more than kWriteBytesMax was written: several chunks";
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 500));
}

// Goal: with 64 KiB segments and ~400 KiB of records, the log rolls into
// several files, each named by its first LSN, each preallocated to
// segment_bytes and scanning cleanly, LSNs continuous across files, and
// disk_bytes() equal to what is on disk.
TEST_P(WalTest, SegmentsRollNamedByFirstLsnAndScanCleanly) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 64 << 10;
  Wal wal(o, 77);
  Appended log;
  AppendInBursts(wal, log, rng, 400, 8, 500, 1500);
  const auto segments = ReadSegments(dir_);
  ASSERT_GE(segments.size(), 5u);
  EXPECT_EQ(segments.front().first_lsn, 77u);
  for (const auto& seg : segments) {
    EXPECT_EQ(seg.bytes.size(), o.segment_bytes) << seg.name << " is not its preallocated size";
  }
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 77));
  EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));
  EXPECT_TRUE(wal.space_ok());
}

// Goal: RetireThrough(lsn) deletes exactly the oldest segments whose records
// are all <= lsn, never the current one, and disk_bytes() drops by one
// segment per file deleted; the log keeps working after it.
TEST_P(WalTest, RetireThroughRemovesOnlyWholeSegmentsAtOrBelowTheLsn) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 64 << 10;
  Wal wal(o, 1);
  Appended log;
  AppendInBursts(wal, log, rng, 400, 8, 500, 1500);
  const std::vector<uint64_t> f = SegmentFirstLsns(dir_);
  ASSERT_GE(f.size(), 5u);
  const uint64_t disk0 = wal.disk_bytes();
  EXPECT_EQ(disk0, FileBytesInDir(dir_));

  wal.RetireThrough(0);
  wal.RetireThrough(f[1] - 2);  // segment 0 still holds f[1] - 1
  EXPECT_EQ(SegmentFirstLsns(dir_), f);
  EXPECT_EQ(wal.disk_bytes(), disk0);

  wal.RetireThrough(f[1] - 1);
  EXPECT_EQ(SegmentFirstLsns(dir_), std::vector<uint64_t>(f.begin() + 1, f.end()));
  EXPECT_EQ(wal.disk_bytes(), disk0 - o.segment_bytes);

  wal.RetireThrough(f[3] - 1);
  EXPECT_EQ(SegmentFirstLsns(dir_), std::vector<uint64_t>(f.begin() + 3, f.end()));
  EXPECT_EQ(wal.disk_bytes(), disk0 - 3 * o.segment_bytes);
  EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));

  wal.RetireThrough(wal.last_lsn());
  wal.RetireThrough(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(SegmentFirstLsns(dir_), std::vector<uint64_t>{f.back()}) << "the current segment stays";
  EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));

  AppendInBursts(wal, log, rng, 20, 4, 0, 300);
  EXPECT_TRUE(LogOnDiskIs(dir_, log, f.back()));
}

// Goal: the space limit is handled ahead. With wal_bytes_max = 2 segments,
// space_ok() turns false before anything on disk exceeds the limit; a few
// small records (acks) still fit; RetireThrough(durable_lsn()) makes
// space_ok() true again, and the log goes on into new segments.
TEST_P(WalTest, SpaceLimitRefusesAheadAndRetiringRestoresIt) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 64 << 10;
  o.wal_bytes_max = 2 * o.segment_bytes;
  Wal wal(o, 1);
  Appended log;
  auto within_limit = [&] {
    EXPECT_LE(FileBytesInDir(dir_), o.wal_bytes_max);
    EXPECT_LE(wal.disk_bytes(), o.wal_bytes_max);
    EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));
  };
  int steps = 0;
  for (; steps < 200 && wal.space_ok(); ++steps) {
    for (int i = 0; i < 4; ++i) log.AddRandom(wal, rng, 1000, 1000);
    ASSERT_TRUE(Drain(wal));
    within_limit();
  }
  ASSERT_FALSE(wal.space_ok()) << "space_ok() never turned false after " << steps << " steps";
  for (int i = 0; i < 16; ++i) log.AddRandom(wal, rng, 16, 64);  // acks still go through
  ASSERT_TRUE(Drain(wal));
  within_limit();

  const std::vector<uint64_t> before = SegmentFirstLsns(dir_);
  wal.RetireThrough(wal.durable_lsn());
  EXPECT_TRUE(wal.space_ok()) << "retiring segments must make room again";
  within_limit();

  for (steps = 0; steps < 200 && wal.space_ok(); ++steps) {
    for (int i = 0; i < 4; ++i) log.AddRandom(wal, rng, 1000, 1000);
    ASSERT_TRUE(Drain(wal));
    within_limit();
  }
  EXPECT_FALSE(wal.space_ok());
  const std::vector<uint64_t> after = SegmentFirstLsns(dir_);
  ASSERT_FALSE(after.empty());
  EXPECT_GT(after.back(), before.back()) << "no new segment after retiring";
  EXPECT_TRUE(LogOnDiskIs(dir_, log, after.front()));
}

// Goal: the space limit also holds when a chunk does not fit in what is left
// of the current segment: an engine that appends only while space_ok() is
// true must never make the Wal exceed wal_bytes_max or fail-stop. Method, in
// a child process (the failure mode is an abort): fill into the second of two
// allowed 64 KiB segments, then, if space_ok() is true, append one record of
// 63 KiB (at scale: a 63 MiB job, which kRecordPayloadBytesMax allows, into
// the default 64 MiB segments), and drain.
TEST_P(WalTest, SpaceLimitHoldsWhenAChunkDoesNotFitTheCurrentSegment) {
  WalOptions o = Options();
  o.segment_bytes = 64 << 10;
  o.wal_bytes_max = 2 * o.segment_bytes;
  const std::string dir = dir_;
  auto scenario = [&] {
    // A forked child must not touch the parent's ring (liburing keeps SQ
    // indexes in process memory): a shared-ring case gets its own.
    std::unique_ptr<Ring> child_ring;
    WalOptions co = o;
    if (co.ring != nullptr) {
      std::string why;
      child_ring = MakeTestRing(&why);
      if (child_ring == nullptr) std::_Exit(7);
      co.ring = child_ring.get();
      g_shared_ring = child_ring.get();
    }
    std::mt19937_64 rng(kSeed);
    Wal wal(co, 1);
    Appended log;
    for (int i = 0; i < 200 && SegmentFirstLsns(dir).size() < 2; ++i) {
      log.AddRandom(wal, rng, 1000, 1000);
      if (!Drain(wal)) std::_Exit(3);
    }
    if (SegmentFirstLsns(dir).size() != 2) std::_Exit(4);
    if (wal.space_ok()) log.AddRandom(wal, rng, 63 << 10, 63 << 10);  // else refused ahead: fine
    if (!Drain(wal)) std::_Exit(5);
    const uint64_t on_disk = FileBytesInDir(dir);
    std::fprintf(stderr, "on disk %llu bytes, limit %llu\n",
                 static_cast<unsigned long long>(on_disk),
                 static_cast<unsigned long long>(o.wal_bytes_max));
    std::_Exit(on_disk <= o.wal_bytes_max ? 0 : 6);
  };
  EXPECT_EXIT(scenario(), ::testing::ExitedWithCode(0), "");
}

// Goal: a segment file never grows past its preallocated segment_bytes when
// every record fits in a segment (growing defeats preallocation: ENOSPC
// mid-write, and disk_bytes() no longer counts what is on disk). Method: 200
// KiB of 1 KiB records appended at once (one chunk) with 64 KiB segments.
TEST_P(WalTest, SegmentFileNeverExceedsSegmentBytes) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 64 << 10;
  Wal wal(o, 1);
  Appended log;
  for (int i = 0; i < 200; ++i) log.AddRandom(wal, rng, 1000, 1000);
  ASSERT_TRUE(Drain(wal));
  for (const auto& seg : ReadSegments(dir_)) {
    EXPECT_LE(seg.bytes.size(), o.segment_bytes) << seg.name;
  }
  EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
}

// Goal: a segment the writer filled to 2 bytes short of segment_bytes (it
// rolls whenever the next chunk does not fit, so any remainder happens)
// scans as a clean end, like every finished segment. Method: 63 records of
// 1024 bytes and one of 1022 in a 64 KiB segment, then one more record.
TEST_P(WalTest, SegmentFilledToTwoBytesShortScansCleanly) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 64 << 10;
  Wal wal(o, 1);
  Appended log;
  AppendInBursts(wal, log, rng, 63, 1, 1024 - 17, 1024 - 17);
  AppendInBursts(wal, log, rng, 1, 1, 1022 - 17, 1022 - 17);
  AppendInBursts(wal, log, rng, 1, 1, 100, 100);
  ASSERT_EQ(SegmentFirstLsns(dir_), (std::vector<uint64_t>{1, 65}));
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
}

// Goal: batch mode writes every burst at once (durable_lsn() advances to
// last_lsn() each step) but syncs only on its interval: with a fake clock
// advancing 1 ms per write and sync_interval_ms 10, about one sync per 10
// writes, never more than the interval of writes unsynced, and a final sync
// once the interval passes.
TEST_P(WalTest, BatchModeSyncsOnItsIntervalNotPerWrite) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.durability = Durability::kBatch;
  o.sync_interval_ms = 10;
  Wal wal(o, 1);
  Appended log;
  uint64_t now = 1000;
  auto clock = [&] { return now; };
  uint64_t writes = 0, syncs = 0, last_sync_ms = 0;
  std::vector<CommittedChunk> chunks;
  for (int step = 0; step < 300; ++step) {
    ++now;
    for (int i = 0; i < 5; ++i) log.AddRandom(wal, rng, 0, 200);
    chunks.clear();
    ASSERT_TRUE(Drain(wal, &chunks, clock));
    ASSERT_EQ(wal.durable_lsn(), wal.last_lsn());
    writes += chunks.size();
    const Wal::SyncStats s = wal.TakeStats();
    syncs += s.syncs;
    if (s.syncs > 0) last_sync_ms = now;
    ASSERT_LT(now - last_sync_ms, o.sync_interval_ms) << "step " << step << ": unsynced too long";
  }
  EXPECT_EQ(writes, 300u);
  EXPECT_GE(syncs, 25u);
  EXPECT_LE(syncs, 35u);
  std::printf("[ INFO     ] batch mode: %llu writes, %llu syncs\n",
              static_cast<unsigned long long>(writes), static_cast<unsigned long long>(syncs));
  // The tail is synced once its interval is due.
  EXPECT_NE(wal.NextWakeMs(), kNoWake);
  now = wal.NextWakeMs() == kNoWake ? now : wal.NextWakeMs();
  const uint64_t deadline = NowMs() + kWaitMsMax;
  while (!(wal.NextWakeMs() == kNoWake && wal.idle()) && NowMs() < deadline) {
    wal.Reap(now);
    WaitForWal(wal, 10);
  }
  EXPECT_EQ(wal.NextWakeMs(), kNoWake) << "the tail was never synced";
  EXPECT_EQ(wal.TakeStats().syncs, 1u);
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
}

// Goal: batch mode keeps the torn-tail rule of wal_format.h: the bytes written
// since the last completed fdatasync never exceed kWriteBytesMax, so that a
// crash cannot leave a torn page followed, more than one write later, by a
// valid record (which recovery would call corruption and refuse to start).
// Method: a fake clock that never reaches the interval, one chunk per step,
// and per step TakeStats() (bytes, syncs) plus NextWakeMs() (finite while
// written data is unsynced) to tell whether the sync came before or after
// the step's write.
TEST_P(WalTest, BatchModeUnsyncedBytesStayWithinOneWrite) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.durability = Durability::kBatch;
  o.sync_interval_ms = 1'000'000;
  o.segment_bytes = 16 << 20;  // no roll: a roll syncs on its own
  Wal wal(o, 1);
  Appended log;
  const uint64_t now = 1;  // below the first interval: only the byte rule syncs
  auto clock = [&] { return now; };
  uint64_t unsynced = 0;  // bytes written since the last completed sync
  for (size_t kib : {1536, 1024, 512, 1800, 300, 900, 1000, 1000, 2000, 100}) {
    SCOPED_TRACE("step of " + std::to_string(kib) + " KiB");
    for (size_t i = 0; i < kib; ++i) log.AddRandom(wal, rng, 1024 - 17, 1024 - 17);
    ASSERT_TRUE(Drain(wal, nullptr, clock));
    const Wal::SyncStats s = wal.TakeStats();
    ASSERT_EQ(s.bytes, kib << 10);
    const bool synced_at_end = wal.NextWakeMs() == kNoWake;
    if (s.syncs == 0) {
      ASSERT_FALSE(synced_at_end);
      unsynced += s.bytes;
      EXPECT_LE(unsynced, kWriteBytesMax) << "unsynced bytes exceed one write";
    } else if (s.syncs == 1 && synced_at_end) {
      // The sync covered this step's write: both were unsynced while it flew.
      EXPECT_LE(unsynced + s.bytes, kWriteBytesMax)
          << unsynced << " unsynced bytes plus a write of " << s.bytes
          << " were in flight under one fdatasync";
      unsynced = 0;
    } else {
      unsynced = synced_at_end ? 0 : s.bytes;  // synced before the write
    }
  }
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
}

// Goal: a record bigger than kWriteBytesMax is written alone (a chunk of just
// that record), the records around it go in other chunks of at most
// kWriteBytesMax, and all of them scan back from disk.
TEST_P(WalTest, RecordLargerThanOneWriteGoesAlone) {
  std::mt19937_64 rng(kSeed);
  WalOptions o = Options();
  o.segment_bytes = 8 << 20;
  Wal wal(o, 1);
  Appended log;
  for (int i = 0; i < 10; ++i) log.AddRandom(wal, rng, 1000, 1000);
  const size_t big_bytes = kWriteBytesMax + (1 << 20);
  const uint64_t big = log.Add(wal, 9, RandomPayload(rng, big_bytes));
  for (int i = 0; i < 10; ++i) log.AddRandom(wal, rng, 1000, 1000);
  std::vector<CommittedChunk> chunks;
  ASSERT_TRUE(Drain(wal, &chunks));
  bool seen = false;
  uint64_t next = 1;
  for (const CommittedChunk& c : chunks) {
    ASSERT_EQ(c.first_lsn, next);
    next = c.last_lsn + 1;
    EXPECT_TRUE(ChunkHolds(c, log));
    if (c.first_lsn <= big && big <= c.last_lsn) {
      seen = true;
      EXPECT_EQ(c.first_lsn, big);
      EXPECT_EQ(c.last_lsn, big);
      EXPECT_EQ(c.bytes.size(), EncodedSize(big_bytes));
    } else {
      EXPECT_LE(c.bytes.size(), kWriteBytesMax);
    }
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(next, log.last() + 1);
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
}

// Goal: a Wal reopened after a clean stop (next_lsn = last durable + 1)
// keeps the old segment, counts it in disk_bytes(), appends in a new segment
// named by next_lsn, and can retire the old one.
TEST_P(WalTest, ReopenAppendsInANewSegmentAfterTheOldOne) {
  std::mt19937_64 rng(kSeed);
  const WalOptions o = Options();
  Appended log;
  {
    Wal wal(o, 1);
    AppendInBursts(wal, log, rng, 50, 10, 0, 500);
    ASSERT_TRUE(wal.idle());
  }
  Wal wal(o, 51);
  EXPECT_EQ(wal.durable_lsn(), 50u);
  EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));
  AppendInBursts(wal, log, rng, 50, 10, 0, 500);
  EXPECT_EQ(SegmentFirstLsns(dir_), (std::vector<uint64_t>{1, 51}));
  EXPECT_TRUE(LogOnDiskIs(dir_, log, 1));
  wal.RetireThrough(50);
  EXPECT_EQ(SegmentFirstLsns(dir_), std::vector<uint64_t>{51});
  EXPECT_EQ(wal.disk_bytes(), FileBytesInDir(dir_));
}

// Goal: on a shared ring the Wal behaves as the shard loop relies on:
// event_fd() is -1; Reap() prepares the linked write+fdatasync but never
// enters the kernel (enters() moves only in SubmitAndWait); another user's
// SQE (a NOP standing for the network's) goes out in the same enter and
// reaches its own Completion; and ~Wal drives the ring itself to finish a
// write that nobody submitted. Method: count enters around every call.
TEST(WalSharedRingTest, ReapNeverEntersTheKernelAndShutdownDrivesTheRing) {
  std::string why;
  std::unique_ptr<Ring> ring = MakeTestRing(&why);
  if (ring == nullptr) GTEST_SKIP() << "shared Ring cannot be set up here: " << why;
  char tmpl[] = "/tmp/ringq_wal_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr) << std::strerror(errno);
  const std::string dir = tmpl;
  struct Counter final : Ring::Completion {
    int calls = 0;
    int res = -1;
    void OnComplete(int r, uint32_t) override {
      ++calls;
      res = r;
    }
  } nop;
  WalOptions o;
  o.dir = dir;
  o.backend = IoBackendKind::kUring;
  o.ring = ring.get();
  o.segment_bytes = 1 << 20;
  std::mt19937_64 rng(kSeed);
  Appended log;
  {
    Wal wal(o, 1);
    EXPECT_EQ(wal.event_fd(), -1);
    log.AddRandom(wal, rng, 10, 100);
    uint64_t enters = ring->enters();
    wal.Reap(NowMs());
    EXPECT_EQ(ring->pending(), 2u) << "write + linked fdatasync prepared, not submitted";
    EXPECT_EQ(ring->enters(), enters) << "Reap entered the kernel";
    io_uring_prep_nop(ring->Prep(&nop));
    const uint64_t deadline = NowMs() + kWaitMsMax;
    while (wal.durable_lsn() < wal.last_lsn() && NowMs() < deadline) {
      ring->SubmitAndWait(100);
      enters = ring->enters();
      wal.Reap(NowMs());
      EXPECT_EQ(ring->enters(), enters) << "Reap entered the kernel";
    }
    ASSERT_EQ(wal.durable_lsn(), wal.last_lsn());
    EXPECT_EQ(nop.calls, 1);
    EXPECT_EQ(nop.res, 0);
    // A write left prepared at shutdown: ~Wal submits and waits for it.
    log.AddRandom(wal, rng, 10, 100);
    wal.Reap(NowMs());
    EXPECT_FALSE(wal.idle());
  }
  EXPECT_EQ(ring->pending(), 0u);
  EXPECT_TRUE(LogOnDiskIs(dir, log, 1));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

INSTANTIATE_TEST_SUITE_P(Backends, WalTest,
                         ::testing::Values(WalMode::kUring, WalMode::kUringShared,
                                           WalMode::kPortable),
                         [](const ::testing::TestParamInfo<WalMode>& info) {
                           return std::string(WalModeName(info.param));
                         });

}  // namespace
}  // namespace ringq::uring
