// MountWatch: tells the daemon that its view is no longer mounted, whoever unmounted it
// (umount(8), `umount -l`, a script), so it stops instead of running on with no view.
//
// Contract
// - open() records the unique id of the mount at `mountpoint` (statx STATX_MNT_ID_UNIQUE,
//   never reused, unlike the ids of /proc/self/mountinfo) and opens the mount table for
//   polling. Fails (ENOTSUP) on a kernel without unique mount ids (before 6.8).
// - fd() becomes readable for POLLPRI when this namespace's mount table changed.
// - gone() re-arms the descriptor and asks the kernel (statmount) whether that mount is
//   still in this namespace: false while it is, also when something else is mounted over
//   it; true once it was unmounted or lazily detached.
#pragma once

#include <cstdint>
#include <string>

#include "util/status.h"
#include "util/unique_fd.h"

namespace hsm::cli {

class MountWatch {
 public:
  static Result<MountWatch> open(const std::string& mountpoint);
  int fd() const { return table_.get(); }
  uint64_t mountId() const { return id_; }
  bool gone();

 private:
  MountWatch(uint64_t id, UniqueFd table) : id_(id), table_(std::move(table)) {}
  uint64_t id_ = 0;
  UniqueFd table_;
};

}  // namespace hsm::cli
