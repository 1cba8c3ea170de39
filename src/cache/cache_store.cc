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

struct timespec toTimespec(int64_t ns) {
  struct timespec ts {};
  ts.tv_sec = ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1000000000;
    ts.tv_sec -= 1;
  }
  return ts;
}

}  // namespace

Result<std::unique_ptr<CacheStore>> CacheStore::open(const std::string& cacheDir, int lockWaitMs) {
  std::unique_ptr<CacheStore> cs(new CacheStore());
  cs->dir_ = cacheDir;
  // Parent directories of the cache may be created (e.g. /var/cache/fanhsm/...).
  for (size_t pos = 1; pos < cacheDir.size(); ++pos) {
    if (cacheDir[pos] == '/') HSM_RETURN_IF_ERROR(makeDir(cacheDir.substr(0, pos), 0755));
  }
  HSM_RETURN_IF_ERROR(makeDir(cacheDir, 0700));
  if (::chmod(cacheDir.c_str(), 0700) != 0) return Status::fromErrno(errno, cacheDir);
  HSM_RETURN_IF_ERROR(makeDir(cs->metaPath(), 0700));
  HSM_RETURN_IF_ERROR(makeDir(cs->treePath(), 0755));

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
  auto db = MetaDb::open(cs->metaPath() + "/index.db");
  if (!db) return db.status();
  cs->db_ = std::move(*db);
  if (Status r = cs->takeReserve(); !r) log::warn("{}", r.message());
  return cs;
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

Status CacheStore::materialize(const std::string& dir, const Entry& e,
                               bool discardContent) const {
  HSM_RETURN_IF_ERROR(validateName(e.name, false));
  auto dfd = openBeneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.status();
  const std::string path = joinPath(dir, e.name);
  struct stat st {};
  bool exists = ::fstatat(dfd->get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  auto wrongType = [&](mode_t fmtBits) { return exists && (st.st_mode & S_IFMT) != fmtBits; };
  switch (e.type) {
    case EntryType::kDir: {
      if (wrongType(S_IFDIR)) {
        return Status::error(EEXIST, fmt::format("cache '{}' exists with another type", path));
      }
      if (!exists && ::mkdirat(dfd->get(), e.name.c_str(), 0755) != 0 && errno != EEXIST) {
        return Status::fromErrno(errno, fmt::format("cache mkdir '{}'", path));
      }
      return setAttrs(path, e.mode ? e.mode : 0755, e.mtimeNs);
    }
    case EntryType::kSymlink: {
      if (exists) {
        if (!S_ISLNK(st.st_mode) && !S_ISREG(st.st_mode)) {
          return Status::error(EEXIST, fmt::format("cache '{}' exists with another type", path));
        }
        if (::unlinkat(dfd->get(), e.name.c_str(), 0) != 0) {
          return Status::fromErrno(errno, fmt::format("cache unlink '{}'", path));
        }
      }
      if (::symlinkat(e.linkTarget.c_str(), dfd->get(), e.name.c_str()) != 0) {
        return Status::fromErrno(errno, fmt::format("cache symlink '{}'", path));
      }
      struct timespec ts[2] = {toTimespec(e.mtimeNs), toTimespec(e.mtimeNs)};
      if (::utimensat(dfd->get(), e.name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
        return Status::fromErrno(errno, fmt::format("cache utimens '{}'", path));
      }
      return Status::ok();
    }
    case EntryType::kFile: {
      if (wrongType(S_IFREG)) {
        return Status::error(EEXIST, fmt::format("cache '{}' exists with another type", path));
      }
      if (exists && discardContent) {
        // A new inode, not a truncation: a fetch of the old version still running writes
        // into the old inode, never into the new file; readers holding the old file open
        // get EIO from then on (its path no longer resolves).
        if (::unlinkat(dfd->get(), e.name.c_str(), 0) != 0) {
          return Status::fromErrno(errno, fmt::format("cache unlink '{}'", path));
        }
        exists = false;
      }
      int fd = ::openat(dfd->get(), e.name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                        0600);
      if (fd < 0) return Status::fromErrno(errno, fmt::format("cache create '{}'", path));
      UniqueFd f(fd);
      bool resize = !exists || static_cast<uint64_t>(st.st_size) != e.size || discardContent;
      if (resize) {
        // Drop any old content first: a sparse file of the new size holds no stale bytes.
        if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(e.size)) != 0) {
          return Status::fromErrno(errno, fmt::format("cache truncate '{}'", path));
        }
        // The state attribute, readable through the view (getfattr); the Hydrator keeps it
        // current. Filesystems without user xattrs simply have none.
        const char* state = stateName(e.size == 0 ? State::kFull : State::kEmpty);
        if (::fsetxattr(fd, kStateXattr, state, std::strlen(state), 0) != 0 && errno != ENOTSUP) {
          return Status::fromErrno(errno, fmt::format("cache setxattr '{}'", path));
        }
      }
      if (::fchmod(fd, e.mode ? e.mode : 0644) != 0) {
        return Status::fromErrno(errno, fmt::format("cache chmod '{}'", path));
      }
      struct timespec ts[2] = {toTimespec(e.mtimeNs), toTimespec(e.mtimeNs)};
      if (::futimens(fd, ts) != 0) {
        return Status::fromErrno(errno, fmt::format("cache utimens '{}'", path));
      }
      return Status::ok();
    }
  }
  return Status::error(EINVAL, "unknown entry type");
}

Status CacheStore::setAttrs(const std::string& path, uint32_t mode, int64_t mtimeNs) const {
  auto fd = openBeneath(path, O_RDONLY | O_DIRECTORY);
  if (!fd) return fd.status();
  if (::fchmod(fd->get(), mode) != 0) {
    return Status::fromErrno(errno, fmt::format("cache chmod '{}'", displayPath(path)));
  }
  struct timespec ts[2] = {toTimespec(mtimeNs), toTimespec(mtimeNs)};
  if (::futimens(fd->get(), ts) != 0) {
    return Status::fromErrno(errno, fmt::format("cache utimens '{}'", displayPath(path)));
  }
  return Status::ok();
}

namespace {

// Empties the directory open at `dfd` (no symlink is followed), depth-bounded.
Status removeContents(int dfd, int depth) {
  if (depth > 2048) return Status::error(ELOOP, "tree too deep to remove");
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
  for (const auto& n : names) {
    if (::unlinkat(dfd, n.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR) return Status::fromErrno(errno, "unlink " + n);
    UniqueFd sub(::openat(dfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return Status::fromErrno(errno, "open " + n);
    HSM_RETURN_IF_ERROR(removeContents(sub.get(), depth + 1));
    if (::unlinkat(dfd, n.c_str(), AT_REMOVEDIR) != 0) return Status::fromErrno(errno, "rmdir " + n);
  }
  return Status::ok();
}

}  // namespace

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
  DIR* d = ::fdopendir(dfd->release());
  if (!d) return Status::fromErrno(errno, "fdopendir");
  std::vector<std::string> out;
  while (struct dirent* de = ::readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) out.push_back(de->d_name);
  }
  ::closedir(d);
  return out;
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
