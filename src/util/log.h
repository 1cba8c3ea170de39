// Logging: leveled lines to one sink (stderr, or the daemon's log file after it
// detaches). The sink and level are the only process-wide state in fanhsm; they are set
// once by cli before any thread starts. Thread-safe: each line is one write(2).
// Never log credentials or file contents.
// - A line that repeats one of the same level written less than 10 s before is not
//   written; the next one after that says how many were left out (a read loop on a failing
//   file makes one line per 10 s, not thousands a second).
// - With setFile(), the file is kept under `maxBytes`: past it, it becomes <path>.1 and a
//   new one is started (one old file is kept).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "util/status.h"

namespace hsm::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void setLevel(Level level);
void setFd(int fd);  // where lines go; default 2
// Lines go to the file `path` (0600, appended), opened on descriptor `fd` (so that writes
// to stderr land there too when fd is 2), rotated past `maxBytes` (0: never).
Status setFile(const std::string& path, uint64_t maxBytes, int fd = 2);
// Opens the file of setFile() again, by its name, on the same descriptor (after logrotate
// moved it away: SIGHUP). Nothing to do without setFile().
Status reopen();
// "debug", "info", "warn" or "error"; nullopt for anything else.
std::optional<Level> parseLevel(std::string_view name);
bool enabled(Level level);
void write(Level level, std::string_view line);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kDebug)) write(Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kInfo)) write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kWarn)) write(Level::kWarn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(Level::kError)) write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace hsm::log
