// ringq-walcheck DATA_DIR SHARDS: WAL -> RocksDB consistency checker.
//
// For a data directory written with --wal-archive (every retired segment
// kept) and then stopped cleanly (everything checkpointed), replays each
// shard's whole log from LSN 1 with the same rule recovery uses, and compares
// the result with what RocksDB holds: the same jobs, each with the same spec,
// state and result. Exit 0 when equal; 1 with the differences otherwise.
// Used by kill9_test after its crash cycles.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/job_codec.h"
#include "storage/recovery.h"
#include "storage/store.h"
#include "uring/wal_format.h"

namespace fs = std::filesystem;
using namespace ringq;

namespace {

std::string Encoded(const engine::Job& j) {
  std::string out;
  storage::EncodeSpec(j, &out);
  storage::EncodeState(j, &out);
  out += "|result=" + j.result;
  return out;
}

std::vector<std::pair<uint64_t, std::string>> Segments(const std::string& dir) {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (const std::string& d : {dir, dir + "/archive"}) {
    std::error_code ec;
    if (!fs::exists(d, ec)) continue;
    for (const auto& e : fs::directory_iterator(d)) {
      uint64_t first;
      if (e.is_regular_file() && uring::ParseSegmentName(e.path().filename().string(), &first)) {
        out.emplace_back(first, e.path().string());
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: ringq-walcheck DATA_DIR SHARDS\n");
    return 2;
  }
  const std::string data = argv[1];
  const uint32_t shards = static_cast<uint32_t>(std::atoi(argv[2]));
  // 1. Pure replay of every shard's whole log.
  std::map<uint64_t, std::string> replayed;
  uint64_t records = 0;
  for (uint32_t sh = 0; sh < shards; ++sh) {
    std::vector<engine::Job> jobs;
    std::unordered_map<std::string, bool> paused;
    uint64_t want = 1;
    for (const auto& [first, path] : Segments(storage::WalDir(data, sh))) {
      if (first != want) {
        std::fprintf(stderr, "shard %u: segment %s starts at %llu, expected %llu\n", sh,
                     path.c_str(), static_cast<unsigned long long>(first),
                     static_cast<unsigned long long>(want));
        return 1;
      }
      std::ifstream in(path, std::ios::binary);
      std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
      bool bad = false;
      auto r = uring::ScanRecords(bytes, first, [&](const uring::ScannedRecord& rec) {
        storage::DecodedRecord d;
        if (!storage::DecodeRecordPayload(rec.type, rec.payload, &d)) bad = true;
        if (!bad) storage::ReplayRecord(d, jobs, paused);
        want = rec.lsn + 1;
        ++records;
      });
      if (bad || r.stop != uring::ScanStop::kEnd) {
        std::fprintf(stderr, "shard %u: %s does not replay cleanly (%s)\n", sh, path.c_str(),
                     r.reason.c_str());
        return 1;
      }
    }
    for (const auto& j : jobs) {
      if (j.id != 0) replayed[j.id] = Encoded(j);
    }
  }
  // 2. What RocksDB holds.
  auto opened = storage::Store::Open(storage::DbDir(data));
  if (!opened.ok()) {
    std::fprintf(stderr, "%s\n", opened.status().message().c_str());
    return 1;
  }
  std::map<uint64_t, std::string> stored;
  auto st = opened.value()->ForEachJob([&](engine::Job&& j) { stored[j.id] = Encoded(j); });
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.message().c_str());
    return 1;
  }
  // 3. Compare.
  size_t diffs = 0;
  for (const auto& [id, enc] : replayed) {
    auto it = stored.find(id);
    if (it == stored.end()) {
      if (++diffs <= 10) std::fprintf(stderr, "job %llu: in the log, not in RocksDB\n",
                                      static_cast<unsigned long long>(id));
    } else if (it->second != enc) {
      if (++diffs <= 10) std::fprintf(stderr, "job %llu: differs between log and RocksDB\n",
                                      static_cast<unsigned long long>(id));
    }
  }
  for (const auto& [id, enc] : stored) {
    if (!replayed.count(id) && ++diffs <= 10) {
      std::fprintf(stderr, "job %llu: in RocksDB, not in the log\n",
                   static_cast<unsigned long long>(id));
    }
  }
  std::printf("walcheck: %llu records replayed, %zu jobs in the log, %zu in RocksDB, %zu "
              "differences\n",
              static_cast<unsigned long long>(records), replayed.size(), stored.size(), diffs);
  return diffs == 0 ? 0 : 1;
}
