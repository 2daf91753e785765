#include "storage/store.h"

#include <rocksdb/options.h>
#include <rocksdb/table.h>

#include <cstring>
#include <thread>

#include "storage/job_codec.h"

namespace ringq::storage {

namespace {

const char* kCfNames[Store::kCfCount] = {"jobs", "job_state", "results", "dead", "queues",
                                         "default"};  // RocksDB's default CF holds meta

engine::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return engine::Status::Ok();
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace) {
    return {engine::Code::kResourceExhausted, "rocksdb " + what + ": " + s.ToString()};
  }
  return {engine::Code::kInternal, "rocksdb " + what + ": " + s.ToString()};
}

// Every RocksDB option ringq relies on, set explicitly (STYLE.md).
rocksdb::DBOptions MakeDbOptions() {
  rocksdb::DBOptions o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  o.atomic_flush = true;              // Flush() cuts all column families at once
  o.max_background_jobs = 2;          // 2 cores
  o.max_open_files = 512;
  o.bytes_per_sync = 1 << 20;
  o.keep_log_file_num = 4;
  o.max_total_wal_size = 0;           // unused: every write disables the RocksDB WAL
  o.avoid_flush_during_shutdown = false;
  o.paranoid_checks = true;
  return o;
}

rocksdb::ColumnFamilyOptions MakeCfOptions() {
  rocksdb::ColumnFamilyOptions o;
  o.write_buffer_size = 64 << 20;
  o.max_write_buffer_number = 3;
  o.compression = rocksdb::kNoCompression;  // payloads are the users'; often compressed already
  o.level_compaction_dynamic_level_bytes = true;
  rocksdb::BlockBasedTableOptions t;
  t.block_size = 16 << 10;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

}  // namespace

engine::Result<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  std::unique_ptr<Store> s(new Store());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (size_t i = 0; i < kCfCount; ++i) cfs.emplace_back(kCfNames[i], MakeCfOptions());
  rocksdb::DB* db = nullptr;
  auto st = rocksdb::DB::Open(MakeDbOptions(), path, cfs, &s->handles_, &db);
  if (!st.ok()) return FromRocks(st, "open " + path);
  s->db_.reset(db);
  return s;
}

Store::~Store() {
  if (!db_) return;
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  db_->Close();
}

engine::Status Store::Write(rocksdb::WriteBatch* batch) {
  rocksdb::WriteOptions w;
  w.disableWAL = true;
  w.sync = false;
  return FromRocks(db_->Write(w, batch), "write");
}

engine::Status Store::Flush() {
  rocksdb::FlushOptions f;
  f.wait = true;
  f.allow_write_stall = true;
  return FromRocks(db_->Flush(f, handles_), "flush");
}

engine::Status Store::Resume() { return FromRocks(db_->Resume(), "resume"); }

std::string Store::AppliedKey(uint32_t shard) { return "applied_lsn/" + std::to_string(shard); }

std::string Store::EncodeU64(uint64_t v) { return std::string(reinterpret_cast<char*>(&v), 8); }

uint64_t Store::AppliedLsn(uint32_t shard) const {
  std::string v;
  if (!db_->Get(rocksdb::ReadOptions(), handles_[kMeta], AppliedKey(shard), &v).ok() ||
      v.size() != 8) {
    return 0;
  }
  uint64_t lsn;
  std::memcpy(&lsn, v.data(), 8);
  return lsn;
}

uint32_t Store::MetaU32(const char* key) const {
  std::string v;
  if (!db_->Get(rocksdb::ReadOptions(), handles_[kMeta], key, &v).ok() || v.size() != 4) {
    return 0;
  }
  uint32_t n;
  std::memcpy(&n, v.data(), 4);
  return n;
}

engine::Status Store::SetMetaU32(const char* key, uint32_t value) {
  rocksdb::WriteBatch b;
  b.Put(handles_[kMeta], key, std::string(reinterpret_cast<char*>(&value), 4));
  if (auto s = Write(&b); !s.ok()) return s;
  return Flush();
}

uint32_t Store::StoredShards() const { return MetaU32("shards"); }
engine::Status Store::SetStoredShards(uint32_t shards) { return SetMetaU32("shards", shards); }
uint32_t Store::KeyLayout() const { return MetaU32("key_layout"); }
engine::Status Store::SetKeyLayout(uint32_t layout) { return SetMetaU32("key_layout", layout); }

bool Store::HasJobs() const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kJobs]));
  it->SeekToFirst();
  return it->Valid();
}

engine::Status Store::ForEachJob(const std::function<void(engine::Job&&)>& fn) const {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> specs(db_->NewIterator(ro, handles_[kJobs]));
  std::unique_ptr<rocksdb::Iterator> states(db_->NewIterator(ro, handles_[kJobState]));
  std::unique_ptr<rocksdb::Iterator> results(db_->NewIterator(ro, handles_[kResults]));
  states->SeekToFirst();
  results->SeekToFirst();
  for (specs->SeekToFirst(); specs->Valid(); specs->Next()) {
    engine::Job job;
    if (!DecodeSpec(std::string_view(specs->value().data(), specs->value().size()), &job)) {
      return {engine::Code::kInternal,
              "stored job " + std::to_string(IdFromKey(specs->key().ToStringView())) +
                  " does not decode"};
    }
    // job_state and results share the key order: advance them in step.
    while (states->Valid() && states->key().compare(specs->key()) < 0) states->Next();
    if (!states->Valid() || states->key() != specs->key() ||
        !DecodeState(std::string_view(states->value().data(), states->value().size()), &job)) {
      return {engine::Code::kInternal,
              "stored job " + std::to_string(job.id) + " has no valid state"};
    }
    while (results->Valid() && results->key().compare(specs->key()) < 0) results->Next();
    if (results->Valid() && results->key() == specs->key()) job.result = results->value().ToString();
    fn(std::move(job));
  }
  if (!specs->status().ok()) return FromRocks(specs->status(), "scan jobs");
  return engine::Status::Ok();
}

std::vector<std::string> Store::PausedQueues() const {
  std::vector<std::string> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[kQueues]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->value().size() == 1 && it->value()[0] == 1) out.push_back(it->key().ToString());
  }
  return out;
}

uint64_t Store::LiveDataBytes() const {
  uint64_t total = 0;
  for (auto* h : handles_) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, rocksdb::DB::Properties::kEstimateLiveDataSize, &v)) total += v;
  }
  return total;
}

}  // namespace ringq::storage
