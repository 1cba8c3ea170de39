// The cache index's vocabulary: content states, rows and totals, shared by CacheStore's
// callers. The index itself (MetaDb) is private to src/cache/.
#pragma once

#include <cstdint>
#include <string>

#include "util/entry.h"

namespace hsm::cache {

// Content state of a file; directories use kUnlisted/kListed.
enum class State : int { kEmpty = 0, kPartial = 1, kFull = 2 };
inline constexpr int kDirUnlisted = 0;
inline constexpr int kDirListed = 1;

const char* stateName(State s);
// Extended attribute on each cache file holding stateName() of its content; visible through
// the view (getfattr -n user.fanhsm.state FILE).
inline constexpr char kStateXattr[] = "user.fanhsm.state";

struct EntryRow {
  std::string path;
  EntryType type = EntryType::kFile;
  uint64_t size = 0;
  int64_t mtimeNs = 0;
  uint32_t mode = 0;
  std::string linkTarget;
  std::string version;
  int state = 0;             // State for files, kDirUnlisted/kDirListed for dirs
  std::string present;       // ChunkMap::serialize() for files
  uint64_t bytesPresent = 0;
  int64_t listedAt = 0;      // dirs: when the listing was made or last revalidated (s)
  bool pinned = false;       // files: content is kept (fetched, never released by the quota)
  int64_t lastAccessNs = 0;  // files: last known use of the content (eviction order)
  uint64_t ino = 0;          // files: the cache inode this row's content describes (0: not
                             // yet known, a cache from before schema v5)
};

struct ContentUpdate {
  std::string path;
  std::string version;  // update applies only if the row still has this version
  State state = State::kEmpty;
  std::string present;
  uint64_t bytesPresent = 0;
  int64_t accessNs = 0;  // if non-zero: the content was used at this time (CLOCK_REALTIME ns)
  uint64_t ino = 0;      // if non-zero: update applies only if the row describes this inode
};

// A file whose content may be released, oldest use first.
struct ReleaseCandidate {
  std::string path;
  std::string version;
  uint64_t size = 0;
  uint64_t bytesPresent = 0;
  int64_t mtimeNs = 0;
  int64_t lastAccessNs = 0;
};

// A file of a subtree (fetch, pin).
struct FileRef {
  std::string path;
  uint64_t size = 0;
  uint64_t bytesPresent = 0;
  bool pinned = false;
  std::string version;  // the remote version the content belongs to
};

// The cache inode a listed file's name refers to (MetaDb::applyListing): `fresh` is a new,
// empty inode; {0, false} leaves the row's as it is.
struct EntryInode {
  uint64_t ino = 0;
  bool fresh = false;
};

struct CacheStats {
  uint64_t files = 0, filesEmpty = 0, filesPartial = 0, filesFull = 0;
  uint64_t dirs = 0, dirsListed = 0, symlinks = 0;
  uint64_t bytesTotal = 0, bytesPresent = 0;
  uint64_t filesPinned = 0, bytesPinned = 0;  // bytesPinned: full size of pinned files
};

}  // namespace hsm::cache
