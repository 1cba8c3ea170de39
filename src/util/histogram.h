// LatencyHistogram: counts durations into fixed buckets, lock-free, for metrics.
//
// Contract
// - Bucket upper bounds (seconds) are fixed at compile time, from 50 us to 60 s, roughly
//   x2.5 apart; a sample above the last bound counts in the +Inf bucket only.
// - record() is wait-free (relaxed atomics) and may be called from any thread.
// - snapshot() is not atomic across buckets: under concurrent record() its count may lag
//   its buckets by the samples in flight; good enough for scraping.
// - quantile(q) estimates from the buckets (upper bound of the bucket holding q), 0 when
//   empty.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace hsm {

class LatencyHistogram {
 public:
  static constexpr std::array<double, 16> kBounds = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
      0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    5.0,    60.0};

  struct Snapshot {
    std::array<uint64_t, kBounds.size() + 1> counts{};  // per bucket, last is +Inf
    uint64_t count = 0;
    double sumSeconds = 0;
    double quantile(double q) const {
      if (count == 0) return 0;
      const auto rank = static_cast<uint64_t>(q * static_cast<double>(count - 1)) + 1;
      uint64_t seen = 0;
      for (size_t i = 0; i < kBounds.size(); ++i) {
        seen += counts[i];
        if (seen >= rank) return kBounds[i];
      }
      return kBounds.back();
    }
  };

  void record(std::chrono::nanoseconds d) {
    const double s = std::chrono::duration<double>(d).count();
    size_t i = 0;
    while (i < kBounds.size() && s > kBounds[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sumNs_.fetch_add(static_cast<uint64_t>(d.count() > 0 ? d.count() : 0), std::memory_order_relaxed);
  }

  Snapshot snapshot() const {
    Snapshot s;
    for (size_t i = 0; i < counts_.size(); ++i) {
      s.counts[i] = counts_[i].load(std::memory_order_relaxed);
      s.count += s.counts[i];
    }
    s.sumSeconds = static_cast<double>(sumNs_.load(std::memory_order_relaxed)) / 1e9;
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> counts_{};
  std::atomic<uint64_t> sumNs_{0};
};

}  // namespace hsm
