#include "remote/localdir/localdir_remote.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "util/rel_path.h"

namespace hsm::remote {
namespace {

// The POSIX access ACL of `name` in the directory open at `dirFd` ("" if it has none, or
// the filesystem has no ACLs). Through /proc/self/fd: the last component is not followed.
std::string accessAcl(int dirFd, const char* name) {
  const std::string path = fmt::format("/proc/self/fd/{}/{}", dirFd, name);
  char buf[4096];
  const ssize_t n = ::lgetxattr(path.c_str(), "system.posix_acl_access", buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

ObjectVersion versionOf(const struct stat& st) {
  return fmt::format("{}:{}:{}", st.st_size,
                     int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, st.st_ino);
}

int64_t mtimeNsOf(const struct stat& st) {
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace

Result<std::unique_ptr<LocalDirRemote>> LocalDirRemote::open(const std::string& root) {
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::fromErrno(errno, fmt::format("source '{}'", root));
  return std::unique_ptr<LocalDirRemote>(new LocalDirRemote(root, UniqueFd(fd)));
}

Result<UniqueFd> LocalDirRemote::openBeneath(const std::string& path, int flags) const {
  if (path.empty()) {
    int fd = ::openat(rootFd_.get(), ".", flags | O_CLOEXEC);
    if (fd < 0) return Status::fromErrno(errno, fmt::format("source '{}'", root_));
    return UniqueFd(fd);
  }
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, rootFd_.get(), path.c_str(), &how, sizeof how));
  if (fd < 0) {
    int err = errno == ELOOP ? ENOENT : errno;  // a symlink where a dir/file was: gone
    return Status::fromErrno(err, fmt::format("source '{}/{}'", root_, path));
  }
  return UniqueFd(fd);
}

Result<Listing> LocalDirRemote::list(const std::string& dir, const std::string& /*validator*/) {
  auto dfd = openBeneath(dir, O_RDONLY | O_DIRECTORY);
  if (!dfd) return dfd.status();
  int dupfd = ::fcntl(dfd->get(), F_DUPFD_CLOEXEC, 0);
  if (dupfd < 0) return Status::fromErrno(errno, "dup");
  DIR* d = ::fdopendir(dupfd);
  if (d == nullptr) {
    int err = errno;
    ::close(dupfd);
    return Status::fromErrno(err, fmt::format("source '{}/{}'", root_, dir));
  }
  Listing out;
  Status failure;
  while (true) {
    errno = 0;
    struct dirent* de = ::readdir(d);
    if (de == nullptr) {
      if (errno != 0) failure = Status::fromErrno(errno, fmt::format("readdir '{}/{}'", root_, dir));
      break;
    }
    std::string_view name(de->d_name);
    if (name == "." || name == "..") continue;
    Status valid = validateName(name, false);
    if (!valid) {
      out.skipped.push_back(fmt::format("{}: {}", name, valid.message()));
      continue;
    }
    struct stat st {};
    if (::fstatat(dfd->get(), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed while listing
      out.skipped.push_back(fmt::format("{}: stat: {}", name, std::strerror(errno)));
      continue;
    }
    Entry e;
    e.name = std::string(name);
    e.mtimeNs = mtimeNsOf(st);
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    if (!S_ISLNK(st.st_mode)) e.acl = accessAcl(dfd->get(), de->d_name);
    if (S_ISREG(st.st_mode)) {
      e.type = EntryType::kFile;
      e.size = static_cast<uint64_t>(st.st_size);
      e.version = versionOf(st);
    } else if (S_ISDIR(st.st_mode)) {
      e.type = EntryType::kDir;
    } else if (S_ISLNK(st.st_mode)) {
      e.type = EntryType::kSymlink;
      std::vector<char> buf(static_cast<size_t>(std::max<off_t>(st.st_size, 255)) + 2);
      ssize_t n = ::readlinkat(dfd->get(), de->d_name, buf.data(), buf.size());
      if (n < 0 || static_cast<size_t>(n) >= buf.size()) {
        out.skipped.push_back(fmt::format("{}: readlink failed", name));
        continue;
      }
      e.linkTarget.assign(buf.data(), static_cast<size_t>(n));
    } else {
      out.skipped.push_back(fmt::format("{}: not a regular file, directory or symlink", name));
      continue;
    }
    out.entries.push_back(std::move(e));
  }
  ::closedir(d);
  if (!failure) return failure;
  std::sort(out.entries.begin(), out.entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return out;
}

Status LocalDirRemote::read(const std::string& path, const ObjectVersion& version,
                            uint64_t offset, uint64_t length, ByteSink& sink) {
  // O_NONBLOCK: whoever can write in the source may put a FIFO where a listed file was;
  // a blocking open would wait for a writer forever (and hold a worker thread, and the
  // reader). Only a regular file is read; anything else fails this file alone.
  auto fd = openBeneath(path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (!fd && fd.status().code() == ENXIO) {  // a socket
    return Status::error(ENOENT, fmt::format("source '{}/{}' is no longer a regular file", root_, path));
  }
  if (!fd) return fd.status();
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) return Status::fromErrno(errno, "fstat");
  if (!S_ISREG(st.st_mode)) {
    return Status::error(ENOENT, fmt::format("source '{}/{}' is no longer a regular file", root_, path));
  }
  if (versionOf(st) != version) {
    return Status::error(ESTALE, fmt::format("source '{}/{}' changed since it was listed", root_, path));
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (offset >= size) return Status::ok();
  uint64_t end = std::min(size, offset + length);
  constexpr size_t kBuf = 1 << 20;
  std::vector<char> buf(std::min<uint64_t>(kBuf, end - offset));
  uint64_t pos = offset;
  while (pos < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    ssize_t n = ::pread(fd->get(), buf.data(), want, static_cast<off_t>(pos));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::fromErrno(errno, fmt::format("read '{}/{}'", root_, path));
    }
    if (n == 0) {
      return Status::error(ESTALE, fmt::format("source '{}/{}' shrank while reading", root_, path));
    }
    // Deliver only bytes read while the file was still the version asked for: the caller
    // may publish them at once, so a change must be caught before, not after, delivery.
    struct stat after {};
    if (::fstat(fd->get(), &after) != 0) return Status::fromErrno(errno, "fstat");
    if (versionOf(after) != version) {
      return Status::error(ESTALE, fmt::format("source '{}/{}' changed while reading", root_, path));
    }
    if (sink.cancelled()) return Status::error(ECANCELED, fmt::format("reading '{}': cancelled", path));
    HSM_RETURN_IF_ERROR(sink.write(pos, buf.data(), static_cast<size_t>(n)));
    pos += static_cast<uint64_t>(n);
  }
  return Status::ok();
}

Result<Entry> LocalDirRemote::rootEntry() {
  struct stat st {};
  if (::fstat(rootFd_.get(), &st) != 0) return Status::fromErrno(errno, root_);
  Entry e;
  e.type = EntryType::kDir;
  e.mode = st.st_mode & 07777;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.acl = accessAcl(rootFd_.get(), ".");
  e.mtimeNs = mtimeNsOf(st);
  return e;
}

}  // namespace hsm::remote
