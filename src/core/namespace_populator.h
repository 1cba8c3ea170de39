// NamespacePopulator: fills the cache tree with the remote's names, eagerly.
//
// Design note: fanotify has no lookup hook, so `stat /mnt/a/b/c` cannot populate a/b on
// demand. The namespace is therefore listed breadth-first in the background at mount
// (bounded parallelism), directories that users open are listed at once (ensureListed,
// which jumps the queue), and every listing is persistent: a remount resumes with the
// directories still unlisted and lists nothing twice.
//
// Listing one directory: remote list -> CacheStore::applyListing, which creates the
// entries in the cache tree and records them in MetaDb together (see its contract: a
// changed file gets a new inode, never a modified one) and marks the directory listed. A
// crash in between leaves the directory unlisted; listing it again keeps content already
// present.
//
// Revalidation: with a TTL, a directory whose listing is older than the TTL is listed
// again when it is opened (conditionally, where the remote supports it): new names appear,
// names gone from the remote are removed from the tree and the index, files whose version
// changed get a new, empty cache inode. Change listeners hear of every such path (the
// Hydrator forgets its state, a FUSE frontend drops the kernel's cached entry). The
// background crawl never revalidates, so opening one directory never re-crawls a tree.
//
// Scale: memory does not grow with the tree. The crawl queue in memory is bounded
// (queueLimit): subdirectories found while it is full are left to the index, where they
// are unlisted directories; when the queue runs dry the crawler reads the next batch of
// unlisted directories from the index (a cursor over a partial index, in path order), and
// makes another pass if directories were left out since the current pass began. A remount
// therefore starts at once, whatever the number of directories still to list.
//
// Thread-safety: all methods are thread-safe. Listing of one directory is single-flight:
// concurrent ensureListed() calls and the crawler share one listing. Locks: mu_ (rank 40),
// never held across remote or disk I/O; listenersMu_ (rank 45, leaf: only copies the list).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cache/cache_store.h"
#include "remote/remote.h"

namespace hsm::core {

struct CrawlStats {
  uint64_t dirsListed = 0;    // by this daemon
  uint64_t dirsQueued = 0;    // waiting in memory (more may wait in the index)
  uint64_t queuedPeak = 0;    // most directories ever waiting in memory
  uint64_t dirsActive = 0;    // being listed now
  uint64_t entriesAdded = 0;  // names created by this daemon
  uint64_t errors = 0;        // directories that failed to list
  uint64_t skipped = 0;       // remote names left out (bad names, special files)
  uint64_t revalidated = 0;   // listings checked again after the TTL
  std::string startedOffline;  // why the source did not answer at start ("" if it did)
  uint64_t refused = 0;       // listings refused by a ListingLimits bound
  uint64_t names = 0;         // names in the mount (for ListingLimits::maxEntries)
  // Why the crawl is waiting instead of listing ("" if it is not): a full cache
  // filesystem (no space or no inodes) makes it back off, up to a minute at a time.
  std::string stalled;
  uint64_t removed = 0;       // names removed because the remote no longer has them
  bool done = false;          // nothing queued, nothing active
  double seconds = 0;         // since start, or total once done
};

// Who owns what the view shows, and its permission bits: the mount's policy over what the
// source says (docs/SECURITY.md). Applied to every entry before it reaches the cache.
struct ViewPolicy {
  int64_t uid = -1;        // owner of every entry; -1: the source's (local), else root
  int64_t gid = -1;        // group, likewise
  uint32_t fileMode = 0;   // permission bits of every file; 0: the source's
  uint32_t dirMode = 0;    // of every directory; 0: the source's
  // Without fileMode/dirMode: take group and other bits away (an authenticated source's
  // content is not for every local user unless the mount says so).
  bool ownerOnly = false;

  Entry apply(Entry e) const;
};

// Bounds on what a source may make the mount hold (a hostile or broken server can serve
// an endless tree or a listing of millions of names). A listing beyond them is refused with
// an error naming the limit (the directory's open fails; at the root, the mount); the
// rest of the tree is unaffected.
struct ListingLimits {
  uint64_t maxDirEntries = 1'000'000;  // names in one directory
  uint64_t maxEntries = 20'000'000;    // names in the whole mount (checked as listings add)
  unsigned maxDepth = 128;             // directories deeper than this are not listed
};

class NamespacePopulator {
 public:
  // Called with the path of a name whose cached version a listing changed or removed
  // (after the cache tree and index were updated), on the listing's thread, with no lock
  // of the populator held. It must not block on the kernel or on a listing.
  using ChangedFn = std::function<void(const std::string& path)>;
  // `ttl` 0: a listing is never revalidated. `onChanged` (optional) is the first listener.
  // `queueLimit`: directories held in memory for the crawl (at least 1).
  NamespacePopulator(remote::Remote& remote, cache::CacheStore& cache, size_t parallel,
                     std::chrono::seconds ttl = std::chrono::seconds(0),
                     ChangedFn onChanged = nullptr, size_t queueLimit = 10000,
                     ViewPolicy policy = {}, ListingLimits limits = {});
  ~NamespacePopulator();  // stops the crawler
  NamespacePopulator(const NamespacePopulator&) = delete;
  NamespacePopulator& operator=(const NamespacePopulator&) = delete;

  // Records the root, lists it now (so the mount is usable at once), then starts the
  // background crawl of every directory not yet listed with `parallel` threads (0: no
  // background crawl; directories are listed only when opened). If the source does not
  // answer, a cache whose root was listed before starts anyway (offline: what it holds is
  // served, the rest fails until the source answers; stats().startedOffline says why); a
  // new cache fails with the source's error.
  Status start();
  void stop();

  // Blocks until `dir` is listed (listing it now if needed; with `revalidate`, also if
  // its listing is older than the TTL). ENOENT if `dir` is not a directory of the tree;
  // the remote's error if listing fails (a stale listing is kept then, and served).
  // `listedAt`, if given, receives when the listing served was made (s since the epoch;
  // 0 if unknown, e.g. a stale listing kept because the remote failed).
  Status ensureListed(const std::string& dir, bool revalidate = true, int64_t* listedAt = nullptr);

  // Adds a change listener, called after those added before it. Thread-safe; may be
  // called while listings run (one that is under way may or may not tell the new listener).
  // Listeners are never removed: each must stay callable until stop() has returned and no
  // ensureListed() call is under way.
  void addChangedListener(ChangedFn fn);

  CrawlStats stats() const;

 private:
  void notifyChanged(const std::string& path);

  Status listDir(const std::string& dir, const std::string& validator, bool relist);
  void crawlLoop();
  // Reads the next batch of unlisted directories from the index into the queue. Called by
  // one crawler at a time (refilling_), with `lock` held on entry and exit.
  void refillLocked(std::unique_lock<std::mutex>& lock);
  // Queues `dir` if there is room; otherwise leaves it to a pass over the index.
  void enqueueLocked(std::string dir);
  bool doneLocked() const;
  void finishLocked();  // records the end of the crawl (once)

  remote::Remote& remote_;
  cache::CacheStore& cache_;
  const ViewPolicy policy_;
  const ListingLimits limits_;
  const size_t parallel_;
  const std::chrono::seconds ttl_;
  mutable std::mutex listenersMu_;  // rank 45 (leaf): listeners_
  std::vector<std::shared_ptr<const ChangedFn>> listeners_;
  const size_t queueLimit_;
  const size_t batch_;

  mutable std::mutex mu_;  // rank 40
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::set<std::string> active_;          // being listed now
  std::map<std::string, Status> failed_;  // failed in this run (the crawler skips them)
  size_t crawling_ = 0;  // crawler threads between dequeue and done
  bool scanning_ = false;   // a pass over the index's unlisted directories is under way
  bool rescan_ = false;     // directories were left out of the queue during this pass
  bool refilling_ = false;  // a crawler is reading the next batch
  std::optional<std::string> scanCursor_;  // the pass's position (last path read)
  bool stopping_ = false;
  uint64_t queuedPeak_ = 0;
  uint64_t dirsListed_ = 0, entriesAdded_ = 0, skipped_ = 0, revalidated_ = 0, removed_ = 0;
  uint64_t refused_ = 0;
  uint64_t names_ = 0;      // names in the mount: the index's at start, plus new listings
  std::string stalled_;     // CrawlStats::stalled
  std::string offline_;  // the source's error at start, if it started offline
  std::chrono::seconds stallBackoff_{0};
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point finished_;
  bool finishedSet_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace hsm::core
