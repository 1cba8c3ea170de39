// GroupGuard: keeps the fanotify groups alive when the daemon dies.
//
// Design note: when the last fd of a fanotify group closes (the daemon crashed or was
// SIGKILLed), the kernel lets every reader through, and unfetched ranges read as zeros. The
// guard is a tiny separate process (`fanhsm __guard`, started by spawnGroupGuard() before
// the view is mounted) that holds duplicates of both group fds and does nothing while the
// daemon lives: it blocks on a pipe. If the pipe closes without a goodbye, the daemon is
// gone, and the guard, still holding the groups:
//   1. detaches the view (MNT_DETACH), if it is still the daemon's view (by mount id), so no
//      new file can be opened through it;
//   2. denies with EIO every event the dead daemon had read but not answered (the kernel
//      matches a response by the event's fd number only, so it answers every fd number the
//      daemon could have had);
//   3. denies every later event (files still open on the detached view) until no process
//      holds a file of the view open, then exits.
// The guard does no network or disk I/O and never allows an event: it can only turn zeros
// into EIO. The remaining window: a file held open on the detached view past the guard's
// limit (1 h) reads zeros after the guard exits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "util/status.h"
#include "util/unique_fd.h"

namespace hsm::frontend {

class GroupGuard {
 public:
  GroupGuard() = default;
  GroupGuard(GroupGuard&&) noexcept;
  GroupGuard& operator=(GroupGuard&&) noexcept;
  ~GroupGuard();  // release()

  // Starts the guard with duplicates of the two group fds.
  static Result<GroupGuard> spawn(int contentGroup, int openGroup, const std::string& mountpoint);
  // Tells the guard which mount is the view (after it is mounted).
  void setViewMountId(uint64_t mountId);
  // Clean stop: the guard exits at once and is reaped. Call before closing the groups.
  void release();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  UniqueFd pipe_;  // write end; closing it without a goodbye means "the daemon died"
};

// The guard process's main (argv: fanhsm __guard MOUNTPOINT; fds 3, 4: groups; 5: pipe).
int runGroupGuard(const std::string& mountpoint);

}  // namespace hsm::frontend
