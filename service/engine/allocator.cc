#include "service/engine/allocator.h"

#include <dlfcn.h>
#include <malloc.h>

#include <cstddef>

namespace ringq::engine {

namespace {

using MallctlFn = int (*)(const char*, void*, size_t*, void*, size_t);

// jemalloc's control entry point when jemalloc is the process's malloc.
MallctlFn Mallctl() {
  static const MallctlFn fn = reinterpret_cast<MallctlFn>(dlsym(RTLD_DEFAULT, "mallctl"));
  return fn;
}

}  // namespace

std::string AllocatorName() {
  MallctlFn mallctl = Mallctl();
  if (mallctl == nullptr) return "glibc";
  const char* version = nullptr;
  size_t len = sizeof version;
  if (mallctl("version", &version, &len, nullptr, 0) != 0 || version == nullptr) {
    return "jemalloc";
  }
  return std::string("jemalloc ") + version;
}

void ReturnFreeMemory() {
  if (MallctlFn mallctl = Mallctl()) {
    // MALLCTL_ARENAS_ALL is 4096 in jemalloc 5: purge every arena. Thread
    // caches keep a few objects per size class; that is the residue.
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0);
    return;
  }
  malloc_trim(0);
}

}  // namespace ringq::engine
