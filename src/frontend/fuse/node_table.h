// NodeTable: the FUSE node ids of one mount and the relative paths they stand for.
//
// Contract
// - The kernel names every inode by a node id it got from a lookup (or readdirplus) reply,
//   and gives it back with forget(id, n) once it drops n of those references. The table
//   keeps id <-> relative path ("" is the root, id FUSE_ROOT_ID = 1) and the lookup count.
//   An id leaves the table when its count reaches 0; the root never leaves.
// - Each id also stands for one version of its path: the inode number of the cache tree's
//   entry when it was looked up. A remote change replaces the cache entry with a new inode;
//   the next lookup of the path then gets a new id (a new kernel inode), so files still
//   open on the old version keep the old size and pages and are never mixed with the new
//   one. The old id keeps its path until forgotten; version() tells it apart.
// - Ids are never reused (64-bit counter), so the generation is always 0.
// - Thread-safe: one mutex (rank 50, a leaf: nothing else is locked under it, no I/O).
//   Owned by one FuseFrontend; no global state.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace hsm::frontend {

class NodeTable {
 public:
  static constexpr uint64_t kRootId = 1;

  NodeTable();

  // The path of `id`, or nullopt if the kernel holds no reference to it.
  std::optional<std::string> path(uint64_t id) const;
  // The version (cache inode number) `id` was looked up with; 0 for the root (any).
  std::optional<uint64_t> version(uint64_t id) const;
  // The id the kernel currently knows `path` by, if any.
  std::optional<uint64_t> idOf(const std::string& path) const;
  // One more kernel reference to version `version` of `path`: returns its id (a new one if
  // the path had none, or had one for another version).
  uint64_t ref(const std::string& path, uint64_t version);
  // The kernel drops `n` references to `id` (forget). Unknown ids are ignored.
  void forget(uint64_t id, uint64_t n);

  size_t size() const;                  // ids held, the root included
  uint64_t lookups(uint64_t id) const;  // 0 if unknown (tests)

 private:
  struct Node {
    std::string path;
    uint64_t version = 0;
    uint64_t lookups = 0;
  };
  mutable std::mutex mu_;  // rank 50: nodes_, ids_, next_ (leaf)
  std::unordered_map<uint64_t, Node> nodes_;
  std::unordered_map<std::string, uint64_t> ids_;  // path -> its newest id
  uint64_t next_ = kRootId + 1;
};

}  // namespace hsm::frontend
