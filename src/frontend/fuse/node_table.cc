#include "frontend/fuse/node_table.h"

namespace hsm::frontend {

NodeTable::NodeTable() {
  // The root is never looked up and never forgotten: the kernel knows it from mount.
  nodes_[kRootId] = Node{"", 1};
  ids_[""] = kRootId;
}

std::optional<std::string> NodeTable::path(uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second.path;
}

uint64_t NodeTable::ref(const std::string& path) {
  std::lock_guard lock(mu_);
  auto it = ids_.find(path);
  if (it != ids_.end()) {
    nodes_[it->second].lookups++;
    return it->second;
  }
  uint64_t id = next_++;
  nodes_[id] = Node{path, 1};
  ids_[path] = id;
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
  ids_.erase(it->second.path);
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
