#include "storage/window.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace ringq::storage {

using engine::RecordType;

void Window::Apply(uint64_t lsn, DecodedRecord&& rec) {
  last_lsn_ = lsn;
  switch (rec.type) {
    case RecordType::kPause:
    case RecordType::kResume:
      queues_[rec.queue] = rec.type == RecordType::kPause;
      return;
    case RecordType::kForget:
    case RecordType::kPurgeDead: {
      Entry& e = entries_[rec.id];
      e.queue = rec.queue;
      e.deleted = true;
      e.was_dead = e.was_dead || rec.was_dead || e.dead;
      e.spec.clear();
      e.state.clear();
      e.result.reset();
      return;
    }
    default:
      break;
  }
  Entry& e = entries_[rec.id];
  e.queue = rec.queue;
  if (rec.type == RecordType::kPush) {
    e.pushed = true;
    bytes_ += rec.spec_bytes.size();
    e.spec = std::move(rec.spec_bytes);
  }
  bytes_ += rec.state_bytes.size();
  e.state = std::move(rec.state_bytes);
  if (rec.result) {
    bytes_ += rec.result->size();
    e.result = std::move(rec.result);
  }
  const bool now_dead = rec.job && rec.job->state == engine::JobState::kDead;
  if (rec.type == RecordType::kRetryDead) e.undead = true;
  if (now_dead) e.was_dead = true;
  e.dead = now_dead;
}

void Window::WriteTo(Store& store, uint32_t shard, rocksdb::WriteBatch* b) {
  // In key order: RocksDB's skiplist memtable inserts a key that follows the
  // previous one in O(1) (its sequential splice) and a random one in
  // O(log n) key compares. In hash order the memtable inserts were 38 % of
  // the server's instructions under a backlog of pushes (bench/RESULTS.md).
  // A window holds one shard's jobs, whose id order is their key order
  // (job_codec.h).
  std::vector<std::pair<uint64_t, const Entry*>> sorted;
  sorted.reserve(entries_.size());
  for (const auto& [id, e] : entries_) sorted.emplace_back(id, &e);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [id, ep] : sorted) {
    const Entry& e = *ep;
    const std::string key = IdKey(id);
    if (e.deleted) {
      if (e.pushed) continue;  // born and forgotten in this window: nothing to write
      b->Delete(store.cf(Store::kJobs), key);
      b->Delete(store.cf(Store::kJobState), key);
      b->Delete(store.cf(Store::kResults), key);
      if (e.was_dead) b->Delete(store.cf(Store::kDead), DeadKey(e.queue, id));
      continue;
    }
    if (e.pushed) b->Put(store.cf(Store::kJobs), key, e.spec);
    if (!e.state.empty()) b->Put(store.cf(Store::kJobState), key, e.state);
    if (e.result) b->Put(store.cf(Store::kResults), key, *e.result);
    if (e.dead) {
      b->Put(store.cf(Store::kDead), DeadKey(e.queue, id), "");
    } else if (e.undead) {
      b->Delete(store.cf(Store::kDead), DeadKey(e.queue, id));
    }
  }
  for (const auto& [q, paused] : queues_) {
    b->Put(store.cf(Store::kQueues), q, std::string(1, paused ? 1 : 0));
  }
  b->Put(store.cf(Store::kMeta), Store::AppliedKey(shard), Store::EncodeU64(last_lsn_));
  entries_.clear();
  queues_.clear();
  bytes_ = 0;
}

}  // namespace ringq::storage
