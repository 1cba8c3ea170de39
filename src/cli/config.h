// MountConfig: everything `fanhsm mount` was asked for, parsed once by cli and passed down
// through constructors (no global configuration).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hsm::cli {

struct MountConfig {
  std::string source;      // canonical absolute path of a source directory, or an http(s) URL
  std::string mountpoint;  // canonical absolute path
  std::string cacheDir;    // absolute
  std::string frontend = "fanotify";
  bool foreground = false;
  uint64_t chunkSize = 1 << 20;
  uint64_t readahead = 32 << 20;
  size_t crawlParallel = 4;
  int listingTtlSeconds = 300;  // 0: listings never expire
  size_t workers = 16;
  size_t connections = 64;       // fetches running at a time (core::HydratorConfig)
  size_t maxConnections = 0;     // ... long ones included; 0: 8 times `connections`
  // core::ListingLimits, and the largest listing body read (HTTP).
  uint64_t maxEntries = 20'000'000;
  uint64_t maxDirEntries = 1'000'000;
  unsigned maxDepth = 128;
  uint64_t maxListingBytes = 64ull << 20;
  uint64_t cacheSize = 0;        // quota on present content in bytes; 0: none
  double cacheHigh = 0.90;       // eviction starts above this fraction of cacheSize
  double cacheLow = 0.80;        // ... and frees down to this one
  std::string metrics;  // bind address of the Prometheus endpoint ("" : none)
  bool debug = false;
  int logLevel = 1;              // log::Level: 0 debug, 1 info, 2 warn, 3 error
  std::string logFile;           // empty: CACHE/meta/fanhsm.log
  // Ownership and modes the view shows (core::ViewPolicy): -1 / 0: the source's.
  int64_t uid = -1;
  int64_t gid = -1;
  uint32_t fileMode = 0;
  uint32_t dirMode = 0;
  // HTTP sources
  bool insecure = false;
  std::string user;                  // "user:password"; never logged
  bool netrc = false;
  std::vector<std::string> headers;  // "Name: value"
  int timeoutSeconds = 20;           // a transfer below minSpeed for this long fails
  uint64_t minSpeed = 1024;          // bytes/s
  int requestTimeoutSeconds = 300;   // one request in all
  int retries = 3;
  bool redirectsAnywhere = false;    // --redirects any (remote::HttpOptions)
  int workerWatchdogSeconds = 60;    // a fetch worker silent this long while calls wait is replaced
};

inline bool isUrl(const std::string& source) { return source.find("://") != std::string::npos; }

}  // namespace hsm::cli
