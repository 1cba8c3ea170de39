// PercentileHistogram: a fixed-size, lock-free histogram of durations with fine buckets, for
// percentiles in status output and histograms in the metrics endpoint.
//
// Contract
// - record() is wait-free (relaxed atomic increments) and may be called from any thread;
//   snapshot() may run concurrently and sees each recorded value at most once.
// - Memory is fixed (kBuckets counters) whatever the number of values recorded.
// - Buckets are log-linear: 4 per power of two, so a percentile is reported as the upper
//   bound of its bucket, at most 25% above the true value (exact below 4 ns), and never
//   above the largest value recorded.
// - counts() copies the buckets (and count, sum, max) for callers that export them; a
//   coarser bucket boundary (Prometheus `le`) is answered by countAtOrBelow(), which counts
//   whole buckets whose upper bound is at or below it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace hsm {

struct LatencySummary {
  uint64_t count = 0;
  uint64_t p50Ns = 0, p90Ns = 0, p99Ns = 0, maxNs = 0;
};

class PercentileHistogram {
 public:
  static constexpr size_t kBuckets = 64 * 4;

  struct Counts {
    std::array<uint64_t, kBuckets> buckets{};
    uint64_t count = 0, sumNs = 0, maxNs = 0;
    LatencySummary summary() const;
    uint64_t countAtOrBelow(uint64_t boundNs) const;
  };

  void record(std::chrono::nanoseconds d) {
    const uint64_t ns = d.count() > 0 ? static_cast<uint64_t>(d.count()) : 0;
    uint64_t m = max_.load(std::memory_order_relaxed);
    while (ns > m && !max_.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {
    }
    sum_.fetch_add(ns, std::memory_order_relaxed);
    buckets_[bucketOf(ns)].fetch_add(1, std::memory_order_release);
  }

  Counts counts() const;
  LatencySummary snapshot() const { return counts().summary(); }

  // Values 0..7 have a bucket each; above, bucket (msb - 1) * 4 + the two bits below the
  // most significant one.
  static size_t bucketOf(uint64_t ns) {
    if (ns < 8) return static_cast<size_t>(ns);
    const int msb = 63 - __builtin_clzll(ns);
    const uint64_t sub = (ns >> (msb - 2)) & 3;
    return static_cast<size_t>(msb - 1) * 4 + static_cast<size_t>(sub);
  }
  // The largest value that falls into bucket `b`.
  static uint64_t upperBound(size_t b) {
    if (b < 8) return b;
    const size_t msb = b / 4 + 1, sub = b % 4;
    if (msb >= 63 && sub == 3) return UINT64_MAX;
    return ((uint64_t{4} + sub + 1) << (msb - 2)) - 1;
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> max_{0};
  std::atomic<uint64_t> sum_{0};
};

}  // namespace hsm
