// Remote: the read-only source of a mounted tree (a local directory, an HTTP listing...).
//
// Contract
// - Callers: only hsm::core (the Hydrator for content, the NamespacePopulator for
//   listings). Frontends never call a Remote.
// - Thread-safety: every method may be called concurrently from many threads.
// - Paths are relative paths (util/rel_path.h): "" is the root, "a/b" below it.
// - list() returns the entries of one directory, with every name already checked by
//   validateName(); entries the backend cannot represent (devices, sockets, bad names)
//   are left out and counted in `skipped` with a reason each.
// - read() delivers exactly the bytes [offset, min(offset+length, size)) of the file, in
//   order, to the sink, or fails. It fails with ESTALE if the object no longer matches
//   `version` (the caller never mixes two versions), ENOENT if it is gone, EACCES if it
//   cannot be read, EIO for other failures (after the backend's own bounded retries).
//   Bytes handed to the sink are final: they belong to `version` (the caller may serve
//   them at once). A read that fails later may already have delivered some bytes; those
//   are valid, the rest must be fetched again.
// - A Remote never writes to its source.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/entry.h"
#include "util/status.h"

namespace hsm::remote {

using hsm::Entry;
using hsm::EntryType;
using hsm::ObjectVersion;

struct Listing {
  std::vector<Entry> entries;
  std::vector<std::string> skipped;  // "name: reason" for each entry left out
  std::string validator;             // opaque; pass it back to list() to revalidate
  bool notModified = false;          // the listing is unchanged since `validator`
};

// Receives content. write() is called with consecutive, increasing offsets.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status write(uint64_t offset, const char* data, size_t length) = 0;
  // True once the caller no longer wants the bytes (no reader waits for them, or the
  // daemon stops). A backend checks it between writes and while it waits for the source
  // (at least every second or so), and then fails the read with ECANCELED.
  virtual bool cancelled() const { return false; }
};

class Remote {
 public:
  virtual ~Remote() = default;
  // Lists the directory at `dir`. ENOENT if it does not exist, ENOTDIR if not a directory.
  // With a `validator` from an earlier listing, a backend may answer notModified (and no
  // entries) when it knows nothing changed; "" always gets a full listing.
  virtual Result<Listing> list(const std::string& dir, const std::string& validator) = 0;
  // Reads a byte range of the file at `path`, checked against `version`. See above.
  virtual Status read(const std::string& path, const ObjectVersion& version, uint64_t offset,
                      uint64_t length, ByteSink& sink) = 0;
  // The root's own attributes (mode, mtime) for the mount's root directory. An error if the
  // source cannot be reached: the mount may still start from its cache (offline).
  virtual Result<Entry> rootEntry() = 0;
  // A short description for status and logs, e.g. "dir:/srv/archive". Never credentials.
  virtual std::string describe() const = 0;
  // False once the backend knows that every read streams the file from its start (an
  // HTTP server without range support): callers then fetch to the end in one read
  // instead of paying for the prefix again and again.
  virtual bool supportsRanges() const { return true; }
};

}  // namespace hsm::remote
