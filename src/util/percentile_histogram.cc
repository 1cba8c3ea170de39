#include "util/percentile_histogram.h"

#include <algorithm>
#include <cmath>

namespace hsm {

PercentileHistogram::Counts PercentileHistogram::counts() const {
  Counts c;
  for (size_t i = 0; i < kBuckets; ++i) {
    c.buckets[i] = buckets_[i].load(std::memory_order_acquire);
    c.count += c.buckets[i];
  }
  c.maxNs = max_.load(std::memory_order_relaxed);
  c.sumNs = sum_.load(std::memory_order_relaxed);
  return c;
}

LatencySummary PercentileHistogram::Counts::summary() const {
  LatencySummary s;
  s.count = count;
  s.maxNs = maxNs;
  if (count == 0) return s;
  auto at = [&](double q) {
    const auto rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(count))));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += buckets[i];
      if (seen >= rank) return std::min(upperBound(i), maxNs);
    }
    return maxNs;
  };
  s.p50Ns = at(0.50);
  s.p90Ns = at(0.90);
  s.p99Ns = at(0.99);
  return s;
}

uint64_t PercentileHistogram::Counts::countAtOrBelow(uint64_t boundNs) const {
  uint64_t n = 0;
  for (size_t i = 0; i < kBuckets && upperBound(i) <= boundNs; ++i) n += buckets[i];
  return n;
}

}  // namespace hsm
