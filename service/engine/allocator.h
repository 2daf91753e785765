// The process's malloc, as the server sees it: which allocator serves it and
// how to hand freed memory back to the kernel.
//
// ringqd links jemalloc (Debian's libjemalloc, CMake option RINGQ_JEMALLOC):
// the hot path allocates and frees small objects on every job, and glibc's
// per-thread arenas cost a quarter of the server's instructions and grow one
// page per mprotect while a backlog builds (bench/RESULTS.md). Tests and
// tools linked without it use glibc. Both are detected at run time (the
// symbol `mallctl` exists only under jemalloc, linked or LD_PRELOADed), so
// nothing here needs to be compiled per allocator.
#pragma once

#include <string>

namespace ringq::engine {

// "jemalloc 5.3.0-0-g54eaed1d8b56...", or "glibc".
std::string AllocatorName();

// Returns freed memory to the kernel now: jemalloc purges every arena's
// dirty pages, glibc trims its heaps (malloc_trim). Costs a few ms on a big
// heap: call it after a burst of frees (connections closed), not per request.
void ReturnFreeMemory();

}  // namespace ringq::engine
