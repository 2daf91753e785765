// TextWriter: the Prometheus text exposition format, version 0.0.4.
//
//   # HELP name help text (backslash and newline escaped)
//   # TYPE name counter|gauge|histogram
//   name{label="value",...} 42
//
// Label values escape backslash, double quote and newline. Histograms are
// written as cumulative `_bucket{le="..."}` samples ending in le="+Inf",
// then `_sum` and `_count` (count == the +Inf bucket, always).
//
// Contract: each family is opened once with Family() and its samples follow
// at once; metric and label names are constants of the program and are
// checked (a bad one is a bug and crashes). Label values are data: escaped.
//
// Thread: one writer object per scrape; not shared.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>

#include "service/metrics/metrics.h"

namespace ringq::metrics {

inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

enum class Type : uint8_t { kCounter, kGauge, kHistogram };

struct Label {
  std::string_view name;
  std::string_view value;
};
using Labels = std::span<const Label>;

class TextWriter {
 public:
  TextWriter() { out_.reserve(64 * 1024); }

  // Opens a family: HELP and TYPE lines. A family name is written once.
  void Family(std::string_view name, Type type, std::string_view help);

  // One sample of the open counter or gauge family.
  void Sample(Labels labels, double value);
  void Sample(Labels labels, uint64_t value);
  void Sample(std::initializer_list<Label> labels, double value) {
    Sample(Labels(labels.begin(), labels.size()), value);
  }
  void Sample(std::initializer_list<Label> labels, uint64_t value) {
    Sample(Labels(labels.begin(), labels.size()), value);
  }

  // One labelled series of the open histogram family.
  void HistogramSample(Labels labels, const HistogramData& data, const HistogramLayout& layout);
  void HistogramSample(std::initializer_list<Label> labels, const HistogramData& data,
                       const HistogramLayout& layout) {
    HistogramSample(Labels(labels.begin(), labels.size()), data, layout);
  }

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Line(std::string_view suffix, Labels labels, const Label* extra, std::string_view value);

  std::string out_;
  std::string family_;
  Type type_ = Type::kGauge;
  std::unordered_set<std::string> families_;
};

// Helpers, exposed for tests.
bool ValidMetricName(std::string_view name);
bool ValidLabelName(std::string_view name);
void AppendEscapedLabelValue(std::string_view v, std::string* out);
void AppendEscapedHelp(std::string_view v, std::string* out);
// Shortest text that parses back to the same double; "+Inf", "-Inf", "NaN".
std::string FormatDouble(double v);

}  // namespace ringq::metrics
