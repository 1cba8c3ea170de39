// Registry of running fanhsm daemons, so that `fanhsm status|umount PATH` can find the
// daemon serving a path: one JSON file per mount point in /run/fanhsm/, named by a hash
// of the canonical mount point, next to the daemon's control socket.
//
// Contract: written by the daemon once its mount is usable, removed on clean exit. A
// record whose pid is gone is stale (the daemon crashed); mount and umount clean it up.
// Not thread-safe (cli runs it from one thread).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace hsm::cli {

struct MountRecord {
  std::string mountpoint;
  std::string source;
  std::string cache;
  std::string frontend;
  std::string socket;
  int pid = 0;
};

std::string runDir();  // /run/fanhsm (or $FANHSM_RUN_DIR, for tests)
Status ensureRunDir();
std::string recordPathFor(const std::string& mountpoint);
std::string socketPathFor(const std::string& mountpoint);

Status writeRecord(const MountRecord& r);
void removeRecord(const std::string& mountpoint);
std::optional<MountRecord> readRecord(const std::string& mountpoint);
std::vector<MountRecord> allRecords();
bool processAlive(int pid);

// The record whose mount point contains `absPath` (longest match), and the path relative
// to it ("" for the mount point itself).
std::optional<std::pair<MountRecord, std::string>> findMountFor(const std::string& absPath);

// True if `path` is a mount point (per /proc/self/mountinfo).
bool isMountPoint(const std::string& path);

}  // namespace hsm::cli
