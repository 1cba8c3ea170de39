// CacheStore: the on-disk cache directory and the tree that mirrors the remote namespace.
//
// Layout (docs/ONDISK.md):  <cache>/tree/  the mirrored tree; files are sparse, at full size
//                           <cache>/meta/  index.db (MetaDb), lock, fanhsm.log
// Contract
// - open() creates the layout if missing (mode 0700, so the sparse tree is not readable
//   by others around the view), takes an exclusive flock on meta/lock (EBUSY if another
//   daemon still holds it after lockWaitMs) and opens the index.
// - Every path is relative (util/rel_path.h) and resolved beneath tree/ with
//   openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): nothing outside tree/ is touched.
// - Thread-safe: no mutable state besides the MetaDb, which locks itself.
// - The daemon's own I/O uses this (unmarked) path, never the user's view mount, so it
//   raises no fanotify events.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cache/meta_db.h"
#include "util/entry.h"
#include "util/unique_fd.h"

namespace hsm::cache {

class CacheStore {
 public:
  static Result<std::unique_ptr<CacheStore>> open(const std::string& cacheDir,
                                                  int lockWaitMs = 10000);

  const std::string& dir() const { return dir_; }
  std::string treePath() const { return dir_ + "/tree"; }
  std::string metaPath() const { return dir_ + "/meta"; }
  int treeFd() const { return treeFd_.get(); }
  MetaDb& db() { return *db_; }

  // Opens an entry of the tree (O_CLOEXEC added). Symlinks are never followed.
  Result<UniqueFd> openBeneath(const std::string& path, int flags) const;

  // Creates (or updates the attributes of) `e` inside directory `dir` of the tree:
  // directories with their mode; files sparse at full size with mode and mtime; symlinks
  // with their target. An existing file of the right size keeps its content unless
  // `discardContent`, which replaces it with a new, empty inode. EEXIST if the name exists
  // with another type. Directory mtimes are set by setAttrs() after the listing.
  Status materialize(const std::string& dir, const Entry& e, bool discardContent) const;
  Status setAttrs(const std::string& path, uint32_t mode, int64_t mtimeNs) const;
  // Removes entry `name` of directory `dir` from the tree, a directory with everything
  // below it. Never follows symlinks. ENOENT if it is not there.
  Status removeEntry(const std::string& dir, const std::string& name) const;
  // Names in directory `dir` of the tree.
  Result<std::vector<std::string>> names(const std::string& dir) const;

  // Space kept back for the index: meta/reserve, kReserveBytes allocated. When the cache
  // filesystem is full, dropReserve() frees it so that releases can still be recorded
  // (a release is written to the index before any byte is punched out); takeReserve()
  // allocates it again afterwards (ENOSPC if there is no room yet). open() takes it if it
  // can.
  static constexpr uint64_t kReserveBytes = 8 << 20;
  Status takeReserve() const;
  void dropReserve() const;

  // Filesystem type name of the cache ("ext4", "tmpfs", ...).
  std::string fsTypeName() const;

 private:
  CacheStore() = default;
  std::string dir_;
  UniqueFd lockFd_;
  UniqueFd treeFd_;
  std::unique_ptr<MetaDb> db_;
};

}  // namespace hsm::cache
