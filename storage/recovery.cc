#include "storage/recovery.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "service/engine/engine.h"
#include "service/engine/scheduler.h"
#include "storage/job_codec.h"
#include "storage/window.h"
#include "uring/crash_point.h"
#include "uring/wal.h"
#include "uring/wal_format.h"

namespace ringq::storage {

namespace fs = std::filesystem;
using engine::Job;
using engine::RecordType;

namespace {

struct SegmentFile {
  uint64_t first_lsn;
  std::string path;
};

engine::Status Corrupt(std::string msg) { return {engine::Code::kInternal, std::move(msg)}; }

std::vector<SegmentFile> ListSegments(const std::string& dir) {
  std::vector<SegmentFile> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    uint64_t first;
    if (e.is_regular_file() && uring::ParseSegmentName(e.path().filename().string(), &first)) {
      out.push_back(SegmentFile{first, e.path().string()});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.first_lsn < b.first_lsn; });
  return out;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  in.seekg(0, std::ios::end);
  out->resize(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  in.read(out->data(), static_cast<std::streamsize>(out->size()));
  return static_cast<bool>(in);
}

size_t NonZeroExtent(const std::string& buf) {
  size_t n = buf.size();
  while (n > 0 && buf[n - 1] == 0) --n;
  return n;
}

void SyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

// A shard's jobs in id order: RocksDB yields them so, and a replayed push
// always has a higher id than anything stored before it (ids grow with the
// LSN within a shard). Forgotten jobs become tombstones (id 0).
using JobList = std::vector<Job>;

Job* FindJob(JobList& jobs, uint64_t id) {
  auto it = std::lower_bound(jobs.begin(), jobs.end(), id,
                             [](const Job& j, uint64_t v) { return j.id < v; });
  return it != jobs.end() && it->id == id ? &*it : nullptr;
}

// Applies one record to the job list (what the scheduler restores).
void ApplyToJobs(DecodedRecord& d, JobList& jobs, std::unordered_map<std::string, bool>& paused) {
  switch (d.type) {
    case RecordType::kPush:
      if (!jobs.empty() && jobs.back().id >= d.id) {
        std::fprintf(stderr, "ringqd: WAL push of job %llu is not above job %llu\n",
                     static_cast<unsigned long long>(d.id),
                     static_cast<unsigned long long>(jobs.back().id));
        std::abort();  // ids only grow within a shard: a bug, not bad input
      }
      jobs.push_back(std::move(*d.job));
      return;
    case RecordType::kForget:
    case RecordType::kPurgeDead:
      if (Job* j = FindJob(jobs, d.id)) j->id = 0;  // tombstone; skipped at the end
      return;
    case RecordType::kPause:
    case RecordType::kResume:
      paused[d.queue] = d.type == RecordType::kPause;
      return;
    default: {
      Job* found = FindJob(jobs, d.id);
      if (found == nullptr) return;  // forgotten before: nothing to change
      Job& j = *found;
      const Job& s = *d.job;
      j.state = s.state;
      j.attempts = s.attempts;
      j.created_at_ms = s.created_at_ms;
      j.run_at_ms = s.run_at_ms;
      j.finished_at_ms = s.finished_at_ms;
      j.lease_expires_at_ms = s.lease_expires_at_ms;
      j.last_error = s.last_error;
      j.reason = s.reason;
      if (d.result) j.result = *d.result;
      return;
    }
  }
}

// Moves the bad bytes of a corrupt segment aside and truncates it there.
engine::Status RepairSegment(const SegmentFile& seg, const std::string& buf, size_t bad_offset,
                             const RecoveryOptions& o) {
  const std::string side = seg.path + ".bad-" + std::to_string(bad_offset);
  {
    std::ofstream out(side, std::ios::binary);
    const size_t end = NonZeroExtent(buf);
    out.write(buf.data() + bad_offset, static_cast<std::streamsize>(end - bad_offset));
    if (!out) return Corrupt("cannot write " + side);
  }
  if (truncate(seg.path.c_str(), static_cast<off_t>(bad_offset)) != 0) {
    return Corrupt("cannot truncate " + seg.path);
  }
  o.log("WAL repair: kept the bytes from offset " + std::to_string(bad_offset) + " of " +
        seg.path + " in " + side + " and truncated the segment there");
  return engine::Status::Ok();
}

// Replays one shard's segments into `window` and `jobs`.
engine::Status ReplayShard(uint32_t shard, const RecoveryOptions& o, ShardRecovery& sr,
                           JobList& jobs, std::unordered_map<std::string, bool>& paused,
                           Window& window,
                           std::vector<std::string>& replayed_files) {
  const std::string dir = WalDir(o.data_dir, shard);
  auto segments = ListSegments(dir);
  uint64_t last = sr.applied_lsn;
  for (size_t i = 0; i < segments.size(); ++i) {
    const SegmentFile& seg = segments[i];
    std::string buf;
    if (!ReadFile(seg.path, &buf)) return Corrupt("cannot read " + seg.path);
    replayed_files.push_back(seg.path);
    std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
    engine::Status bad;
    auto r = uring::ScanRecords(bytes, seg.first_lsn, [&](const uring::ScannedRecord& rec) {
      if (rec.lsn <= sr.applied_lsn || !bad.ok()) return;
      if (rec.lsn != last + 1) {
        bad = Corrupt("WAL gap in " + seg.path + ": record " + std::to_string(rec.lsn) +
                      " follows " + std::to_string(last));
        return;
      }
      DecodedRecord d;
      if (!DecodeRecordPayload(rec.type, rec.payload, &d)) {
        bad = Corrupt("WAL record " + std::to_string(rec.lsn) + " at offset " +
                      std::to_string(rec.offset) + " of " + seg.path + " does not decode");
        return;
      }
      // The window takes the encoded bytes; the job list takes the decoded job.
      DecodedRecord for_window;
      for_window.type = d.type;
      for_window.id = d.id;
      for_window.queue = d.queue;
      for_window.spec_bytes = std::move(d.spec_bytes);
      for_window.state_bytes = std::move(d.state_bytes);
      for_window.result = d.result;
      for_window.was_dead = d.was_dead;
      if (d.job) {
        for_window.job.emplace();
        for_window.job->state = d.job->state;
      }
      ApplyToJobs(d, jobs, paused);
      window.Apply(rec.lsn, std::move(for_window));
      last = rec.lsn;
      ++sr.replayed_records;
    });
    if (!bad.ok()) return bad;
    if (r.stop == uring::ScanStop::kEnd) continue;
    // A bad record. Is anything valid written after this segment?
    bool later_valid = false;
    for (size_t k = i + 1; k < segments.size() && !later_valid; ++k) {
      std::string later;
      if (ReadFile(segments[k].path, &later) && later.size() >= uring::kRecordHeaderBytes) {
        uring::ScannedRecord rec;
        std::string why;
        std::span<const uint8_t> lb(reinterpret_cast<const uint8_t*>(later.data()), later.size());
        later_valid = uring::CheckRecordAt(lb, 0, 0, &rec, &why) != 0;
      }
    }
    const bool corrupt = r.stop == uring::ScanStop::kCorrupt || later_valid;
    const std::string where = seg.path + " at offset " + std::to_string(r.bad_offset) + " (" +
                              r.reason + ")";
    if (corrupt && !o.repair) {
      return Corrupt("WAL corrupt: " + where +
                     ", and valid records follow: this is not a torn tail. Refusing to start; "
                     "--repair-wal keeps the bad bytes in a side file and continues without "
                     "them");
    }
    if (corrupt) {
      if (auto s = RepairSegment(seg, buf, r.bad_offset, o); !s.ok()) return s;
      const std::string qdir = dir + "/quarantine";
      fs::create_directories(qdir);
      for (size_t k = i + 1; k < segments.size(); ++k) {
        fs::rename(segments[k].path, qdir + "/" + fs::path(segments[k].path).filename().string());
        o.log("WAL repair: moved " + segments[k].path + " to " + qdir);
      }
      break;
    }
    // Torn tail: the last write was interrupted; none of it was acknowledged.
    const size_t extent = std::max(NonZeroExtent(buf), r.bad_offset);
    sr.dropped_bytes = extent - r.bad_offset;
    if (truncate(seg.path.c_str(), static_cast<off_t>(r.bad_offset)) != 0) {
      return Corrupt("cannot truncate torn tail of " + seg.path);
    }
    o.log("WAL shard " + std::to_string(shard) + ": torn tail in " + where + ": dropped " +
          std::to_string(sr.dropped_bytes) + " bytes");
    break;
  }
  sr.next_lsn = last + 1;
  return engine::Status::Ok();
}

}  // namespace

void ReplayRecord(DecodedRecord& d, std::vector<engine::Job>& jobs,
                  std::unordered_map<std::string, bool>& paused) {
  ApplyToJobs(d, jobs, paused);
}

std::string WalDir(const std::string& data_dir, uint32_t shard) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%03u", shard);
  return data_dir + "/wal/" + name;
}

std::string DbDir(const std::string& data_dir) { return data_dir + "/db"; }

engine::Result<RecoveryResult> Recover(Store& store, const RecoveryOptions& o) {
  const uint32_t stored = store.StoredShards();
  if (stored != 0 && stored != o.shards) {
    return engine::FailedPrecondition(
        "the data directory was written with --shards=" + std::to_string(stored) +
        "; start with --shards=" + std::to_string(stored) +
        " (job ids and queues are placed by shard)");
  }
  if (stored == 0) {
    if (auto s = store.SetStoredShards(o.shards); !s.ok()) return s;
  }
  // Job keys must be read as they were written. A store without a recorded
  // layout is new, or from before layouts were recorded (layout 1): without
  // jobs there is nothing to misread, so it is stamped; with jobs it is
  // refused, not misread (there is no migration: layout 1 was never released).
  const uint32_t layout = store.KeyLayout();
  if (layout == 0 && store.HasJobs()) {
    return engine::FailedPrecondition(
        "the data directory holds jobs stored with an older key layout (1: job ids in id "
        "order); this ringqd reads layout " +
        std::to_string(kJobKeyLayout) +
        " only and does not migrate: start it with an empty --data-dir");
  }
  if (layout != 0 && layout != kJobKeyLayout) {
    return engine::FailedPrecondition("the data directory was written with job key layout " +
                                      std::to_string(layout) + " by a newer ringqd; this one reads " +
                                      std::to_string(kJobKeyLayout));
  }
  if (layout == 0) {
    if (auto s = store.SetKeyLayout(kJobKeyLayout); !s.ok()) return s;
  }
  RecoveryResult result;
  result.shards.resize(o.shards);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<JobList> jobs(o.shards);
  std::vector<std::unordered_map<std::string, bool>> paused(o.shards);
  engine::Status bad;
  auto s = store.ForEachJob([&](Job&& j) {
    const uint32_t sh = engine::ShardOfJob(j.id);
    if (sh >= o.shards) {
      bad = Corrupt("stored job " + std::to_string(j.id) + " belongs to shard " +
                    std::to_string(sh));
      return;
    }
    ++result.jobs_loaded;
    jobs[sh].push_back(std::move(j));
  });
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  o.log("loaded " + std::to_string(result.jobs_loaded) + " jobs from RocksDB in " +
        std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                           .count()) +
        " s");
  for (const auto& q : store.PausedQueues()) paused[engine::QueueShard(q, o.shards)][q] = true;

  std::vector<std::string> replayed_files;
  rocksdb::WriteBatch batch;
  for (uint32_t sh = 0; sh < o.shards; ++sh) {
    ShardRecovery& sr = result.shards[sh];
    sr.applied_lsn = store.AppliedLsn(sh);
    Window window;
    if (auto st = ReplayShard(sh, o, sr, jobs[sh], paused[sh], window, replayed_files); !st.ok()) {
      return st;
    }
    if (!window.empty()) window.WriteTo(store, sh, &batch);
    if (sr.replayed_records > 0 || sr.dropped_bytes > 0) {
      o.log("shard " + std::to_string(sh) + ": replayed " + std::to_string(sr.replayed_records) +
            " WAL records above applied LSN " + std::to_string(sr.applied_lsn) +
            "; the log continues at " + std::to_string(sr.next_lsn));
    }
    if (sr.next_lsn <= sr.applied_lsn) sr.next_lsn = sr.applied_lsn + 1;
    batch.Put(store.cf(Store::kMeta), Store::AppliedKey(sh), Store::EncodeU64(sr.next_lsn - 1));
    sr.jobs.reserve(jobs[sh].size());
    for (auto& j : jobs[sh]) {
      if (j.id != 0) sr.jobs.push_back(std::move(j));
    }
    JobList().swap(jobs[sh]);
    for (auto& [q, p] : paused[sh]) {
      if (p) sr.paused_queues.push_back(q);
    }
  }
  // The replayed state is in RocksDB and on disk before its log goes.
  if (auto st = store.Write(&batch); !st.ok()) return st;
  if (auto st = store.Flush(); !st.ok()) return st;
  uring::CrashPoint("recovery_after_flush_before_delete");
  for (const auto& f : replayed_files) {
    uring::RetireSegmentFile(fs::path(f).parent_path().string(), f, o.archive);
  }
  for (uint32_t sh = 0; sh < o.shards; ++sh) SyncDir(WalDir(o.data_dir, sh));
  return result;
}

}  // namespace ringq::storage
