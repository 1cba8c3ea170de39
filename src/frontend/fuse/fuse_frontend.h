// FuseFrontend: serves a cache at a mount point through libfuse3 (low-level API).
//
// Design note
// - Serves the same <cache>/tree and index as the fanotify frontend: a cache mounted by
//   either shows the same states, and nothing already present is fetched again. Every
//   attribute comes from the cache tree (fstatat, symlinks never followed; files are
//   sparse at full size, so sizes are full sizes); every content read goes through
//   Hydrator::ensure() first and then pread()s the cache file, so a range that could not
//   be fetched is an error (EIO, ENOSPC, ESTALE), never zeros.
// - Lookups populate lazily: lookup(parent, name) lists `parent` first
//   (NamespacePopulator::ensureListed), so `stat` of a deep path on a fresh mount lists
//   exactly the directories on the way. opendir lists the directory too.
// - Read-only: the mount is made with `ro` and every modifying request answers EROFS.
//   Files found full at open are opened with keep_cache (the kernel keeps their pages).
// - Node ids are this frontend's own (NodeTable: id <-> relative path and version, lookup
//   counts, forget). st_ino and d_ino are the cache tree's inode numbers. A remote change
//   replaces the cache entry with a new inode, and its path then gets a new node id: a
//   file still open on the old version keeps the old size and pages, and its requests
//   that would need the cache entry it no longer has answer ESTALE (getattr, open, read).
// - Revalidation: invalidate(path) (a NamespacePopulator change listener) makes the kernel
//   drop its entry for a changed or removed name and the attributes of the inode it named
//   (fuse_lowlevel_notify_inval_entry / _inode), so the next lookup sees the new version
//   instead of serving stale attributes or pages until the entry timeout. opendir replies
//   only once the invalidations its listing caused were sent, so `ls dir; stat dir/name`
//   sees the new version. A revalidation caused by a lookup cannot wait (the kernel holds
//   the directory's lock that dropping an entry needs): until the notifier thread has sent
//   them (moments later), an inode of a replaced version answers ESTALE, never the new
//   bytes under the old size.
// - Every request is a FuseRequest (fuse_request.h): answered exactly once; one that
//   nothing answered (early return, exception) is answered EIO by its destructor, and
//   each handler has a catch-all.
// - Errors are translated in one place, fuse_errno.h.
//
// Contract
// - Created by cli after the NamespacePopulator has started (the root is listed); the
//   Hydrator, populator and CacheStore must outlive the frontend.
// - start(): fuse_session_new + fuse_session_mount, then runs fuse_session_loop_mt (at
//   most `workers` threads) on its own thread; returns once the kernel's INIT was served,
//   i.e. the mount is live and the loop runs. Errors: the mount's (EPERM, ENOENT for a
//   missing mount point, ...), ETIMEDOUT if INIT never came.
// - unmount(lazy): umount2(UMOUNT_NOFOLLOW [| MNT_DETACH]) as root, `fusermount3 -u [-z]`
//   otherwise. EBUSY (with a message naming the mount point) when busy and not lazy. After
//   a plain unmount the kernel ends the connection and the loop returns by itself; after a
//   lazy one it does so when the last user of the detached mount is gone
//   (waitUntilUnused() waits for exactly that).
// - stop() (and the destructor): detaches the mount if still mounted, ends the loop (if
//   files of a detached mount are still open, the loop thread is woken with kWakeSignal
//   and the connection is closed: their next request fails with ENOTCONN, never zeros),
//   joins it and frees the session. Idempotent. Not to be called from a FUSE request.
// - Threads: start/unmount/stop/waitUntilUnused from one controlling thread; requests are
//   served on libfuse's worker threads, which call Hydrator/NamespacePopulator (no lock of
//   this class is held across them). Invalidations are sent from one notifier thread.
// - Locks: NodeTable::mu_ (rank 50, leaf); stateMu_ (rank 55, leaf: INIT seen, loop done);
//   notifyMu_ (rank 56, leaf: the invalidation queue).
// - Process-wide side effect: start() installs a no-op handler for kWakeSignal
//   (SIGRTMIN+5) without SA_RESTART, used to interrupt the loop thread's sem_wait() in
//   stop(); it is unblocked on the loop thread only. It also routes libfuse's messages
//   (fuse_set_log_func, libfuse's one global) to util/log.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cache/cache_store.h"
#include "core/hydrator.h"
#include "core/namespace_populator.h"
#include "frontend/frontend.h"
#include "frontend/fuse/node_table.h"
#include "util/percentile_histogram.h"

struct fuse_session;
struct fuse_file_info;

namespace hsm::frontend {

struct FuseConfig {
  std::string treePath;    // <cache>/tree, absolute (for messages; I/O goes through CacheStore)
  std::string mountpoint;  // absolute, canonical
  size_t workers = 16;     // most FUSE worker threads (requests served at once)
  std::string fsName = "fanhsm";  // first field of /proc/mounts (commas are replaced)
  bool allowOther = true;  // other users may use the mount (non-root: needs user_allow_other)
  // Kernel caching of names and attributes. The tree only changes when a listing is
  // revalidated: keep these at or below the listing TTL when one is set.
  double entryTimeout = 60.0;
  double attrTimeout = 60.0;
  double negativeTimeout = 60.0;
  bool debug = false;  // libfuse's request trace on stderr
};

class FuseRequest;
struct FuseOps;

class FuseFrontend final : public Frontend {
 public:
  FuseFrontend(FuseConfig config, core::Hydrator& hydrator, core::NamespacePopulator& populator,
               cache::CacheStore& cache);
  ~FuseFrontend() override;
  FuseFrontend(const FuseFrontend&) = delete;
  FuseFrontend& operator=(const FuseFrontend&) = delete;

  Status start() override;
  Status unmount(bool lazy) override;
  void stop() override;
  bool waitUntilUnused(std::chrono::seconds limit) override;
  FrontendStats stats() const override;
  const char* name() const override { return "fuse"; }
  void viewGone() override { mounted_ = false; }

  // Queues a notification that the kernel must drop what it caches of `path` (its entry in
  // the parent directory, the attributes of the inode it names). Thread-safe and never
  // blocks: the kernel takes the parent directory's lock to drop an entry, which a lookup
  // in that directory holds while it waits for the very listing that calls this, so the
  // notifications are sent from the notifier thread. Ignored before start() and after stop().
  void invalidate(const std::string& path);

  static int wakeSignal();  // kWakeSignal

 private:
  friend struct FuseOps;
  struct DirHandle;

  void loop();
  void signalInit();
  // Waits until the loop thread returned, at most `limit`.
  bool waitLoopDone(std::chrono::milliseconds limit);
  void notifyLoop();
  void sendInvalidation(const std::string& path);
  // Waits (at most `limit`) until every invalidation queued so far was sent. Only where
  // the kernel holds no directory lock for the request (opendir, not lookup).
  void waitInvalidationsSent(std::chrono::milliseconds limit);
  void stopNotifier();

  // Request handlers (fuse_frontend.cc). Each answers `req`.
  void lookup(FuseRequest& req, uint64_t parent, const char* name);
  void getattr(FuseRequest& req, uint64_t ino);
  void open(FuseRequest& req, uint64_t ino, fuse_file_info* fi);
  void read(FuseRequest& req, uint64_t ino, size_t size, int64_t off, fuse_file_info* fi);
  void opendir(FuseRequest& req, uint64_t ino, fuse_file_info* fi);
  void readdir(FuseRequest& req, uint64_t ino, size_t size, int64_t off, fuse_file_info* fi,
               bool plus);
  void readlink(FuseRequest& req, uint64_t ino);
  void statfs(FuseRequest& req);
  void getxattr(FuseRequest& req, uint64_t ino, const char* name, size_t size);
  void listxattr(FuseRequest& req, uint64_t ino, size_t size);

  // The path of `ino` or an answer of ESTALE.
  std::optional<std::string> pathOf(FuseRequest& req, uint64_t ino);
  // False if node `ino` stands for another version than `st` (a cache entry replaced since
  // the kernel looked it up).
  bool isCurrent(uint64_t ino, const struct stat& st) const;
  // lstat of a path of the tree, resolved beneath it.
  Status statPath(const std::string& path, struct stat* st) const;
  // The value of user.fanhsm.state for `path` of type `st`, or an errno.
  Result<std::string> stateOf(const std::string& path, const struct stat& st);

  const FuseConfig config_;
  core::Hydrator& hydrator_;
  core::NamespacePopulator& populator_;
  cache::CacheStore& cache_;
  NodeTable nodes_;

  fuse_session* session_ = nullptr;
  std::thread loopThread_;
  bool mounted_ = false;  // attached at the mount point (controlling thread only)
  bool stopped_ = false;  // controlling thread only

  std::mutex stateMu_;  // rank 55 (leaf): initDone_, loopDone_
  std::condition_variable stateCv_;
  bool initDone_ = false;
  bool loopDone_ = false;
  int loopResult_ = 0;

  std::mutex notifyMu_;  // rank 56 (leaf): notifyQueue_, notifyRunning_, counters
  std::condition_variable notifyCv_;      // work queued, or stopping
  std::condition_variable notifySentCv_;  // notifySent_ grew, or stopping
  std::deque<std::string> notifyQueue_;
  bool notifyRunning_ = false;
  uint64_t notifyQueued_ = 0, notifySent_ = 0;
  std::thread notifyThread_;

  std::atomic<uint64_t> reads_{0}, dirOpens_{0}, opens_{0}, denied_{0}, pending_{0};
  PercentileHistogram contentLatency_, dirLatency_;  // read, opendir: arrival to answer
};

}  // namespace hsm::frontend
