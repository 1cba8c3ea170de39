#include "util/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <string>

#include "util/printable.h"

namespace hsm::log {
namespace {
std::atomic<int> gLevel{static_cast<int>(Level::kInfo)};
std::atomic<int> gFd{2};
constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void setLevel(Level level) { gLevel = static_cast<int>(level); }
void setFd(int fd) { gFd = fd; }
bool enabled(Level level) { return static_cast<int>(level) >= gLevel.load(std::memory_order_relaxed); }

// One line per message, whatever it holds: names from a server cannot inject escape
// sequences or forge lines (util/printable.h).
void write(Level level, std::string_view line) {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::string out = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z fanhsm[{}] {}: {}\n",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                tm.tm_min, tm.tm_sec, ms, ::getpid(),
                                kNames[static_cast<int>(level)], printable(line));
  ssize_t n = ::write(gFd.load(), out.data(), out.size());
  (void)n;  // nowhere left to report a failed log write
}

}  // namespace hsm::log
