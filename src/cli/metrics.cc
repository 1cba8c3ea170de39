#include "cli/metrics.h"

#include <limits>
#include <map>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

namespace hsm::cli {
namespace {

// Bucket bounds of the exported histograms (seconds). The fine buckets behind them are
// log-linear, so a value within 25% below a bound may count in the next one.
constexpr double kBoundsSeconds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    5.0,    60.0};

class Collector final : public prometheus::Collectable {
 public:
  explicit Collector(std::function<MetricsBatch()> collect) : collect_(std::move(collect)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    MetricsBatch batch = collect_();
    std::vector<prometheus::MetricFamily> out;
    std::map<std::string, size_t> index;  // family name -> position in out
    for (const auto& v : batch.values) {
      auto [it, added] = index.try_emplace(v.name, out.size());
      if (added) {
        out.push_back({v.name, v.help,
                       v.counter ? prometheus::MetricType::Counter : prometheus::MetricType::Gauge,
                       {}});
      }
      prometheus::ClientMetric m;
      for (const auto& [k, val] : v.labels) m.label.push_back({k, val});
      if (v.counter) {
        m.counter.value = v.value;
      } else {
        m.gauge.value = v.value;
      }
      out[it->second].metric.push_back(std::move(m));
    }
    for (const auto& h : batch.histograms) {
      prometheus::ClientMetric m;
      for (double le : kBoundsSeconds) {
        m.histogram.bucket.push_back({h.counts.countAtOrBelow(static_cast<uint64_t>(le * 1e9)), le});
      }
      m.histogram.bucket.push_back({h.counts.count, std::numeric_limits<double>::infinity()});
      m.histogram.sample_count = h.counts.count;
      m.histogram.sample_sum = static_cast<double>(h.counts.sumNs) / 1e9;
      out.push_back({h.name, h.help, prometheus::MetricType::Histogram, {std::move(m)}});
    }
    return out;
  }

 private:
  std::function<MetricsBatch()> collect_;
};

}  // namespace

struct MetricsServer::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<Collector> collector;
};

Result<std::string> parseMetricsAddress(const std::string& spec) {
  std::string host = "127.0.0.1", port = spec;
  if (!spec.empty() && spec.front() == '[') {
    auto close = spec.find("]:");
    if (close == std::string::npos) {
      return Status::error(EINVAL, fmt::format("bad --metrics address '{}' (use [ADDR]:PORT)", spec));
    }
    host = spec.substr(0, close + 1);
    port = spec.substr(close + 2);
  } else if (auto colon = spec.rfind(':'); colon != std::string::npos) {
    if (colon > 0) host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535 || host.find_first_of(",/ ") != std::string::npos) {
    return Status::error(EINVAL, fmt::format("bad --metrics address '{}' (use [ADDR:]PORT)", spec));
  }
  return host + ":" + port;
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() = default;

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& address,
                                                            std::function<MetricsBatch()> collect) {
  auto impl = std::make_unique<Impl>();
  try {
    // Several connections at once, and none held open by a silent client for long: one
    // idle connection must not block scrapes (civetweb serves one connection per thread).
    impl->exposer = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", "4", "request_timeout_ms", "5000"});
  } catch (const std::exception& e) {
    return Status::error(EADDRINUSE, fmt::format("metrics: cannot listen on {}: {}", address, e.what()));
  }
  impl->collector = std::make_shared<Collector>(std::move(collect));
  impl->exposer->RegisterCollectable(impl->collector);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

int MetricsServer::port() const {
  auto ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace hsm::cli
