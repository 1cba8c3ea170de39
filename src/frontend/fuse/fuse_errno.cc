#include "frontend/fuse/fuse_errno.h"

#include <cerrno>

namespace hsm::frontend {

int fuseErrno(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
    case EINVAL:
    case ELOOP:
    case EACCES:
    case EPERM:
    case EROFS:
    case ESTALE:
    case ENODATA:
    case ERANGE:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case ENOSPC:
    case EIO:
      return err;
    case EDQUOT:
      return ENOSPC;
    default:
      // Remote errors (ETIMEDOUT, ECONNREFUSED, EPROTO, EHOSTUNREACH...), ECANCELED while
      // stopping, and anything unexpected: the request cannot be served.
      return EIO;
  }
}

int fuseReadErrno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return ENOSPC;
    case ESTALE:
      return ESTALE;
    default:
      return EIO;
  }
}

}  // namespace hsm::frontend
