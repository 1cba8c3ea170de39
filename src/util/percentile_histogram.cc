#include "util/percentile_histogram.h"

#include <algorithm>
#include <cmath>

namespace hsm {

LatencySummary PercentileHistogram::snapshot() const {
  std::array<uint64_t, kBuckets> counts{};
  LatencySummary s;
  for (size_t i = 0; i < kBuckets; ++i) {
    counts[i] = buckets_[i].load(std::memory_order_acquire);
    s.count += counts[i];
  }
  s.maxNs = max_.load(std::memory_order_relaxed);
  if (s.count == 0) return s;
  auto at = [&](double q) {
    const auto rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(s.count))));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts[i];
      if (seen >= rank) return std::min(upperBound(i), s.maxNs);
    }
    return s.maxNs;
  };
  s.p50Ns = at(0.50);
  s.p90Ns = at(0.90);
  s.p99Ns = at(0.99);
  return s;
}

}  // namespace hsm
