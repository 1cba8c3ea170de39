// FakeRemote: an in-memory Remote for unit tests. The test builds a tree, decides when
// reads complete (gate), injects failures, and counts every call ("a second read makes
// no remote call").
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <set>
#include <mutex>
#include <string>

#include "remote/remote.h"
#include "util/rel_path.h"

namespace hsm::testing {

class FakeRemote final : public remote::Remote {
 public:
  void addDir(const std::string& path, uint32_t mode = 0755) {
    std::lock_guard lock(mu_);
    Entry e;
    e.name = std::string(baseName(path));
    e.type = EntryType::kDir;
    e.mode = mode;
    e.mtimeNs = 1'600'000'000'000'000'000 + static_cast<int64_t>(path.size());
    nodes_[path] = Node{e, ""};
  }
  void addFile(const std::string& path, std::string content, uint32_t mode = 0644) {
    std::lock_guard lock(mu_);
    Entry e;
    e.name = std::string(baseName(path));
    e.type = EntryType::kFile;
    e.size = content.size();
    e.mode = mode;
    e.mtimeNs = 1'700'000'000'123'456'789;
    e.version = "v" + std::to_string(++versionCounter_);
    nodes_[path] = Node{e, std::move(content)};
  }
  void addSymlink(const std::string& path, const std::string& target) {
    std::lock_guard lock(mu_);
    Entry e;
    e.name = std::string(baseName(path));
    e.type = EntryType::kSymlink;
    e.linkTarget = target;
    nodes_[path] = Node{e, ""};
  }
  // Replaces content (new version) without the cache knowing: reads of the old version
  // must fail with ESTALE.
  void changeFile(const std::string& path, std::string content) {
    std::lock_guard lock(mu_);
    auto& n = nodes_.at(path);
    n.content = std::move(content);
    n.entry.size = n.content.size();
    n.entry.version = "v" + std::to_string(++versionCounter_);
  }
  void remove(const std::string& path) {
    std::lock_guard lock(mu_);
    nodes_.erase(path);
  }

  // Failure injection: the next `n` reads fail with `err`.
  void failNextReads(int n, int err = EIO) {
    failReads_ = n;
    failErrno_ = err;
  }
  // Reads deliver this many bytes fewer than asked (a truncated body).
  void setShortBy(uint64_t n) { shortBy_ = n; }
  // Reads deliver this many bytes ('X') more than asked, past the range (a hostile source).
  void setLongBy(uint64_t n) { longBy_ = n; }
  // While closed, reads block (after counting) until open() is called.
  void closeGate() {
    std::lock_guard lock(mu_);
    gateOpen_ = false;
  }
  void openGate() {
    {
      std::lock_guard lock(mu_);
      gateOpen_ = true;
    }
    cv_.notify_all();
  }
  // Reads of `path` block (like a closed gate, for that path only) until unblock().
  void block(const std::string& path) {
    std::lock_guard lock(mu_);
    blockedPaths_.insert(path);
  }
  void unblock(const std::string& path) {
    {
      std::lock_guard lock(mu_);
      blockedPaths_.erase(path);
    }
    cv_.notify_all();
  }
  // Reads that ended because their sink was cancelled.
  int cancelledReads() const { return cancelledReads_; }
  int blockedReads() {
    std::lock_guard lock(mu_);
    return blocked_;
  }
  // Blocks until `n` reads are waiting at the closed gate (bounded by the test's timeout).
  bool waitForBlockedReads(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return blocked_ >= n; });
  }

  int reads() const { return reads_; }
  int lists() const { return lists_; }
  uint64_t bytesRead() const { return bytesRead_; }

  Result<remote::Listing> list(const std::string& dir, const std::string& /*validator*/) override {
    lists_++;
    std::lock_guard lock(mu_);
    if (!dir.empty()) {
      auto it = nodes_.find(dir);
      if (it == nodes_.end()) return Status::error(ENOENT, "no such dir " + dir);
      if (it->second.entry.type != EntryType::kDir) return Status::error(ENOTDIR, dir);
    }
    remote::Listing out;
    for (const auto& [path, node] : nodes_) {
      if (!path.empty() && parentPath(path) == dir && path != dir) out.entries.push_back(node.entry);
    }
    return out;
  }

  Status read(const std::string& path, const ObjectVersion& version, uint64_t offset,
              uint64_t length, remote::ByteSink& sink) override {
    reads_++;
    std::string data;
    {
      std::unique_lock lock(mu_);
      blocked_++;
      cv_.notify_all();
      // A cancelled read gives up within 20 ms, as a backend must (remote.h).
      while (!(gateOpen_ && !blockedPaths_.contains(path))) {
        if (sink.cancelled()) {
          blocked_--;
          cancelledReads_++;
          return Status::error(ECANCELED, "cancelled");
        }
        cv_.wait_for(lock, std::chrono::milliseconds(20));
      }
      blocked_--;
      if (failReads_ > 0) {
        failReads_--;
        return Status::error(failErrno_, "injected failure");
      }
      auto it = nodes_.find(path);
      if (it == nodes_.end()) return Status::error(ENOENT, "gone: " + path);
      if (it->second.entry.version != version) return Status::error(ESTALE, "changed: " + path);
      const std::string& c = it->second.content;
      if (offset >= c.size()) return Status::ok();
      uint64_t n = std::min<uint64_t>(length, c.size() - offset);
      n = n > shortBy_ ? n - shortBy_ : 0;
      data = c.substr(offset, n) + std::string(longBy_, 'X');
    }
    bytesRead_ += data.size();
    // Deliver in pieces, like a network body.
    size_t pos = 0;
    while (pos < data.size()) {
      size_t piece = std::min<size_t>(64 * 1024 + 7, data.size() - pos);
      HSM_RETURN_IF_ERROR(sink.write(offset + pos, data.data() + pos, piece));
      pos += piece;
    }
    return Status::ok();
  }

  Result<Entry> rootEntry() override {
    Entry e;
    e.type = EntryType::kDir;
    e.mode = 0755;
    e.mtimeNs = 1'650'000'000'000'000'000;
    return e;
  }
  std::string describe() const override { return "fake:"; }
  bool supportsRanges() const override { return ranges_; }
  // A source without range support: every read streams from the start of the file
  // (the bytes before the range are read and dropped, as HttpRemote does).
  void setRanges(bool ranges) { ranges_ = ranges; }

 private:
  struct Node {
    Entry entry;
    std::string content;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Node> nodes_;
  int versionCounter_ = 0;
  bool gateOpen_ = true;
  std::atomic<bool> ranges_{true};
  std::set<std::string> blockedPaths_;
  std::atomic<int> cancelledReads_{0};
  int blocked_ = 0;
  std::atomic<int> reads_{0}, lists_{0}, failReads_{0}, failErrno_{EIO};
  std::atomic<uint64_t> bytesRead_{0}, shortBy_{0}, longBy_{0};
};

// Deterministic pseudo-random bytes (no zeros runs), for content comparisons.
inline std::string patternBytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>((x & 0xFF) | 1);
  }
  return s;
}

}  // namespace hsm::testing
