#include "cli/registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "util/unique_fd.h"

namespace hsm::cli {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Undoes the octal escapes (\040 etc.) of /proc/self/mountinfo.
std::string unescapeMountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (int k = 1; k <= 3; ++k) {
        char c = s[i + static_cast<size_t>(k)];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

std::string runDir() {
  const char* env = std::getenv("FANHSM_RUN_DIR");
  if (env && *env) return env;
  if (::geteuid() == 0) return "/run/fanhsm";
  // An ordinary user's mounts (FUSE): in the user's runtime directory, else a directory of
  // the user's own in /tmp (ensureRunDir() refuses one someone else made).
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg == '/') return fmt::format("{}/fanhsm", xdg);
  return fmt::format("/tmp/fanhsm-{}", ::geteuid());
}

std::string recordPathFor(const std::string& mountpoint) {
  return fmt::format("{}/{:016x}.json", runDir(), fnv1a(mountpoint));
}

std::string socketPathFor(const std::string& mountpoint) {
  return fmt::format("{}/{:016x}.sock", runDir(), fnv1a(mountpoint));
}

// The run directory and its records are root's alone (0700, 0600): a record names the
// source, the cache and the daemon's pid, which other local users have no need to read.
Status ensureRunDir() {
  std::string dir = runDir();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::fromErrno(errno, fmt::format("cannot create '{}'", dir));
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return Status::fromErrno(errno, dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return Status::error(EPERM, fmt::format("'{}' is not a directory of yours: refusing to keep "
                                            "mount records there", dir));
  }
  if (::chmod(dir.c_str(), 0700) != 0) return Status::fromErrno(errno, dir);
  return Status::ok();
}

Status writeRecord(const MountRecord& r) {
  HSM_RETURN_IF_ERROR(ensureRunDir());
  nlohmann::json j = {{"mountpoint", r.mountpoint}, {"source", r.source},
                      {"cache", r.cache},           {"frontend", r.frontend},
                      {"socket", r.socket},         {"pid", r.pid}};
  std::string path = recordPathFor(r.mountpoint);
  std::string tmp = path + ".tmp";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return Status::fromErrno(errno, fmt::format("cannot write '{}'", tmp));
    const std::string text = j.dump() + "\n";
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      return Status::error(EIO, fmt::format("cannot write '{}'", tmp));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::fromErrno(errno, path);
  return Status::ok();
}

void removeRecord(const std::string& mountpoint) { ::unlink(recordPathFor(mountpoint).c_str()); }

static std::optional<MountRecord> parseRecord(const std::string& file) {
  std::ifstream in(file);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  MountRecord r;
  r.mountpoint = j.value("mountpoint", "");
  r.source = j.value("source", "");
  r.cache = j.value("cache", "");
  r.frontend = j.value("frontend", "");
  r.socket = j.value("socket", "");
  r.pid = j.value("pid", 0);
  if (r.mountpoint.empty()) return std::nullopt;
  return r;
}

std::optional<MountRecord> readRecord(const std::string& mountpoint) {
  return parseRecord(recordPathFor(mountpoint));
}

std::vector<MountRecord> allRecords() {
  std::vector<MountRecord> out;
  std::string dir = runDir();
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (struct dirent* de = ::readdir(d)) {
    std::string name = de->d_name;
    if (name.size() > 5 && name.substr(name.size() - 5) == ".json") {
      if (auto r = parseRecord(dir + "/" + name)) out.push_back(*r);
    }
  }
  ::closedir(d);
  return out;
}

bool processAlive(int pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) return false;
  // A zombie has exited (its parent, often init, has not reaped it yet).
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

std::optional<std::pair<MountRecord, std::string>> findMountFor(const std::string& absPath) {
  std::optional<std::pair<MountRecord, std::string>> best;
  for (auto& r : allRecords()) {
    const std::string& mp = r.mountpoint;
    std::string rel;
    if (absPath == mp) {
      rel = "";
    } else if (absPath.size() > mp.size() && absPath.compare(0, mp.size(), mp) == 0 &&
               (absPath[mp.size()] == '/' || mp == "/")) {
      rel = absPath.substr(mp == "/" ? 1 : mp.size() + 1);
    } else {
      continue;
    }
    if (!best || best->first.mountpoint.size() < mp.size()) best = std::make_pair(r, rel);
  }
  return best;
}

bool isMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, target;
    ls >> id >> parent >> devno >> root >> target;
    if (unescapeMountinfo(target) == path) return true;
  }
  return false;
}

}  // namespace hsm::cli
