#include "core/namespace_populator.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <set>

#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::core {

Entry ViewPolicy::apply(Entry e) const {
  // The source's ACL speaks of its own owners and modes: not of ones the mount imposes.
  if (uid >= 0 || gid >= 0 || fileMode != 0 || dirMode != 0 || ownerOnly) e.acl.clear();
  if (uid >= 0 || e.uid < 0) e.uid = uid >= 0 ? uid : 0;
  if (gid >= 0 || e.gid < 0) e.gid = gid >= 0 ? gid : 0;
  const uint32_t forced = e.type == EntryType::kDir ? dirMode : (e.type == EntryType::kFile ? fileMode : 0);
  if (forced != 0) {
    e.mode = forced;
  } else if (ownerOnly && e.type != EntryType::kSymlink) {
    e.mode &= ~uint32_t{077};
  }
  return e;
}

NamespacePopulator::NamespacePopulator(remote::Remote& remote, cache::CacheStore& cache,
                                       size_t parallel, std::chrono::seconds ttl,
                                       ChangedFn onChanged, size_t queueLimit, ViewPolicy policy,
                                       ListingLimits limits)
    : remote_(remote),
      cache_(cache),
      policy_(policy),
      limits_(limits),
      parallel_(parallel),
      ttl_(ttl),
      queueLimit_(std::max<size_t>(1, queueLimit)),
      batch_(std::min<size_t>(1000, std::max<size_t>(1, queueLimit))) {
  if (onChanged) addChangedListener(std::move(onChanged));
}

void NamespacePopulator::addChangedListener(ChangedFn fn) {
  if (!fn) return;
  std::lock_guard lock(listenersMu_);
  listeners_.push_back(std::make_shared<const ChangedFn>(std::move(fn)));
}

void NamespacePopulator::notifyChanged(const std::string& path) {
  std::vector<std::shared_ptr<const ChangedFn>> listeners;
  {
    std::lock_guard lock(listenersMu_);
    listeners = listeners_;
  }
  for (const auto& fn : listeners) (*fn)(path);
}

namespace {
int64_t nowSec() { return static_cast<int64_t>(std::time(nullptr)); }
}  // namespace

NamespacePopulator::~NamespacePopulator() { stop(); }

Status NamespacePopulator::start() {
  started_ = std::chrono::steady_clock::now();
  auto re = remote_.rootEntry();
  if (re) {
    HSM_RETURN_IF_ERROR(cache_.addRoot(policy_.apply(*re)));
  } else {
    // The source does not answer. A cache that has listed the root before serves what it
    // holds (an offline start: a laptop, a boot before the network); a new one cannot.
    auto root = cache_.entry("");
    if (!root || !root->has_value() || (*root)->state != cache::kDirListed) return re.status();
    log::warn("the source is unreachable ({}): serving what the cache holds; reads of what it "
              "lacks fail until the source answers", re.status().message());
    std::lock_guard lock(mu_);
    offline_ = re.status().message();
  }
  if (auto st = cache_.stats()) {
    std::lock_guard lock(mu_);
    names_ = st->files + st->dirs + st->symlinks;
  }
  HSM_RETURN_IF_ERROR(ensureListed(""));
  {
    // Whatever is still unlisted (a first mount: the root's subdirectories; a remount:
    // what the last crawl did not reach) is read from the index in batches by the crawlers.
    std::lock_guard lock(mu_);
    if (parallel_ > 0) {
      scanning_ = true;
      scanCursor_.reset();
    }
    if (doneLocked()) {
      finished_ = std::chrono::steady_clock::now();
      finishedSet_ = true;
    }
  }
  for (size_t i = 0; i < parallel_; ++i) threads_.emplace_back([this] { crawlLoop(); });
  return Status::ok();
}

bool NamespacePopulator::doneLocked() const {
  return queue_.empty() && active_.empty() && crawling_ == 0 && !scanning_ && !refilling_;
}

void NamespacePopulator::enqueueLocked(std::string dir) {
  if (parallel_ == 0) return;  // no crawler: directories are listed when opened
  if (queue_.size() < queueLimit_) {
    queue_.push_back(std::move(dir));
    queuedPeak_ = std::max<uint64_t>(queuedPeak_, queue_.size());
  } else if (scanning_) {
    rescan_ = true;  // it may sort before the cursor: the pass must be made again
  } else {
    scanning_ = true;
    scanCursor_.reset();
  }
}

void NamespacePopulator::refillLocked(std::unique_lock<std::mutex>& lock) {
  refilling_ = true;
  const std::optional<std::string> after = scanCursor_;
  lock.unlock();  // the index's lock ranks below ours
  auto batch = cache_.unlistedDirs(batch_, after);
  lock.lock();
  refilling_ = false;
  if (!batch) {
    log::warn("crawl: reading unlisted directories: {}", batch.status().message());
    scanning_ = false;
    return;
  }
  if (batch->empty()) {
    if (rescan_) {
      rescan_ = false;
      scanCursor_.reset();
    } else {
      scanning_ = false;
    }
    return;
  }
  // Crawlers may have queued directories while the index was read: stay within the bound
  // and leave the rest to the next refill (the cursor stops at the last one taken).
  for (auto& d : *batch) {
    if (queue_.size() >= queueLimit_) break;
    scanCursor_ = d;
    if (active_.count(d) == 0 && failed_.count(d) == 0) queue_.push_back(std::move(d));
  }
  queuedPeak_ = std::max<uint64_t>(queuedPeak_, queue_.size());
}

void NamespacePopulator::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

Status NamespacePopulator::ensureListed(const std::string& dir, bool revalidate,
                                        int64_t* listedAt) {
  if (listedAt) *listedAt = 0;
  {
    std::unique_lock lock(mu_);
    // Wait for a listing of this directory already under way.
    cv_.wait(lock, [&] { return stopping_ || active_.count(dir) == 0; });
    if (stopping_) return Status::error(ECANCELED, "daemon stopping");
  }
  auto row = cache_.entry(dir);
  if (!row) return row.status();
  if (!row->has_value() || (*row)->type != EntryType::kDir) {
    return Status::error(ENOENT, fmt::format("'{}' is not a directory of the mirrored tree",
                                             displayPath(dir)));
  }
  const bool listed = (*row)->state == cache::kDirListed;
  const bool stale = listed && revalidate && ttl_.count() > 0 &&
                     nowSec() - (*row)->listedAt >= ttl_.count();
  if (listed && !stale) {
    if (listedAt) *listedAt = (*row)->listedAt;
    return Status::ok();
  }
  {
    std::unique_lock lock(mu_);
    if (active_.count(dir) != 0) {
      cv_.wait(lock, [&] { return stopping_ || active_.count(dir) == 0; });
      auto it = failed_.find(dir);
      if (it != failed_.end()) return it->second;
      if (listedAt) *listedAt = nowSec();
      return Status::ok();
    }
    active_.insert(dir);
  }
  if (!listed) {
    // Another listing may have finished between our read of the row and our claim (the
    // crawl can hold a directory twice: queued when found and read back from the index).
    auto again = cache_.entry(dir);
    if (again && again->has_value() && (*again)->state == cache::kDirListed) {
      if (listedAt) *listedAt = (*again)->listedAt;
      {
        std::lock_guard lock(mu_);
        active_.erase(dir);
      }
      cv_.notify_all();
      return Status::ok();
    }
  }
  Status s = listDir(dir, listed ? (*row)->version : std::string(), listed);
  if (s && listedAt) *listedAt = nowSec();
  if (!s && listed) {
    // The remote is unreachable or failing: keep serving the listing we have.
    log::warn("revalidating '{}': {}; keeping the cached listing", displayPath(dir), s.message());
    s = Status::ok();
  }
  {
    std::lock_guard lock(mu_);
    active_.erase(dir);
    if (!s) {
      failed_[dir] = s;
    } else {
      failed_.erase(dir);
    }
  }
  cv_.notify_all();
  return s;
}

Status NamespacePopulator::listDir(const std::string& dir, const std::string& validator,
                                   bool relist) {
  const auto depth = dir.empty() ? 0 : static_cast<unsigned>(std::count(dir.begin(), dir.end(), '/') + 1);
  auto refuse = [&](std::string why) {
    std::lock_guard lock(mu_);
    refused_++;
    return Status::error(EFBIG, fmt::format("'{}' not listed: {}", displayPath(dir), why));
  };
  if (depth >= limits_.maxDepth) {
    return refuse(fmt::format("it is {} directories deep, the limit (--max-depth) is {}", depth,
                              limits_.maxDepth));
  }
  auto listing = remote_.list(dir, validator);
  if (!listing) return listing.status();
  const uint64_t count = listing->entries.size();
  if (count > limits_.maxDirEntries) {
    return refuse(fmt::format("it has {} entries, the limit (--max-dir-entries) is {}", count,
                              limits_.maxDirEntries));
  }
  if (!relist) {
    std::lock_guard lock(mu_);
    if (names_ + count > limits_.maxEntries) {
      refused_++;
      return Status::error(EFBIG, fmt::format("'{}' not listed: its {} entries would take the mount "
                                              "past {} names (--max-entries)",
                                              displayPath(dir), count, limits_.maxEntries));
    }
  }
  const int64_t now = nowSec();
  if (listing->notModified) {
    HSM_RETURN_IF_ERROR(cache_.touchListing(dir, now));
    std::lock_guard lock(mu_);
    revalidated_++;
    return Status::ok();
  }
  for (auto& e : listing->entries) e = policy_.apply(std::move(e));
  auto applied = cache_.applyListing(dir, listing->entries, listing->validator, now, relist);
  if (!applied) return applied.status().withContext(fmt::format("listing '{}'", displayPath(dir)));
  for (const auto& path : applied->changed) {
    notifyChanged(path);
    log::info("'{}' changed at the remote: it has a new, empty cache file", path);
  }
  for (const auto& path : applied->removed) {
    notifyChanged(path);
    log::info("'{}' is gone from the remote: removed", path);
  }
  std::vector<std::string>& subdirs = applied->subdirs;
  const uint64_t added = listing->entries.size();
  const uint64_t removed = applied->removed.size();
  for (const auto& skip : listing->skipped) {
    log::warn("'{}': left out '{}'", displayPath(dir), skip);
  }
  std::lock_guard lock(mu_);
  dirsListed_++;
  if (relist) revalidated_++;
  if (!relist) names_ += added;
  removed_ += removed;
  entriesAdded_ += added;
  skipped_ += listing->skipped.size();
  for (auto& d : subdirs) enqueueLocked(std::move(d));
  cv_.notify_all();
  return Status::ok();
}

void NamespacePopulator::crawlLoop() {
  while (true) {
    std::string dir;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || (scanning_ && !refilling_); });
      if (stopping_) return;
      if (queue_.empty()) {
        refillLocked(lock);
        if (doneLocked()) finishLocked();
        cv_.notify_all();
        continue;
      }
      dir = std::move(queue_.front());
      queue_.pop_front();
      if (active_.count(dir) != 0) continue;  // ensureListed() has it
      ++crawling_;
    }
    Status s = ensureListed(dir, /*revalidate=*/false);
    if (!s && s.code() != ECANCELED) {
      log::warn("crawl: cannot list '{}': {}", displayPath(dir), s.message());
    }
    std::unique_lock lock(mu_);
    if (!s && (s.code() == ENOSPC || s.code() == EDQUOT)) {
      // The cache filesystem is full (space or inodes): listing more cannot work until
      // something is freed. Back off (1 s, doubling, at most a minute) instead of failing
      // every queued directory in a loop; opened directories are still tried at once.
      stallBackoff_ = std::min(std::chrono::seconds(60), std::max(std::chrono::seconds(1), stallBackoff_ * 2));
      stalled_ = fmt::format("the cache filesystem is full ({}); listing again in {} s",
                             s.message(), stallBackoff_.count());
      log::warn("crawl: {}", stalled_);
      failed_.erase(dir);  // not this directory's fault: it is listed again later
      enqueueLocked(dir);
      cv_.wait_for(lock, stallBackoff_, [&] { return stopping_; });
    } else if (s) {
      stallBackoff_ = std::chrono::seconds(0);
      stalled_.clear();
    }
    --crawling_;
    if (doneLocked()) finishLocked();
    cv_.notify_all();
  }
}

void NamespacePopulator::finishLocked() {
  if (finishedSet_) return;
  finished_ = std::chrono::steady_clock::now();
  finishedSet_ = true;
  const double secs = std::chrono::duration<double>(finished_ - started_).count();
  log::info("crawl: done, {} directories and {} names in {:.2f} s ({:.0f} names/s)", dirsListed_,
            entriesAdded_, secs, secs > 0 ? static_cast<double>(entriesAdded_) / secs : 0.0);
}

CrawlStats NamespacePopulator::stats() const {
  // Without crawlers the namespace is complete only once nothing is left unlisted (one
  // lookup in the partial index, before our lock: the index's lock ranks below it).
  bool unlistedLeft = false;
  if (parallel_ == 0) {
    auto left = cache_.unlistedDirs(1);
    unlistedLeft = !left || !left->empty();
  }
  std::lock_guard lock(mu_);
  CrawlStats s;
  s.dirsListed = dirsListed_;
  s.dirsQueued = queue_.size();
  s.queuedPeak = queuedPeak_;
  s.dirsActive = active_.size();
  s.entriesAdded = entriesAdded_;
  s.errors = failed_.size();
  s.skipped = skipped_;
  s.revalidated = revalidated_;
  s.removed = removed_;
  s.refused = refused_;
  s.names = names_;
  s.stalled = stalled_;
  s.startedOffline = offline_;
  s.done = doneLocked() && !unlistedLeft;
  auto end = s.done && finishedSet_ ? finished_ : std::chrono::steady_clock::now();
  s.seconds = std::chrono::duration<double>(end - started_).count();
  return s;
}

}  // namespace hsm::core
