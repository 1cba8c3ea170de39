// PermissionEvent: one fanotify permission event (FAN_PRE_ACCESS or FAN_OPEN_PERM) that
// must be answered exactly once.
//
// Contract: move-only. allow() or deny(errno) answers the kernel; the destructor of an
// event never answered denies it with EIO, so no reader is ever left blocked and no
// exception or early return can let a reader through to an unfilled file. The response
// write() is checked and failures are logged (the reader then stays blocked until the
// group closes — there is nothing better to do). Not thread-safe; one owner at a time.
#pragma once

#include <atomic>
#include <cstdint>

#include "util/unique_fd.h"

namespace hsm::frontend {

class PermissionEvent {
 public:
  // `errnoReplies`: the group is of the pre-content class, the only one whose denials may
  // carry an errno (FAN_DENY_ERRNO); other groups deny with plain FAN_DENY (EPERM).
  PermissionEvent(int groupFd, int eventFd, uint64_t mask, bool errnoReplies,
                  std::atomic<uint64_t>* deniedCounter, std::atomic<uint64_t>* pendingCounter);
  PermissionEvent(PermissionEvent&& other) noexcept;
  PermissionEvent& operator=(PermissionEvent&&) = delete;
  PermissionEvent(const PermissionEvent&) = delete;
  PermissionEvent& operator=(const PermissionEvent&) = delete;
  ~PermissionEvent();

  int fd() const { return fd_.get(); }
  uint64_t mask() const { return mask_; }
  bool hasRange() const { return hasRange_; }
  uint64_t offset() const { return offset_; }
  uint64_t count() const { return count_; }
  void setRange(uint64_t offset, uint64_t count) {
    hasRange_ = true;
    offset_ = offset;
    count_ = count;
  }

  void allow();
  // `err` must be one the kernel accepts (EIO, EPERM, EBUSY, ETXTBSY, EAGAIN, ENOSPC,
  // EDQUOT); anything else is sent as EIO.
  void deny(int err);
  bool answered() const { return answered_; }

 private:
  void respond(uint32_t response);

  int groupFd_;
  UniqueFd fd_;
  uint64_t mask_;
  bool hasRange_ = false;
  uint64_t offset_ = 0;
  uint64_t count_ = 0;
  bool answered_ = false;
  bool errnoReplies_ = true;
  std::atomic<uint64_t>* denied_;
  std::atomic<uint64_t>* pending_;
};

// The errno a fanotify reader gets for a failure `err` of the cache or the remote.
int fanotifyErrno(int err);

}  // namespace hsm::frontend
