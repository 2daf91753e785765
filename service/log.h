// One line per event on stderr: "2026-11-26T14:00:00.123Z ringqd: message".
#pragma once

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace ringq {

[[gnu::format(printf, 1, 2)]] inline void LogLine(const char* fmt, ...) {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t t = system_clock::to_time_t(now);
  const int ms = static_cast<int>(duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char line[2048];
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ringqd: ",
                        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                        tm.tm_sec, ms);
  va_list ap;
  va_start(ap, fmt);
  n += std::vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  if (n > static_cast<int>(sizeof line) - 2) n = sizeof line - 2;
  line[n++] = '\n';
  std::fwrite(line, 1, n, stderr);  // one write: lines from threads never interleave
}

}  // namespace ringq
