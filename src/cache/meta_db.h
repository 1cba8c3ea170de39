// MetaDb: the persistent index of a cache — one row per entry of the mirrored tree with
// its attributes, remote version, content state and present-chunk map; plus key/value
// settings (schema version, source, chunk size). Private to src/cache/ (checked by
// scripts/check-layers.sh): other layers go through CacheStore, which keeps tree and
// index consistent; the row types are in index_types.h.
//
// Contract
// - Backed by SQLite in WAL mode at <cache>/meta/index.db; rows keyed by relative path
//   (B-tree: lookups are O(log n), nothing is loaded into memory in full).
// - Thread-safe: one connection guarded by a mutex (rank 30, see docs/LOCKING.md); every
//   method is one short transaction. Never called with another fanhsm lock held... except
//   the Hydrator's per-file lock, which ranks below it.
// - Durability: recordContent() is called only after the bytes it describes were
//   fdatasync()ed (the Hydrator guarantees this), so a recorded chunk is never a hole.
// - Inodes (schema v5): a file row names the cache inode its content describes (`ino`).
//   Content is recorded only against that inode (ContentUpdate::ino); a row that is given
//   a new inode starts over with no content. So a row never describes the bytes of an
//   inode it did not see filled, whatever a crash kept of the tree and of the index.
// - Scale: every query on a hot path is a B-tree lookup or an index range (no full scans);
//   totals (stats, contentBytes) come from a small table that triggers keep (schema v4).
// - Errors: EIO with SQLite's message; a schema newer than this binary knows: EPROTO.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/index_types.h"
#include "util/entry.h"
#include "util/status.h"

namespace hsm::cache {

class MetaDb {
 public:
  // Prepared statements of the connection, by the address of their SQL text.
  using StmtCache = std::unordered_map<const char*, sqlite3_stmt*>;

  static constexpr int kSchemaVersion = 5;

  // Opens or creates the index; runs migrations. `path` is the database file.
  static Result<std::unique_ptr<MetaDb>> open(const std::string& path);
  ~MetaDb();
  MetaDb(const MetaDb&) = delete;
  MetaDb& operator=(const MetaDb&) = delete;

  Result<std::optional<std::string>> getSetting(const std::string& key);
  Status setSetting(const std::string& key, const std::string& value);

  Result<std::optional<EntryRow>> get(const std::string& path);

  // Inserts or updates one row as listed from the remote. A file whose version is
  // unchanged keeps its content state; a changed or new file starts kEmpty; a directory
  // keeps its listed flag. Returns true if an existing file's version changed (its cached
  // content must be discarded by the caller).
  Result<bool> upsertEntry(const std::string& path, const Entry& e);
  // Applies a whole directory listing in one transaction and marks `dir` listed, with the
  // listing's validator and time. `changed` receives the paths of files whose version
  // changed. Entries no longer listed are removed by the caller (removeSubtree).
  // `inos`, if given, holds for each entry the cache inode its name now refers to ({0}:
  // leave the row's as it is); a `fresh` inode is a new, empty one, so its row starts with
  // no content whatever its version (inode numbers are reused: a number equal to the old
  // one proves nothing). `durable` makes the commit reach the disk before this returns
  // (synchronous=FULL), for callers that change the tree only after it.
  Status applyListing(const std::string& dir, const std::vector<Entry>& entries,
                      std::vector<std::string>* changed, const std::string& validator = "",
                      int64_t listedAt = 0, const std::vector<EntryInode>* inos = nullptr,
                      bool durable = false);
  // A file row whose inode was not known (a cache from before v5) adopts `ino`, if its
  // version is still `version` and no inode was recorded meanwhile. Returns whether it did.
  Result<bool> adoptIno(const std::string& path, const std::string& version, uint64_t ino);
  // The file at `path` (version `version`) is now the new, empty inode `ino`: no content,
  // durably (the caller puts the inode in place only after this). ENOENT if the row is gone
  // or has another version.
  Status resetContent(const std::string& path, const std::string& version, uint64_t ino);
  // Records that `dir`'s listing was found unchanged at `listedAt`.
  Status touchListing(const std::string& dir, int64_t listedAt);
  // Removes `path` and everything below it.
  Status removeSubtree(const std::string& path);

  // Records content states in one transaction (see durability above).
  Status recordContent(const std::vector<ContentUpdate>& updates);

  // Release: marks files as holding no content (state kEmpty, no chunks), in one
  // transaction made durable before it returns (the caller punches the bytes out only
  // after this, so a crash can never leave a recorded chunk that is a hole). Rows whose
  // version changed meanwhile are left alone. Returns how many rows were updated.
  Result<size_t> releaseContent(const std::vector<std::pair<std::string, std::string>>& pathVersions);
  // Files with content and no pin, least recently used first, up to `limit`.
  Result<std::vector<ReleaseCandidate>> releaseCandidates(size_t limit);
  // Records that `path`'s content was used at `ns` (only moves forward).
  Status touchAccess(const std::string& path, int64_t ns);
  // Sets the pin flag of the file `path`, or of every file below the directory `path`
  // ("" is the root). Returns the number of files changed.
  Result<uint64_t> setPinned(const std::string& path, bool pinned);
  // The files of the subtree at `path` (a file: itself), in path order.
  Result<std::vector<FileRef>> filesUnder(const std::string& path);
  // Directories not yet listed at or below `path` ("" is the root), up to `limit`.
  Result<std::vector<std::string>> unlistedDirsUnder(const std::string& path, size_t limit);
  // Sum of bytes_present over all files (the quota's measure of the cache's content).
  // O(1), from the running totals.
  Result<uint64_t> contentBytes();

  // Directories not yet listed whose path sorts after `after` (nullopt: from the first),
  // in path order, up to `limit`: a cursor to walk them in batches. O(log n + limit).
  Result<std::vector<std::string>> unlistedDirs(
      size_t limit, const std::optional<std::string>& after = std::nullopt);

  // Totals by type and state. O(1): read from running totals that triggers keep (v4).
  Result<CacheStats> stats();
  // The same totals computed by scanning every entry (O(n)): for checks and tests.
  Result<CacheStats> statsByScan();

 private:
  explicit MetaDb(sqlite3* db) : db_(db) {}
  Status exec(const char* sql);
  Status migrate();
  Result<bool> upsertLocked(const std::string& path, const Entry& e, EntryInode ino = {});
  // Runs `body` in one transaction that is on disk when it returns (synchronous=FULL).
  Status durableTxnLocked(const std::function<Status()>& body);
  Result<CacheStats> statsFrom(bool scan);

  std::mutex mu_;  // rank 30: guards db_ and stmts_
  sqlite3* db_;
  StmtCache stmts_;
};

}  // namespace hsm::cache
