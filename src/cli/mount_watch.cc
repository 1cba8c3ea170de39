#include "cli/mount_watch.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "util/mount_id.h"

namespace hsm::cli {

Result<MountWatch> MountWatch::open(const std::string& mountpoint) {
  auto id = uniqueMountId(AT_FDCWD, mountpoint);
  if (!id) return id.status().withContext(fmt::format("'{}'", mountpoint));
  UniqueFd table(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  if (!table) return Status::fromErrno(errno, "open /proc/self/mountinfo");
  MountWatch w(*id, std::move(table));
  w.gone();  // arms the descriptor
  return w;
}

bool MountWatch::gone() {
  // Reading the table to its end re-arms POLLPRI.
  char buf[65536];
  ::lseek(table_.get(), 0, SEEK_SET);
  while (::read(table_.get(), buf, sizeof buf) > 0) {
  }
  return !mountInNamespace(id_);
}

}  // namespace hsm::cli
