#include "core/evictor.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <unordered_set>
#include <utility>

#include "util/log.h"

namespace hsm::core {

Evictor::Evictor(Hydrator& hydrator, cache::CacheStore& cache, EvictorConfig config,
                 std::function<Status(int fd)> beforePunch)
    : hydrator_(hydrator), cache_(cache), config_(config), beforePunch_(std::move(beforePunch)) {}

Evictor::~Evictor() { stop(); }

void Evictor::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { loop(); });
}

void Evictor::stop() {
  {
    std::lock_guard lock(wakeMu_);
    stopping_ = true;
  }
  wakeCv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Evictor::kick() {
  {
    std::lock_guard lock(wakeMu_);
    kicked_ = true;
  }
  wakeCv_.notify_all();
}

void Evictor::loop() {
  bool first = true;  // a cache mounted over its quota is brought under it at once
  while (true) {
    if (!std::exchange(first, false)) {
      std::unique_lock lock(wakeMu_);
      auto woken = [this] { return stopping_ || kicked_; };
      // Without a quota only kick() starts a pass, or a full cache filesystem that a
      // pass could not relieve yet (every candidate was in use): retried every interval.
      if (config_.quotaBytes > 0 || spaceWanted_) {
        wakeCv_.wait_for(lock, config_.interval, woken);
      } else {
        wakeCv_.wait(lock, woken);
      }
      if (stopping_) return;
      kicked_ = false;
    }
    Result<EvictorStats> r = Status::error(EIO, "no pass");
    if (spaceWanted_) {
      const uint64_t before = bytesReleased_;
      r = freeSpace();
      if (bytesReleased_ > before) spaceWanted_ = false;
    } else {
      r = runPass();
    }
    if (!r) {
      errors_++;
      log::warn("eviction: {}", r.status().message());
    }
  }
}

bool Evictor::freeSpaceNow() {
  // A pass that ran while this one waited for its turn counts: it freed space too.
  const uint64_t before = bytesReleased_;
  auto r = freeSpace();
  if (!r) {
    errors_++;
    log::warn("eviction: {}", r.status().message());
  }
  if (bytesReleased_ > before) return true;
  spaceWanted_ = true;  // files in use now may be free in a moment: keep trying
  kick();
  return false;
}

Result<EvictorStats> Evictor::freeSpace() {
  cacheFullPasses_++;
  auto used = cache_.contentBytes();
  if (!used) return used.status();
  uint64_t target = *used - std::min(*used, std::max<uint64_t>(*used / 10, 64 << 20));
  if (config_.quotaBytes > 0) {
    target = std::min(target, static_cast<uint64_t>(static_cast<double>(config_.quotaBytes) *
                                                    config_.lowWatermark));
  }
  log::warn("eviction: the cache filesystem is full; releasing content down to {} bytes", target);
  cache_.dropReserve();  // room for the index to record the releases
  // Complete files the sync thread has not recorded yet are no candidates: record them
  // first (the reserve makes room for that too).
  if (Status f = hydrator_.flush(); !f) log::warn("eviction: recording before a release: {}", f.message());
  auto r = runPass(true, target);
  if (Status s = cache_.takeReserve(); !s) log::warn("eviction: {}", s.message());
  return r;
}

bool Evictor::usedSince(const cache::ReleaseCandidate& c) {
  auto fd = cache_.openBeneath(c.path, O_RDONLY | O_NOFOLLOW);
  if (!fd) return false;
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return false;
  // Armed: atime == mtime. Any read since then (relatime) moved atime.
  if (st.st_atim.tv_sec == st.st_mtim.tv_sec && st.st_atim.tv_nsec == st.st_mtim.tv_nsec) {
    return false;
  }
  const int64_t atimeNs = static_cast<int64_t>(st.st_atim.tv_sec) * 1000000000 + st.st_atim.tv_nsec;
  Status s = cache_.touchAccess(c.path, atimeNs);
  if (!s) log::warn("eviction: recording the use of '{}': {}", c.path, s.message());
  struct timespec ts[2] = {st.st_mtim, {0, UTIME_OMIT}};
  if (::futimens(fd->get(), ts) != 0) {
    log::warn("eviction: re-arming the atime of '{}': {}", c.path, std::strerror(errno));
  }
  return atimeNs > c.lastAccessNs;
}

Result<EvictorStats> Evictor::runPass(bool force, uint64_t targetBytes) {
  std::lock_guard pass(passMu_);
  passes_++;
  const auto started = std::chrono::steady_clock::now();
  auto usage = cache_.contentBytes();
  if (!usage) return usage.status();
  uint64_t used = *usage;
  const auto quota = static_cast<double>(config_.quotaBytes);
  const bool over = config_.quotaBytes > 0 && static_cast<double>(used) > quota * config_.highWatermark;
  uint64_t target = targetBytes;
  if (target == UINT64_MAX) {
    target = config_.quotaBytes > 0 ? static_cast<uint64_t>(quota * config_.lowWatermark) : 0;
  }
  EvictorStats pass_stats;
  if (over || force) {
    std::unordered_set<std::string> seen;  // handled in this pass (released, busy, spared)
    std::vector<std::string> spared;       // given a second chance in the first sweep
    bool secondSweep = false;
    // Bounded: every round marks at least one new candidate as seen, or ends the sweep;
    // there are at most two sweeps.
    for (int round = 0; round < 100000 && used > target; ++round) {
      auto cands = cache_.releaseCandidates(seen.size() + config_.batch);
      if (!cands) return cands.status();
      std::vector<Hydrator::ReleaseRequest> reqs;
      size_t fresh = 0;
      uint64_t planned = 0;  // release no more than it takes to reach the target
      for (const auto& c : *cands) {
        if (fresh == config_.batch || planned >= used - target) break;
        if (!seen.insert(c.path).second) continue;
        ++fresh;
        // CLOCK: a file read since its use was recorded is spared once (its use is
        // recorded now). In the second sweep the hand comes round again: spared files
        // whose reference was cleared go like any other.
        if (!secondSweep && usedSince(c)) {
          pass_stats.secondChances++;
          spared.push_back(c.path);
          continue;
        }
        reqs.push_back({c.path, c.version});
        planned += c.bytesPresent;
      }
      if (fresh == 0) {
        // Everything was seen and usage is still over the target: if files were spared,
        // sweep once more (else a pass where every file had been read released nothing,
        // and the quota was no bound).
        if (secondSweep || spared.empty()) break;
        secondSweep = true;
        for (const auto& path : spared) seen.erase(path);
        spared.clear();
        continue;
      }
      if (reqs.empty()) continue;
      auto r = hydrator_.release(reqs, beforePunch_);
      if (!r) return r.status();
      pass_stats.filesReleased += r->files;
      pass_stats.bytesReleased += r->bytes;
      pass_stats.busy += r->busy;
      pass_stats.errors += r->failed;
      used = used > r->bytes ? used - r->bytes : 0;
    }
    if (pass_stats.filesReleased > 0 || pass_stats.busy > 0) {
      log::info("eviction: released {} files ({} bytes), {} busy, {} read again; usage {} of {}",
                pass_stats.filesReleased, pass_stats.bytesReleased, pass_stats.busy,
                pass_stats.secondChances, used, config_.quotaBytes);
    }
  }
  if (pass_stats.bytesReleased > 0) {
    lastPassBytes_ = pass_stats.bytesReleased;
    lastPassSeconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }
  filesReleased_ += pass_stats.filesReleased;
  bytesReleased_ += pass_stats.bytesReleased;
  busy_ += pass_stats.busy;
  secondChances_ += pass_stats.secondChances;
  errors_ += pass_stats.errors;
  usage_ = used;
  pass_stats.passes = 1;
  pass_stats.usageBytes = used;
  return pass_stats;
}

EvictorStats Evictor::stats() const {
  EvictorStats s;
  s.passes = passes_;
  s.filesReleased = filesReleased_;
  s.bytesReleased = bytesReleased_;
  s.busy = busy_;
  s.secondChances = secondChances_;
  s.errors = errors_;
  s.cacheFull = cacheFullPasses_;
  s.usageBytes = usage_;
  s.lastPassBytes = lastPassBytes_;
  s.lastPassSeconds = lastPassSeconds_;
  return s;
}

}  // namespace hsm::core
