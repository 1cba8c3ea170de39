// MetricsServer: the daemon's counters and latency histograms in the Prometheus text
// format over HTTP (GET /metrics), served by prometheus-cpp's exposer (civetweb) on an
// address the user chose with --metrics (opt-in; 127.0.0.1 unless an address is given).
//
// Contract
// - start() binds and serves on prometheus-cpp's own threads; errors: EADDRINUSE-like
//   failures to listen, with the address in the message. Stopped by the destructor.
// - `collect` is called on a server thread for every scrape and must be thread-safe; it
//   returns a snapshot (metrics sharing a name form one family, told apart by labels).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/percentile_histogram.h"
#include "util/status.h"

namespace hsm::cli {

struct MetricValue {
  std::string name;  // fanhsm_..., with _total for counters
  std::string help;
  bool counter = true;  // else a gauge
  double value = 0;
  std::vector<std::pair<std::string, std::string>> labels;
};

struct HistogramValue {
  std::string name;  // fanhsm_..._seconds
  std::string help;
  PercentileHistogram::Counts counts;
};

struct MetricsBatch {
  std::vector<MetricValue> values;
  std::vector<HistogramValue> histograms;
};

// "PORT", ":PORT", "ADDR:PORT" or "[V6ADDR]:PORT" -> the address to bind (default
// 127.0.0.1). EINVAL with a message for anything else.
Result<std::string> parseMetricsAddress(const std::string& spec);

class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& address,
                                                      std::function<MetricsBatch()> collect);
  ~MetricsServer();
  int port() const;  // the port bound (useful with port 0)

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hsm::cli
