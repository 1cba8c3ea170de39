// Unique mount ids (Linux 6.8+): never reused while the system runs, unlike the ids of
// /proc/self/mountinfo, so a mount can be recognised for sure later.
#pragma once

#include <cstdint>
#include <string>

#include "util/status.h"

namespace hsm {

// The unique id of the mount `fd` (or `path`, relative to `fd`; "" for `fd` itself) is on.
// ENOTSUP on a kernel without unique ids.
Result<uint64_t> uniqueMountId(int fd, const std::string& path = "");
// Whether the mount with unique id `id` is in the caller's mount namespace (statmount):
// false once it was unmounted or lazily detached, true if it is attached anywhere (also if
// moved, or with something mounted over it). Errors other than "no such mount": true.
bool mountInNamespace(uint64_t id);

}  // namespace hsm
