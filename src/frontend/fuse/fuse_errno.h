// The errno a FUSE caller gets for a failure of the cache, the index or the remote: the
// one place where the FUSE frontend translates Status codes into kernel replies.
#pragma once

namespace hsm::frontend {

// Namespace and attribute requests (lookup, getattr, opendir, readdir, readlink, xattr):
// errors that describe the name pass through (ENOENT, ENOTDIR, ENAMETOOLONG, ...); a
// failure to produce the listing (remote down, timeout, protocol error, daemon stopping)
// is EIO.
int fuseErrno(int err);

// Content requests (read): only ENOSPC (the cache filesystem is full; EDQUOT too) and
// ESTALE (the remote object changed under an open file) are told apart; everything else
// is EIO. A read never answers with zeros for bytes it could not fetch.
int fuseReadErrno(int err);

}  // namespace hsm::frontend
