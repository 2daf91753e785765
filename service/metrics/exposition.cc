#include "service/metrics/exposition.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ringq::metrics {

namespace {

// Names are program constants: a bad one is a bug (STYLE.md: assertions stay on).
void Check(bool ok, const char* what, std::string_view name) {
  if (ok) return;
  std::fprintf(stderr, "ringq: metrics: bad %s '%.*s'\n", what, static_cast<int>(name.size()),
               name.data());
  std::abort();
}

bool NameChar(char c, bool first, bool colon_ok) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (alpha || (colon_ok && c == ':')) return true;
  return !first && c >= '0' && c <= '9';
}

void AppendUint(uint64_t v, std::string* out) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, p);
}

}  // namespace

bool ValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, true)) return false;
  }
  return true;
}

bool ValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!NameChar(name[i], i == 0, false)) return false;
  }
  return true;
}

void AppendEscapedLabelValue(std::string_view v, std::string* out) {
  for (char c : v) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '"':
        out->append("\\\"");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

void AppendEscapedHelp(std::string_view v, std::string* out) {
  for (char c : v) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

std::string FormatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  // Shortest round-trip representation (C++17 to_chars without precision).
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) {
    const int n = std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(buf, n);
  }
  return std::string(buf, p);
}

void TextWriter::Family(std::string_view name, Type type, std::string_view help) {
  Check(ValidMetricName(name), "metric name", name);
  Check(families_.emplace(name).second, "duplicate family", name);
  if (type == Type::kCounter) Check(name.ends_with("_total"), "counter name (no _total)", name);
  family_ = std::string(name);
  type_ = type;
  out_.append("# HELP ").append(name).push_back(' ');
  AppendEscapedHelp(help, &out_);
  out_.append("\n# TYPE ").append(name);
  switch (type) {
    case Type::kCounter:
      out_.append(" counter\n");
      break;
    case Type::kGauge:
      out_.append(" gauge\n");
      break;
    case Type::kHistogram:
      out_.append(" histogram\n");
      break;
  }
}

void TextWriter::Line(std::string_view suffix, Labels labels, const Label* extra,
                      std::string_view value) {
  out_.append(family_).append(suffix);
  if (!labels.empty() || extra != nullptr) {
    out_.push_back('{');
    bool first = true;
    auto one = [&](const Label& l) {
      Check(ValidLabelName(l.name) && l.name != "le", "label name", l.name);
      if (!first) out_.push_back(',');
      first = false;
      out_.append(l.name).append("=\"");
      AppendEscapedLabelValue(l.value, &out_);
      out_.push_back('"');
    };
    for (const Label& l : labels) one(l);
    if (extra != nullptr) {
      // `le` is reserved for buckets and written only here.
      if (!first) out_.push_back(',');
      out_.append(extra->name).append("=\"").append(extra->value).push_back('"');
    }
    out_.push_back('}');
  }
  out_.push_back(' ');
  out_.append(value).push_back('\n');
}

void TextWriter::Sample(Labels labels, double value) {
  Check(!family_.empty() && type_ != Type::kHistogram, "sample outside a counter/gauge family",
        family_);
  Line("", labels, nullptr, FormatDouble(value));
}

void TextWriter::Sample(Labels labels, uint64_t value) {
  Check(!family_.empty() && type_ != Type::kHistogram, "sample outside a counter/gauge family",
        family_);
  std::string v;
  AppendUint(value, &v);
  Line("", labels, nullptr, v);
}

void TextWriter::HistogramSample(Labels labels, const HistogramData& data,
                                 const HistogramLayout& layout) {
  Check(type_ == Type::kHistogram, "histogram outside a histogram family", family_);
  const size_t n = layout.bounds.size() + 1;
  // An empty HistogramData (nothing merged yet) is all zeros.
  auto count_at = [&](size_t i) { return data.counts.empty() ? 0 : data.counts[i]; };
  Check(data.counts.empty() || data.counts.size() == n, "histogram data size", family_);
  uint64_t cumulative = 0;
  std::string v;
  for (size_t i = 0; i < n; ++i) {
    cumulative += count_at(i);
    const std::string le =
        i + 1 < n ? FormatDouble(static_cast<double>(layout.bounds[i]) / layout.divisor) : "+Inf";
    const Label le_label{"le", le};
    v.clear();
    AppendUint(cumulative, &v);
    Line("_bucket", labels, &le_label, v);
  }
  Line("_sum", labels, nullptr, FormatDouble(static_cast<double>(data.sum_raw) / layout.divisor));
  v.clear();
  AppendUint(cumulative, &v);
  Line("_count", labels, nullptr, v);
}

}  // namespace ringq::metrics
