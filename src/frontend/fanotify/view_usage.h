// Who still uses a mount: its id, and the open files of other processes on it. Used to
// drain a lazily detached view before the fanotify groups close.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace hsm::frontend {

// The mount id of the mount at `path` (from /proc/self/fdinfo).
std::optional<uint64_t> mountIdOf(const std::string& path);

// Open file descriptors of other processes on mount `mntId`. Mapped files need nothing:
// mmap fetched the whole mapping before it returned.
size_t openFdsOnMount(uint64_t mntId);

}  // namespace hsm::frontend
