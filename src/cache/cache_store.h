// CacheStore: the on-disk cache directory and the tree that mirrors the remote namespace.
//
// Layout (docs/ONDISK.md):  <cache>/tree/     the mirrored tree; files are sparse, at full size
//                           <cache>/meta/     index.db (MetaDb), lock, fanhsm.log
//                           <cache>/staging/  new inodes before they replace a name (emptied
//                                             at open)
// Contract
// - open() creates the layout if missing (mode 0700, so the sparse tree is not readable
//   by others around the view), takes an exclusive flock on meta/lock (EBUSY if another
//   daemon still holds it after lockWaitMs) and opens the index.
// - Every path is relative (util/rel_path.h) and resolved beneath tree/ with
//   openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): nothing outside tree/ is touched.
// - Listings are applied by applyListing() only, which keeps tree and index consistent and
//   never modifies an inode a reader may hold: a file whose version changed gets a new
//   inode, made in staging/, recorded in the index (durably) and only then renamed over the
//   old name. The name never vanishes; a reader holding the old inode keeps the old
//   version's bytes, never a truncation of them. A crash between any two steps leaves
//   either the old row and the old inode, or a row naming an inode the tree does not hold
//   (its content is then nothing: see MetaDb, "Inodes", and replaceFile()).
// - Thread-safe: no mutable state besides the MetaDb, which locks itself, and a counter
//   for staging names. applyListing() of one directory must not run twice at once (the
//   NamespacePopulator lists each directory single-flight).
// - The daemon's own I/O uses this (unmarked) path, never the user's view mount, so it
//   raises no fanotify events.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/index_types.h"
#include "util/status.h"
#include "util/entry.h"
#include "util/unique_fd.h"

namespace hsm::cache {

class MetaDb;

// Whether the cache file open at `fd` holds its version's content complete and durable
// (its state attribute says "full": set only after fsync and record). For an inode that a
// change at the remote replaced while a reader held it open: such an inode keeps its
// content, so a complete one may still be read as the old version, whole.
bool inodeComplete(int fd);

class CacheStore {
 public:
  static Result<std::unique_ptr<CacheStore>> open(const std::string& cacheDir,
                                                  int lockWaitMs = 10000);
  // OK if `cacheDir` does not exist, is empty (or holds only lost+found), or is a fanhsm
  // cache; EEXIST naming what it holds otherwise (someone else's directory is never taken
  // over). open() checks it too; the CLI checks it before it creates anything there.
  static Status checkCacheDir(const std::string& cacheDir);

  const std::string& dir() const { return dir_; }
  std::string treePath() const { return dir_ + "/tree"; }
  std::string metaPath() const { return dir_ + "/meta"; }
  int treeFd() const { return treeFd_.get(); }
  ~CacheStore();
  CacheStore(const CacheStore&) = delete;
  CacheStore& operator=(const CacheStore&) = delete;

  // The index, for code of src/cache/ and for tests (its header is private to src/cache/:
  // scripts/check-layers.sh). Everyone else uses the operations below.
  MetaDb& db() { return *db_; }

  // Binds the cache to the source `sourceDesc` (Remote::describe()) and returns its chunk
  // size: a new cache takes `chunkSize` and remembers both; an existing one keeps its own
  // chunk size (its range maps use it). EEXIST if the cache holds another source.
  Result<uint64_t> bind(const std::string& sourceDesc, uint64_t chunkSize);

  // The index's row of `path` (nullopt: not in the tree).
  Result<std::optional<EntryRow>> entry(const std::string& path);
  // The root directory's own row, from the remote's root entry (its listed state is kept),
  // and the tree's root gets the entry's owner, mode and mtime.
  Status addRoot(const Entry& root);
  // `dir`'s listing was found unchanged at `listedAt` (s).
  Status touchListing(const std::string& dir, int64_t listedAt);
  // Totals (O(1)), and the bytes present (the quota's measure; O(1)).
  Result<CacheStats> stats();
  Result<uint64_t> contentBytes();
  // Files with content and no pin, least recently used first, up to `limit`.
  Result<std::vector<ReleaseCandidate>> releaseCandidates(size_t limit);
  // `path`'s content was used at `ns` (CLOCK_REALTIME; only moves forward).
  Status touchAccess(const std::string& path, int64_t ns);
  // Pins (or unpins) the file `path` or every file below the directory `path`; returns
  // how many changed.
  Result<uint64_t> setPinned(const std::string& path, bool pinned);
  // The files of the subtree at `path` (a file: itself), in path order.
  Result<std::vector<FileRef>> filesUnder(const std::string& path);
  // Directories not yet listed at or below `path`, up to `limit`; and all of them, in
  // path order after `after`, as a cursor (O(log n + limit)).
  Result<std::vector<std::string>> unlistedDirsUnder(const std::string& path, size_t limit);
  Result<std::vector<std::string>> unlistedDirs(size_t limit,
                                                const std::optional<std::string>& after = {});

  // Opens an entry of the tree (O_CLOEXEC added). Symlinks are never followed.
  Result<UniqueFd> openBeneath(const std::string& path, int flags) const;

  // Applies one listing of directory `dir` (already in the tree and the index) to both:
  //  - a new name is created: directories, symlinks, and files sparse at full size with
  //    owner (Entry::uid/gid, where not -1), mode, POSIX ACL, mtime and the state attribute (a file
  //    appears whole, at its size: made as an O_TMPFILE and linked in);
  //  - a file whose version and size are unchanged keeps its inode and content (owner, mode,
  //    ACL and mtime are set only where they differ, so its ctime does not move);
  //  - a file whose version or size changed, or whose inode is not the one its row knows,
  //    gets a new empty inode (see the contract above);
  //  - a name that changed type is removed with everything below it, then created;
  //  - with `relist`, names the listing no longer has are removed from tree and index.
  // The directory is marked listed with `validator` at `listedAt`, and gets its row's mode
  // and mtime. Errors: EINVAL/ENAMETOOLONG for a bad name, the filesystem's or the index's
  // errno otherwise (the directory then stays as it was or unlisted).
  struct ListingChanges {
    std::vector<std::string> changed;  // paths that now name a new inode (or another type)
    std::vector<std::string> removed;  // paths gone (with relist)
    std::vector<std::string> subdirs;  // directories of the listing
  };
  Result<ListingChanges> applyListing(const std::string& dir, const std::vector<Entry>& entries,
                                      const std::string& validator, int64_t listedAt,
                                      bool relist);
  // Replaces the file at `path`, whose row is `row`, with a new, empty inode of the row's
  // size, mode and mtime: recorded (durably) as holding no content, then renamed over the
  // name. For a row found naming another inode than the tree's, or of another size (a
  // crash between the steps above). Returns the new inode.
  Result<uint64_t> replaceFile(const std::string& path, const EntryRow& row) const;
  // Gives directory `path` `mode` and `mtimeNs` (and owner `uid`:`gid` unless -1, and the
  // POSIX access ACL `*acl` if given, "" for none), where they differ.
  Status setAttrs(const std::string& path, uint32_t mode, int64_t mtimeNs, int64_t uid = -1,
                  int64_t gid = -1, const std::string* acl = nullptr) const;
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
  // A new file inode for `path` with `e`'s size, mode, mtime and state attribute: without
  // `stagedName`, an O_TMPFILE in directory `dirFd` linked in as e.name (the name appears
  // whole, at its size); with it, a file in staging/ whose fresh name is returned there.
  Result<uint64_t> makeFile(const Entry& e, int dirFd, const std::string& path,
                            std::string* stagedName) const;
  Status renameStaged(const std::string& stagedName, int dirFd, const std::string& name,
                      const std::string& path) const;
  Status clearStaging() const;

  UniqueFd treeFd_;
  UniqueFd stagingFd_;
  std::unique_ptr<MetaDb> db_;
  mutable std::atomic<uint64_t> staged_{0};
};

}  // namespace hsm::cache
