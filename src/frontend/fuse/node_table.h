// NodeTable: the FUSE node ids of one mount and the relative paths they stand for.
//
// Contract
// - The kernel names every inode by a node id it got from a lookup (or readdirplus) reply,
//   and gives it back with forget(id, n) once it drops n of those references. The table
//   keeps id <-> relative path ("" is the root, id FUSE_ROOT_ID = 1) and the lookup count.
//   An id leaves the table when its count reaches 0; the root never leaves.
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
  // One more kernel reference to `path`: returns its id (a new one if it had none).
  uint64_t ref(const std::string& path);
  // The kernel drops `n` references to `id` (forget). Unknown ids are ignored.
  void forget(uint64_t id, uint64_t n);

  size_t size() const;                  // ids held, the root included
  uint64_t lookups(uint64_t id) const;  // 0 if unknown (tests)

 private:
  struct Node {
    std::string path;
    uint64_t lookups = 0;
  };
  mutable std::mutex mu_;  // rank 50: nodes_, ids_, next_ (leaf)
  std::unordered_map<uint64_t, Node> nodes_;
  std::unordered_map<std::string, uint64_t> ids_;
  uint64_t next_ = kRootId + 1;
};

}  // namespace hsm::frontend
