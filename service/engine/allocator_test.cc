// allocator.h in a process on glibc's malloc (this test is not linked with
// jemalloc; tests/rqp checks that ringqd is): the name, and that freed heap
// goes back to the kernel on request.
#include "service/engine/allocator.h"

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace ringq::engine {
namespace {

uint64_t RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

TEST(Allocator, NamesGlibcWhenJemallocIsAbsent) { EXPECT_EQ(AllocatorName(), "glibc"); }

// Small blocks (below the mmap threshold) freed in an order that leaves the
// heap's top in use stay resident until trimmed; ReturnFreeMemory hands the
// free pages in the middle back.
TEST(Allocator, ReturnFreeMemoryGivesFreedHeapBack) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer replaces malloc: glibc's trim is not what runs";
#endif
  constexpr size_t kBlocks = 200'000, kBlockBytes = 512;  // ~100 MB
  std::vector<std::unique_ptr<char[]>> blocks(kBlocks);
  for (auto& b : blocks) {
    b.reset(new char[kBlockBytes]);
    std::fill_n(b.get(), kBlockBytes, 'x');  // resident
  }
  const uint64_t full = RssKb();
  // Keep the last block so that the heap cannot shrink from the top alone.
  for (size_t i = 0; i + 1 < kBlocks; ++i) blocks[i].reset();
  ReturnFreeMemory();
  const uint64_t after = RssKb();
  EXPECT_LT(after + 64 * 1024, full) << "RSS kB: " << full << " with the blocks, " << after
                                     << " after freeing and ReturnFreeMemory";
}

}  // namespace
}  // namespace ringq::engine
