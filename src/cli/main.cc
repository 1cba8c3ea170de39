// fanhsm: the command line. Parses options into MountConfig and runs the verbs:
//   mount SOURCE MOUNTPOINT    start a daemon serving SOURCE at MOUNTPOINT
//   umount MOUNTPOINT          clean stop
//   status [--json] PATH...    state of a mount or of files under it
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cache/cache_store.h"
#include "cli/config.h"
#include "cli/control.h"
#include "cli/daemon.h"
#include "cli/fetch_worker_main.h"
#include "cli/metrics.h"
#include "cli/registry.h"
#include "cli/version.h"
#include "frontend/fanotify/group_guard.h"
#include "remote/http/http_remote.h"
#include "util/log.h"
#include "util/netrc.h"
#include "util/printable.h"
#include "util/unique_fd.h"

namespace hsm::cli {
namespace {

int fail(const std::string& msg) {
  std::cerr << "fanhsm: " << printable(msg) << "\n";
  return 1;
}

bool hasCapSysAdmin() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &hdr, data) != 0) return ::geteuid() == 0;
  return (data[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32))) != 0;
}

Result<std::string> canonicalDir(const std::string& path, const char* what) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) {
    return Status::fromErrno(errno, fmt::format("{} '{}'", what, path));
  }
  struct stat st {};
  if (::stat(buf, &st) != 0) return Status::fromErrno(errno, fmt::format("{} '{}'", what, path));
  if (!S_ISDIR(st.st_mode)) return Status::error(ENOTDIR, fmt::format("{} '{}' is not a directory", what, path));
  return std::string(buf);
}

// Absolute path of `path` without following a final symlink.
Result<std::string> absoluteNoFollow(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
  char buf[PATH_MAX];
  if (::realpath(dir.c_str(), buf) == nullptr) return Status::fromErrno(errno, fmt::format("'{}'", path));
  std::string d(buf);
  if (name.empty() || name == ".") return d;
  if (name == "..") {
    if (::realpath(p.c_str(), buf) == nullptr) return Status::fromErrno(errno, fmt::format("'{}'", path));
    return std::string(buf);
  }
  return d == "/" ? "/" + name : d + "/" + name;
}

// A source for messages: a URL loses any user:password@ part.
std::string displaySource(const std::string& source) {
  auto scheme = source.find("://");
  if (scheme == std::string::npos) return source;
  auto slash = source.find('/', scheme + 3);
  auto at = source.rfind('@', slash);
  if (at == std::string::npos || at < scheme) return source;
  return source.substr(0, scheme + 3) + source.substr(at + 1);
}

// Overwrites, in place, every secret this process was given in its arguments: the values of
// --user/-u, the values of --header/-H (their names stay), and the user:password@ part of a
// URL. /proc/PID/cmdline (what `ps` shows every local user) reads this memory, for this
// process and for the daemon it forks, for as long as they live. Call after parsing.
void scrubSecretArguments(int argc, char** argv) {
  auto blank = [](char* p) {
    for (; *p != '\0'; ++p) *p = '*';
  };
  auto blankHeaderValue = [&](char* p) {
    if (char* colon = std::strchr(p, ':')) blank(colon + 1);
    else blank(p);
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view a(argv[i]);
    const bool user = a == "--user" || a == "-u";
    const bool header = a == "--header" || a == "-H";
    if ((user || header) && i + 1 < argc) {
      ++i;
      if (user) blank(argv[i]);
      else blankHeaderValue(argv[i]);
      continue;
    }
    if (a.starts_with("--user=")) blank(argv[i] + 7);
    else if (a.starts_with("-u") && a.size() > 2 && a[2] != '-') blank(argv[i] + 2);
    else if (a.starts_with("--header=")) blankHeaderValue(argv[i] + 9);
    else if (a.starts_with("-H") && a.size() > 2) blankHeaderValue(argv[i] + 2);
    // user:password@ of a URL, wherever it stands (the source, --header=... aside).
    const auto scheme = a.find("://");
    if (scheme == std::string_view::npos) continue;
    const auto slash = a.find('/', scheme + 3);
    const auto at = a.rfind('@', slash);
    if (at == std::string_view::npos || at < scheme) continue;
    for (size_t k = scheme + 3; k < at; ++k) argv[i][k] = '*';
  }
}

// "user:password" from a credentials file (--credentials): its first line. Refused unless
// it is a regular file owned by the caller and neither group nor others may read it (as
// davfs2 and s3fs require of theirs).
Result<std::string> readCredentials(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return Status::fromErrno(errno, fmt::format("credentials file '{}'", path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::fromErrno(errno, path);
  if (!S_ISREG(st.st_mode)) {
    return Status::error(EINVAL, fmt::format("credentials file '{}' is not a regular file", path));
  }
  if (st.st_uid != ::getuid() || (st.st_mode & 077) != 0) {
    return Status::error(EACCES, fmt::format("credentials file '{}' must be owned by you and not "
                                             "readable by others (chmod 600 '{}')", path, path));
  }
  std::string text(4096, '\0');
  ssize_t n = ::read(fd.get(), text.data(), text.size());
  if (n < 0) return Status::fromErrno(errno, path);
  text.resize(static_cast<size_t>(n));
  text = text.substr(0, text.find('\n'));
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (text.find(':') == std::string::npos) {
    return Status::error(EINVAL, fmt::format("credentials file '{}': the first line must be "
                                             "USER:PASSWORD", path));
  }
  return text;
}

// --netrc: the entry of $HOME/.netrc (or $NETRC) for the source's host becomes the
// credentials (unless --user gave some); the worker is not told of netrc at all.
Status credentialsFromNetrc(const std::string& source, MountConfig& config) {
  config.netrc = false;
  if (!config.user.empty()) return Status::ok();
  const char* explicitPath = std::getenv("NETRC");
  const char* home = std::getenv("HOME");
  const std::string path = explicitPath ? explicitPath : std::string(home ? home : "") + "/.netrc";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) {
      log::warn("--netrc: '{}' does not exist: no credentials", path);
      return Status::ok();
    }
    return Status::fromErrno(errno, fmt::format("--netrc: '{}'", path));
  }
  std::string text;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) > 0 && text.size() < (1u << 20);) {
    text.append(buf, static_cast<size_t>(n));
  }
  // The host of the URL, as netrc names machines: no scheme, user, port or brackets.
  std::string host = source.substr(source.find("://") + 3);
  host = host.substr(0, host.find('/'));
  if (auto at = host.rfind('@'); at != std::string::npos) host = host.substr(at + 1);
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (auto colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  auto cred = netrcCredentials(text, host);
  if (!cred) {
    log::warn("--netrc: '{}' has no entry for {}: no credentials", path, printable(host));
    return Status::ok();
  }
  config.user = *cred;
  return Status::ok();
}

bool isInside(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         (path[dir.size()] == '/' || dir == "/"));
}

// /var/cache/fanhsm/<mount point, escaped as systemd-escape --path does>: "/" becomes "-",
// and "-" itself (and anything but letters, digits, ":", "_" and a "." not leading) becomes
// \xNN, so /mnt/a-b and /mnt/a/b get different caches.
std::string defaultCacheDir(const std::string& mountpoint) {
  std::string path = mountpoint;
  while (!path.empty() && path.front() == '/') path.erase(path.begin());
  while (!path.empty() && path.back() == '/') path.pop_back();
  std::string name;
  for (size_t i = 0; i < path.size(); ++i) {
    const auto c = static_cast<unsigned char>(path[i]);
    if (c == '/') {
      name.push_back('-');
    } else if (std::isalnum(c) || c == ':' || c == '_' || (c == '.' && i != 0)) {
      name.push_back(static_cast<char>(c));
    } else {
      name += fmt::format("\\x{:02x}", c);
    }
  }
  if (name.empty()) name = "root";
  if (::geteuid() == 0) return "/var/cache/fanhsm/" + name;
  // An ordinary user's: $XDG_CACHE_HOME/fanhsm, or ~/.cache/fanhsm.
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg == '/') return fmt::format("{}/fanhsm/{}", xdg, name);
  const char* home = std::getenv("HOME");
  const struct passwd* pw = ::getpwuid(::geteuid());
  const std::string h = home && *home == '/' ? home : pw ? pw->pw_dir : "/tmp";
  return fmt::format("{}/.cache/fanhsm/{}", h, name);
}

std::string humanBytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

// The errno of any access to a FUSE mount whose daemon died: ENOTCONN, or ECONNABORTED
// once the kernel aborted the connection.
bool isDisconnectedErrno(int err) { return err == ENOTCONN || err == ECONNABORTED; }

// Clears the mount left behind by a daemon that died; errors if a live one serves it.
Status clearStale(const std::string& mountpoint) {
  auto rec = readRecord(mountpoint);
  if (rec && processAlive(rec->pid)) {
    return Status::error(EBUSY, fmt::format("'{}' is already mounted by fanhsm (pid {}, source {})",
                                            mountpoint, rec->pid, rec->source));
  }
  if (rec) {
    if (isMountPoint(mountpoint)) {
      if (::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
        return Status::fromErrno(errno, fmt::format("clearing the stale mount at '{}'", mountpoint));
      }
      std::cerr << "fanhsm: cleared the stale mount left at " << mountpoint
                << " by a daemon that died (pid " << rec->pid << ")\n";
    } else {
      std::cerr << "fanhsm: the daemon that served " << mountpoint << " (pid " << rec->pid
                << ") died; its guard detached the view; stale record cleared\n";
    }
    removeRecord(mountpoint);
    ::unlink(rec->socket.c_str());
  }
  return Status::ok();
}

Status checkEmpty(const std::string& mountpoint) {
  struct statfs sfs {};
  if (::statfs(mountpoint.c_str(), &sfs) != 0 && isDisconnectedErrno(errno)) {
    // The kernel may still have the mount point's attributes cached, so only a request
    // that reaches the (dead) FUSE daemon tells: a mount fanhsm has no record of.
    return Status::error(ENOTCONN, fmt::format("mount point '{}' is a disconnected FUSE mount "
                                               "whose daemon died and that fanhsm has no record "
                                               "of: clear it with 'fusermount3 -u {}'",
                                               mountpoint, mountpoint));
  }
  if (isMountPoint(mountpoint)) {
    return Status::error(EBUSY, fmt::format("mount point '{}' is already a mount point", mountpoint));
  }
  UniqueFd fd(::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return Status::fromErrno(errno, fmt::format("mount point '{}'", mountpoint));
  DIR* d = ::fdopendir(fd.release());
  if (!d) return Status::fromErrno(errno, mountpoint);
  bool empty = true;
  while (struct dirent* de = ::readdir(d)) {
    if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0) {
      empty = false;
      break;
    }
  }
  ::closedir(d);
  if (!empty) {
    return Status::error(ENOTEMPTY, fmt::format("mount point '{}' is not empty: mounting over it "
                                                "would hide its files; use an empty directory",
                                                mountpoint));
  }
  return Status::ok();
}

// `fanhsm list`: the registry's mounts, each checked (daemon alive, view mounted).
int doList(bool json) {
  auto records = allRecords();
  std::sort(records.begin(), records.end(),
            [](const MountRecord& a, const MountRecord& b) { return a.mountpoint < b.mountpoint; });
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : records) {
    const bool alive = processAlive(r.pid);
    const bool mounted = isMountPoint(r.mountpoint);
    const std::string state = alive && mounted ? "running" : alive ? "stopping" : "gone";
    out.push_back({{"mountpoint", r.mountpoint}, {"source", r.source}, {"frontend", r.frontend},
                   {"cache", r.cache}, {"pid", r.pid}, {"state", state}});
  }
  if (json) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  if (out.empty()) {
    std::cout << "no fanhsm mounts\n";
    return 0;
  }
  for (const auto& m : out) {
    const std::string state = m["state"].get<std::string>();
    std::cout << fmt::format("{}\n  source   {}\n  frontend {}, cache {}\n  daemon   pid {}, {}\n",
                             printable(m["mountpoint"].get<std::string>()),
                             printable(m["source"].get<std::string>()),
                             m["frontend"].get<std::string>(), printable(m["cache"].get<std::string>()),
                             m["pid"].get<int>(),
                             state == "gone" ? "gone (`fanhsm umount` clears what it left)" : state);
  }
  return 0;
}

volatile sig_atomic_t gInterrupted = 0;  // set by SIGINT/SIGTERM during a mount or a cache job
void onInterrupt(int) { gInterrupted = 1; }

void catchInterrupts() {
  struct sigaction sa {};
  sa.sa_handler = onInterrupt;  // no SA_RESTART: a blocking read or poll returns at once
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// Ctrl-C while `fanhsm mount` waits for its daemon's setup: the daemon is stopped instead
// of being left running behind the user's back. Before its view is mounted it holds
// nothing a kill could leave behind (the index is crash-safe; its worker ends with it), and
// its setup may be waiting for a silent source: SIGKILL. Once the view is mounted, SIGTERM
// (its orderly stop), SIGKILL after 15 s. 130, as for any command interrupted.
int stopInterruptedMount(pid_t pid, const std::string& mountpoint) {
  const bool mounted = isMountPoint(mountpoint);
  ::kill(pid, mounted ? SIGTERM : SIGKILL);
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 150 && !exited; ++i) {
    exited = ::waitpid(pid, &status, WNOHANG) == pid;
    if (!exited) ::usleep(100000);
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  if (!mounted && isMountPoint(mountpoint)) {
    // It mounted its view between our look and the kill: a view without its daemon must not
    // stay (its guard may not know it yet).
    if (::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      std::cerr << fmt::format("fanhsm: '{}' stays mounted without its daemon: {}; run "
                               "`umount -l {}`\n", mountpoint, std::strerror(errno), mountpoint);
    }
  }
  std::cerr << fmt::format("fanhsm: mount on {} interrupted: its daemon (pid {}) was stopped{}\n",
                           mountpoint, pid,
                           exited || !mounted ? "" : " by SIGKILL; the next mount clears what it left");
  return 130;
}

int doMount(MountConfig config, const std::string& sourceArg, const std::string& mpArg,
            const std::string& cacheArg) {
  if (config.frontend != "fanotify" && config.frontend != "fuse") {
    return fail(fmt::format("unknown frontend '{}': use 'fanotify' or 'fuse'", config.frontend));
  }
  if (!hasCapSysAdmin()) {
    if (config.frontend != "fuse") {
      return fail("--frontend fanotify needs root (CAP_SYS_ADMIN: fanotify pre-content events "
                  "and mounts are privileged); as an ordinary user, mount with --frontend fuse");
    }
    // An ordinary user's FUSE mount (fusermount3), like sshfs or rclone: everything in the
    // view is the user's, and only the user sees it (no allow_other).
    const auto uid = static_cast<int64_t>(::geteuid());
    const auto gid = static_cast<int64_t>(::getegid());
    if ((config.uid >= 0 && config.uid != uid) || (config.gid >= 0 && config.gid != gid)) {
      return fail("--uid and --gid other than your own need root");
    }
    config.uid = uid;
    config.gid = gid;
  }
  if (isUrl(sourceArg)) {
    config.source = sourceArg;
  } else {
    auto source = canonicalDir(sourceArg, "source");
    if (!source) return fail(source.status().message());
    config.source = *source;
  }
  auto mp = canonicalDir(mpArg, "mount point");
  if (!mp && isDisconnectedErrno(mp.status().code())) {
    // A FUSE mount whose daemon died: clear it if it was ours, then look again.
    auto abs = absoluteNoFollow(mpArg);
    if (!abs) return fail(abs.status().message());
    if (!readRecord(*abs)) {
      return fail(fmt::format("mount point '{}' is a disconnected FUSE mount whose daemon died and "
                              "that fanhsm has no record of: clear it with 'fusermount3 -u {}'",
                              *abs, *abs));
    }
    Status s = clearStale(*abs);
    if (!s) return fail(s.message());
    mp = canonicalDir(mpArg, "mount point");
  }
  if (!mp) return fail(mp.status().message());
  config.mountpoint = *mp;
  if (!isUrl(config.source) &&
      (isInside(config.mountpoint, config.source) || isInside(config.source, config.mountpoint))) {
    return fail(fmt::format("source '{}' and mount point '{}' must not contain each other",
                            config.source, config.mountpoint));
  }
  std::string cache = cacheArg.empty() ? defaultCacheDir(config.mountpoint) : cacheArg;
  if (cache.front() != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd) == nullptr) return fail("getcwd failed");
    cache = std::string(cwd) + "/" + cache;
  }
  while (cache.size() > 1 && cache.back() == '/') cache.pop_back();
  config.cacheDir = cache;
  if (isInside(config.cacheDir, config.mountpoint) ||
      (!isUrl(config.source) && isInside(config.cacheDir, config.source))) {
    return fail(fmt::format("cache '{}' must not be inside the source or the mount point",
                            config.cacheDir));
  }
  // Before the daemon creates anything in it (its log, meta/).
  if (Status s = cache::CacheStore::checkCacheDir(config.cacheDir); !s) return fail(s.message());
  Status s = clearStale(config.mountpoint);
  if (!s) return fail(s.message());
  s = checkEmpty(config.mountpoint);
  if (!s) return fail(s.message());

  const std::string logPath =
      config.logFile.empty() ? config.cacheDir + "/meta/fanhsm.log" : config.logFile;
  if (!config.logFile.empty()) {
    // Checked here, where the error can still be shown.
    UniqueFd f(::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!f) return fail(fmt::format("--log-file '{}': {}", logPath, std::strerror(errno)));
  }
  log::setLevel(static_cast<log::Level>(config.logLevel));
  if (config.foreground) {
    if (!config.logFile.empty()) (void)log::setFile(logPath, uint64_t{16} << 20);
    return runDaemon(config, -1);
  }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return fail(fmt::format("pipe: {}", std::strerror(errno)));
  pid_t pid = ::fork();
  if (pid < 0) return fail(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    ::close(pipefd[0]);
    ::setsid();
    if (::chdir("/") != 0) _exit(1);
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
    }
    // Log into the cache directory (created by the daemon; make sure it exists first).
    std::string mk = config.cacheDir;
    for (size_t pos = 1; pos <= mk.size(); ++pos) {
      if (pos == mk.size() || mk[pos] == '/') ::mkdir(mk.substr(0, pos).c_str(), 0700);
    }
    ::mkdir((config.cacheDir + "/meta").c_str(), 0700);
    // Onto stderr (fd 2), kept under 16 MiB (one older file, fanhsm.log.1, is kept).
    (void)log::setFile(logPath, uint64_t{16} << 20);
    _exit(runDaemon(config, pipefd[1]));
  }
  ::close(pipefd[1]);
  catchInterrupts();
  std::string msg;
  char buf[4096];
  while (!gInterrupted) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    msg.append(buf, static_cast<size_t>(n));
    if (msg.find('\n') != std::string::npos) break;
  }
  ::close(pipefd[0]);
  if (gInterrupted && msg.find('\n') == std::string::npos) {
    return stopInterruptedMount(pid, config.mountpoint);
  }
  if (msg.rfind("OK", 0) == 0) {
    std::cout << "fanhsm: mounted " << displaySource(config.source) << " at " << config.mountpoint << " (pid "
              << pid << ", cache " << config.cacheDir << ")\n";
    if (msg.rfind("OK offline: ", 0) == 0) {
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      std::cerr << "fanhsm: the source is unreachable (" << printable(msg.substr(12))
                << "): serving what the cache holds; reads of what it lacks fail (EIO) until "
                   "the source answers\n";
    }
    return 0;
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (msg.rfind("ERR ", 0) == 0) {
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return fail(fmt::format("mount {} on {}: {}", displaySource(config.source), config.mountpoint,
                            msg.substr(4)));
  }
  return fail(fmt::format("the daemon exited during setup (status {}); see {}", status, logPath));
}

int doUmount(const std::string& mpArg, bool lazy) {
  auto mp = absoluteNoFollow(mpArg);
  if (!mp) return fail(mp.status().message());
  auto rec = readRecord(*mp);
  if (!rec) {
    if (isMountPoint(*mp)) {
      return fail(fmt::format("'{}' is not a fanhsm mount (no daemon record in {})", *mp, runDir()));
    }
    return fail(fmt::format("'{}' is not mounted", *mp));
  }
  if (!processAlive(rec->pid)) {
    Status s = clearStale(*mp);
    if (!s) return fail(s.message());
    std::cout << "fanhsm: the daemon for " << *mp << " had died; stale mount cleared\n";
    return 0;
  }
  auto resp = callDaemon(rec->socket, {{"op", "umount"}, {"lazy", lazy}}, 60000);
  if (!resp) return fail(fmt::format("umount {}: {}", *mp, resp.status().message()));
  if (!resp->value("ok", false)) {
    std::string hint = resp->value("errno", 0) == EBUSY ? " (close them, or use --lazy)" : "";
    return fail(fmt::format("umount {}: {}{}", *mp, resp->value("error", "failed"), hint));
  }
  // The view is gone; wait (bounded) for the daemon to finish recording and exit. After a
  // lazy unmount it first serves the files still open on the detached view (up to 60 s):
  // the mount point is free already, so this command does not wait for that.
  const int waitSeconds = lazy ? 5 : 30;
  for (int i = 0; i < waitSeconds * 20 && processAlive(rec->pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (processAlive(rec->pid)) {
    if (lazy) {
      std::cerr << fmt::format("fanhsm: {} detached; the daemon (pid {}) serves the files still "
                               "open on it for up to 60 s, then exits\n", *mp, rec->pid);
      return 0;
    }
    return fail(fmt::format("umount {}: unmounted, but the daemon (pid {}) has not exited after "
                            "{} s", *mp, rec->pid, waitSeconds));
  }
  return 0;
}

void printMountStatus(const nlohmann::json& j) {
  auto files = j["files"];
  auto dirs = j["dirs"];
  auto crawl = j["crawl"];
  auto ev = j["events"];
  auto fe = j["fetch"];
  uint64_t total = j["bytes_total"], present = j["bytes_present"];
  std::cout << j["mountpoint"].get<std::string>() << ": fanhsm mount of "
            << j["source"].get<std::string>() << " (" << j["frontend"].get<std::string>()
            << ", pid " << j["pid"] << ")\n";
  std::cout << fmt::format("  cache    {} ({})\n", j["cache"].get<std::string>(),
                           j["cache_fs"].get<std::string>());
  std::cout << fmt::format("  content  {} of {} present ({:.1f}%)\n", humanBytes(present),
                           humanBytes(total), total ? 100.0 * static_cast<double>(present) / static_cast<double>(total) : 100.0);
  const uint64_t quota = j["cache_size"];
  const auto& evict = j["eviction"];
  if (quota > 0) {
    std::cout << fmt::format("  quota    {} used of {} ({:.0f}%); eviction from {:.0f}% down to {:.0f}%\n",
                             humanBytes(present), humanBytes(quota),
                             100.0 * static_cast<double>(present) / static_cast<double>(quota),
                             100.0 * evict["high"].get<double>(), 100.0 * evict["low"].get<double>());
  }
  std::cout << fmt::format("  released {} files ({}), {} skipped in use, {} passes{}; pinned {} files ({})\n",
                           evict["files"].get<uint64_t>(), humanBytes(evict["bytes"].get<uint64_t>()),
                           evict["busy"].get<uint64_t>(), evict["passes"].get<uint64_t>(),
                           evict["cache_full"].get<uint64_t>() > 0
                               ? fmt::format(", {} on a full cache filesystem", evict["cache_full"].get<uint64_t>())
                               : "",
                           j["pinned"]["files"].get<uint64_t>(), humanBytes(j["pinned"]["bytes"].get<uint64_t>()));
  std::cout << fmt::format("  files    {} total: {} full, {} partial, {} empty; {} symlinks\n",
                           files["total"].get<uint64_t>(), files["full"].get<uint64_t>(),
                           files["partial"].get<uint64_t>(), files["empty"].get<uint64_t>(),
                           j["symlinks"].get<uint64_t>());
  std::cout << fmt::format("  dirs     {} total, {} listed\n", dirs["total"].get<uint64_t>(),
                           dirs["listed"].get<uint64_t>());
  std::cout << fmt::format("  crawl    {}: {} dirs listed, {} queued, {} names, {} errors, {:.2f} s\n",
                           crawl["done"].get<bool>() ? "done" : "running",
                           crawl["dirs_listed"].get<uint64_t>(), crawl["dirs_queued"].get<uint64_t>(),
                           crawl["entries"].get<uint64_t>(), crawl["errors"].get<uint64_t>(),
                           crawl["seconds"].get<double>());
  if (!crawl.value("started_offline", std::string()).empty()) {
    std::cout << fmt::format("  source   unreachable when mounted ({}): started from the cache\n",
                             printable(crawl["started_offline"].get<std::string>()));
  }
  if (crawl.contains("stalled") && !crawl["stalled"].get<std::string>().empty()) {
    std::cout << fmt::format("  crawl    waiting: {}\n", crawl["stalled"].get<std::string>());
  }
  if (crawl.value("refused", uint64_t{0}) > 0) {
    std::cout << fmt::format("  crawl    {} listings refused by a limit (--max-depth, --max-dir-entries, "
                             "--max-entries; see the log)\n", crawl["refused"].get<uint64_t>());
  }
  std::cout << fmt::format("  events   {} content, {} dir opens, {} file opens, {} denied, {} pending\n",
                           ev["content"].get<uint64_t>(), ev["dir_open"].get<uint64_t>(),
                           ev["file_open"].get<uint64_t>(), ev["denied"].get<uint64_t>(),
                           ev["pending"].get<uint64_t>());
  if (j.contains("latency")) {
    auto lat = j["latency"];
    auto line = [](const nlohmann::json& l) {
      return fmt::format("p50 {:.0f} us, p99 {:.0f} us, max {:.0f} us ({})", l["p50_us"].get<double>(),
                         l["p99_us"].get<double>(), l["max_us"].get<double>(),
                         l["count"].get<uint64_t>());
    };
    std::cout << fmt::format("  latency  content {}; dir opens {}\n", line(lat["content"]),
                             line(lat["dir_open"]));
  }
  std::cout << fmt::format("  fetched  {} in {} fetches ({} readahead), {} errors, {} files completed\n",
                           humanBytes(fe["bytes"].get<uint64_t>()), fe["count"].get<uint64_t>(),
                           fe["readahead"].get<uint64_t>(), fe["errors"].get<uint64_t>(),
                           fe["files_completed"].get<uint64_t>());
  if (fe.contains("running")) {
    std::cout << fmt::format("  fetching {} of {} connections busy ({} for over 2 s; at most {}), {} queued "
                             "({} readahead), {} reads waiting; {} cancelled (reader gone)\n",
                             fe["running"].get<uint64_t>(), fe["connections"].get<uint64_t>(),
                             fe.value("running_long", uint64_t{0}), fe.value("max_connections", uint64_t{0}),
                             fe["queued"].get<uint64_t>() + fe["queued_readahead"].get<uint64_t>(),
                             fe["queued_readahead"].get<uint64_t>(), fe["parked"].get<uint64_t>(),
                             fe["cancelled"].get<uint64_t>());
  }
  const auto& w = j["worker"];
  std::cout << fmt::format("  worker   pid {}, {} restarts, {} calls sent again{}\n", w["pid"].get<int>(),
                           w["restarts"].get<uint64_t>(), w["retried_calls"].get<uint64_t>(),
                           j["metrics"].get<std::string>().empty()
                               ? ""
                               : "; metrics at " + j["metrics"].get<std::string>());
}

int doStatus(const std::vector<std::string>& paths, bool json) {
  int rc = 0;
  for (const auto& p : paths) {
    auto abs = absoluteNoFollow(p);
    if (!abs) {
      rc = fail(abs.status().message());
      continue;
    }
    auto found = findMountFor(*abs);
    if (!found || !processAlive(found->first.pid)) {
      rc = fail(fmt::format("'{}' is not on a running fanhsm mount", p));
      continue;
    }
    auto resp = callDaemon(found->first.socket, {{"op", "status"}, {"path", found->second}}, 10000);
    if (!resp) {
      rc = fail(fmt::format("status '{}': {}", p, resp.status().message()));
      continue;
    }
    if (!resp->value("ok", false)) {
      rc = fail(fmt::format("status '{}': {}", p, resp->value("error", "failed")));
      continue;
    }
    if (json) {
      std::cout << resp->dump() << "\n";
    } else if (found->second.empty()) {
      printMountStatus(*resp);
    } else if ((*resp)["type"] == "file") {
      uint64_t size = (*resp)["size"], present = (*resp)["bytes_present"];
      std::cout << fmt::format("{}: {}, {} of {} present ({:.1f}%){}\n", p,
                               (*resp)["state"].get<std::string>(), humanBytes(present),
                               humanBytes(size),
                               size ? 100.0 * static_cast<double>(present) / static_cast<double>(size) : 100.0,
                               resp->value("pinned", false) ? ", pinned" : "");
    } else if ((*resp)["type"] == "dir") {
      std::cout << fmt::format("{}: directory, {}\n", p, (*resp)["state"].get<std::string>());
    } else {
      std::cout << fmt::format("{}: symlink to {}\n", p, (*resp)["target"].get<std::string>());
    }
  }
  return rc;
}


std::string humanDuration(double s) {
  if (s < 60) return fmt::format("{:.0f} s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return fmt::format("{}h{:02}m", static_cast<int>(s) / 3600, (static_cast<int>(s) / 60) % 60);
}

// Shows a job's progress: one rewritten line on a terminal, a plain line every 2 s otherwise.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(std::string op) : op_(std::move(op)), tty_(::isatty(2) == 1) {}
  ~ProgressPrinter() { finish(); }
  void update(const nlohmann::json& p) {
    std::string line;
    if (p.value("phase", "") == "listing") {
      line = fmt::format("{}: listing directories: {} listed", op_, p.value("dirs_listed", 0));
    } else {
      const uint64_t done = p.value("bytes_done", uint64_t{0}), total = p.value("bytes_total", uint64_t{0});
      const double secs = p.value("seconds", 0.0);
      const uint64_t fetched = p.value("bytes_fetched", uint64_t{0});
      const double rate = secs > 0 ? static_cast<double>(fetched) / secs : 0;
      std::string eta = "-";
      if (done > 0 && total > done && secs > 0) {
        eta = humanDuration(secs * static_cast<double>(total - done) / static_cast<double>(done));
      }
      line = fmt::format("{}: {}/{} files, {} of {} ({:.0f}%), {}/s, ETA {}", op_,
                         p.value("files_done", 0), p.value("files_total", 0), humanBytes(done),
                         humanBytes(total),
                         total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0,
                         humanBytes(static_cast<uint64_t>(rate)), eta);
    }
    auto now = std::chrono::steady_clock::now();
    if (tty_) {
      std::cerr << "\r\033[K" << line << std::flush;
      shown_ = true;
    } else if (now - last_ >= std::chrono::seconds(2)) {
      std::cerr << line << "\n";
      last_ = now;
    }
  }
  void finish() {
    if (tty_ && shown_) std::cerr << "\r\033[K" << std::flush;
    shown_ = false;
  }

 private:
  std::string op_;
  bool tty_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// fetch, release, pin, unpin: one request per mount the paths are on.
int doCacheJob(const std::string& op, const std::vector<std::string>& paths, bool recursive) {
  std::vector<std::pair<MountRecord, std::vector<std::string>>> groups;
  for (const auto& p : paths) {
    auto abs = absoluteNoFollow(p);
    if (!abs) return fail(abs.status().message());
    auto found = findMountFor(*abs);
    if (!found || !processAlive(found->first.pid)) {
      return fail(fmt::format("'{}' is not on a running fanhsm mount", p));
    }
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
      return g.first.mountpoint == found->first.mountpoint;
    });
    if (it == groups.end()) {
      groups.push_back({found->first, {}});
      it = std::prev(groups.end());
    }
    it->second.push_back(found->second);
  }
  catchInterrupts();
  int rc = 0;
  for (const auto& [rec, rels] : groups) {
    ProgressPrinter printer(op);
    nlohmann::json req = {{"op", op}, {"paths", rels}, {"recursive", recursive}};
    auto resp = callDaemonStream(rec.socket, req, [&](const nlohmann::json& p) { printer.update(p); },
                                 120000, &gInterrupted);
    printer.finish();
    if (!resp && resp.status().code() == EINTR) {
      std::cerr << "fanhsm: " << op << " interrupted"
                << (op == "fetch" || op == "pin" ? "; what was fetched stays in the cache" : "")
                << "\n";
      return 130;
    }
    if (!resp) {
      rc = fail(fmt::format("{} on {}: {}", op, rec.mountpoint, resp.status().message()));
      continue;
    }
    const auto& r = *resp;
    if (!r.value("ok", false)) {
      rc = fail(fmt::format("{}: {}", op, r.value("error", "failed")));
      continue;
    }
    if (op == "fetch" || op == "pin") {
      const double secs = r.value("seconds", 0.0);
      const uint64_t fetched = r.value("bytes_fetched", uint64_t{0});
      std::cout << fmt::format("{}: {} of {} files present ({}), {} fetched in {:.1f} s ({}/s){}\n", op,
                               r.value("files", 0), r.value("files_total", 0),
                               humanBytes(r.value("bytes_total", uint64_t{0})), humanBytes(fetched), secs,
                               humanBytes(secs > 0 ? static_cast<uint64_t>(static_cast<double>(fetched) / secs) : 0),
                               op == "pin" ? "; pinned" : "");
      if (r.value("failed", 0) > 0) {
        for (const auto& e : r["errors"]) std::cerr << "fanhsm: " << printable(e.get<std::string>()) << "\n";
        rc = fail(fmt::format("{}: {} failed", op, r.value("failed", 0)));
      }
    } else if (op == "release") {
      std::cout << fmt::format("release: {} files released ({}); {} in use, {} pinned, {} changed "
                               "meanwhile: kept\n",
                               r.value("released", 0), humanBytes(r.value("bytes_released", uint64_t{0})),
                               r.value("busy", 0), r.value("pinned", 0), r.value("changed", 0));
      if (r.value("busy", 0) > 0 || r.value("failed", 0) > 0) rc = 1;
    } else {
      std::cout << fmt::format("unpin: {} files unpinned\n", r.value("changed", 0));
    }
  }
  return rc;
}

// A size: digits, then nothing (bytes) or K, M, G or T (powers of 1024; "KiB", "MB" and
// the like read the same). Anything else, a sign, or a value past 2^64 is refused, naming
// `option`.
uint64_t parseSize(const std::string& s, const std::string& option) {
  auto bad = [&](const std::string& why) {
    return CLI::ValidationError(option, fmt::format("'{}': {}", s, why));
  };
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  if (digits == 0) throw bad("not a size (digits, then K, M, G or T)");
  errno = 0;
  const unsigned long long v = std::strtoull(s.substr(0, digits).c_str(), nullptr, 10);
  if (errno == ERANGE) throw bad("too large");
  std::string suffix = s.substr(digits);
  for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  unsigned shift = 0;
  if (!suffix.empty()) {
    const std::string unit = suffix.substr(0, 1);
    const std::string rest = suffix.substr(1);
    if (rest != "" && rest != "B" && rest != "IB") throw bad("bad suffix (use K, M, G or T)");
    if (unit == "K") {
      shift = 10;
    } else if (unit == "M") {
      shift = 20;
    } else if (unit == "G") {
      shift = 30;
    } else if (unit == "T") {
      shift = 40;
    } else if (unit != "B" || rest != "") {
      throw bad("bad suffix (use K, M, G or T)");
    }
  }
  if (shift > 0 && v > (UINT64_MAX >> shift)) throw bad("too large");
  return static_cast<uint64_t>(v) << shift;
}

// A user (`user` true) or group, by name or number.
int64_t parseId(const std::string& s, bool user) {
  const char* what = user ? "--uid" : "--gid";
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (!s.empty() && *end == '\0' && errno == 0 && v < 0xffffffffULL) return static_cast<int64_t>(v);
  if (user) {
    if (const struct passwd* pw = ::getpwnam(s.c_str())) return pw->pw_uid;
  } else if (const struct group* gr = ::getgrnam(s.c_str())) {
    return gr->gr_gid;
  }
  throw CLI::ValidationError(what, fmt::format("no {} '{}'", user ? "user" : "group", s));
}

// Permission bits, octal, 1 to 07777 (0 would make the entry unusable even to root's tools).
uint32_t parseMode(const std::string& s, const char* what) {
  char* end = nullptr;
  const unsigned long v = std::strtoul(s.c_str(), &end, 8);
  if (s.empty() || *end != '\0' || v == 0 || v > 07777) {
    throw CLI::ValidationError(what, fmt::format("'{}' is not an octal mode such as 0644", s));
  }
  return static_cast<uint32_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fanhsm: a remote tree at a mount point, fetched on first access into a "
               "persistent cache and served at native speed through fanotify pre-content "
               "events."};
  app.set_version_flag("--version", kVersion);
  app.require_subcommand(1);
  app.footer("Run 'fanhsm COMMAND --help' for the options of a command.");
  // Command-line mistakes read like every other error of fanhsm: prefixed, one line.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("fanhsm: {}\nRun with --help for more information.\n", e.what());
  });

  MountConfig config;
  std::string sourceArg, mpArg, cacheArg, chunkArg = "1M", readaheadArg = "32M";
  auto* mount = app.add_subcommand("mount", "Mount SOURCE at MOUNTPOINT (returns once it is usable)");
  mount->add_option("SOURCE", sourceArg, "What to mirror: a directory (local, NFS...) or an http(s):// directory listing URL")->required();
  mount->add_option("MOUNTPOINT", mpArg, "Empty directory where the tree appears")->required();
  mount->add_option("--cache", cacheArg, "Cache directory on ext4, xfs or btrfs: new, empty, or a fanhsm cache (default: /var/cache/fanhsm/<mount point, systemd-escaped>)");
  mount->add_option("--frontend", config.frontend, "Kernel interface: fanotify (pre-content events, native speed for present files) or fuse "
                   "(works on any cache filesystem, e.g. tmpfs; every read passes through the daemon)")->capture_default_str();
  mount->add_flag("--foreground,-f", config.foreground, "Stay in the foreground and log to stderr");
  mount->add_option("--chunk-size", chunkArg, "Fetch granularity for a new cache (K/M suffix)")->capture_default_str();
  mount->add_option("--readahead", readaheadArg, "Readahead window for sequential readers")->capture_default_str();
  mount->add_option("--crawl-parallel", config.crawlParallel, "Directories listed in parallel by the background crawl (0: list only directories that are opened)")->capture_default_str()->check(CLI::Range(0, 256));
  mount->add_option("--workers", config.workers, "Threads serving directory opens (which may list remotely); reads never hold a thread while they wait")->capture_default_str()->check(CLI::Range(1, 1024));
  mount->add_option("--connections", config.connections, "Fetches from the source at a time: reads waiting for a fetch go first, fairly across files; readahead uses at most a quarter")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  mount->add_option("--max-connections", config.maxConnections, "Fetches at a time, long ones included: a fetch running over 2 s (a dripping source) stops counting against --connections, so a read of another file can start beside it; 0: 8 times --connections")
      ->capture_default_str()->check(CLI::Range(0, 8192));
  mount->add_option("--max-entries", config.maxEntries, "Names the mount may hold in all: a listing that would go past it is refused (a source serving an endless tree)")->capture_default_str()->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  mount->add_option("--max-dir-entries", config.maxDirEntries, "Names one directory may have: a bigger listing is refused (the directory fails to open)")->capture_default_str()->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  mount->add_option("--max-depth", config.maxDepth, "Directories deeper than this are not listed")->capture_default_str()->check(CLI::Range(1u, 4096u));
  std::string maxListingArg = "64M";
  mount->add_option("--max-listing-size", maxListingArg, "HTTP: largest listing page read (K/M/G suffix); a bigger one fails to list")->capture_default_str();
  mount->add_option("--listing-ttl", config.listingTtlSeconds, "Seconds after which an opened directory is listed again (0: never)")->capture_default_str()->check(CLI::Range(0, 315360000));
  std::string cacheSizeArg;
  mount->add_option("--cache-size", cacheSizeArg, "Quota on cached content (K/M/G/T suffix); least recently used, unpinned content is released beyond it (default: no quota)");
  mount->add_option("--cache-high", config.cacheHigh, "Eviction starts when content passes this fraction of --cache-size")->capture_default_str()->check(CLI::Range(0.05, 1.0));
  mount->add_option("--cache-low", config.cacheLow, "Eviction frees content down to this fraction of --cache-size")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  std::string metricsArg;
  mount->add_option("--metrics", metricsArg, "Serve Prometheus metrics at http://ADDR:PORT/metrics ([ADDR:]PORT; ADDR defaults to 127.0.0.1)");
  std::string uidArg, gidArg, fileModeArg, dirModeArg;
  mount->add_option("--uid", uidArg, "Owner of every file and directory in the view (name or number; default: the source's owner for a directory source, else root)");
  mount->add_option("--gid", gidArg, "Group of every file and directory in the view (name or number)");
  mount->add_option("--file-mode", fileModeArg, "Permission bits of every file, octal (default: the source's; for an HTTP source that needs credentials, without group and other bits)");
  mount->add_option("--dir-mode", dirModeArg, "Permission bits of every directory, octal (default as --file-mode)");
  mount->add_flag("--debug", config.debug, "Verbose logging (as --log-level debug)");
  std::string logLevelArg = "info";
  mount->add_option("--log-level", logLevelArg, "Least important messages logged: debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))->capture_default_str();
  mount->add_option("--log-file", config.logFile, "Log here instead of CACHE/meta/fanhsm.log (kept under 16 MiB, one older file as FILE.1; SIGHUP to the daemon opens it again, for logrotate)");
  mount->add_flag("--insecure,-k", config.insecure, "HTTP: do not verify TLS certificates");
  mount->add_option("--user,-u", config.user, "HTTP: basic auth as USER:PASSWORD (hidden from ps once parsed; prefer --credentials)");
  std::string credentialsArg;
  mount->add_option("--credentials", credentialsArg, "HTTP: basic auth from FILE, whose first line is USER:PASSWORD (mode 0600, yours)");
  mount->add_flag("--netrc", config.netrc, "HTTP: take credentials from ~/.netrc (or $NETRC), read by this command: the network-facing worker gets no right to read files. Also: FANHSM_CREDENTIALS=USER:PASSWORD in the environment");
  mount->add_option("--header,-H", config.headers, "HTTP: extra request header 'Name: value' (repeatable)");
  mount->add_option("--timeout", config.timeoutSeconds, "HTTP: seconds a transfer may stay below --min-speed before it fails (EIO)")->capture_default_str()->check(CLI::Range(1, 86400));
  std::string minSpeedArg = "1K";
  mount->add_option("--min-speed", minSpeedArg, "HTTP: slowest transfer accepted, bytes per second (K/M suffix)")->capture_default_str();
  mount->add_option("--request-timeout", config.requestTimeoutSeconds, "HTTP: seconds one request may take in all (a listing, or one fetch of at most a few MiB) before it fails (EIO); 0: no limit")
      ->capture_default_str()->check(CLI::Range(0, 86400));
  std::string redirectsArg = "same-origin";
  mount->add_option("--redirects", redirectsArg, "HTTP: which redirects to follow: same-origin (the source's scheme, host and port), or any (other origins too, when no credential or header would go along); never https to http, never to loopback or link-local addresses unless the source is there")
      ->check(CLI::IsMember({"same-origin", "any"}))->capture_default_str();
  mount->add_option("--worker-watchdog", config.workerWatchdogSeconds, "Seconds the fetch worker may send nothing while reads wait for it before it is replaced (stopped or wedged)")
      ->capture_default_str()->check(CLI::Range(1, 86400));
  mount->add_option("--retries", config.retries, "HTTP: retries of a failed request (with backoff) before EIO")->capture_default_str()->check(CLI::Range(0, 100));

  std::string umountArg;
  bool lazy = false;
  auto* umount = app.add_subcommand("umount", "Unmount MOUNTPOINT and stop its daemon (returns once it has exited)");
  umount->add_option("MOUNTPOINT", umountArg, "Mount point")->required();
  umount->add_flag("--lazy,-l", lazy, "Detach the view even if files are in use");

  std::vector<std::string> statusPaths;
  bool json = false;
  auto* status = app.add_subcommand("status", "Show the state of a mount point, or of files and directories under it");
  status->add_option("PATH", statusPaths, "Mount point or path below it")->required();
  status->add_flag("--json", json, "One JSON object per path, for scripts");

  bool listJson = false;
  auto* list = app.add_subcommand("list", "Show every fanhsm mount of this machine: mount point, source, frontend, cache, daemon");
  list->add_flag("--json", listJson, "A JSON array, for scripts");

  std::vector<std::string> jobPaths;
  bool recursive = false;
  std::vector<CLI::App*> jobs;
  for (auto [op, help] : {std::pair{"fetch", "Make files fully present now (progress on a terminal; Ctrl-C stops, what was fetched stays)"},
                          std::pair{"release", "Free the cached content of files now (names stay; files in use are skipped and reported)"},
                          std::pair{"pin", "Fetch files and keep them: the quota never releases pinned content"},
                          std::pair{"unpin", "Let the quota release files again"}}) {
    auto* sub = app.add_subcommand(op, help);
    sub->add_option("PATH", jobPaths, "Files, or directories with -r, under a fanhsm mount point")->required();
    sub->add_flag("--recursive,-r", recursive, "Whole directory trees (lists unlisted directories first)");
    jobs.push_back(sub);
  }

  try {
    app.parse(argc, argv);
    scrubSecretArguments(argc, argv);
    if (!credentialsArg.empty()) {
      if (!config.user.empty()) throw CLI::ValidationError("--credentials", "give --user or --credentials, not both");
      auto cred = readCredentials(credentialsArg);
      if (!cred) throw CLI::ValidationError("--credentials", cred.status().message());
      config.user = *cred;
    }
    // For scripts: USER:PASSWORD in the environment (readable by the same user and root
    // only, unlike argv), taken out of it at once.
    if (const char* env = std::getenv("FANHSM_CREDENTIALS"); env && *mount) {
      if (config.user.empty()) config.user = env;
      ::unsetenv("FANHSM_CREDENTIALS");
    }
    if (!cacheSizeArg.empty()) config.cacheSize = parseSize(cacheSizeArg, "--cache-size");
    if (!metricsArg.empty()) {
      auto addr = parseMetricsAddress(metricsArg);
      if (!addr) throw CLI::ValidationError("--metrics", addr.status().message());
      config.metrics = *addr;
    }
    if (config.cacheLow >= config.cacheHigh) {
      throw CLI::ValidationError("--cache-low", "must be below --cache-high");
    }
    config.redirectsAnywhere = redirectsArg == "any";
    config.logLevel = static_cast<int>(config.debug ? log::Level::kDebug : *log::parseLevel(logLevelArg));
    if (!config.logFile.empty() && config.logFile.front() != '/') {
      throw CLI::ValidationError("--log-file", "must be an absolute path (the daemon runs in /)");
    }
    if (!uidArg.empty()) config.uid = parseId(uidArg, true);
    if (!gidArg.empty()) config.gid = parseId(gidArg, false);
    if (!fileModeArg.empty()) config.fileMode = parseMode(fileModeArg, "--file-mode");
    if (!dirModeArg.empty()) config.dirMode = parseMode(dirModeArg, "--dir-mode");
    config.chunkSize = parseSize(chunkArg, "--chunk-size");
    config.minSpeed = parseSize(minSpeedArg, "--min-speed");
    config.maxListingBytes = parseSize(maxListingArg, "--max-listing-size");
    config.readahead = parseSize(readaheadArg, "--readahead");
    if (config.chunkSize < 4096 || config.chunkSize > (64u << 20) || (config.chunkSize & 4095) != 0) {
      throw CLI::ValidationError("--chunk-size", "must be a multiple of 4K between 4K and 64M");
    }
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every error on the command line exits 2 (README,
    // "Exit status"), whatever CLI11's own code for its kind.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "fanhsm: " << e.what() << "\n";
    return 2;
  }
  if (*mount) {
    if (isUrl(sourceArg) && config.netrc) {
      // Read here, as the user who mounts: the fetch worker then needs no right to read it.
      if (Status s = credentialsFromNetrc(sourceArg, config); !s) return fail(s.message());
    }
    if (isUrl(sourceArg)) {
      Status s = remote::HttpRemote::globalInit();  // before the daemon starts threads
      if (!s) return fail(s.message());
    }
    return doMount(config, sourceArg, mpArg, cacheArg);
  }
  if (*umount) return doUmount(umountArg, lazy);
  if (*status) return doStatus(statusPaths, json);
  if (*list) return doList(listJson);
  for (auto* sub : jobs) {
    if (*sub) return doCacheJob(sub->get_name(), jobPaths, recursive);
  }
  return 2;
}

}  // namespace hsm::cli

int main(int argc, char** argv) {
  // The group guard (frontend/fanotify/group_guard.h) is this binary, started by the daemon.
  if (argc == 3 && std::string_view(argv[1]) == "__guard") return hsm::frontend::runGroupGuard(argv[2]);
  // The fetch worker (remote/worker/worker_remote.h), started by the daemon.
  if (argc == 2 && std::string_view(argv[1]) == "__worker") return hsm::cli::runWorkerProcess();
  return hsm::cli::main(argc, argv);
}
