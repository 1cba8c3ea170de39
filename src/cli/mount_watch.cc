#include "cli/mount_watch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace hsm::cli {
namespace {

// Kernel ABI (include/uapi/linux/stat.h and mount.h, 6.8+); Debian 12's headers predate it.
constexpr unsigned kStatxMntIdUnique = 0x4000;
constexpr long kSysStatmount = 457;
constexpr uint64_t kStatmountMntBasic = 0x1;
struct MntIdReq {
  uint32_t size;
  uint32_t spare;
  uint64_t mntId;
  uint64_t param;
};

}  // namespace

Result<MountWatch> MountWatch::open(const std::string& mountpoint) {
  struct statx stx {};
  if (::statx(AT_FDCWD, mountpoint.c_str(), AT_NO_AUTOMOUNT, kStatxMntIdUnique, &stx) != 0) {
    return Status::fromErrno(errno, fmt::format("statx '{}'", mountpoint));
  }
  if ((stx.stx_mask & kStatxMntIdUnique) == 0) {
    return Status::error(ENOTSUP, "the kernel has no unique mount ids (6.8+)");
  }
  UniqueFd table(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  if (!table) return Status::fromErrno(errno, "open /proc/self/mountinfo");
  MountWatch w(stx.stx_mnt_id, std::move(table));
  w.gone();  // arms the descriptor (and checks statmount works)
  return w;
}

bool MountWatch::gone() {
  // Reading the table to its end re-arms POLLPRI.
  char buf[65536];
  ::lseek(table_.get(), 0, SEEK_SET);
  while (::read(table_.get(), buf, sizeof buf) > 0) {
  }
  MntIdReq req{sizeof(MntIdReq), 0, id_, kStatmountMntBasic};
  alignas(8) char out[4096];
  if (::syscall(kSysStatmount, &req, out, sizeof out, 0) == 0) return false;
  return errno == ENOENT;  // other errors (EPERM in odd sandboxes): not known to be gone
}

}  // namespace hsm::cli
