// LocalDirRemote: the "mirror" backend — a local directory (slow disk, NFS export,
// archive) as a Remote.
//
// Every path is resolved beneath the source root with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so a symlink inside the source is reported as a symlink and never
// followed, and nothing outside the source is read. The source is opened O_RDONLY only,
// and files O_NONBLOCK: a FIFO or socket put where a listed file was fails that file alone
// (ENOENT, "no longer a regular file") instead of blocking a reader and a worker thread.
// Versions are "<size>:<mtime ns>:<inode>"; a file whose version changed fails with
// ESTALE. Thread-safe: no mutable state after construction.
#pragma once

#include <memory>
#include <string>

#include "remote/remote.h"
#include "util/unique_fd.h"

namespace hsm::remote {

class LocalDirRemote final : public Remote {
 public:
  // Opens `root`. Fails with ENOENT/ENOTDIR/EACCES naming the path.
  static Result<std::unique_ptr<LocalDirRemote>> open(const std::string& root);

  // Always a full listing: a directory's mtime does not change when a file in it is
  // rewritten, so it cannot tell that nothing changed.
  Result<Listing> list(const std::string& dir, const std::string& validator) override;
  Status read(const std::string& path, const ObjectVersion& version, uint64_t offset,
              uint64_t length, ByteSink& sink) override;
  Result<Entry> rootEntry() override;
  std::string describe() const override { return "dir:" + root_; }

 private:
  LocalDirRemote(std::string root, UniqueFd rootFd) : root_(std::move(root)), rootFd_(std::move(rootFd)) {}
  Result<UniqueFd> openBeneath(const std::string& path, int flags) const;

  const std::string root_;
  const UniqueFd rootFd_;
};

}  // namespace hsm::remote
