// FanotifyFrontend: serves a cache at a mount point through fanotify pre-content events.
//
// Design note (measured facts in ../shared/KERNEL-FACTS.md)
// - The view is a read-only bind mount of <cache>/tree at the mount point; the daemon does
//   its own I/O through the cache directory's own (unmarked) mount, so it raises no events.
// - The view is built detached (open_tree(OPEN_TREE_CLONE)), marked, made read-only and only
//   then moved onto the mount point: there is no moment at which a reader could open a file
//   through the view without a mark.
// - Two groups, because one mark may not combine pre-content events with FAN_ONDIR (the
//   kernel answers EEXIST): a pre-content group with FAN_PRE_ACCESS for file content, and a
//   content group with FAN_OPEN_PERM | FAN_ONDIR for directory opens (list on demand). The
//   latter also fires for every file open: a file not yet complete gets its missing ranges
//   allocated first (Hydrator::prepareOpen), so that copy tools deciding by st_blocks read it
//   instead of skipping "holes" with SEEK_DATA (which raises no event). An evictable inode
//   mark reports its closes (FAN_CLOSE_NOWRITE, a notification; the kernel merges them):
//   after a close, once no one has it open (a lease tells), what is still missing is given
//   back (Hydrator::releaseAllocation). A complete file gets evictable ignore marks for
//   FAN_PRE_ACCESS and FAN_OPEN_PERM at once (dropped again before a release).
// - A file that is fully present and recorded gets an evictable ignore mark for
//   FAN_PRE_ACCESS: later reads raise no event at all and run at native speed. The mark goes
//   away when the inode is evicted; the next read raises one event, is found full in the
//   index, and the mark is set again.
// - Lookups raise no event: the namespace is populated eagerly (NamespacePopulator).
// - One reader thread reads and dispatches. No thread waits for the remote: a read or open
//   that needs a fetch is parked in the Hydrator (Hydrator::ensureAsync: the event and a
//   table entry, not a thread) and answered by the fetch thread that lands its range, so
//   hits and cold reads of other files are answered while any number wait on a slow
//   source. A parked event whose reader process has exited is answered (EIO) and its fetch
//   cancelled within about a second. Directory opens (which may list remotely) have
//   threads of their own. Every event is a PermissionEvent, answered exactly once; past
//   `maxPending` unanswered events, reading stops (unread events hold no descriptor).
// - A GroupGuard process holds duplicates of both groups: if this process dies, the guard
//   detaches the view and answers what is left with EIO instead of letting it read zeros.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "core/hydrator.h"
#include "core/namespace_populator.h"
#include "frontend/fanotify/group_guard.h"
#include "frontend/fanotify/permission_event.h"
#include "frontend/frontend.h"
#include "util/thread_pool.h"
#include "util/unique_fd.h"

namespace hsm::frontend {

struct FanotifyConfig {
  std::string treePath;    // <cache>/tree, absolute
  std::string mountpoint;  // absolute, canonical
  std::string cacheFsType; // for error messages
  size_t workers = 16;  // threads for directory opens
  // Unanswered events (each holds a descriptor) before reading pauses.
  uint64_t maxPending = 4096;
  // Listings never expire: a listed directory gets an ignore mark and raises no more open
  // events. Otherwise (a listing TTL), see listingTtl.
  bool dirIgnoreMarks = true;
  // With a listing TTL, a directory whose listing stays fresh for longer than the flush
  // period (TTL/4, at least 1 s) plus 1 s still gets an ignore mark, and every flush period
  // all inode marks of the open-event group are flushed: no open after a listing went stale
  // is missed, and a tree walk of fresh directories raises no events (`find` at native speed).
  std::chrono::seconds listingTtl{0};
};

class FanotifyFrontend final : public Frontend {
 public:
  FanotifyFrontend(FanotifyConfig config, core::Hydrator& hydrator,
                   core::NamespacePopulator& populator);
  ~FanotifyFrontend() override;

  Status start() override;
  Status unmount(bool lazy) override;
  void stop() override;
  bool waitUntilUnused(std::chrono::seconds limit) override;
  // Removes the file's FAN_PRE_ACCESS ignore mark: its next read raises an event again.
  Status beforeRelease(int fd) override;
  FrontendStats stats() const override;
  const char* name() const override { return "fanotify"; }
  // Unmounted by someone else: if lazily, files may still be open on the detached view.
  void viewGone() override {
    mounted_ = false;
    detached_ = true;
  }

 private:
  Status createGroups();
  Status mountView();
  void readLoop();
  void readGroup(int groupFd, bool contentGroup);
  void handleContent(const std::shared_ptr<PermissionEvent>& ev, pid_t pid,
                     std::chrono::steady_clock::time_point readAt);
  void answerContent(PermissionEvent& ev, const std::string& path, uint64_t offset,
                     uint64_t count, const Result<bool>& full);
  void handleDirOpen(PermissionEvent& ev);
  void handleFileOpen(const std::shared_ptr<PermissionEvent>& ev, pid_t pid);
  void answerOpen(PermissionEvent& ev, const std::string& path, const Result<bool>& full);
  // Whether the process `pid` (the reader of a parked event) still exists.
  static core::Hydrator::Alive readerAlive(pid_t pid);
  void handleFileClose(UniqueFd fd);
  Result<std::string> relPathOf(int fd) const;
  // The event's path relative to the mount point, or nullopt after denying it with EIO.
  std::optional<std::string> pathOrDeny(PermissionEvent& ev) const;
  void addIgnoreMark(int groupFd, int fd, uint64_t mask);
  std::chrono::seconds flushPeriod() const;

  const FanotifyConfig config_;
  core::Hydrator& hydrator_;
  core::NamespacePopulator& populator_;

  UniqueFd contentGroup_;
  UniqueFd openGroup_;
  UniqueFd wakeFd_;
  GroupGuard guard_;  // holds the groups if this process dies
  std::unique_ptr<ThreadPool> events_;  // content and file-open events, closes
  std::unique_ptr<ThreadPool> dirs_;    // directory opens
  std::thread reader_;
  std::atomic<bool> stopping_{false};
  bool mounted_ = false;
  std::atomic<bool> detached_{false};  // lazily unmounted: paths are relative to the view root
  uint64_t viewMountId_ = 0;  // to find files still open on the view after a lazy unmount
  std::atomic<uint64_t> uniqueViewId_{0};  // the view's unique mount id (util/mount_id.h); 0: unknown

  PercentileHistogram contentLatency_, dirLatency_;
  std::atomic<uint64_t> fileEvents_{0}, dirEvents_{0}, openEvents_{0}, denied_{0},
      ignoreMarks_{0}, pending_{0};
};

}  // namespace hsm::frontend
