#include "util/mount_id.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace hsm {
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

Result<uint64_t> uniqueMountId(int fd, const std::string& path) {
  struct statx stx {};
  const int flags = AT_NO_AUTOMOUNT | (path.empty() ? AT_EMPTY_PATH : 0);
  if (::statx(fd, path.c_str(), flags, kStatxMntIdUnique, &stx) != 0) {
    return Status::fromErrno(errno, "statx (mount id)");
  }
  if ((stx.stx_mask & kStatxMntIdUnique) == 0) {
    return Status::error(ENOTSUP, "the kernel has no unique mount ids (6.8+)");
  }
  return static_cast<uint64_t>(stx.stx_mnt_id);
}

bool mountInNamespace(uint64_t id) {
  MntIdReq req{sizeof(MntIdReq), 0, id, kStatmountMntBasic};
  alignas(8) char out[4096];
  if (::syscall(kSysStatmount, &req, out, sizeof out, 0) == 0) return true;
  return errno != ENOENT;
}

}  // namespace hsm
