// Consumer: something the scheduler hands leased jobs to — a Subscribe
// stream (many deliveries, bounded by credits) or a waiting Fetch.
//
// Threads: Acquire/Release may be called from several shard threads at once
// (a subscription can span queues on several shards), so credits are atomic
// in the implementation. Deliver is called on the calling shard's thread.
//
// Contract per dispatch round: the scheduler calls Acquire(want) -> granted
// (granted <= want), then Deliver() with exactly `granted` deliveries, or
// fewer plus Release(granted - delivered). A consumer that is Closed() gets
// nothing more and is dropped from the queue's list.
#pragma once

#include <cstdint>
#include <vector>

#include "service/engine/job.h"

namespace ringq::engine {

class Consumer {
 public:
  virtual ~Consumer() = default;
  virtual uint32_t Acquire(uint32_t want) = 0;
  virtual void Release(uint32_t n) = 0;
  virtual void Deliver(std::vector<Delivery>&& batch) = 0;
  // Jobs were ready on `shard` but Acquire granted nothing: when credits come
  // back the consumer must ask that shard to dispatch again.
  virtual void Starved(uint32_t shard) = 0;
  virtual bool Closed() const = 0;
};

}  // namespace ringq::engine
