#include "frontend/fuse/node_table.h"

namespace hsm::frontend {

NodeTable::NodeTable() {
  // The root is never looked up and never forgotten: the kernel knows it from mount.
  nodes_[kRootId] = Node{"", 0, 1};
  ids_[""] = kRootId;
}

std::optional<std::string> NodeTable::path(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second.path;
}

std::optional<uint64_t> NodeTable::version(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second.version;
}

std::optional<uint64_t> NodeTable::idOf(const std::string& path) const {
  std::lock_guard lock(mu_);
  auto it = ids_.find(path);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

uint64_t NodeTable::ref(const std::string& path, uint64_t version) {
  std::lock_guard lock(mu_);
  auto it = ids_.find(path);
  if (it != ids_.end()) {
    Node& n = nodes_[it->second];
    if (it->second == kRootId || n.version == version) {
      n.lookups++;
      return it->second;
    }
  }
  uint64_t id = next_++;
  nodes_[id] = Node{path, version, 1};
  ids_[path] = id;  // an older version's id keeps its node until forgotten
  return id;
}

void NodeTable::forget(uint64_t id, uint64_t n) {
  if (id == kRootId) return;
  std::lock_guard lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return;
  if (it->second.lookups > n) {
    it->second.lookups -= n;
    return;
  }
  auto cur = ids_.find(it->second.path);
  if (cur != ids_.end() && cur->second == id) ids_.erase(cur);
  nodes_.erase(it);
}

size_t NodeTable::size() const {
  std::lock_guard lock(mu_);
  return nodes_.size();
}

uint64_t NodeTable::lookups(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(id);
  return it == nodes_.end() ? 0 : it->second.lookups;
}

}  // namespace hsm::frontend
