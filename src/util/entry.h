// Entry: the attributes of one name in a mirrored tree — the vocabulary shared by the
// remote layer (which produces entries) and the cache (which stores them), so that
// neither includes the other.
#pragma once

#include <cstdint>
#include <string>

namespace hsm {

enum class EntryType { kFile = 0, kDir = 1, kSymlink = 2 };

// Opaque version of a remote object: equal strings mean equal content.
using ObjectVersion = std::string;

struct Entry {
  std::string name;
  EntryType type = EntryType::kFile;
  uint64_t size = 0;        // files: content length; others: 0
  int64_t mtimeNs = 0;      // modification time, ns since the epoch
  uint32_t mode = 0;        // permission bits (07777); 0 = backend default
  int64_t uid = -1;         // owner and group where the source has them (local sources);
  int64_t gid = -1;         // -1: the source has none (the mount's policy decides)
  std::string acl;          // POSIX access ACL (the system.posix_acl_access value); "" none
  std::string linkTarget;   // symlinks only
  ObjectVersion version;    // files only
};

}  // namespace hsm
