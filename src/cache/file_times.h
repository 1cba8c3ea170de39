// File times for the cache's own files: a count of ns since the epoch as a timespec, for
// futimens()/utimensat(). Internal to src/cache/.
#pragma once

#include <time.h>

#include <cstdint>

namespace hsm::cache {

// Negative times (before 1970) keep tv_nsec in [0, 1e9), as the kernel requires.
inline struct timespec toTimespec(int64_t ns) {
  int64_t sec = ns / 1000000000, nsec = ns % 1000000000;
  if (nsec < 0) {
    nsec += 1000000000;
    sec -= 1;
  }
  return {static_cast<time_t>(sec), static_cast<long>(nsec)};
}

}  // namespace hsm::cache
