#include "cache/cache_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "cache/file_times.h"
#include "cache/meta_db.h"
#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::cache {
namespace {

Status makeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return Status::fromErrno(errno, path);
    if (!S_ISDIR(st.st_mode)) return Status::error(ENOTDIR, path + ": not a directory");
    return Status::ok();
  }
  return Status::fromErrno(errno, fmt::format("cannot create '{}'", path));
}

// The names in the directory open at `dfd` ("." and ".." left out).
Result<std::vector<std::string>> namesIn(int dfd) {
  int dup = ::fcntl(dfd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Status::fromErrno(errno, "dup");
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    return Status::fromErrno(errno, "fdopendir");
  }
  std::vector<std::string> names;
  while (struct dirent* de = ::readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) names.push_back(de->d_name);
  }
  ::closedir(d);
  return names;
}

// Empties the directory open at `dfd` (no symlink is followed), depth-bounded.
Status removeContents(int dfd, int depth) {
  if (depth > 2048) return Status::error(ELOOP, "tree too deep to remove");
  auto names = namesIn(dfd);
  if (!names) return names.status();
  for (const auto& n : *names) {
    if (::unlinkat(dfd, n.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR) return Status::fromErrno(errno, "unlink " + n);
    UniqueFd sub(::openat(dfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return Status::fromErrno(errno, "open " + n);
    HSM_RETURN_IF_ERROR(removeContents(sub.get(), depth + 1));
    if (::unlinkat(dfd, n.c_str(), AT_REMOVEDIR) != 0) return Status::fromErrno(errno, "rmdir " + n);
  }
  return Status::ok();
}

// A directory that exists, is not empty and holds no cache (no meta/index.db) is someone
// else's: it is not taken over (and made 0700). An empty one, a filesystem's root with only
// lost+found, or an existing cache are fine.
Status refuseForeignDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Status::ok();  // created below (or the error is reported there)
  struct stat st {};
  if (::fstatat(fd.get(), "meta/index.db", &st, 0) == 0) return Status::ok();
  auto names = namesIn(fd.get());
  if (!names) return names.status();
  for (const auto& n : *names) {
    // meta/, tree/, staging/: a cache whose creation a crash interrupted (no index yet).
    if (n == "lost+found" || n == "meta" || n == "tree" || n == "staging") continue;
    return Status::error(EEXIST, fmt::format("'{}' is not empty and is not a fanhsm cache (it "
                                             "holds '{}'): give --cache a new or empty directory",
                                             dir, n));
  }
  return Status::ok();
}

}  // namespace

Status CacheStore::checkCacheDir(const std::string& cacheDir) {
  return refuseForeignDir(cacheDir);
}

bool inodeComplete(int fd) {
  char v[16];
  const ssize_t n = ::fgetxattr(fd, kStateXattr, v, sizeof v);
  const char* full = stateName(State::kFull);
  return n == static_cast<ssize_t>(std::strlen(full)) && std::memcmp(v, full, static_cast<size_t>(n)) == 0;
}

Result<std::unique_ptr<CacheStore>> CacheStore::open(const std::string& cacheDir, int lockWaitMs) {
  std::unique_ptr<CacheStore> cs(new CacheStore());
  cs->dir_ = cacheDir;
  // Parent directories of the cache may be created (e.g. /var/cache/fanhsm/...).
  for (size_t pos = 1; pos < cacheDir.size(); ++pos) {
    if (cacheDir[pos] == '/') HSM_RETURN_IF_ERROR(makeDir(cacheDir.substr(0, pos), 0755));
  }
  HSM_RETURN_IF_ERROR(checkCacheDir(cacheDir));
  HSM_RETURN_IF_ERROR(makeDir(cacheDir, 0700));
  if (::chmod(cacheDir.c_str(), 0700) != 0) return Status::fromErrno(errno, cacheDir);
  HSM_RETURN_IF_ERROR(makeDir(cs->metaPath(), 0700));
  HSM_RETURN_IF_ERROR(makeDir(cs->treePath(), 0755));
  HSM_RETURN_IF_ERROR(makeDir(cacheDir + "/staging", 0700));

  std::string lockPath = cs->metaPath() + "/lock";
  int lfd = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lfd < 0) return Status::fromErrno(errno, lockPath);
  cs->lockFd_.reset(lfd);
  // A daemon that was just killed can hold the lock for a moment while the kernel tears
  // its fanotify groups down: wait a bounded time before calling the cache busy.
  int rc = -1;
  for (int waited = 0;; waited += 100) {
    rc = ::flock(lfd, LOCK_EX | LOCK_NB);
    if (rc == 0 || errno != EWOULDBLOCK || waited >= lockWaitMs) break;
    ::usleep(100 * 1000);
  }
  if (rc != 0) {
    if (errno == EWOULDBLOCK) {
      return Status::error(EBUSY, fmt::format("cache '{}' is in use by another fanhsm daemon",
                                              cacheDir));
    }
    return Status::fromErrno(errno, lockPath);
  }
  int tfd = ::open(cs->treePath().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (tfd < 0) return Status::fromErrno(errno, cs->treePath());
  cs->treeFd_.reset(tfd);
  int sfd = ::open((cacheDir + "/staging").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (sfd < 0) return Status::fromErrno(errno, cacheDir + "/staging");
  cs->stagingFd_.reset(sfd);
  // Inodes staged before a crash never reached the tree: nothing refers to them.
  HSM_RETURN_IF_ERROR(cs->clearStaging());
  auto db = MetaDb::open(cs->metaPath() + "/index.db");
  if (!db) return db.status();
  cs->db_ = std::move(*db);
  if (Status r = cs->takeReserve(); !r) log::warn("{}", r.message());
  return cs;
}

CacheStore::~CacheStore() = default;

Result<uint64_t> CacheStore::bind(const std::string& sourceDesc, uint64_t chunkSize) {
  auto src = db_->getSetting("source");
  if (!src) return src.status();
  if (src->has_value() && **src != sourceDesc) {
    return Status::error(EEXIST, fmt::format("cache '{}' holds '{}', not '{}': choose another "
                                             "--cache directory",
                                             dir_, **src, sourceDesc));
  }
  if (!src->has_value()) HSM_RETURN_IF_ERROR(db_->setSetting("source", sourceDesc));
  auto chunk = db_->getSetting("chunk_size");
  if (!chunk) return chunk.status();
  if (chunk->has_value()) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull((*chunk)->c_str(), &end, 10);
    if (end == (*chunk)->c_str() || *end != '\0' || v == 0) {
      return Status::error(EPROTO, fmt::format("cache '{}': bad chunk size '{}'", dir_, **chunk));
    }
    return static_cast<uint64_t>(v);
  }
  HSM_RETURN_IF_ERROR(db_->setSetting("chunk_size", std::to_string(chunkSize)));
  return chunkSize;
}

Result<std::optional<EntryRow>> CacheStore::entry(const std::string& path) { return db_->get(path); }

Status CacheStore::addRoot(const Entry& root) {
  Entry e = root;
  e.type = EntryType::kDir;
  // Also when the row exists (it keeps its listed state): the mount's policy may differ
  // from the last mount's, and the root shows this one's.
  auto up = db_->upsertEntry("", e);
  if (!up) return up.status();
  return setAttrs("", e.mode ? e.mode : 0755, e.mtimeNs, e.uid, e.gid, &e.acl);
}

Status CacheStore::touchListing(const std::string& dir, int64_t listedAt) {
  return db_->touchListing(dir, listedAt);
}
Result<CacheStats> CacheStore::stats() { return db_->stats(); }
Result<uint64_t> CacheStore::contentBytes() { return db_->contentBytes(); }
Result<std::vector<ReleaseCandidate>> CacheStore::releaseCandidates(size_t limit) {
  return db_->releaseCandidates(limit);
}
Status CacheStore::touchAccess(const std::string& path, int64_t ns) {
  return db_->touchAccess(path, ns);
}
Result<uint64_t> CacheStore::setPinned(const std::string& path, bool pinned) {
  return db_->setPinned(path, pinned);
}
Result<std::vector<FileRef>> CacheStore::filesUnder(const std::string& path) {
  return db_->filesUnder(path);
}
Result<std::vector<std::string>> CacheStore::unlistedDirsUnder(const std::string& path,
                                                               size_t limit) {
  return db_->unlistedDirsUnder(path, limit);
}
Result<std::vector<std::string>> CacheStore::unlistedDirs(size_t limit,
                                                          const std::optional<std::string>& after) {
  return db_->unlistedDirs(limit, after);
}

Status CacheStore::takeReserve() const {
  const std::string path = metaPath() + "/reserve";
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return Status::fromErrno(errno, fmt::format("cache reserve '{}'", path));
  int rc = ::fallocate(fd.get(), 0, 0, static_cast<off_t>(kReserveBytes));
  if (rc != 0 && errno == EOPNOTSUPP) {
    // No fallocate: write the reserve for real.
    static const char zeros[65536] = {};
    rc = 0;
    for (uint64_t off = 0; off < kReserveBytes && rc == 0; off += sizeof zeros) {
      if (::pwrite(fd.get(), zeros, sizeof zeros, static_cast<off_t>(off)) != sizeof zeros) rc = -1;
    }
  }
  if (rc != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return Status::fromErrno(err, fmt::format("allocating the cache reserve '{}'", path));
  }
  return Status::ok();
}

void CacheStore::dropReserve() const { ::unlink((metaPath() + "/reserve").c_str()); }

Result<UniqueFd> CacheStore::openBeneath(const std::string& path, int flags) const {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  if ((flags & O_CREAT) != 0) how.mode = 0600;
  const char* p = path.empty() ? "." : path.c_str();
  int fd = static_cast<int>(::syscall(SYS_openat2, treeFd_.get(), p, &how, sizeof how));
  if (fd < 0) return Status::fromErrno(errno, fmt::format("cache '{}'", displayPath(path)));
  return UniqueFd(fd);
}

namespace {

mode_t typeBits(EntryType t) {
  switch (t) {
    case EntryType::kDir:
      return S_IFDIR;
    case EntryType::kSymlink:
      return S_IFLNK;
    case EntryType::kFile:
      break;
  }
  return S_IFREG;
}

bool sameTime(const struct timespec& a, int64_t ns) {
  const struct timespec b = toTimespec(ns);
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

// Gives the open file or directory `fd` the owner (unless -1), mode and mtime (and atime) of
// the remote, where they differ: setting them moves its ctime, which archivers compare.
constexpr char kAclXattr[] = "system.posix_acl_access";

// Gives the open file or directory `fd` the POSIX access ACL `acl` ("" : none), where it
// differs. After any chmod: a chmod rewrites the ACL's mask.
Status syncAcl(int fd, const std::string& acl, const std::string& path) {
  char cur[4096];
  const ssize_t n = ::fgetxattr(fd, kAclXattr, cur, sizeof cur);
  if (n < 0 && errno != ENODATA && errno != ENOTSUP && errno != ERANGE) {
    return Status::fromErrno(errno, fmt::format("cache acl '{}'", displayPath(path)));
  }
  const std::string have = n > 0 ? std::string(cur, static_cast<size_t>(n)) : std::string();
  if (have == acl) return Status::ok();
  const int rc = acl.empty() ? ::fremovexattr(fd, kAclXattr)
                             : ::fsetxattr(fd, kAclXattr, acl.data(), acl.size(), 0);
  if (rc != 0 && !(acl.empty() && errno == ENODATA)) {
    return Status::fromErrno(errno, fmt::format("cache acl '{}'", displayPath(path)));
  }
  return Status::ok();
}

// An owner or group id for chown(): -1 (the source has none) leaves it as it is.
uid_t idOrKeep(int64_t id) { return id >= 0 ? static_cast<uid_t>(id) : static_cast<uid_t>(-1); }

Status setAttrsIfChanged(int fd, const struct stat& st, uint32_t mode, int64_t mtimeNs,
                         const std::string& path, int64_t uid, int64_t gid,
                         const std::string* acl = nullptr) {
  // Owner first: chown clears set-id bits, which the mode then sets again.
  if ((uid >= 0 && st.st_uid != static_cast<uid_t>(uid)) ||
      (gid >= 0 && st.st_gid != static_cast<gid_t>(gid))) {
    if (::fchown(fd, idOrKeep(uid), idOrKeep(gid)) != 0) {
      return Status::fromErrno(errno, fmt::format("cache chown '{}'", displayPath(path)));
    }
    if (::fchmod(fd, mode & 07777) != 0) {
      return Status::fromErrno(errno, fmt::format("cache chmod '{}'", displayPath(path)));
    }
  }
  if ((st.st_mode & 07777) != (mode & 07777) && ::fchmod(fd, mode & 07777) != 0) {
    return Status::fromErrno(errno, fmt::format("cache chmod '{}'", displayPath(path)));
  }
  if (!sameTime(st.st_mtim, mtimeNs)) {
    struct timespec ts[2] = {toTimespec(mtimeNs), toTimespec(mtimeNs)};
    if (::futimens(fd, ts) != 0) {
      return Status::fromErrno(errno, fmt::format("cache utimens '{}'", displayPath(path)));
    }
  }
  if (acl) HSM_RETURN_IF_ERROR(syncAcl(fd, *acl, path));
  return Status::ok();
}

}  // namespace

Status CacheStore::clearStaging() const {
  return removeContents(stagingFd_.get(), 0).withContext("cache staging");
}

Result<uint64_t> CacheStore::makeFile(const Entry& e, int dirFd, const std::string& path,
                                      std::string* stagedName) const {
  UniqueFd f;
  const bool linkIn = stagedName == nullptr;
  if (linkIn) {
    f.reset(::openat(dirFd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  } else {
    *stagedName = fmt::format("{}.{}", ::getpid(), staged_.fetch_add(1));
    f.reset(::openat(stagingFd_.get(), stagedName->c_str(),
                     O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
  }
  const std::string what = displayPath(path);
  if (!f) return Status::fromErrno(errno, fmt::format("cache create '{}'", what));
  if (::ftruncate(f.get(), static_cast<off_t>(e.size)) != 0) {
    return Status::fromErrno(errno, fmt::format("cache truncate '{}'", what));
  }
  // The state attribute, readable through the view (getfattr); the Hydrator keeps it
  // current. Filesystems without user xattrs simply have none.
  const char* state = stateName(e.size == 0 ? State::kFull : State::kEmpty);
  if (::fsetxattr(f.get(), kStateXattr, state, std::strlen(state), 0) != 0 && errno != ENOTSUP) {
    return Status::fromErrno(errno, fmt::format("cache setxattr '{}'", what));
  }
  // Owner, mode, ACL and mtime, as for an existing file (all of them differ on a new one).
  struct stat st {};
  if (::fstat(f.get(), &st) != 0) return Status::fromErrno(errno, "fstat new cache file");
  HSM_RETURN_IF_ERROR(
      setAttrsIfChanged(f.get(), st, e.mode ? e.mode : 0644, e.mtimeNs, path, e.uid, e.gid, &e.acl));
  if (linkIn && ::linkat(f.get(), "", dirFd, e.name.c_str(), AT_EMPTY_PATH) != 0) {
    return Status::fromErrno(errno, fmt::format("cache link '{}'", what));
  }
  return static_cast<uint64_t>(st.st_ino);
}

Status CacheStore::renameStaged(const std::string& stagedName, int dirFd, const std::string& name,
                                const std::string& path) const {
  if (::renameat(stagingFd_.get(), stagedName.c_str(), dirFd, name.c_str()) != 0) {
    const int err = errno;
    ::unlinkat(stagingFd_.get(), stagedName.c_str(), 0);
    return Status::fromErrno(err, fmt::format("cache rename into '{}'", displayPath(path)));
  }
  return Status::ok();
}

Result<CacheStore::ListingChanges> CacheStore::applyListing(const std::string& dir,
                                                            const std::vector<Entry>& entries,
                                                            const std::string& validator,
                                                            int64_t listedAt, bool relist) {
  auto dfd = openBeneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.status();
  ListingChanges out;
  std::vector<EntryInode> inos(entries.size());
  struct Staged {
    std::string stagedName, name, path;
  };
  std::vector<Staged> staged;
  struct Unstage {  // staged inodes not renamed in place go
    const CacheStore& cs;
    std::vector<Staged>& staged;
    ~Unstage() {
      for (const auto& s : staged) ::unlinkat(cs.stagingFd_.get(), s.stagedName.c_str(), 0);
    }
  } unstage{*this, staged};
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    HSM_RETURN_IF_ERROR(validateName(e.name, false));
    const std::string path = joinPath(dir, e.name);
    struct stat st {};
    bool exists = ::fstatat(dfd->get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!exists && errno != ENOENT) {
      return Status::fromErrno(errno, fmt::format("cache stat '{}'", displayPath(path)));
    }
    if (exists && (st.st_mode & S_IFMT) != typeBits(e.type)) {
      // The name changed type at the remote (a file became a directory...): replace it.
      HSM_RETURN_IF_ERROR(removeEntry(dir, e.name));
      HSM_RETURN_IF_ERROR(db_->removeSubtree(path));
      out.changed.push_back(path);
      exists = false;
    }
    switch (e.type) {
      case EntryType::kDir: {
        if (!exists && ::mkdirat(dfd->get(), e.name.c_str(), 0755) != 0 && errno != EEXIST) {
          return Status::fromErrno(errno, fmt::format("cache mkdir '{}'", displayPath(path)));
        }
        HSM_RETURN_IF_ERROR(setAttrs(path, e.mode ? e.mode : 0755, e.mtimeNs, e.uid, e.gid, &e.acl));
        out.subdirs.push_back(path);
        break;
      }
      case EntryType::kSymlink: {
        if (exists) {
          std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
          ssize_t n = ::readlinkat(dfd->get(), e.name.c_str(), target.data(), target.size());
          if (n >= 0 && static_cast<size_t>(n) == e.linkTarget.size() &&
              target.compare(0, static_cast<size_t>(n), e.linkTarget) == 0) {
            if (sameTime(st.st_mtim, e.mtimeNs)) break;
          } else {
            // Another target: a new link under a staging name, renamed over the old one.
            const std::string tmp = fmt::format("{}.{}", ::getpid(), staged_.fetch_add(1));
            if (::symlinkat(e.linkTarget.c_str(), stagingFd_.get(), tmp.c_str()) != 0) {
              return Status::fromErrno(errno, fmt::format("cache symlink '{}'", displayPath(path)));
            }
            HSM_RETURN_IF_ERROR(renameStaged(tmp, dfd->get(), e.name, path));
            out.changed.push_back(path);
          }
        } else if (::symlinkat(e.linkTarget.c_str(), dfd->get(), e.name.c_str()) != 0) {
          return Status::fromErrno(errno, fmt::format("cache symlink '{}'", displayPath(path)));
        }
        if ((e.uid >= 0 || e.gid >= 0) &&
            ::fchownat(dfd->get(), e.name.c_str(), idOrKeep(e.uid), idOrKeep(e.gid),
                       AT_SYMLINK_NOFOLLOW) != 0) {
          return Status::fromErrno(errno, fmt::format("cache chown '{}'", displayPath(path)));
        }
        struct timespec ts[2] = {toTimespec(e.mtimeNs), toTimespec(e.mtimeNs)};
        if (::utimensat(dfd->get(), e.name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
          return Status::fromErrno(errno, fmt::format("cache utimens '{}'", displayPath(path)));
        }
        break;
      }
      case EntryType::kFile: {
        if (!exists) {
          auto ino = makeFile(e, dfd->get(), path, nullptr);
          if (!ino) return ino.status();
          inos[i] = {*ino, true};
          break;
        }
        auto row = db_->get(path);
        if (!row) return row.status();
        const EntryRow* r = row->has_value() ? &**row : nullptr;
        const bool keep = r && r->type == EntryType::kFile && r->version == e.version &&
                          r->size == e.size && static_cast<uint64_t>(st.st_size) == e.size &&
                          (r->ino == 0 || r->ino == static_cast<uint64_t>(st.st_ino));
        if (keep) {
          inos[i] = {static_cast<uint64_t>(st.st_ino), false};
          auto fd = openBeneath(path, O_RDONLY | O_NOFOLLOW);
          if (!fd) return fd.status();
          HSM_RETURN_IF_ERROR(
              setAttrsIfChanged(fd->get(), st, e.mode ? e.mode : 0644, e.mtimeNs, path, e.uid, e.gid, &e.acl));
          break;
        }
        Staged s{"", e.name, path};
        auto ino = makeFile(e, -1, path, &s.stagedName);
        if (!ino) return ino.status();
        inos[i] = {*ino, true};
        staged.push_back(std::move(s));
        if (r) out.changed.push_back(path);
        break;
      }
    }
  }
  // The rows name the new inodes before any of them takes a name: durably, so that a
  // crash can never leave an old row (with the old content's map) over a new inode.
  HSM_RETURN_IF_ERROR(db_->applyListing(dir, entries, nullptr, validator, listedAt, &inos,
                                        !staged.empty()));
  Status firstError;
  for (const auto& s : staged) {
    Status r = renameStaged(s.stagedName, dfd->get(), s.name, s.path);
    if (!r && firstError) firstError = r;
  }
  staged.clear();
  HSM_RETURN_IF_ERROR(firstError);
  if (relist) {
    std::set<std::string> listed;
    for (const auto& e : entries) listed.insert(e.name);
    auto have = names(dir);
    if (!have) return have.status();
    for (const auto& n : *have) {
      if (listed.count(n) != 0) continue;
      const std::string path = joinPath(dir, n);
      HSM_RETURN_IF_ERROR(removeEntry(dir, n));
      HSM_RETURN_IF_ERROR(db_->removeSubtree(path));
      out.removed.push_back(path);
    }
  }
  auto self = db_->get(dir);
  if (self && self->has_value()) {
    const auto& r = **self;
    HSM_RETURN_IF_ERROR(setAttrs(dir, r.mode ? r.mode : 0755, r.mtimeNs));
  }
  return out;
}

Result<uint64_t> CacheStore::replaceFile(const std::string& path, const EntryRow& row) const {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash);
  Entry e;
  e.name = slash == std::string::npos ? path : path.substr(slash + 1);
  e.type = EntryType::kFile;
  e.size = row.size;
  e.mode = row.mode;
  e.mtimeNs = row.mtimeNs;
  e.version = row.version;
  auto dfd = openBeneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.status();
  std::string stagedName;
  auto ino = makeFile(e, -1, path, &stagedName);
  if (!ino) return ino.status();
  Status s = db_->resetContent(path, row.version, *ino);
  if (!s) {
    ::unlinkat(stagingFd_.get(), stagedName.c_str(), 0);
    return s;
  }
  HSM_RETURN_IF_ERROR(renameStaged(stagedName, dfd->get(), e.name, path));
  return *ino;
}

Status CacheStore::setAttrs(const std::string& path, uint32_t mode, int64_t mtimeNs, int64_t uid,
                            int64_t gid, const std::string* acl) const {
  auto fd = openBeneath(path, O_RDONLY | O_DIRECTORY);
  if (!fd) return fd.status();
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) {
    return Status::fromErrno(errno, fmt::format("cache stat '{}'", displayPath(path)));
  }
  return setAttrsIfChanged(fd->get(), st, mode, mtimeNs, path, uid, gid, acl);
}


Status CacheStore::removeEntry(const std::string& dir, const std::string& name) const {
  HSM_RETURN_IF_ERROR(validateName(name, false));
  auto dfd = openBeneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.status();
  if (::unlinkat(dfd->get(), name.c_str(), 0) == 0) return Status::ok();
  if (errno != EISDIR) {
    return Status::fromErrno(errno, fmt::format("cache remove '{}'", joinPath(dir, name)));
  }
  UniqueFd sub(::openat(dfd->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!sub) return Status::fromErrno(errno, fmt::format("cache open '{}'", joinPath(dir, name)));
  HSM_RETURN_IF_ERROR(removeContents(sub.get(), 0).withContext(joinPath(dir, name)));
  if (::unlinkat(dfd->get(), name.c_str(), AT_REMOVEDIR) != 0) {
    return Status::fromErrno(errno, fmt::format("cache rmdir '{}'", joinPath(dir, name)));
  }
  return Status::ok();
}

Result<std::vector<std::string>> CacheStore::names(const std::string& dir) const {
  auto dfd = openBeneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.status();
  return namesIn(dfd->get());
}

std::string CacheStore::fsTypeName() const {
  struct statfs sf {};
  if (::fstatfs(treeFd_.get(), &sf) != 0) return "unknown";
  switch (static_cast<unsigned long>(sf.f_type)) {
    case EXT4_SUPER_MAGIC:
      return "ext4";
    case XFS_SUPER_MAGIC:
      return "xfs";
    case BTRFS_SUPER_MAGIC:
      return "btrfs";
    case TMPFS_MAGIC:
      return "tmpfs";
    case OVERLAYFS_SUPER_MAGIC:
      return "overlayfs";
    case NFS_SUPER_MAGIC:
      return "nfs";
    default:
      return fmt::format("0x{:x}", static_cast<unsigned long>(sf.f_type));
  }
}

}  // namespace hsm::cache
