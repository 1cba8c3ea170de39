// Frontend: turns kernel requests on a mount point into cache calls.
//
// Contract
// - Created by cli with a Hydrator and a NamespacePopulator (never a Remote).
// - start() makes the view visible at the mount point; it returns only once every request
//   through the view is hooked (no window in which a reader could see an unfilled file).
// - unmount() takes the view away: EBUSY if it is in use (unless `lazy`); after it, no new
//   request can reach the frontend through the mount point.
// - stop() (and the destructor) answers every request still pending, with EIO, then
//   releases kernel resources. Call unmount() first: on fanotify, closing the group while
//   the view is mounted would let readers see unfilled files as zeros.
// - Every kernel request is answered exactly once.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "util/percentile_histogram.h"
#include "util/status.h"

namespace hsm::frontend {

struct FrontendStats {
  uint64_t fileEvents = 0;     // content requests (FAN_PRE_ACCESS / FUSE read)
  uint64_t dirEvents = 0;      // directory opens
  uint64_t openEvents = 0;     // file opens seen
  uint64_t denied = 0;         // requests answered with an error
  uint64_t ignoreMarks = 0;    // files/dirs that stopped raising events
  uint64_t pending = 0;        // requests not answered yet
  // From the moment the request was read to its answer (queueing included).
  PercentileHistogram::Counts contentLatency;  // content requests
  PercentileHistogram::Counts dirLatency;      // directory opens
};

class Frontend {
 public:
  virtual ~Frontend() = default;
  virtual Status start() = 0;
  virtual Status unmount(bool lazy) = 0;
  virtual void stop() = 0;
  // After a lazy unmount: keeps serving until no process holds a file of the detached view
  // open, or `limit` passes. Returns true if the view is unused.
  virtual bool waitUntilUnused(std::chrono::seconds limit) = 0;
  virtual FrontendStats stats() const = 0;
  // The content of the cache file open as `fd` is about to be released (Hydrator::release,
  // step 3: no one has the file open and no one can open it until the release ends).
  // Undo anything that lets reads of it bypass the frontend; an error keeps the content.
  virtual Status beforeRelease(int fd) {
    (void)fd;
    return Status::ok();
  }
  virtual const char* name() const = 0;
  // The view was unmounted by someone else (umount(8)): whatever is at the mount point now
  // is not ours, so unmount() and stop() must not touch it. Controlling thread only.
  virtual void viewGone() = 0;
};

}  // namespace hsm::frontend
