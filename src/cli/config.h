// MountConfig: everything `fanhsm mount` was asked for, parsed once by cli and passed down
// through constructors (no global configuration).
#pragma once

#include <cstdint>
#include <string>

namespace hsm::cli {

struct MountConfig {
  std::string source;      // canonical absolute path of the source directory
  std::string mountpoint;  // canonical absolute path
  std::string cacheDir;    // absolute
  std::string frontend = "fanotify";
  bool foreground = false;
  uint64_t chunkSize = 1 << 20;
  uint64_t readahead = 32 << 20;
  size_t crawlParallel = 4;
  size_t workers = 16;
  bool debug = false;
};

}  // namespace hsm::cli
