#include "uring/crash_point.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ringq::uring {

namespace {

struct Armed {
  std::string name;
  long at = 1;
  std::atomic<long> hits{0};
  bool on = false;
  Armed() {
    const char* env = std::getenv("RINGQ_CRASH_POINT");
    if (env == nullptr || *env == '\0') return;
    std::string v = env;
    if (auto colon = v.find(':'); colon != std::string::npos) {
      at = std::max(1L, std::atol(v.c_str() + colon + 1));
      v.resize(colon);
    }
    name = v;
    on = true;
  }
};

Armed& Get() {
  static Armed a;
  return a;
}

}  // namespace

bool CrashPointArmed() { return Get().on; }

void CrashPointSlow(const char* name, const char* detail) {
  Armed& a = Get();
  if (a.name != name) return;
  if (a.hits.fetch_add(1) + 1 != a.at) return;
  std::fprintf(stderr, "ringqd: crash point %s reached%s%s\n", name, *detail ? ": " : "", detail);
  std::fflush(stderr);
  kill(getpid(), SIGKILL);
  _exit(137);
}

}  // namespace ringq::uring
