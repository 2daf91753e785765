#include <cstdio>
#include <ctime>
#include <mutex>

#include "client/cli/cli.h"

namespace ringq::cli {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 (RFC 3629: no overlongs,
// no surrogates, at most U+10FFFF).
size_t Utf8SequenceBytes(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const auto cont = [&](size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const uint8_t c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;  // overlong
    if (c == 0xED && b(1) > 0x9F) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(1) > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

std::mutex stdout_mu;

}  // namespace

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SequenceBytes(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

std::string Base64(std::string_view s) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((s.size() + 2) / 3 * 4);
  for (size_t i = 0; i < s.size(); i += 3) {
    const size_t n = std::min<size_t>(3, s.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) {
      v = (v << 8) | (k < n ? static_cast<uint8_t>(s[i + k]) : 0);
    }
    for (size_t k = 0; k < 4; ++k) {
      out += k <= n ? kAlphabet[(v >> (18 - 6 * k)) & 0x3F] : '=';
    }
  }
  return out;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8SequenceBytes(s, i);
    if (n > 1 || (n == 1 && c >= 0x20 && c != 0x7F && c != '\\')) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
    ++i;
  }
  return out;
}

void JsonLine::Key(std::string_view key) {
  if (out_.size() > 1) out_ += ',';
  out_ += JsonString(key);
  out_ += ':';
}

JsonLine& JsonLine::Str(std::string_view key, std::string_view value) {
  // Text fields of the API are UTF-8 by contract; anything else is escaped
  // byte by byte rather than emitted invalid.
  if (!IsValidUtf8(value)) return Bytes(key, value);
  Key(key);
  out_ += JsonString(value);
  return *this;
}

JsonLine& JsonLine::Bytes(std::string_view key, std::string_view value) {
  if (IsValidUtf8(value)) {
    Key(key);
    out_ += JsonString(value);
  } else {
    Key(std::string(key) + "_base64");
    out_ += JsonString(Base64(value));
  }
  return *this;
}

JsonLine& JsonLine::Num(std::string_view key, uint64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonLine& JsonLine::Int(std::string_view key, int64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonLine& JsonLine::Bool(std::string_view key, bool value) {
  Key(key);
  out_ += value ? "true" : "false";
  return *this;
}

JsonLine& JsonLine::Raw(std::string_view key, std::string_view json) {
  Key(key);
  out_ += json;
  return *this;
}

std::string StateName(int state) {
  std::string name = v1::JobState_Name(static_cast<v1::JobState>(state));
  constexpr std::string_view kPrefix = "JOB_STATE_";
  if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name.empty() ? std::to_string(state) : name;
}

std::string IsoTime(uint64_t epoch_ms) {
  if (epoch_ms == 0) return "-";
  const time_t secs = static_cast<time_t>(epoch_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<unsigned>(epoch_ms % 1000));
  return buf;
}

std::string JobJson(const v1::Job& j) {
  JsonLine headers;
  for (const auto& [k, v] : j.headers()) headers.Str(k, v);
  JsonLine line;
  line.Num("id", j.id())
      .Str("queue", j.queue())
      .Str("state", StateName(j.state()))
      .Int("priority", j.priority())
      .Num("attempts", j.attempts())
      .Num("max_attempts", j.max_attempts())
      .Num("lease_ms", j.lease_ms())
      .Num("ttl_ms", j.ttl_ms())
      .Str("unique_key", j.unique_key())
      .Str("group", j.group())
      .Num("created_at_ms", j.created_at_ms())
      .Num("run_at_ms", j.run_at_ms())
      .Num("finished_at_ms", j.finished_at_ms())
      .Num("lease_expires_at_ms", j.lease_expires_at_ms())
      .Str("last_error", j.last_error())
      .Str("reason", j.reason())
      .Raw("headers", headers.Finish())
      .Bytes("payload", j.payload())
      .Bytes("result", j.result());
  return line.Finish();
}

std::string JobText(const v1::Job& j) {
  std::string out;
  const auto row = [&](std::string_view key, const std::string& value) {
    out += std::string(key);
    out += std::string(14 - std::min<size_t>(key.size(), 13), ' ');
    out += value;
    out += '\n';
  };
  row("id", std::to_string(j.id()));
  row("queue", j.queue());
  row("state", StateName(j.state()));
  row("priority", std::to_string(j.priority()));
  row("attempts", std::to_string(j.attempts()) + "/" + std::to_string(j.max_attempts()));
  row("created", IsoTime(j.created_at_ms()));
  row("run_at", IsoTime(j.run_at_ms()));
  if (j.finished_at_ms() != 0) row("finished", IsoTime(j.finished_at_ms()));
  if (j.lease_expires_at_ms() != 0) row("lease_expires", IsoTime(j.lease_expires_at_ms()));
  if (!j.unique_key().empty()) row("dedup_key", Printable(j.unique_key()));
  if (!j.group().empty()) row("group", Printable(j.group()));
  for (const auto& [k, v] : j.headers()) row("header", Printable(k) + "=" + Printable(v));
  if (!j.last_error().empty()) row("last_error", Printable(j.last_error()));
  if (!j.reason().empty()) row("reason", Printable(j.reason()));
  row("payload", Printable(j.payload()));
  if (!j.result().empty()) row("result", Printable(j.result()));
  out.pop_back();  // PrintLine adds the last newline
  return out;
}

std::string QueueStatsJson(const v1::QueueStats& s, std::string_view name) {
  return JsonLine()
      .Str("queue", name)
      .Bool("paused", s.paused())
      .Num("waiting", s.waiting())
      .Num("delayed", s.delayed())
      .Num("active", s.active())
      .Num("completed", s.completed())
      .Num("dead", s.dead())
      .Num("cancelled", s.cancelled())
      .Num("expired", s.expired())
      .Num("pushed_total", s.pushed_total())
      .Num("completed_total", s.completed_total())
      .Num("failed_total", s.failed_total())
      .Num("retried_total", s.retried_total())
      .Num("dead_total", s.dead_total())
      .Num("subscribers", s.subscribers())
      .Finish();
}

void PrintLine(const std::string& line) {
  std::lock_guard lock(stdout_mu);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

int ExitCodeFor(const client::Status& status) {
  switch (status.code) {
    case client::StatusCode::kOk:
      return kExitOk;
    case client::StatusCode::kUnavailable:
      return kExitUnavailable;
    case client::StatusCode::kNotFound:
      return kExitNotFound;
    default:
      return kExitServerError;
  }
}

int ReportError(const client::Status& status, std::string_view context) {
  std::lock_guard lock(stdout_mu);
  std::fflush(stdout);
  std::string line = "ringq: ";
  if (!context.empty()) line += std::string(context) + ": ";
  line += status.ToString();
  std::fprintf(stderr, "%s\n", line.c_str());
  return ExitCodeFor(status);
}

}  // namespace ringq::cli
