// ContentFile: one file of the cache tree, at one remote version, on one cache inode — the
// per-file content state the cache owns (as CVMFS's cache manager and Mountpoint-S3's data
// cache own theirs). Scheduling (which chunks to fetch, who waits) is the caller's.
//
// Contract
// - load() reads the file's index row, then opens the inode under its name and checks it
//   against the row (MetaDb, "Inodes"): a row naming another inode, or a file of another
//   size, first gets a new, empty inode (CacheStore::replaceFile); a row that knows no
//   inode yet (a cache from before schema v5) adopts this one. The present-map returned by
//   recorded() therefore always describes this inode. ENOENT: not a file of the tree.
// - write() is the sink fetched bytes go through: pwrite at their offset, runs of zeros
//   skipped (the file is a hole there already). Never past size(). It may run on many
//   threads at once for disjoint ranges.
// - commit(present) makes the chunks of `present` durable, then records them, in that
//   order: fdatasync (fsync once complete), then MetaDb::recordContent guarded by version
//   and inode, then the state attribute is due (settleState()). If the sync fails nothing is recorded and the
//   error is returned: the kernel reports a writeback error once per file, so a later sync
//   would "succeed" over lost pages. The caller must then treat every chunk it had not
//   recorded before as missing (fetch and write it again); `syncFailed` says so. If only
//   the record fails, the bytes are durable and may be recorded by a later commit(). Calls
//   of one file's commit() must not overlap.
// - The state attribute is written only while no one has the file open (a write lease
//   tells): setting it moves the inode's ctime, and archive tools compare the ctime from
//   before reading a file with the one after (GNU tar: "file changed as we read it").
//   Otherwise it stays pending (statePending()) until settleState() finds the file
//   closed, or the file is forgotten (settleState(true), the destructor). A pending
//   attribute lags the index, never leads it: it may say "partial" for a complete file,
//   never "full" for one that is not. settleState() takes and drops the
//   lease: its caller keeps it from overlapping its other lease holders (tryLease()).
// - allocate() and punch() add and remove unwritten extents over byte ranges that hold
//   no data (missing chunks): copy tools then do not take the file for sparse
//   (docs/SEMANTICS.md, 10). Both give the file the remote's mtime back.
// - Releasing content (lease, durable empty record, punch) is releaseContent() below.
// - On xfs the descriptor is opened by handle: writes, allocations and punches through it
//   move neither mtime nor ctime (invisible()), so a reader sees the same stat() before and
//   after the first read of a file; the state attribute still moves ctime (see above).
// - Every file system call goes through CacheIo, so tests can make any of them fail.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/cache_store.h"
#include "util/chunk_map.h"
#include "util/status.h"
#include "util/unique_fd.h"

namespace hsm::cache {

// The cache's file system calls that tests inject failures into (empty: the real call),
// and a crash seam: `crashAt(step)` runs before each step of commit() ("record",
// "attribute") and of releaseContent() ("beforePunch", "record", "attribute", "punch"); if
// it returns true the operation stops there, as if the process had died (ECANCELED).
struct CacheIo {
  std::function<ssize_t(int fd, const void* data, size_t length, off_t offset)> pwrite;
  std::function<int(int fd, bool full)> sync;  // fsync when full, else fdatasync
  std::function<bool(const char* step)> crashAt;
};

class ContentFile {
 public:
  static Result<std::unique_ptr<ContentFile>> load(CacheStore& cache, const std::string& path,
                                                   uint64_t chunkSize, CacheIo io = {});
  ~ContentFile();  // a pending state attribute is written (settleState(true))
  ContentFile(const ContentFile&) = delete;
  ContentFile& operator=(const ContentFile&) = delete;

  const std::string& path() const { return path_; }
  const std::string& version() const { return version_; }
  uint64_t ino() const { return ino_; }
  uint64_t size() const { return size_; }
  int64_t mtimeNs() const { return mtimeNs_; }
  // The chunks the index recorded as present (and durable) when this was loaded.
  const ChunkMap& recorded() const { return recorded_; }

  Status write(uint64_t offset, const char* data, size_t length) const;
  // Gives the file the remote's mtime (and atime) again after writes moved it (nothing
  // to do on xfs, where writes through our descriptor move no time: invisible()).
  void restoreTimes() const;
  bool invisible() const { return invisible_; }
  // `syncFailed` tells a failed sync (the caller must refetch what it had not recorded)
  // from a failed record (the bytes are durable: record them again later).
  Status commit(const ChunkMap& present, bool* syncFailed);
  // Writes a pending state attribute if no one has the file open now (or, with `force`,
  // in any case: the file is being forgotten or replaced); true if none is pending
  // afterwards.
  bool settleState(bool force = false);
  bool statePending() const;
  Status allocate(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const;
  Status punch(const std::vector<std::pair<uint64_t, uint64_t>>& ranges) const;
  // A write lease on this file's descriptor: granted only if no other open file of the
  // inode exists anywhere; opens wait while it is held. False if not granted.
  bool tryLease() const;
  void unlease() const;

 private:
  // Blocks beyond the recorded chunks (`allocated` bytes on disk, more than one `slack`
  // over the recorded ones: written and never recorded after a failed sync or a crash, or
  // allocated for a file no longer open) are punched out, if no one has the file open.
  void reclaimUnrecorded(uint64_t allocated, uint64_t slack) const;
  ContentFile(CacheStore& cache, CacheIo io) : cache_(cache), io_(std::move(io)) {}

  CacheStore& cache_;
  const CacheIo io_;
  std::string path_;
  std::string version_;
  uint64_t ino_ = 0;
  uint64_t size_ = 0;
  int64_t mtimeNs_ = 0;
  ChunkMap recorded_;
  UniqueFd fd_;  // read-write, on the cache's private path
  bool invisible_ = false;  // fd_ moves neither mtime nor ctime (xfs, opened by handle)
  mutable std::mutex stateMu_;  // leaf: pendingState_, and writing the attribute
  int pendingState_ = -1;       // a State not yet on the attribute, or -1
};

// The `[offset, end)` byte ranges of the chunks in [0, chunkCount) for which `pick(chunk)`
// is true, adjacent chunks merged, clipped to `map`'s file size.
std::vector<std::pair<uint64_t, uint64_t>> chunkRuns(const ChunkMap& map,
                                                     const std::function<bool(uint64_t)>& pick);

// Frees the content of files no one uses, race-free (docs/SEMANTICS.md, 8). For each file:
//  1. open read-write and take a write lease (granted only if no other open file of the
//     inode exists: readers, mappings, fanotify event descriptors, FUSE handles; opens wait
//     while it is held); not granted: busy. The row must still have `version` and name this
//     inode: else gone.
//  2. `beforePunch(fd)` (a frontend drops its ignore mark); failed: kept.
//  3. all of them are recorded empty in one durable transaction (MetaDb::releaseContent);
//  4. each one's state attribute says "empty", then its bytes are punched out, mtime
//     restored;
//  5. the leases are dropped.
// A crash anywhere leaves no recorded chunk that is a hole: the record (3) comes before the
// punch (4). The caller makes sure it holds no descriptor of these files itself. `io`:
// see CacheIo (crashAt stops the release before a step, as a crash would).
struct ReleaseRequest {
  std::string path;
  std::string version;  // as in the index
};
struct ReleaseResult {
  uint64_t files = 0;   // released
  uint64_t bytes = 0;   // bytes_present they held
  uint64_t busy = 0;    // in use: skipped
  uint64_t gone = 0;    // changed or removed meanwhile: skipped
  uint64_t failed = 0;  // beforePunch failed: kept

  ReleaseResult& operator+=(const ReleaseResult& o) {
    files += o.files;
    bytes += o.bytes;
    busy += o.busy;
    gone += o.gone;
    failed += o.failed;
    return *this;
  }
};
Result<ReleaseResult> releaseContent(CacheStore& cache, const std::vector<ReleaseRequest>& files,
                                     const std::function<Status(int fd)>& beforePunch,
                                     const CacheIo& io = {});

}  // namespace hsm::cache
