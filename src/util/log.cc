#include "util/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>
#include <string>
#include <unordered_map>

#include "util/printable.h"

namespace hsm::log {
namespace {
std::atomic<int> gLevel{static_cast<int>(Level::kInfo)};
std::atomic<int> gFd{2};
constexpr const char* kNames[] = {"debug", "info", "warn", "error"};

// Repeats and the file's size (see log.h). One lock (a leaf) for both.
constexpr auto kRepeatWindow = std::chrono::seconds(10);
constexpr size_t kMaxTracked = 1024;
struct Repeat {
  std::chrono::steady_clock::time_point since;
  uint64_t dropped = 0;
};
std::mutex gMu;
std::unordered_map<std::string, Repeat> gRecent;
std::string gPath;      // the log file, if setFile() was called
uint64_t gMaxBytes = 0;
uint64_t gBytes = 0;    // written to the current file (as far as this process knows)

// The file has grown past its bound: it becomes <path>.1 (replacing an older one), and a
// new file takes its place on the same descriptor number.
void rotateLocked() {
  const std::string old = gPath + ".1";
  if (::rename(gPath.c_str(), old.c_str()) != 0) return;
  int fd = ::open(gPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  ::dup2(fd, gFd.load());
  ::close(fd);
  gBytes = 0;
}
}  // namespace

void setLevel(Level level) { gLevel = static_cast<int>(level); }
void setFd(int fd) { gFd = fd; }
bool enabled(Level level) { return static_cast<int>(level) >= gLevel.load(std::memory_order_relaxed); }

Status setFile(const std::string& path, uint64_t maxBytes, int fd) {
  int f = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (f < 0) return Status::fromErrno(errno, path);
  struct stat st {};
  ::fstat(f, &st);
  if (::dup2(f, fd) < 0) {
    const int err = errno;
    ::close(f);
    return Status::fromErrno(err, path);
  }
  ::close(f);
  std::lock_guard lock(gMu);
  gFd = fd;
  gPath = path;
  gMaxBytes = maxBytes;
  gBytes = static_cast<uint64_t>(st.st_size);
  return Status::ok();
}

Status reopen() {
  std::lock_guard lock(gMu);
  if (gPath.empty()) return Status::ok();
  int fd = ::open(gPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::fromErrno(errno, gPath);
  struct stat st {};
  ::fstat(fd, &st);
  if (::dup2(fd, gFd.load()) < 0) {
    const int err = errno;
    ::close(fd);
    return Status::fromErrno(err, gPath);
  }
  ::close(fd);
  gBytes = static_cast<uint64_t>(st.st_size);
  return Status::ok();
}

std::optional<Level> parseLevel(std::string_view name) {
  for (int i = 0; i < 4; ++i) {
    if (name == kNames[i]) return static_cast<Level>(i);
  }
  return std::nullopt;
}

// One line per message, whatever it holds: names from a server cannot inject escape
// sequences or forge lines (util/printable.h).
void write(Level level, std::string_view line) {
  std::string body = printable(line);
  const auto steadyNow = std::chrono::steady_clock::now();
  std::lock_guard lock(gMu);
  {
    const std::string key = std::string(kNames[static_cast<int>(level)]) + '\0' + body;
    auto it = gRecent.find(key);
    if (it != gRecent.end() && steadyNow - it->second.since < kRepeatWindow) {
      it->second.dropped++;
      return;
    }
    if (it != gRecent.end() && it->second.dropped > 0) {
      body += fmt::format(" (and {} more times in the {} s before)", it->second.dropped,
                          std::chrono::duration_cast<std::chrono::seconds>(steadyNow - it->second.since).count());
    }
    if (it == gRecent.end() && gRecent.size() >= kMaxTracked) gRecent.clear();
    gRecent[key] = Repeat{steadyNow, 0};
  }
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::string out = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z fanhsm[{}] {}: {}\n",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                tm.tm_min, tm.tm_sec, ms, ::getpid(),
                                kNames[static_cast<int>(level)], body);
  ssize_t n = ::write(gFd.load(), out.data(), out.size());
  (void)n;  // nowhere left to report a failed log write
  gBytes += out.size();
  if (gMaxBytes > 0 && gBytes > gMaxBytes) rotateLocked();
}

}  // namespace hsm::log
