// Evictor: keeps the cache's content under a quota by releasing the least recently used,
// unpinned content in the background.
//
// Design note
// - Usage is the index's sum of bytes_present (MetaDb::contentBytes). When it passes the
//   high watermark, files are released (Hydrator::release, which proves no one has them
//   open) oldest use first until usage is at or below the low watermark.
// - Use is known two ways. The Hydrator records the time content was written. Reads that
//   the frontend never sees (fanotify ignore marks full files) are found through atime:
//   the Hydrator leaves a cache file's atime equal to its mtime, so with relatime the next
//   read moves atime to the time of that read. Before releasing a candidate the evictor
//   looks at its atime; a file read since it was armed gets a second chance (its last use
//   is recorded, atime is armed again) instead of being released: a CLOCK approximation
//   of LRU that costs nothing on the read path. Caches on a noatime filesystem fall back
//   to the Hydrator's times. If a pass has seen every candidate and usage is still above
//   its target, it sweeps once more without second chances: a quota is a bound even when
//   every file was read since the last pass.
// - Files found busy are retried in a later pass, not waited for.
//
// Contract
// - start() runs passes on a thread every `interval` (with a quota) and whenever kick() is
//   called;
//   stop() (and the destructor) ends it. runPass() runs one pass on the caller's thread
//   (tests, `fanhsm release`): it is serialized with the thread's passes.
// - `beforePunch` is the frontend's Frontend::beforeRelease; it and the Hydrator must
//   outlive the Evictor, and the Evictor must be stopped before the frontend.
// - Thread-safe. Locks: passMu_ (rank 3, held across a whole pass: Hydrator and MetaDb
//   locks rank above it), wakeMu_ (rank 4, leaf).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "cache/cache_store.h"
#include "core/hydrator.h"

namespace hsm::core {

struct EvictorConfig {
  uint64_t quotaBytes = 0;  // 0: no quota, no background eviction
  double highWatermark = 0.90;  // fraction of the quota that starts a pass
  double lowWatermark = 0.80;   // fraction a pass brings usage down to
  std::chrono::milliseconds interval{1000};
  size_t batch = 64;  // files per Hydrator::release call
};

struct EvictorStats {
  uint64_t passes = 0;
  uint64_t filesReleased = 0;
  uint64_t bytesReleased = 0;
  uint64_t busy = 0;           // candidates in use: skipped
  uint64_t secondChances = 0;  // candidates read since their last use was recorded
  uint64_t errors = 0;
  uint64_t cacheFull = 0;      // passes started because the cache filesystem was full
  uint64_t usageBytes = 0;     // at the end of the last pass
  // The last pass that released something: bytes and seconds (eviction throughput).
  uint64_t lastPassBytes = 0;
  double lastPassSeconds = 0;
};

class Evictor {
 public:
  Evictor(Hydrator& hydrator, cache::CacheStore& cache, EvictorConfig config,
          std::function<Status(int fd)> beforePunch);
  ~Evictor();
  Evictor(const Evictor&) = delete;
  Evictor& operator=(const Evictor&) = delete;

  void start();
  void stop();
  // Asks for a pass now (on the evictor's thread).
  void kick();
  // The cache filesystem ran out of space: runs a pass on the caller's thread, even below
  // the high watermark, freeing at least a tenth of the content (64 MiB at least; down to
  // the low watermark if that is lower). The index reserve (CacheStore::dropReserve) lets
  // it record releases on a full filesystem. Returns true if anything was released
  // (also by a pass that ran while this one waited for its turn). If nothing could be
  // released (all in use), the evictor's thread keeps trying every interval until a pass
  // frees something.
  bool freeSpaceNow();
  // One pass: if usage is above the high watermark (or `force`), releases until it is at
  // or below `targetBytes` (default: the low watermark).
  Result<EvictorStats> runPass(bool force = false, uint64_t targetBytes = UINT64_MAX);
  EvictorStats stats() const;
  const EvictorConfig& config() const { return config_; }

 private:
  void loop();
  Result<EvictorStats> freeSpace();
  // True if the candidate was read since its last use was recorded (and re-arms it).
  bool usedSince(const cache::ReleaseCandidate& c);

  Hydrator& hydrator_;
  cache::CacheStore& cache_;
  const EvictorConfig config_;
  std::function<Status(int fd)> beforePunch_;

  std::mutex passMu_;  // rank 3: one pass at a time
  std::mutex wakeMu_;  // rank 4: stopping_, kicked_
  std::condition_variable wakeCv_;
  bool stopping_ = false;
  bool kicked_ = false;
  std::thread thread_;

  std::atomic<bool> spaceWanted_{false};
  std::atomic<uint64_t> lastPassBytes_{0};
  std::atomic<double> lastPassSeconds_{0};  // a full-filesystem pass freed nothing yet
  std::atomic<uint64_t> passes_{0}, filesReleased_{0}, bytesReleased_{0}, busy_{0},
      secondChances_{0}, errors_{0}, cacheFullPasses_{0}, usage_{0};
};

}  // namespace hsm::core
