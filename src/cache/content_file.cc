#include "cache/content_file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xfs/xfs.h>

#include <cstring>
#include <ctime>
#include <unordered_set>

#include "cache/file_times.h"
#include "cache/meta_db.h"
#include "util/log.h"

namespace hsm::cache {
namespace {

int64_t realtimeNs() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The remote's mtime, and the same atime: with relatime (the view's default) the next read
// through the view then moves atime to the time of that read, which tells the evictor the
// file was used.
void restoreTimesOf(int fd, int64_t mtimeNs, const std::string& path) {
  struct timespec ts[2] = {toTimespec(mtimeNs), toTimespec(mtimeNs)};
  if (::futimens(fd, ts) != 0) log::warn("restoring the mtime of '{}': {}", path, std::strerror(errno));
}

void setStateAttr(int fd, State state, const std::string& path) {
  const char* v = stateName(state);
  if (::fsetxattr(fd, kStateXattr, v, std::strlen(v), 0) != 0 && errno != ENOTSUP) {
    log::warn("setting {} on '{}': {}", kStateXattr, path, std::strerror(errno));
  }
}

// On xfs, a descriptor opened by handle (XFS_IOC_OPEN_BY_HANDLE, the DMAPI-era interface
// made for HSMs) writes, allocates and punches without moving the file's mtime or ctime
// ("invisible I/O"): a reader's stat() before and after its first read agree. Elsewhere,
// or if the kernel refuses, an empty descriptor (measured: nothing on ext4 or btrfs does
// this, docs/SEMANTICS.md, "Archives").
UniqueFd invisibleWriter(int fd, int dirFd) {
  struct statfs sf {};
  if (::fstatfs(fd, &sf) != 0 || sf.f_type != XFS_SUPER_MAGIC) return {};
  char handle[128];
  __u32 handleLen = sizeof handle;
  xfs_fsop_handlereq_t req{};
  req.fd = static_cast<__u32>(fd);
  req.ohandle = handle;
  req.ohandlen = &handleLen;
  if (::ioctl(fd, XFS_IOC_FD_TO_HANDLE, &req) != 0) return {};
  xfs_fsop_handlereq_t open{};
  open.ihandle = handle;
  open.ihandlen = handleLen;
  open.oflags = O_RDWR;
  // The ioctl wants a directory of the filesystem opened for real (the tree's is O_PATH).
  UniqueFd dir(::openat(dirFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return {};
  const int h = ::ioctl(dir.get(), XFS_IOC_OPEN_BY_HANDLE, &open);
  if (h < 0) return {};
  // The kernel opens it without close-on-exec; the worker's spawn closes every descriptor
  // above its own before exec in any case (close_range).
  ::fcntl(h, F_SETFD, FD_CLOEXEC);
  return UniqueFd(h);
}

bool allZero(const char* p, size_t n) {
  if (n == 0) return true;
  return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
}

}  // namespace

std::vector<std::pair<uint64_t, uint64_t>> chunkRuns(const ChunkMap& map,
                                                     const std::function<bool(uint64_t)>& pick) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  const uint64_t n = map.chunkCount();
  for (uint64_t c = 0; c < n; ++c) {
    if (!pick(c)) continue;
    const uint64_t begin = map.chunkBegin(c);
    const uint64_t end = begin + map.chunkLength(c);
    if (!runs.empty() && runs.back().second == begin) {
      runs.back().second = end;
    } else {
      runs.emplace_back(begin, end);
    }
  }
  return runs;
}

Result<std::unique_ptr<ContentFile>> ContentFile::load(CacheStore& cache, const std::string& path,
                                                       uint64_t chunkSize, CacheIo io) {
  std::unique_ptr<ContentFile> cf(new ContentFile(cache, std::move(io)));
  cf->path_ = path;
  // The row first, then the inode under the name: a listing renames a new inode over the
  // name only after its row is recorded, so a mismatch is a change meanwhile (read again)
  // or what a crash left (a new, empty inode).
  for (int attempt = 0;; ++attempt) {
    if (attempt == 4) {
      return Status::error(EAGAIN, fmt::format("'{}' keeps changing in the cache", path));
    }
    auto row = cache.db().get(path);
    if (!row) return row.status();
    if (!row->has_value() || (*row)->type != EntryType::kFile) {
      return Status::error(ENOENT, fmt::format("'{}' is not a file of the mirrored tree", path));
    }
    const EntryRow& r = **row;
    auto fd = cache.openBeneath(path, O_RDWR | O_NOFOLLOW);
    if (!fd && fd.status().code() == ENOENT) {
      // The row reached the disk and the name did not (a power cut after a listing): the
      // file is made again, empty.
      log::warn("cache file '{}' is missing under its index row: making it again", path);
      auto fresh = cache.replaceFile(path, r);
      if (!fresh) return fresh.status();
      continue;
    }
    if (!fd) return fd.status();
    struct stat st {};
    if (::fstat(fd->get(), &st) != 0) return Status::fromErrno(errno, "fstat cache file");
    const auto ino = static_cast<uint64_t>(st.st_ino);
    if (static_cast<uint64_t>(st.st_size) != r.size || (r.ino != 0 && r.ino != ino)) {
      log::warn("cache file '{}' is not the one its index row describes (a crash between "
                "two steps of a change): giving it a new, empty inode", path);
      auto fresh = cache.replaceFile(path, r);
      if (!fresh) return fresh.status();
      continue;
    }
    if (r.ino == 0) {
      auto adopted = cache.db().adoptIno(path, r.version, ino);
      if (!adopted) return adopted.status();
      if (!*adopted) continue;  // the row changed meanwhile
    }
    auto map = ChunkMap::deserialize(r.present, r.size, chunkSize);
    if (r.state == static_cast<int>(State::kFull) && map && !map->full()) map.reset();
    cf->version_ = r.version;
    cf->ino_ = ino;
    cf->size_ = r.size;
    cf->mtimeNs_ = r.mtimeNs;
    cf->recorded_ = map ? *map : ChunkMap(r.size, chunkSize);
    if (UniqueFd invisible = invisibleWriter(fd->get(), cache.treeFd())) {
      cf->fd_ = std::move(invisible);
      cf->invisible_ = true;
      fd->reset();  // one descriptor of ours: a second would refuse every lease on fd_
    } else {
      cf->fd_ = std::move(*fd);
    }
    cf->reclaimUnrecorded(static_cast<uint64_t>(st.st_blocks) * 512, chunkSize);
    // A complete file whose attribute does not say so yet (the daemon stopped before it
    // settled: it waits for the last close) gets it once no one has the file open.
    if (cf->recorded_.full() && !inodeComplete(cf->fd_.get())) {
      cf->pendingState_ = static_cast<int>(State::kFull);
    }
    return cf;
  }
}

void ContentFile::reclaimUnrecorded(uint64_t allocated, uint64_t slack) const {
  if (recorded_.full() || allocated <= recorded_.bytesPresent() + slack) return;
  // Only if no one has the file open (a write lease on our own descriptor): a reader may
  // rely on an allocation (Hydrator::prepareOpen), and a fetch of an earlier load of this
  // file may be writing bytes it has not recorded yet.
  if (!tryLease()) return;
  // The attribute first (a crash inside a release can leave "full" on it): an inode whose
  // attribute says "full" never holds a hole.
  setStateAttr(fd_.get(), recorded_.empty() ? State::kEmpty : State::kPartial, path_);
  Status s = punch(chunkRuns(recorded_, [&](uint64_t c) { return !recorded_.has(c); }));
  unlease();
  if (!s) {
    log::warn("'{}': giving back blocks written but never recorded: {}", path_, s.message());
    return;
  }
  log::info("'{}': gave back {} bytes written but never recorded (a failed sync, a crash or an "
            "allocation of a file no longer open)",
            path_, allocated - std::min(allocated, recorded_.bytesPresent()));
}

Status ContentFile::write(uint64_t offset, const char* data, size_t length) const {
  if (offset > size_ || length > size_ - offset) {
    return Status::error(EPROTO, fmt::format("{} bytes at {} reach past the end of '{}' ({})",
                                             length, offset, path_, size_));
  }
  if (allZero(data, length)) return Status::ok();
  size_t done = 0;
  while (done < length) {
    const off_t at = static_cast<off_t>(offset + done);
    ssize_t n = io_.pwrite ? io_.pwrite(fd_.get(), data + done, length - done, at)
                           : ::pwrite(fd_.get(), data + done, length - done, at);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::fromErrno(errno, fmt::format("write to cache file '{}'", path_));
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

void ContentFile::restoreTimes() const {
  if (!invisible_) restoreTimesOf(fd_.get(), mtimeNs_, path_);
}

Status ContentFile::commit(const ChunkMap& present, bool* syncFailed) {
  const bool full = present.full();
  const int rc = io_.sync ? io_.sync(fd_.get(), full)
                          : (full ? ::fsync(fd_.get()) : ::fdatasync(fd_.get()));
  *syncFailed = rc != 0;
  if (rc != 0) return Status::fromErrno(errno, fmt::format("sync cache file '{}'", path_));
  ContentUpdate u;
  u.path = path_;
  u.version = version_;
  u.state = full ? State::kFull : (present.empty() ? State::kEmpty : State::kPartial);
  u.present = present.serialize();
  u.bytesPresent = present.bytesPresent();
  u.accessNs = realtimeNs();
  u.ino = ino_;
  if (io_.crashAt && io_.crashAt("record")) return Status::error(ECANCELED, "crashed before record");
  HSM_RETURN_IF_ERROR(cache_.db().recordContent({u}));
  if (io_.crashAt && io_.crashAt("attribute")) return Status::error(ECANCELED, "crashed before attribute");
  {
    std::lock_guard lock(stateMu_);
    pendingState_ = static_cast<int>(u.state);
  }
  return Status::ok();
}

ContentFile::~ContentFile() {
  if (fd_) settleState(true);
}

bool ContentFile::settleState(bool force) {
  std::lock_guard lock(stateMu_);
  if (pendingState_ < 0) return true;
  const bool leased = !force && tryLease();
  // Open (EAGAIN): a reader may compare ctime before and after. A filesystem without
  // leases (EINVAL: NFS, leases disabled) cannot tell: written at once, as before.
  if (!force && !leased && errno == EAGAIN) return false;
  setStateAttr(fd_.get(), static_cast<State>(pendingState_), path_);
  if (leased) unlease();
  pendingState_ = -1;
  return true;
}

bool ContentFile::statePending() const {
  std::lock_guard lock(stateMu_);
  return pendingState_ >= 0;
}

Status ContentFile::allocate(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const {
  for (const auto& [begin, end] : ranges) {
    if (::fallocate(fd_.get(), 0, static_cast<off_t>(begin), static_cast<off_t>(end - begin)) != 0) {
      return Status::fromErrno(errno, fmt::format("allocating the missing ranges of '{}'", path_));
    }
  }
  if (!ranges.empty()) restoreTimes();  // allocating moves mtime on some filesystems
  return Status::ok();
}

Status ContentFile::punch(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const {
  for (const auto& [begin, rangeEnd] : ranges) {
    // At the end of the file, up to a block boundary past it: a partial last block is
    // otherwise only zeroed, not freed (KEEP_SIZE leaves the size alone).
    const uint64_t end = rangeEnd >= size_ ? (size_ + 65535) & ~uint64_t{65535} : rangeEnd;
    if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(begin), static_cast<off_t>(end - begin)) != 0) {
      return Status::fromErrno(errno, fmt::format("punching the missing ranges of '{}'", path_));
    }
  }
  if (!ranges.empty()) restoreTimes();
  return Status::ok();
}

bool ContentFile::tryLease() const { return ::fcntl(fd_.get(), F_SETLEASE, F_WRLCK) == 0; }
void ContentFile::unlease() const { ::fcntl(fd_.get(), F_SETLEASE, F_UNLCK); }

Result<ReleaseResult> releaseContent(CacheStore& cache, const std::vector<ReleaseRequest>& files,
                                     const std::function<Status(int fd)>& beforePunch,
                                     const CacheIo& io) {
  ReleaseResult result;
  auto crash = [&](const char* step) { return io.crashAt && io.crashAt(step); };
  struct Leased {
    const ReleaseRequest* req;
    UniqueFd fd;
    uint64_t size = 0;
    int64_t mtimeNs = 0;
    uint64_t bytesPresent = 0;
  };
  std::vector<Leased> leased;
  auto unlease = [&] {
    for (auto& l : leased) ::fcntl(l.fd.get(), F_SETLEASE, F_UNLCK);
  };
  struct Unlease {
    const std::function<void()> f;
    ~Unlease() { f(); }
  } unleaseAtEnd{unlease};
  // 1. Lease every file no one has open.
  for (const auto& r : files) {
    auto fd = cache.openBeneath(r.path, O_RDWR | O_NOFOLLOW);
    if (!fd) {
      result.gone++;
      continue;
    }
    if (::fcntl(fd->get(), F_SETLEASE, F_WRLCK) != 0) {
      if (errno != EAGAIN && errno != EBUSY) {
        log::warn("release '{}': write lease: {}", r.path, std::strerror(errno));
      }
      result.busy++;
      continue;
    }
    auto row = cache.db().get(r.path);
    struct stat st {};
    if (!row || !row->has_value() || (*row)->version != r.version ||
        (*row)->type != EntryType::kFile || ::fstat(fd->get(), &st) != 0 ||
        ((*row)->ino != 0 && (*row)->ino != static_cast<uint64_t>(st.st_ino))) {
      ::fcntl(fd->get(), F_SETLEASE, F_UNLCK);
      result.gone++;
      continue;
    }
    leased.push_back({&r, std::move(*fd), (*row)->size, (*row)->mtimeNs, (*row)->bytesPresent});
  }
  if (crash("beforePunch")) return Status::error(ECANCELED, "crashed before beforePunch");
  // 2. No one can open them now.
  std::erase_if(leased, [&](Leased& l) {
    Status s = beforePunch(l.fd.get());
    if (s) return false;
    log::warn("release '{}': {}; keeping its content", l.req->path, s.message());
    ::fcntl(l.fd.get(), F_SETLEASE, F_UNLCK);
    result.failed++;
    return true;
  });
  if (crash("record")) return Status::error(ECANCELED, "crashed before record");
  // 3. Record them empty, durably, before a single byte is punched out.
  std::vector<std::pair<std::string, std::string>> pv;
  pv.reserve(leased.size());
  for (auto& l : leased) pv.emplace_back(l.req->path, l.req->version);
  auto recorded = cache.db().releaseContent(pv);
  if (!recorded) return recorded.status();
  // 4. Punch, each file's attribute first: an inode whose attribute says "full" never
  // holds a hole.
  Status firstError;
  for (auto& l : leased) {
    if (crash("attribute")) return Status::error(ECANCELED, "crashed before attribute");
    setStateAttr(l.fd.get(), l.size == 0 ? State::kFull : State::kEmpty, l.req->path);
    if (crash("punch")) return Status::error(ECANCELED, "crashed before punch");
    // Past EOF up to a block boundary: a partial last block is otherwise only zeroed, not
    // freed (KEEP_SIZE leaves the size alone).
    const uint64_t punchLen = (l.size + 65535) & ~uint64_t{65535};
    if (l.size > 0 && ::fallocate(l.fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                                  static_cast<off_t>(punchLen)) != 0) {
      // Recorded empty already: the bytes left behind are fetched again, never trusted.
      if (firstError) firstError = Status::fromErrno(errno, fmt::format("punch '{}'", l.req->path));
    }
    restoreTimesOf(l.fd.get(), l.mtimeNs, l.req->path);
    result.files++;
    result.bytes += l.bytesPresent;
  }
  // 5. The leases go (Unlease): opens held back continue and see files that fetch on read.
  if (!firstError) log::warn("release: {}", firstError.message());
  return result;
}

}  // namespace hsm::cache
