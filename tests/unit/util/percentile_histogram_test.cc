#include "util/percentile_histogram.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace hsm {
namespace {

using std::chrono::nanoseconds;

TEST(PercentileHistogramTest, EmptyHasNoCounts) {
  PercentileHistogram h;
  auto s = h.snapshot();
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.p50Ns, 0u);
  EXPECT_EQ(s.p99Ns, 0u);
}

TEST(PercentileHistogramTest, BucketsCoverEveryValueWithBoundedError) {
  const uint64_t values[] = {0, 1, 3, 4, 5, 7, 8, 1000, 123456789, uint64_t{1} << 40, UINT64_MAX};
  for (uint64_t v : values) {
    size_t b = PercentileHistogram::bucketOf(v);
    ASSERT_LT(b, PercentileHistogram::kBuckets);
    EXPECT_GE(PercentileHistogram::upperBound(b), v);
    if (b > 0) {
      EXPECT_LT(PercentileHistogram::upperBound(b - 1), v);
    }
    if (v >= 4 && v < (uint64_t{1} << 62)) {
      EXPECT_LE(PercentileHistogram::upperBound(b), v + v / 4);
    }
  }
}

TEST(PercentileHistogramTest, PercentilesWithinABucketOfTheTruth) {
  PercentileHistogram h;
  for (int i = 1; i <= 1000; ++i) h.record(nanoseconds(i * 1000));  // 1..1000 us
  auto s = h.snapshot();
  EXPECT_EQ(s.count, 1000u);
  EXPECT_EQ(s.maxNs, 1000000u);
  EXPECT_GE(s.p50Ns, 500000u);
  EXPECT_LE(s.p50Ns, 500000u * 5 / 4);
  EXPECT_GE(s.p99Ns, 990000u);
  EXPECT_LE(s.p99Ns, s.maxNs);
  EXPECT_LE(s.p50Ns, s.p90Ns);
  EXPECT_LE(s.p90Ns, s.p99Ns);
}

TEST(PercentileHistogramTest, ConcurrentRecordsAreAllCounted) {
  PercentileHistogram h;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.record(nanoseconds(1000 * (t + 1)));
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(h.snapshot().count, 40000u);
  EXPECT_EQ(h.snapshot().maxNs, 4000u);
}

}  // namespace
}  // namespace hsm
