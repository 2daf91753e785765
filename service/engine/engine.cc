#include "service/engine/engine.h"

#include <cstdio>
#include <cstdlib>

namespace ringq::engine {

Engine::Engine(const EngineOptions& options, const Clock& clock, JournalFactory journals)
    : options_(options) {
  if (options.shards == 0 || options.shards > kShardsMax) {
    std::fprintf(stderr, "ringq: shards must be 1..%u\n", kShardsMax);
    std::abort();
  }
  for (uint32_t i = 0; i < options.shards; ++i) {
    std::unique_ptr<Journal> j = journals ? journals(i) : std::make_unique<MemoryJournal>();
    shards_.push_back(
        std::make_unique<Shard>(i, options.limits, clock, std::move(j), options.inbox_max));
  }
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  for (auto& s : shards_) s->Start();
}

void Engine::Stop() {
  for (auto& s : shards_) s->Stop();
}

uint32_t QueueShard(std::string_view queue, uint32_t shards) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : queue) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return static_cast<uint32_t>(h % shards);
}

uint32_t Engine::ShardForQueue(std::string_view queue) const {
  return QueueShard(queue, static_cast<uint32_t>(shards_.size()));
}

}  // namespace ringq::engine
