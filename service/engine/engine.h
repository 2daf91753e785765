// Engine: the set of shards and the routing of queues and job ids to them.
//
// A queue lives on shard Fnv1a(name) % shards; a job id carries its shard in
// its low kShardBits bits. The engine holds no queue state of its own.
//
// Thread-safe after Start(): Post() from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "service/engine/clock.h"
#include "service/engine/shard.h"

namespace ringq::engine {

// The shard that owns `queue` among `shards` (FNV-1a 64: stable across runs
// and builds, since stored jobs are placed by it).
uint32_t QueueShard(std::string_view queue, uint32_t shards);

struct EngineOptions {
  uint32_t shards = 1;
  uint32_t inbox_max = 65'536;  // tasks per shard inbox
  Limits limits;
};

class Engine {
 public:
  // Makes the journal of each shard. Default: MemoryJournal (no durability).
  using JournalFactory = std::function<std::unique_ptr<Journal>(uint32_t shard)>;

  Engine(const EngineOptions& options, const Clock& clock, JournalFactory journals = nullptr);
  ~Engine();

  void Start();
  // Stops every shard after draining its inbox.
  void Stop();

  uint32_t shard_count() const { return static_cast<uint32_t>(shards_.size()); }
  uint32_t ShardForQueue(std::string_view queue) const;
  Shard& shard(uint32_t index) { return *shards_[index]; }
  const Limits& limits() const { return options_.limits; }
  const EngineOptions& options() const { return options_; }

  // Runs `task` at once when called on that shard's own thread (a request
  // read by the shard's network loop for a queue it owns: no inbox hop),
  // else posts it. Only for callers outside the scheduler's own calls (the
  // network handlers), never from inside a scheduler callback.
  [[nodiscard]] bool Run(uint32_t shard, Shard::Task task) {
    Shard& sh = *shards_[shard];
    if (Shard::Current() == &sh) {
      task(sh);
      return true;
    }
    return sh.Post(std::move(task));
  }

  // False when the shard's inbox is full or it stopped.
  [[nodiscard]] bool Post(uint32_t shard, Shard::Task task) {
    return shards_[shard]->Post(std::move(task));
  }

 private:
  EngineOptions options_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace ringq::engine
