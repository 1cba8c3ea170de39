#include "frontend/fanotify/fanotify_frontend.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "frontend/fanotify/fanotify_defs.h"
#include "frontend/fanotify/view_usage.h"
#include "util/log.h"
#include "util/mount_id.h"
#include "util/rel_path.h"

namespace hsm::frontend {

FanotifyFrontend::FanotifyFrontend(FanotifyConfig config, core::Hydrator& hydrator,
                                   core::NamespacePopulator& populator)
    : config_(std::move(config)), hydrator_(hydrator), populator_(populator) {}

FanotifyFrontend::~FanotifyFrontend() { stop(); }

Status FanotifyFrontend::createGroups() {
  const unsigned flags = FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS;
  const unsigned eventFlags = O_RDONLY | O_LARGEFILE | O_CLOEXEC;
  int g = ::fanotify_init(FAN_CLASS_PRE_CONTENT | flags, eventFlags);
  if (g < 0) {
    if (errno == EPERM) {
      return Status::error(EPERM, "fanotify_init: permission denied: fanhsm mount needs root "
                                  "(CAP_SYS_ADMIN) for fanotify pre-content events");
    }
    return Status::fromErrno(errno, "fanotify_init (pre-content class)");
  }
  contentGroup_.reset(g);
  g = ::fanotify_init(FAN_CLASS_CONTENT | flags, eventFlags);
  if (g < 0) return Status::fromErrno(errno, "fanotify_init (content class)");
  openGroup_.reset(g);
  int w = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w < 0) return Status::fromErrno(errno, "eventfd");
  wakeFd_.reset(w);
  return Status::ok();
}

Status FanotifyFrontend::mountView() {
  UniqueFd tree(::open_tree(AT_FDCWD, config_.treePath.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (!tree) return Status::fromErrno(errno, fmt::format("open_tree '{}'", config_.treePath));
  // fanotify_mark() does not take O_PATH descriptors: open the clone's root for real.
  UniqueFd root(::openat(tree.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) return Status::fromErrno(errno, "open view root");
  if (::fanotify_mark(contentGroup_.get(), FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_PRE_ACCESS,
                      root.get(), nullptr) != 0) {
    int err = errno;
    if (err == EOPNOTSUPP || err == EINVAL || err == ENOSYS) {
      return Status::error(
          EOPNOTSUPP,
          fmt::format("the cache directory '{}' is on {}, which does not support fanotify "
                      "pre-content events (FAN_PRE_ACCESS needs Linux 6.14+ and ext4, xfs or "
                      "btrfs; tmpfs has none): put the cache on such a filesystem with --cache "
                      "DIR{}, or mount with --frontend fuse, which works on any cache filesystem",
                      config_.treePath.substr(0, config_.treePath.rfind('/')), config_.cacheFsType,
                      config_.cacheFsType == "tmpfs" ? "" : ", or check the kernel version"));
    }
    return Status::fromErrno(err, "fanotify_mark FAN_PRE_ACCESS on the view");
  }
  if (::fanotify_mark(openGroup_.get(), FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_PERM | FAN_ONDIR,
                      root.get(), nullptr) != 0) {
    return Status::fromErrno(errno, "fanotify_mark FAN_OPEN_PERM on the view");
  }
  root.reset();
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (::mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    return Status::fromErrno(errno, "make the view read-only");
  }
  if (::move_mount(tree.get(), "", AT_FDCWD, config_.mountpoint.c_str(),
                   MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return Status::fromErrno(errno, fmt::format("mount the view on '{}'", config_.mountpoint));
  }
  mounted_ = true;
  if (auto id = mountIdOf(config_.mountpoint)) viewMountId_ = *id;
  if (auto id = uniqueMountId(tree.get())) uniqueViewId_ = *id;
  guard_.setViewMountId(viewMountId_);
  return Status::ok();
}

bool FanotifyFrontend::waitUntilUnused(std::chrono::seconds limit) {
  if (viewMountId_ == 0) return false;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    size_t open = openFdsOnMount(viewMountId_);
    if (open == 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      log::error("{} file(s) of the detached view are still open after {} s; stopping anyway: "
                 "their unfetched ranges can now read as zeros",
                 open, limit.count());
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Status FanotifyFrontend::start() {
  HSM_RETURN_IF_ERROR(createGroups());
  auto guard = GroupGuard::spawn(contentGroup_.get(), openGroup_.get(), config_.mountpoint);
  if (!guard) return guard.status();
  guard_ = std::move(*guard);
  // Content and file-open events never wait for the remote (they are parked in the
  // Hydrator): a few threads answer them. Directory opens may list remotely: their own.
  events_ = std::make_unique<ThreadPool>(4, "fanhsm-event");
  dirs_ = std::make_unique<ThreadPool>(config_.workers, "fanhsm-dir");
  reader_ = std::thread([this] { readLoop(); });
  Status s = mountView();
  if (!s) stop();
  return s;
}

Status FanotifyFrontend::unmount(bool lazy) {
  if (!mounted_) return Status::ok();
  int flags = UMOUNT_NOFOLLOW | (lazy ? MNT_DETACH : 0);
  // Set before the detach: an event of an open file can arrive (with a path from the
  // detached view's root) as soon as umount2 has detached it, before it returns here.
  // While the view is still attached its paths are under the mount point and match first.
  if (lazy) detached_ = true;
  if (::umount2(config_.mountpoint.c_str(), flags) != 0) {
    const int err = errno;
    detached_ = false;
    if (err == EBUSY) {
      return Status::error(EBUSY, fmt::format("'{}' is busy: files or directories under it are "
                                              "in use (see `fuser -vm {}`)",
                                              config_.mountpoint, config_.mountpoint));
    }
    return Status::fromErrno(err, fmt::format("unmount '{}'", config_.mountpoint));
  }
  mounted_ = false;
  return Status::ok();
}

void FanotifyFrontend::stop() {
  if (stopping_.exchange(true)) return;
  if (mounted_) {
    // Never close the groups under a mounted view (readers would see zeros): detach it.
    Status s = unmount(true);
    if (!s) log::error("{}", s.message());
  }
  if (wakeFd_) {
    uint64_t one = 1;
    ssize_t n = ::write(wakeFd_.get(), &one, sizeof one);
    (void)n;
  }
  if (reader_.joinable()) reader_.join();
  // Queued events are denied with EIO by their destructors; parked ones by the Hydrator,
  // before the groups close (a late answer must never go to a reused descriptor number).
  if (events_) events_->stop();
  if (dirs_) dirs_->stop();
  hydrator_.shutdown();
  guard_.release();  // a clean stop: the guard must not keep the groups alive
  contentGroup_.reset();
  openGroup_.reset();
}

void FanotifyFrontend::readLoop() {
  struct pollfd fds[3] = {{contentGroup_.get(), POLLIN, 0},
                          {openGroup_.get(), POLLIN, 0},
                          {wakeFd_.get(), POLLIN, 0}};
  bool overBudgetLogged = false;
  const auto period = flushPeriod();
  auto nextFlush = std::chrono::steady_clock::now() + period;
  while (!stopping_) {
    int timeoutMs = -1;
    if (period.count() > 0) {
      auto now = std::chrono::steady_clock::now();
      if (now >= nextFlush) {
        // Directory ignore marks must not outlive their listing's freshness (see config).
        if (::fanotify_mark(openGroup_.get(), FAN_MARK_FLUSH, 0, AT_FDCWD, nullptr) != 0) {
          log::warn("flushing directory ignore marks: {}", std::strerror(errno));
        }
        nextFlush = now + period;
      }
      timeoutMs = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(nextFlush - now).count() + 1);
    }
    // Past the budget of unanswered events, stop reading (unread events hold no
    // descriptor) and look again every 50 ms.
    const bool overBudget = pending_ >= config_.maxPending;
    fds[0].events = fds[1].events = overBudget ? 0 : POLLIN;
    if (overBudget) {
      if (!overBudgetLogged) {
        log::warn("{} kernel requests wait for the source; reading no more until some are "
                  "answered", pending_.load());
      }
      timeoutMs = timeoutMs < 0 ? 50 : std::min(timeoutMs, 50);
    }
    overBudgetLogged = overBudget;
    int n = ::poll(fds, 3, timeoutMs);
    if (n < 0) {
      if (errno == EINTR) continue;
      log::error("poll on fanotify groups: {}", std::strerror(errno));
      return;
    }
    if (fds[2].revents != 0) return;
    if (fds[0].revents & POLLIN) readGroup(contentGroup_.get(), true);
    if (fds[1].revents & POLLIN) readGroup(openGroup_.get(), false);
  }
}

void FanotifyFrontend::readGroup(int groupFd, bool contentGroup) {
  alignas(struct fanotify_event_metadata) char buf[64 * 1024];
  // Events not yet read hold no descriptor: past the budget of unanswered ones, reading
  // stops until some are answered (readLoop polls again then).
  while (pending_ < config_.maxPending) {
    ssize_t len = ::read(groupFd, buf, sizeof buf);
    const auto readAt = std::chrono::steady_clock::now();
    if (len < 0) {
      if (errno != EAGAIN && errno != EINTR) log::error("read fanotify: {}", std::strerror(errno));
      return;
    }
    auto* m = reinterpret_cast<struct fanotify_event_metadata*>(buf);
    for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
      if (m->vers != FANOTIFY_METADATA_VERSION) {
        log::error("fanotify metadata version {} unknown", m->vers);
        std::abort();  // cannot answer events we cannot parse
      }
      if (m->mask & FAN_Q_OVERFLOW) {
        log::error("fanotify queue overflow");
        continue;
      }
      if (m->fd < 0) continue;
      if (!contentGroup && (m->mask & FAN_CLOSE_NOWRITE) != 0 && (m->mask & FAN_OPEN_PERM) == 0) {
        // A notification (no answer): the last close of an allocated file gives back what
        // is still missing. The daemon's own closes (private path, same inode) do not count.
        auto fd = std::make_shared<UniqueFd>(m->fd);
        if (m->pid != ::getpid()) events_->post([this, fd] { handleFileClose(std::move(*fd)); });
        continue;
      }
      auto ev = std::make_shared<PermissionEvent>(groupFd, m->fd, m->mask,
                                                  /*errnoReplies=*/contentGroup, &denied_, &pending_);
      const pid_t pid = m->pid;
      if (contentGroup) {
        // Info records follow the metadata; the RANGE record gives the byte range.
        size_t off = m->metadata_len;
        while (off + sizeof(struct fanotify_event_info_header) <= m->event_len) {
          auto* hdr = reinterpret_cast<struct fanotify_event_info_header*>(
              reinterpret_cast<char*>(m) + off);
          if (hdr->len == 0 || off + hdr->len > m->event_len) break;
          if (hdr->info_type == FAN_EVENT_INFO_TYPE_RANGE && hdr->len >= sizeof(fan::RangeInfo)) {
            fan::RangeInfo ri;
            std::memcpy(&ri, hdr, sizeof ri);
            ev->setRange(ri.offset, ri.count);
          }
          off += hdr->len;
        }
        fileEvents_++;
        events_->post([this, ev, pid, readAt] { handleContent(ev, pid, readAt); });
        continue;
      }
      struct stat st {};
      if (::fstat(ev->fd(), &st) == 0 && S_ISDIR(st.st_mode)) {
        // Listing may take a remote call: directory opens have threads of their own.
        dirEvents_++;
        dirs_->post([this, ev, readAt] {
          handleDirOpen(*ev);
          dirLatency_.record(std::chrono::steady_clock::now() - readAt);
        });
        continue;
      }
      // A file open: a file not yet complete stops looking sparse before the opener can
      // fstat it (see handleFileOpen); content itself is checked at read time.
      openEvents_++;
      events_->post([this, ev, pid] { handleFileOpen(ev, pid); });
    }
  }
}

void FanotifyFrontend::addIgnoreMark(int groupFd, int fd, uint64_t mask) {
  if (::fanotify_mark(groupFd, FAN_MARK_ADD | FAN_MARK_IGNORE_SURV | FAN_MARK_EVICTABLE, mask, fd,
                      nullptr) != 0) {
    log::warn("fanotify ignore mark: {}", std::strerror(errno));
    return;
  }
  ignoreMarks_++;
}

Status FanotifyFrontend::beforeRelease(int fd) {
  // ENOENT: no ignore mark (never full, or the kernel evicted the evictable mark). Any
  // other failure must keep the content: reads of a marked file would see the holes. The
  // open mark goes too: the next open must allocate the missing ranges again.
  for (auto [group, mask] : {std::pair{contentGroup_.get(), uint64_t{FAN_PRE_ACCESS}},
                             std::pair{openGroup_.get(), uint64_t{FAN_OPEN_PERM}}}) {
    if (::fanotify_mark(group, FAN_MARK_REMOVE | FAN_MARK_IGNORE, mask, fd, nullptr) != 0 &&
        errno != ENOENT) {
      return Status::fromErrno(errno, "removing the fanotify ignore mark");
    }
  }
  return Status::ok();
}

Result<std::string> FanotifyFrontend::relPathOf(int fd) const {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[PATH_MAX + 1];
  ssize_t n = ::readlink(link, buf, PATH_MAX);
  if (n < 0) return Status::fromErrno(errno, "readlink event fd");
  std::string_view p(buf, static_cast<size_t>(n));
  const std::string& mp = config_.mountpoint;
  if (p == mp) return std::string();
  if (p.size() > mp.size() + 1 && p.substr(0, mp.size()) == mp && p[mp.size()] == '/') {
    return std::string(p.substr(mp.size() + 1));
  }
  if (mp == "/" && p.size() > 1) return std::string(p.substr(1));
  // A detached view has no place in the namespace: the kernel prints paths from its root.
  // Detached by someone else (`umount -l`) the daemon may not know yet: the kernel does.
  const bool detached = detached_ || (uniqueViewId_ != 0 && !mountInNamespace(uniqueViewId_));
  if (detached && !p.empty() && p[0] == '/') return std::string(p.substr(1));
  return Status::error(EIO, fmt::format("event for '{}' outside the mount point", p));
}

std::optional<std::string> FanotifyFrontend::pathOrDeny(PermissionEvent& ev) const {
  auto path = relPathOf(ev.fd());
  if (path) return std::move(*path);
  log::warn("{}", path.status().message());
  ev.deny(EIO);
  return std::nullopt;
}

void FanotifyFrontend::handleContent(const std::shared_ptr<PermissionEvent>& evp, pid_t pid,
                                     std::chrono::steady_clock::time_point readAt) {
  PermissionEvent& ev = *evp;
  try {
    // The inode the reader holds: after a change at the remote the name refers to a new
    // one, and the old one must not be filled (nor the new one in its place). A replaced
    // inode that is complete reads as the version it was opened at, whole; any other fails
    // (docs/SEMANTICS.md, "Changes").
    struct stat st {};
    if (::fstat(ev.fd(), &st) != 0) {
      log::warn("read: fstat of the event's file: {}", std::strerror(errno));
      ev.deny(EIO);
      return;
    }
    const bool replaced = st.st_nlink == 0;
    if (replaced && (cache::inodeComplete(ev.fd()) ||
                     hydrator_.completeReplaced(static_cast<uint64_t>(st.st_ino)))) {
      addIgnoreMark(contentGroup_.get(), ev.fd(), FAN_PRE_ACCESS);
      ev.allow();
      return;
    }
    auto path = pathOrDeny(ev);
    if (!path) return;
    uint64_t offset = ev.hasRange() ? ev.offset() : 0;
    uint64_t count = ev.hasRange() ? ev.count() : UINT64_MAX;
    // A count of 0 is the kernel's "to the end of the file": a clone (FICLONE, what `cp`
    // tries first on xfs and btrfs) reports [0, +0). A zero-length read looks the same and
    // pays for the rest of the file: the two cannot be told apart.
    if (count == 0) count = UINT64_MAX;
    if (replaced) {
      log::warn("read '{}': the file changed at the remote while it was open", *path);
      ev.deny(EIO);
      return;
    }
    // Parked, not waited for: the answer comes from the fetch thread that lands the range.
    hydrator_.ensureAsync(
        *path, offset, count, static_cast<uint64_t>(st.st_ino),
        [this, evp, p = *path, offset, count, readAt](Result<bool> full) {
          answerContent(*evp, p, offset, count, full);
          contentLatency_.record(std::chrono::steady_clock::now() - readAt);
        },
        readerAlive(pid));
  } catch (const std::exception& e) {
    log::error("unexpected error serving a read: {}", e.what());
    if (!ev.answered()) ev.deny(EIO);
  }
}

void FanotifyFrontend::answerContent(PermissionEvent& ev, const std::string& path, uint64_t offset,
                                     uint64_t count, const Result<bool>& full) {
  if (ev.answered()) return;
  if (!full) {
    if (full.status().code() != ECANCELED) {
      log::warn("read '{}' [{}, +{}): {}", path, offset, count, full.status().message());
    }
    ev.deny(fanotifyErrno(full.status().code()));
    return;
  }
  if (*full) addIgnoreMark(contentGroup_.get(), ev.fd(), FAN_PRE_ACCESS);
  ev.allow();
}

core::Hydrator::Alive FanotifyFrontend::readerAlive(pid_t pid) {
  // A pidfd, opened at the first check (the sync thread's, a fraction of a second after
  // the request was parked): most requests are answered before and cost no descriptor.
  // A process gone (or not visible) is a reader that no longer waits.
  struct Reader {
    pid_t pid;
    std::mutex mu;
    UniqueFd pidfd;
    bool opened = false;
  };
  auto r = std::make_shared<Reader>();
  r->pid = pid;
  return [r] {
    std::lock_guard lock(r->mu);
    if (!r->opened) {
      r->opened = true;
      int fd = static_cast<int>(::syscall(SYS_pidfd_open, r->pid, 0));
      if (fd < 0) return errno != ESRCH;  // EMFILE and the like: assume it still waits
      r->pidfd.reset(fd);
    }
    if (!r->pidfd) return true;
    struct pollfd p = {r->pidfd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;  // readable once the process has exited
  };
}

void FanotifyFrontend::handleFileOpen(const std::shared_ptr<PermissionEvent>& evp, pid_t pid) {
  PermissionEvent& ev = *evp;
  try {
    auto path = pathOrDeny(ev);
    if (!path) return;
    struct stat st {};
    if (::fstat(ev.fd(), &st) != 0) {
      log::warn("open '{}': fstat of the event's file: {}", *path, std::strerror(errno));
      ev.deny(EIO);
      return;
    }
    const auto ino = static_cast<uint64_t>(st.st_ino);
    if (st.st_nlink == 0) {  // replaced by a change at the remote meanwhile: nothing to do
      ev.allow();
      return;
    }
    hydrator_.prepareOpenAsync(
        *path, ino, [this, evp, p = *path](Result<bool> full) { answerOpen(*evp, p, full); },
        readerAlive(pid));
  } catch (const std::exception& e) {
    log::error("unexpected error serving a file open: {}", e.what());
    if (!ev.answered()) ev.deny(EIO);
  }
}

void FanotifyFrontend::answerOpen(PermissionEvent& ev, const std::string& path,
                                  const Result<bool>& full) {
  if (ev.answered()) return;
  if (full && *full) {
    // Complete: no more events of any kind for this inode while it stays in memory.
    addIgnoreMark(contentGroup_.get(), ev.fd(), FAN_PRE_ACCESS);
    addIgnoreMark(openGroup_.get(), ev.fd(), FAN_OPEN_PERM);
    ev.allow();
    return;
  }
  if (!full && full.status().code() == ECANCELED) {  // the opener is gone
    ev.deny(EIO);
    return;
  }
  if (!full) {
    // The open itself goes on: reads still fetch or fail; only a copy tool that trusts
    // st_blocks could now skip the missing ranges (docs/SEMANTICS.md, "Copies").
    log::warn("open '{}': {}; copy tools that look for holes may copy zeros", path,
              full.status().message());
  }
  // Not complete: the allocation lasts while the file is open. Its closes are watched
  // (an evictable inode mark: an open file's inode stays in memory); each one gives the
  // space back if no one has the file open any more (handleFileClose). Only if something
  // was allocated (a one-chunk file is fetched whole instead): a close notification holds
  // the file, and the mount, until it is read, so an unmount right after the last close
  // could find the view busy.
  if (hydrator_.allocated(path) && ::fanotify_mark(openGroup_.get(), FAN_MARK_ADD | FAN_MARK_EVICTABLE, FAN_CLOSE_NOWRITE,
                      ev.fd(), nullptr) != 0) {
    log::warn("open '{}': watching its closes: {}", path, std::strerror(errno));
  }
  ev.allow();
}

void FanotifyFrontend::handleFileClose(UniqueFd fd) {
  try {
    // Close events of one file are merged by the kernel: they say "closed at least once",
    // not how often. Whether anyone still has the file open is asked of the kernel itself
    // (a lease, in Hydrator::releaseAllocation), once this descriptor is closed too.
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || st.st_nlink == 0) return;  // replaced: space goes with it
    auto path = relPathOf(fd.get());
    if (!path) return;
    fd.reset();
    auto released = hydrator_.releaseAllocation(*path, static_cast<uint64_t>(st.st_ino));
    if (!released && released.status().code() != ESTALE && released.status().code() != ENOENT) {
      log::warn("close '{}': giving back the space of its missing ranges: {}", *path,
                released.status().message());
    }
  } catch (const std::exception& e) {
    log::error("unexpected error after a file close: {}", e.what());
  }
}

void FanotifyFrontend::handleDirOpen(PermissionEvent& ev) {
  try {
    auto path = pathOrDeny(ev);
    if (!path) return;
    int64_t listedAt = 0;
    Status s = populator_.ensureListed(*path, true, &listedAt);
    if (!s) {
      log::warn("open directory '{}': {}", displayPath(*path), s.message());
      ev.deny(fanotifyErrno(s.code()));
      return;
    }
    bool mark = config_.dirIgnoreMarks;
    if (!mark && flushPeriod().count() > 0 && listedAt > 0) {
      // Fresh until the next flush at least (with a second of margin for the clock's
      // whole seconds): the mark is gone before the listing goes stale.
      const int64_t age = static_cast<int64_t>(std::time(nullptr)) - listedAt;
      mark = config_.listingTtl.count() - age >= flushPeriod().count() + 1;
    }
    if (mark) addIgnoreMark(openGroup_.get(), ev.fd(), FAN_OPEN_PERM | FAN_ONDIR);
    ev.allow();
  } catch (const std::exception& e) {
    log::error("unexpected error serving a directory open: {}", e.what());
    if (!ev.answered()) ev.deny(EIO);
  }
}

std::chrono::seconds FanotifyFrontend::flushPeriod() const {
  if (config_.dirIgnoreMarks || config_.listingTtl.count() <= 0) return std::chrono::seconds(0);
  return std::max(std::chrono::seconds(1), config_.listingTtl / 4);
}

FrontendStats FanotifyFrontend::stats() const {
  FrontendStats s;
  s.fileEvents = fileEvents_;
  s.dirEvents = dirEvents_;
  s.openEvents = openEvents_;
  s.denied = denied_;
  s.ignoreMarks = ignoreMarks_;
  s.pending = pending_;
  s.contentLatency = contentLatency_.counts();
  s.dirLatency = dirLatency_.counts();
  return s;
}

}  // namespace hsm::frontend
