#include "frontend/fanotify/permission_event.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "frontend/fanotify/fanotify_defs.h"
#include "util/log.h"

namespace hsm::frontend {

int fanotifyErrno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EIO:
      return err;
    default:
      // ENOENT, ESTALE, EACCES, timeouts...: the data cannot be produced. EIO is the
      // honest answer among the errnos fanotify accepts, and never zeros.
      return EIO;
  }
}

PermissionEvent::PermissionEvent(int groupFd, int eventFd, uint64_t mask, bool errnoReplies,
                                 std::atomic<uint64_t>* deniedCounter,
                                 std::atomic<uint64_t>* pendingCounter)
    : groupFd_(groupFd),
      fd_(eventFd),
      mask_(mask),
      errnoReplies_(errnoReplies),
      denied_(deniedCounter),
      pending_(pendingCounter) {
  if (pending_) (*pending_)++;
}

PermissionEvent::PermissionEvent(PermissionEvent&& other) noexcept
    : groupFd_(other.groupFd_),
      fd_(std::move(other.fd_)),
      mask_(other.mask_),
      hasRange_(other.hasRange_),
      offset_(other.offset_),
      count_(other.count_),
      answered_(other.answered_),
      errnoReplies_(other.errnoReplies_),
      denied_(other.denied_),
      pending_(other.pending_) {
  other.answered_ = true;  // the moved-from shell owns nothing to answer
  other.pending_ = nullptr;
}

PermissionEvent::~PermissionEvent() {
  if (!answered_) deny(EIO);
}

void PermissionEvent::allow() { respond(FAN_ALLOW); }

void PermissionEvent::deny(int err) {
  switch (err) {
    case EIO:
    case EPERM:
    case EBUSY:
    case ETXTBSY:
    case EAGAIN:
    case ENOSPC:
    case EDQUOT:
      break;
    default:
      err = EIO;
  }
  if (denied_) (*denied_)++;
  // The kernel refuses an errno in the reply of a non-pre-content group (the write fails
  // and the reader would stay blocked): such groups get a plain deny.
  respond(errnoReplies_ ? FAN_DENY_ERRNO(err) : FAN_DENY);
}

void PermissionEvent::respond(uint32_t response) {
  if (answered_) {
    log::error("permission event answered twice (fd {})", fd_.get());
    std::abort();  // a broken invariant: the kernel matches responses by fd number
  }
  answered_ = true;
  if (pending_) (*pending_)--;
  struct fanotify_response r {};
  r.fd = fd_.get();
  r.response = response;
  while (true) {
    ssize_t n = ::write(groupFd_, &r, sizeof r);
    if (n == static_cast<ssize_t>(sizeof r)) break;
    if (n < 0 && errno == EINTR) continue;
    log::error("answering fanotify event (fd {}): {}", fd_.get(),
               n < 0 ? std::strerror(errno) : "short write");
    break;
  }
  fd_.reset();  // close only after the response: the kernel matches by fd number
}

}  // namespace hsm::frontend
