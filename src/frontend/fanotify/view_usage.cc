#include "frontend/fanotify/view_usage.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include <fmt/format.h>

#include "util/unique_fd.h"

namespace hsm::frontend {

std::optional<uint64_t> mountIdOf(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::ifstream in(fmt::format("/proc/self/fdinfo/{}", fd.get()));
  std::string key;
  uint64_t value = 0;
  while (in >> key) {
    if (key == "mnt_id:" && (in >> value)) return value;
  }
  return std::nullopt;
}

size_t openFdsOnMount(uint64_t mntId) {
  size_t count = 0;
  const std::string self = std::to_string(::getpid());
  DIR* proc = ::opendir("/proc");
  if (!proc) return 0;
  while (struct dirent* p = ::readdir(proc)) {
    if (p->d_name[0] < '1' || p->d_name[0] > '9' || self == p->d_name) continue;
    std::string dir = fmt::format("/proc/{}/fdinfo", p->d_name);
    DIR* fds = ::opendir(dir.c_str());
    if (!fds) continue;
    while (struct dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      std::ifstream in(dir + "/" + f->d_name);
      std::string key;
      uint64_t value = 0;
      while (in >> key) {
        if (key == "mnt_id:") {
          if ((in >> value) && value == mntId) ++count;
          break;
        }
      }
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return count;
}

}  // namespace hsm::frontend
