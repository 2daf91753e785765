// RocksDB key layout of jobs (job_codec.h): round trip and order.
#include "storage/job_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "service/engine/scheduler.h"

namespace ringq::storage {
namespace {

uint64_t MakeId(uint64_t seq, uint32_t shard) { return (seq << engine::kShardBits) | shard; }

TEST(IdKey, RoundTripsEveryBitPattern) {
  std::mt19937_64 rng(7);
  for (uint64_t id : {uint64_t{0}, uint64_t{1}, uint64_t{255}, uint64_t{256}, ~uint64_t{0}}) {
    EXPECT_EQ(IdFromKey(IdKey(id)), id);
  }
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t id = rng();
    const std::string k = IdKey(id);
    ASSERT_EQ(k.size(), 8u);
    ASSERT_EQ(IdFromKey(k), id);
  }
}

// Recovery reads each shard's jobs in id order; a checkpoint appends one
// shard's ids in order. Keys sort by shard first, then by id.
TEST(IdKey, SortsByShardThenId) {
  std::vector<uint64_t> ids;
  for (uint32_t shard : {0u, 1u, 2u, 255u}) {
    for (uint64_t seq : {uint64_t{1}, uint64_t{2}, uint64_t{300}, uint64_t{1} << 40}) {
      ids.push_back(MakeId(seq, shard));
    }
  }
  std::vector<std::string> keys;
  for (uint64_t id : ids) keys.push_back(IdKey(id));
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  // `ids` was built shard-major in ascending order: its keys are already sorted.
  EXPECT_EQ(sorted, keys);
  // Two shards' runs do not interleave.
  EXPECT_LT(IdKey(MakeId(uint64_t{1} << 50, 0)), IdKey(MakeId(1, 1)));
}

TEST(DeadKey, IsQueueThenIdKey) {
  const uint64_t id = MakeId(42, 3);
  EXPECT_EQ(DeadKey("emails", id), std::string("emails") + '\0' + IdKey(id));
  EXPECT_LT(DeadKey("emails", MakeId(1, 3)), DeadKey("emails", MakeId(2, 3)));
}

}  // namespace
}  // namespace ringq::storage
