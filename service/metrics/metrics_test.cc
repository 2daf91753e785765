// Goal: the exposition text is what Prometheus' 0.0.4 parser expects, and the
// cells count what they are told. Method: write families through TextWriter
// and compare exact text (escaping, number formats, cumulative buckets ending
// in +Inf with _count equal to it); drive cells from several threads.
#include "service/metrics/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "service/metrics/exposition.h"
#include "service/metrics/registry.h"

namespace ringq::metrics {
namespace {

TEST(Exposition, CounterWithHelpTypeAndLabels) {
  TextWriter w;
  w.Family("ringq_jobs_pushed_total", Type::kCounter, "Jobs pushed.");
  w.Sample({{"queue", "emails"}}, uint64_t{42});
  w.Sample({{"queue", "_other"}}, uint64_t{0});
  EXPECT_EQ(w.text(),
            "# HELP ringq_jobs_pushed_total Jobs pushed.\n"
            "# TYPE ringq_jobs_pushed_total counter\n"
            "ringq_jobs_pushed_total{queue=\"emails\"} 42\n"
            "ringq_jobs_pushed_total{queue=\"_other\"} 0\n");
}

TEST(Exposition, GaugeWithoutLabelsAndDoubles) {
  TextWriter w;
  w.Family("g", Type::kGauge, "A gauge.");
  w.Sample(Labels{}, 0.25);
  w.Sample({{"a", "1"}}, 1e-05);
  w.Sample({{"a", "2"}}, std::numeric_limits<double>::infinity());
  w.Sample({{"a", "3"}}, -std::numeric_limits<double>::infinity());
  w.Sample({{"a", "4"}}, std::nan(""));
  w.Sample({{"a", "5"}}, 3.0);
  EXPECT_EQ(w.text(),
            "# HELP g A gauge.\n"
            "# TYPE g gauge\n"
            "g 0.25\n"
            "g{a=\"1\"} 1e-05\n"
            "g{a=\"2\"} +Inf\n"
            "g{a=\"3\"} -Inf\n"
            "g{a=\"4\"} NaN\n"
            "g{a=\"5\"} 3\n");
}

TEST(Exposition, EscapesLabelValuesAndHelp) {
  TextWriter w;
  w.Family("x", Type::kGauge, "line one\nback\\slash \"quotes stay\"");
  w.Sample({{"v", "a\"b\\c\nd"}}, uint64_t{1});
  EXPECT_EQ(w.text(),
            "# HELP x line one\\nback\\\\slash \"quotes stay\"\n"
            "# TYPE x gauge\n"
            "x{v=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(Exposition, HistogramBucketsAreCumulativeAndEndInInf) {
  static constexpr uint64_t kBounds[] = {1'000'000, 5'000'000, 10'000'000};  // ns
  const HistogramLayout layout{kBounds, 1e9};
  Histogram h(layout);
  h.Observe(500'000);        // <= 1 ms
  h.Observe(1'000'000);      // == bound: le is inclusive
  h.Observe(7'000'000);      // <= 10 ms
  h.Observe(60'000'000, 2);  // +Inf, twice
  HistogramData d;
  h.MergeInto(d);
  EXPECT_EQ(d.Count(), 5u);
  TextWriter w;
  w.Family("lat_seconds", Type::kHistogram, "Latency.");
  w.HistogramSample({{"q", "a"}}, d, layout);
  EXPECT_EQ(w.text(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{q=\"a\",le=\"0.001\"} 2\n"
            "lat_seconds_bucket{q=\"a\",le=\"0.005\"} 2\n"
            "lat_seconds_bucket{q=\"a\",le=\"0.01\"} 3\n"
            "lat_seconds_bucket{q=\"a\",le=\"+Inf\"} 5\n"
            "lat_seconds_sum{q=\"a\"} 0.1285\n"
            "lat_seconds_count{q=\"a\"} 5\n");
}

TEST(Exposition, EmptyHistogramIsAllZerosWithoutLabels) {
  TextWriter w;
  w.Family("h", Type::kHistogram, "Empty.");
  w.HistogramSample(Labels{}, HistogramData{}, kBatchCount);
  const std::string& t = w.text();
  EXPECT_NE(t.find("h_bucket{le=\"1\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("h_bucket{le=\"65536\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"), std::string::npos);
}

TEST(Exposition, MergedHistogramsAddUp) {
  Histogram a(kJobTimeMs), b(kJobTimeMs);
  a.Observe(3);
  b.Observe(3);
  b.Observe(100'000'000);
  HistogramData d;
  a.MergeInto(d);
  b.MergeInto(d);
  EXPECT_EQ(d.Count(), 3u);
  EXPECT_EQ(d.counts[1], 2u);      // le=0.005
  EXPECT_EQ(d.counts.back(), 1u);  // +Inf
  EXPECT_EQ(d.sum_raw, 100'000'006u);
}

TEST(Exposition, LayoutsProduceShortBucketLabels) {
  // Bounds times scale must print as the short decimal a human wrote.
  EXPECT_EQ(FormatDouble(static_cast<double>(kRequestLatencyNsBounds[0]) / 1e9), "2.5e-05");
  EXPECT_EQ(FormatDouble(static_cast<double>(kJobTimeMsBounds[0]) / 1e3), "0.001");
  EXPECT_EQ(FormatDouble(static_cast<double>(kSyncLatencyNsBounds[6]) / 1e9), "0.001");
  EXPECT_EQ(FormatDouble(3600.0), "3600");
}

TEST(Exposition, NamesAreChecked) {
  EXPECT_TRUE(ValidMetricName("ringq_x:y_total"));
  EXPECT_FALSE(ValidMetricName("1abc"));
  EXPECT_FALSE(ValidMetricName("a-b"));
  EXPECT_TRUE(ValidLabelName("queue"));
  EXPECT_FALSE(ValidLabelName("__name__"));
  EXPECT_FALSE(ValidLabelName("a:b"));
  EXPECT_DEATH(
      {
        TextWriter w;
        w.Family("dup", Type::kGauge, "");
        w.Family("dup", Type::kGauge, "");
      },
      "duplicate family");
  EXPECT_DEATH(
      {
        TextWriter w;
        w.Family("c", Type::kCounter, "");
      },
      "_total");
}

TEST(Cells, SharedCountersSumOverThreads) {
  SharedCounters<3> c;
  std::vector<std::thread> ts;
  for (int t = 0; t < 12; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10'000; ++i) c.Add(1);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.Get(1), 120'000u);
  EXPECT_EQ(c.Get(0), 0u);
}

TEST(Cells, SingleWriterCellIsReadWhileWritten) {
  Cell cell;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 100'000; ++i) cell.Add();
    done = true;
  });
  uint64_t last = 0;
  while (!done) {
    const uint64_t now = cell.Get();
    EXPECT_GE(now, last);  // monotonic as seen by a reader
    last = now;
  }
  writer.join();
  EXPECT_EQ(cell.Get(), 100'000u);
}

TEST(Cells, LabelBudgetStopsAtMax) {
  LabelBudget b(2);
  EXPECT_TRUE(b.TryTake());
  EXPECT_TRUE(b.TryTake());
  EXPECT_FALSE(b.TryTake());
  EXPECT_EQ(b.taken(), 2u);
}

class Fixed final : public Collector {
 public:
  void Collect(TextWriter& out) override {
    out.Family("fixed", Type::kGauge, "Fixed.");
    out.Sample(Labels{}, uint64_t{7});
  }
};

TEST(Registry, ScrapeHasCollectorsAndItsOwnFamilies) {
  Fixed f;
  Registry r;
  r.Add(&f);
  const std::string first = r.Scrape();
  EXPECT_NE(first.find("fixed 7\n"), std::string::npos);
  EXPECT_NE(first.find("ringq_metrics_scrapes_total 1\n"), std::string::npos);
  const std::string second = r.Scrape();
  EXPECT_NE(second.find("ringq_metrics_scrapes_total 2\n"), std::string::npos);
  EXPECT_NE(second.find("ringq_metrics_last_scrape_bytes " + std::to_string(first.size()) + "\n"),
            std::string::npos);
}

}  // namespace
}  // namespace ringq::metrics
