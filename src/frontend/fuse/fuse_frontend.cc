#include "frontend/fuse/fuse_frontend.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdarg>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "frontend/fuse/fuse_defs.h"
#include "frontend/fuse/fuse_errno.h"
#include "frontend/fuse/fuse_request.h"
#include "util/log.h"
#include "util/rel_path.h"

extern char** environ;

namespace hsm::frontend {
namespace {

using cache::kStateXattr;
constexpr auto kInitTimeout = std::chrono::seconds(10);

void wakeHandler(int /*sig*/) {}

// libfuse's own messages (mount failures, protocol errors) go to our log.
void fuseLog(enum fuse_log_level level, const char* fmtStr, va_list ap) {
  char buf[1024];
  int n = std::vsnprintf(buf, sizeof buf, fmtStr, ap);
  if (n < 0) return;
  std::string_view line(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (level <= FUSE_LOG_ERR) {
    log::error("libfuse: {}", line);
  } else if (level <= FUSE_LOG_NOTICE) {
    log::info("libfuse: {}", line);
  } else {
    log::debug("libfuse: {}", line);
  }
}

bool isDotName(std::string_view n) { return n == "." || n == ".."; }

// Runs `fusermount3 -u [-z] -q -- mountpoint` and returns its exit status (-1: not run).
int runFusermount(const std::string& mountpoint, bool lazy) {
  std::vector<std::string> args = {"fusermount3", "-u", "-q"};
  if (lazy) args.push_back("-z");
  args.push_back("--");
  args.push_back(mountpoint);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawnp(&pid, "fusermount3", nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

struct FuseFrontend::DirHandle {
  struct Ent {
    std::string name;
    ino_t ino = 0;
    unsigned char type = DT_UNKNOWN;
  };
  std::string path;
  UniqueFd fd;               // the directory in the cache tree
  std::vector<Ent> entries;  // snapshot taken at opendir; "." and ".." first
};

// The C callbacks: each turns a request into a FuseRequest and calls the frontend.
struct FuseOps {
  static FuseFrontend& self(fuse_req_t req) {
    return *static_cast<FuseFrontend*>(fuse_req_userdata(req));
  }

  // Runs `fn(frontend, request)`; a request left unanswered (early return, exception) is
  // answered EIO by the FuseRequest destructor.
  template <typename Fn>
  static void serve(fuse_req_t raw, const char* op, Fn&& fn) {
    FuseFrontend& fe = self(raw);
    FuseRequest req(raw, &fe.denied_, &fe.pending_);
    try {
      fn(fe, req);
    } catch (const std::exception& e) {
      log::error("fuse {}: unexpected error: {}", op, e.what());
    } catch (...) {
      log::error("fuse {}: unexpected error", op);
    }
  }

  static void init(void* userdata, fuse_conn_info* conn) {
    auto* fe = static_cast<FuseFrontend*>(userdata);
    // The tree is read-only: symlink targets may stay in the kernel's cache.
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    conn->want &= ~static_cast<unsigned>(FUSE_CAP_WRITEBACK_CACHE);
    fe->signalInit();
  }

  static void lookup(fuse_req_t r, fuse_ino_t parent, const char* name) {
    serve(r, "lookup", [&](FuseFrontend& fe, FuseRequest& req) { fe.lookup(req, parent, name); });
  }
  static void forget(fuse_req_t r, fuse_ino_t ino, uint64_t n) {
    try {
      self(r).nodes_.forget(ino, n);
    } catch (...) {
      log::error("fuse forget: unexpected error");
    }
    fuse_reply_none(r);
  }
  static void forgetMulti(fuse_req_t r, size_t count, fuse_forget_data* forgets) {
    try {
      for (size_t i = 0; i < count; ++i) self(r).nodes_.forget(forgets[i].ino, forgets[i].nlookup);
    } catch (...) {
      log::error("fuse forget: unexpected error");
    }
    fuse_reply_none(r);
  }
  static void getattr(fuse_req_t r, fuse_ino_t ino, fuse_file_info* /*fi*/) {
    serve(r, "getattr", [&](FuseFrontend& fe, FuseRequest& req) { fe.getattr(req, ino); });
  }
  static void open(fuse_req_t r, fuse_ino_t ino, fuse_file_info* fi) {
    serve(r, "open", [&](FuseFrontend& fe, FuseRequest& req) { fe.open(req, ino, fi); });
  }
  static void read(fuse_req_t r, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    serve(r, "read", [&](FuseFrontend& fe, FuseRequest& req) { fe.read(req, ino, size, off, fi); });
  }
  static void release(fuse_req_t r, fuse_ino_t /*ino*/, fuse_file_info* fi) {
    serve(r, "release", [&](FuseFrontend&, FuseRequest& req) {
      ::close(static_cast<int>(fi->fh));
      req.err(0);
    });
  }
  static void flush(fuse_req_t r, fuse_ino_t /*ino*/, fuse_file_info* /*fi*/) {
    serve(r, "flush", [](FuseFrontend&, FuseRequest& req) { req.err(0); });
  }
  static void fsync(fuse_req_t r, fuse_ino_t /*ino*/, int /*datasync*/, fuse_file_info* /*fi*/) {
    serve(r, "fsync", [](FuseFrontend&, FuseRequest& req) { req.err(0); });
  }
  static void opendir(fuse_req_t r, fuse_ino_t ino, fuse_file_info* fi) {
    serve(r, "opendir", [&](FuseFrontend& fe, FuseRequest& req) { fe.opendir(req, ino, fi); });
  }
  static void readdir(fuse_req_t r, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
    serve(r, "readdir",
          [&](FuseFrontend& fe, FuseRequest& req) { fe.readdir(req, ino, size, off, fi, false); });
  }
  static void readdirplus(fuse_req_t r, fuse_ino_t ino, size_t size, off_t off,
                          fuse_file_info* fi) {
    serve(r, "readdirplus",
          [&](FuseFrontend& fe, FuseRequest& req) { fe.readdir(req, ino, size, off, fi, true); });
  }
  static void releasedir(fuse_req_t r, fuse_ino_t /*ino*/, fuse_file_info* fi) {
    serve(r, "releasedir", [&](FuseFrontend&, FuseRequest& req) {
      delete reinterpret_cast<FuseFrontend::DirHandle*>(fi->fh);
      req.err(0);
    });
  }
  static void fsyncdir(fuse_req_t r, fuse_ino_t /*ino*/, int /*datasync*/, fuse_file_info* /*fi*/) {
    serve(r, "fsyncdir", [](FuseFrontend&, FuseRequest& req) { req.err(0); });
  }
  static void readlink(fuse_req_t r, fuse_ino_t ino) {
    serve(r, "readlink", [&](FuseFrontend& fe, FuseRequest& req) { fe.readlink(req, ino); });
  }
  static void statfs(fuse_req_t r, fuse_ino_t /*ino*/) {
    serve(r, "statfs", [&](FuseFrontend& fe, FuseRequest& req) { fe.statfs(req); });
  }
  static void getxattr(fuse_req_t r, fuse_ino_t ino, const char* name, size_t size) {
    serve(r, "getxattr",
          [&](FuseFrontend& fe, FuseRequest& req) { fe.getxattr(req, ino, name, size); });
  }
  static void listxattr(fuse_req_t r, fuse_ino_t ino, size_t size) {
    serve(r, "listxattr",
          [&](FuseFrontend& fe, FuseRequest& req) { fe.listxattr(req, ino, size); });
  }
  static void access(fuse_req_t r, fuse_ino_t /*ino*/, int mask) {
    serve(r, "access",
          [&](FuseFrontend&, FuseRequest& req) { req.err((mask & W_OK) ? EROFS : 0); });
  }

  static fuse_lowlevel_ops make() {
    // Every request that would change the tree: the mount is read-only.
    auto erofs = [](fuse_req_t r, auto...) {
      serve(r, "modify", [](FuseFrontend&, FuseRequest& req) { req.err(EROFS); });
    };
    fuse_lowlevel_ops ops{};
    ops.init = init;
    ops.lookup = lookup;
    ops.forget = forget;
    ops.forget_multi = forgetMulti;
    ops.getattr = getattr;
    ops.open = open;
    ops.read = read;
    ops.release = release;
    ops.flush = flush;
    ops.fsync = fsync;
    ops.opendir = opendir;
    ops.readdir = readdir;
    ops.readdirplus = readdirplus;
    ops.releasedir = releasedir;
    ops.fsyncdir = fsyncdir;
    ops.readlink = readlink;
    ops.statfs = statfs;
    ops.getxattr = getxattr;
    ops.listxattr = listxattr;
    ops.access = access;
    ops.setattr = erofs;
    ops.mknod = erofs;
    ops.mkdir = erofs;
    ops.unlink = erofs;
    ops.rmdir = erofs;
    ops.symlink = erofs;
    ops.rename = erofs;
    ops.link = erofs;
    ops.write = erofs;
    ops.create = erofs;
    ops.setxattr = erofs;
    ops.removexattr = erofs;
    ops.fallocate = erofs;
    return ops;
  }
};

FuseFrontend::FuseFrontend(FuseConfig config, core::Hydrator& hydrator,
                           core::NamespacePopulator& populator, cache::CacheStore& cache)
    : config_(std::move(config)), hydrator_(hydrator), populator_(populator), cache_(cache) {}

FuseFrontend::~FuseFrontend() { stop(); }

int FuseFrontend::wakeSignal() { return SIGRTMIN + 5; }

Status FuseFrontend::start() {
  if (session_ != nullptr || stopped_) {
    return Status::error(EINVAL, "the FUSE frontend was already started");
  }
  struct stat mst {};
  if (::stat(config_.mountpoint.c_str(), &mst) != 0) {
    return Status::fromErrno(errno, fmt::format("mount point '{}'", config_.mountpoint));
  }
  if (!S_ISDIR(mst.st_mode)) {
    return Status::error(ENOTDIR,
                         fmt::format("mount point '{}' is not a directory", config_.mountpoint));
  }

  struct sigaction sa {};
  sa.sa_handler = wakeHandler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the loop thread's sem_wait() must return EINTR
  if (::sigaction(wakeSignal(), &sa, nullptr) != 0) return Status::fromErrno(errno, "sigaction");
  fuse_set_log_func(fuseLog);

  std::string fsName = config_.fsName.empty() ? std::string("fanhsm") : config_.fsName;
  for (char& c : fsName) {
    if (c == ',' || c == '\\' || c == ' ' || c == '\t' || c == '\n') c = '_';
  }
  std::string opts = fmt::format("ro,default_permissions,fsname={},subtype=fanhsm{}", fsName,
                                 config_.allowOther ? ",allow_other" : "");
  std::vector<std::string> args = {"fanhsm", "-o", opts};
  if (config_.debug) args.push_back("-d");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  struct fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(args.size()), argv.data());
  fuse_lowlevel_ops ops = FuseOps::make();
  session_ = fuse_session_new(&fargs, &ops, sizeof ops, this);
  fuse_opt_free_args(&fargs);
  if (session_ == nullptr) {
    return Status::error(EINVAL, fmt::format("fuse_session_new failed (options '{}')", opts));
  }
  if (fuse_session_mount(session_, config_.mountpoint.c_str()) != 0) {
    fuse_session_destroy(session_);
    session_ = nullptr;
    return Status::error(
        EPERM, fmt::format("cannot mount FUSE at '{}' (see the log; /dev/fuse must be usable, "
                           "and without root fusermount3{} must be allowed)",
                           config_.mountpoint,
                           config_.allowOther ? " with user_allow_other in /etc/fuse.conf" : ""));
  }
  mounted_ = true;
  loopThread_ = std::thread([this] { loop(); });

  bool live = false;
  {
    std::unique_lock lock(stateMu_);
    stateCv_.wait_for(lock, kInitTimeout, [&] { return initDone_ || loopDone_; });
    live = initDone_ && !loopDone_;
  }
  if (!live) {
    stop();
    return Status::error(ETIMEDOUT, fmt::format("FUSE mount at '{}' did not come up (no INIT "
                                                "from the kernel)",
                                                config_.mountpoint));
  }
  {
    std::lock_guard lock(notifyMu_);
    notifyRunning_ = true;
  }
  notifyThread_ = std::thread([this] { notifyLoop(); });
  log::info("fuse: serving '{}' at '{}' ({} worker threads at most)", config_.treePath,
            config_.mountpoint, config_.workers);
  return Status::ok();
}

void FuseFrontend::signalInit() {
  {
    std::lock_guard lock(stateMu_);
    initDone_ = true;
  }
  stateCv_.notify_all();
}

void FuseFrontend::loop() {
  pthread_setname_np(pthread_self(), "fanhsm-fuse");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, wakeSignal());
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, static_cast<unsigned>(std::max<size_t>(config_.workers, 1)));
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  int rc = fuse_session_loop_mt(session_, cfg);
  fuse_loop_cfg_destroy(cfg);
  if (rc != 0) log::warn("fuse: session loop ended with {}", rc);
  {
    std::lock_guard lock(stateMu_);
    loopDone_ = true;
    loopResult_ = rc;
  }
  stateCv_.notify_all();
}

void FuseFrontend::invalidate(const std::string& path) {
  {
    std::lock_guard lock(notifyMu_);
    if (!notifyRunning_) return;
    notifyQueue_.push_back(path);
    notifyQueued_++;
  }
  notifyCv_.notify_one();
}

void FuseFrontend::waitInvalidationsSent(std::chrono::milliseconds limit) {
  std::unique_lock lock(notifyMu_);
  const uint64_t target = notifyQueued_;
  if (!notifySentCv_.wait_for(lock, limit,
                              [&] { return !notifyRunning_ || notifySent_ >= target; })) {
    log::warn("fuse: kernel cache invalidations still pending after {} ms", limit.count());
  }
}

void FuseFrontend::notifyLoop() {
  pthread_setname_np(pthread_self(), "fanhsm-fuse-inv");
  std::unique_lock lock(notifyMu_);
  while (true) {
    notifyCv_.wait(lock, [&] { return !notifyRunning_ || !notifyQueue_.empty(); });
    if (!notifyRunning_) return;
    std::string path = std::move(notifyQueue_.front());
    notifyQueue_.pop_front();
    lock.unlock();
    sendInvalidation(path);
    lock.lock();
    notifySent_++;
    notifySentCv_.notify_all();
  }
}

void FuseFrontend::sendInvalidation(const std::string& path) {
  if (path.empty()) return;  // the root is never replaced
  // -ENOENT: the kernel has no such entry or inode cached; nothing to drop.
  if (auto parent = nodes_.idOf(std::string(parentPath(path)))) {
    const std::string name(baseName(path));
    int rc = fuse_lowlevel_notify_inval_entry(session_, *parent, name.c_str(), name.size());
    if (rc != 0 && rc != -ENOENT) {
      log::warn("fuse: dropping the kernel's entry of '{}': {}", path, std::strerror(-rc));
    }
  }
  if (auto id = nodes_.idOf(path)) {
    int rc = fuse_lowlevel_notify_inval_inode(session_, *id, -1, 0);  // attributes only
    if (rc != 0 && rc != -ENOENT) {
      log::warn("fuse: dropping the kernel's attributes of '{}': {}", path, std::strerror(-rc));
    }
  }
  log::debug("fuse: kernel caches of '{}' invalidated", path);
}

void FuseFrontend::stopNotifier() {
  {
    std::lock_guard lock(notifyMu_);
    notifyRunning_ = false;
    notifyQueue_.clear();
  }
  notifyCv_.notify_all();
  notifySentCv_.notify_all();
  if (notifyThread_.joinable()) notifyThread_.join();
}

bool FuseFrontend::waitLoopDone(std::chrono::milliseconds limit) {
  std::unique_lock lock(stateMu_);
  return stateCv_.wait_for(lock, limit, [&] { return loopDone_; });
}

Status FuseFrontend::unmount(bool lazy) {
  if (!mounted_) return Status::ok();
  const std::string& mp = config_.mountpoint;
  if (::umount2(mp.c_str(), UMOUNT_NOFOLLOW | (lazy ? MNT_DETACH : 0)) == 0) {
    mounted_ = false;
    return Status::ok();
  }
  int err = errno;
  if (err == EBUSY) {
    return Status::error(EBUSY, fmt::format("'{}' is busy: files or directories under it are in "
                                            "use (see `fuser -vm {}`)",
                                            mp, mp));
  }
  if (err == EPERM) {
    // Not root: fusermount3 (setuid) unmounts what this user mounted.
    int rc = runFusermount(mp, lazy);
    if (rc == 0) {
      mounted_ = false;
      return Status::ok();
    }
    if (!lazy) {
      return Status::error(EBUSY, fmt::format("fusermount3 -u '{}' failed: it is busy (see "
                                              "`fuser -vm {}`) or not ours to unmount",
                                              mp, mp));
    }
    return Status::error(EPERM, fmt::format("fusermount3 -u -z '{}' failed", mp));
  }
  if (err == EINVAL) {
    // Not a mount point any more: someone unmounted it already.
    log::warn("fuse: '{}' is no longer mounted", mp);
    mounted_ = false;
    return Status::ok();
  }
  return Status::fromErrno(err, fmt::format("unmount '{}'", mp));
}

bool FuseFrontend::waitUntilUnused(std::chrono::seconds limit) {
  if (session_ == nullptr) return true;
  if (waitLoopDone(limit)) return true;
  log::error("fuse: the detached mount of '{}' is still in use after {} s", config_.mountpoint,
             limit.count());
  return false;
}

void FuseFrontend::stop() {
  if (stopped_) return;
  stopped_ = true;
  // Before the session goes: a notification under way returns once the request that holds
  // the directory's lock was answered, which the still running loop does.
  stopNotifier();
  if (session_ == nullptr) return;
  if (mounted_) {
    Status s = unmount(true);
    if (!s) log::error("fuse: {}", s.message());
  }
  fuse_session_exit(session_);
  if (loopThread_.joinable()) {
    // Unmounted and unused, the kernel ends the connection and the loop returns by itself.
    // Otherwise (files of the detached mount still open) interrupt the loop thread's wait;
    // closing the device below then fails their next request with ENOTCONN.
    if (!waitLoopDone(std::chrono::milliseconds(300))) {
      log::warn("fuse: '{}' is still in use; closing the connection (its users get ENOTCONN)",
                config_.mountpoint);
      while (!waitLoopDone(std::chrono::milliseconds(20))) {
        pthread_kill(loopThread_.native_handle(), wakeSignal());
      }
    }
    loopThread_.join();
  }
  // We unmounted ourselves: libfuse's fuse_session_unmount() must not unmount the path
  // again (something else may be mounted there now). It skips that when poll() on the
  // device reports POLLERR, so the device fd is replaced by the write end of a pipe
  // without readers (POLLERR); replacing it closes the device, which ends the connection.
  int fd = fuse_session_fd(session_);
  int p[2];
  if (fd >= 0 && ::pipe2(p, O_CLOEXEC) == 0) {
    ::close(p[0]);
    if (::dup3(p[1], fd, O_CLOEXEC) < 0) log::error("fuse: dup3: {}", std::strerror(errno));
    ::close(p[1]);
    fuse_session_unmount(session_);
  } else {
    log::error("fuse: cannot close the session cleanly: {}", std::strerror(errno));
  }
  fuse_session_destroy(session_);
  session_ = nullptr;
}

FrontendStats FuseFrontend::stats() const {
  FrontendStats s;
  s.fileEvents = reads_;
  s.dirEvents = dirOpens_;
  s.openEvents = opens_;
  s.denied = denied_;
  s.pending = pending_;
  s.contentLatency = contentLatency_.counts();
  s.dirLatency = dirLatency_.counts();
  return s;
}

// ---- request handlers -------------------------------------------------------------------

std::optional<std::string> FuseFrontend::pathOf(FuseRequest& req, uint64_t ino) {
  auto p = nodes_.path(ino);
  if (!p) req.err(ESTALE);
  return p;
}

bool FuseFrontend::isCurrent(uint64_t ino, const struct stat& st) const {
  auto v = nodes_.version(ino);
  return !v || *v == 0 || *v == static_cast<uint64_t>(st.st_ino);
}

Status FuseFrontend::statPath(const std::string& path, struct stat* st) const {
  if (path.empty()) {
    if (::fstatat(cache_.treeFd(), "", st, AT_EMPTY_PATH) != 0) {
      return Status::fromErrno(errno, "cache tree root");
    }
    return Status::ok();
  }
  // The parent is opened beneath the tree without following symlinks; only then the
  // name itself is looked at, never followed.
  auto dir = cache_.openBeneath(std::string(parentPath(path)), O_PATH | O_DIRECTORY);
  if (!dir) return dir.status();
  std::string name(baseName(path));
  if (::fstatat(dir->get(), name.c_str(), st, AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::fromErrno(errno, fmt::format("cache '{}'", path));
  }
  if (S_ISREG(st->st_mode)) {
    // A file not yet complete is sparse in the cache, but through this mount every byte
    // reads as the source's: it must not look sparse, or `tar --sparse` (st_blocks 0:
    // "all holes") and `cp` skip what they believe are holes. Blocks as if present.
    st->st_blocks = std::max<blkcnt_t>(st->st_blocks, (st->st_size + 511) / 512);
    // Filling the cache file moves its ctime, which the source's file never saw: archive
    // tools compare ctime before and after reading ("file changed as we read it"). The
    // file last changed when its content did, at the source: ctime is the source's mtime.
    st->st_ctim = st->st_mtim;
  }
  return Status::ok();
}

void FuseFrontend::lookup(FuseRequest& req, uint64_t parent, const char* name) {
  auto dir = pathOf(req, parent);
  if (!dir) return;
  std::string_view n(name);
  if (n.size() > kMaxNameBytes) {
    req.err(ENAMETOOLONG);
    return;
  }
  if (!validateName(n, false)) {
    req.err(ENOENT);
    return;
  }
  Status s = populator_.ensureListed(*dir);
  if (!s) {
    log::warn("lookup '{}' in '{}': {}", n, displayPath(*dir), s.message());
    req.err(fuseErrno(s.code()));
    return;
  }
  std::string path = joinPath(*dir, n);
  fuse_entry_param e{};
  s = statPath(path, &e.attr);
  if (!s) {
    if (s.code() == ENOENT) {
      // A negative entry: the listing is complete, the kernel may remember the absence.
      e.ino = 0;
      e.entry_timeout = config_.negativeTimeout;
      req.entry(e);
      return;
    }
    log::warn("lookup '{}': {}", path, s.message());
    req.err(fuseErrno(s.code()));
    return;
  }
  e.attr_timeout = config_.attrTimeout;
  e.entry_timeout = config_.entryTimeout;
  e.ino = nodes_.ref(path, e.attr.st_ino);
  if (!req.entry(e)) nodes_.forget(e.ino, 1);  // the kernel did not take the reference
}

void FuseFrontend::getattr(FuseRequest& req, uint64_t ino) {
  auto path = pathOf(req, ino);
  if (!path) return;
  struct stat st {};
  Status s = statPath(*path, &st);
  if (!s) {
    req.err(fuseErrno(s.code()));
    return;
  }
  if (!isCurrent(ino, st)) {
    req.err(ESTALE);  // the remote changed: this inode stands for the old version
    return;
  }
  req.attr(st, config_.attrTimeout);
}

void FuseFrontend::open(FuseRequest& req, uint64_t ino, fuse_file_info* fi) {
  opens_++;
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT)) != 0) {
    req.err(EROFS);
    return;
  }
  auto path = pathOf(req, ino);
  if (!path) return;
  auto info = hydrator_.info(*path);
  if (!info) {
    req.err(fuseErrno(info.status().code()));
    return;
  }
  auto fd = cache_.openBeneath(*path, O_RDONLY);
  if (!fd) {
    log::warn("open '{}': {}", *path, fd.status().message());
    req.err(fuseErrno(fd.status().code()));
    return;
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) {
    req.err(EIO);
    return;
  }
  if (!isCurrent(ino, st)) {
    // The remote changed since the kernel looked this inode up: opening the path now
    // would serve the new version's bytes under the old version's size.
    req.err(ESTALE);
    return;
  }
  fi->fh = static_cast<uint64_t>(fd->get());
  // A full file never changes again (a new remote version is a new inode): the kernel may
  // keep its pages across opens.
  fi->keep_cache = info->state == cache::State::kFull ? 1 : 0;
  if (req.open(*fi)) fd->release();
}

void FuseFrontend::read(FuseRequest& req, uint64_t ino, size_t size, int64_t off,
                        fuse_file_info* fi) {
  reads_++;
  struct Timed {  // from the request's arrival to its answer, whatever the path out
    PercentileHistogram& h;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    ~Timed() { h.record(std::chrono::steady_clock::now() - start); }
  } timed{contentLatency_};
  auto path = pathOf(req, ino);
  if (!path) return;
  if (off < 0) {
    req.err(EINVAL);
    return;
  }
  auto offset = static_cast<uint64_t>(off);
  const int fd = static_cast<int>(fi->fh);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    req.err(EIO);
    return;
  }
  // The inode this handle reads: the Hydrator refuses (ESTALE) if the name now refers to
  // another one (the remote changed the file), instead of filling that one while this
  // handle reads the old. A replaced inode that is complete reads as its version, whole.
  const bool replacedComplete =
      st.st_nlink == 0 && (cache::inodeComplete(fd) ||
                           hydrator_.completeReplaced(static_cast<uint64_t>(st.st_ino)));
  auto ready = replacedComplete
                   ? Result<bool>(true)
                   : hydrator_.ensure(*path, offset, size, static_cast<uint64_t>(st.st_ino));
  if (ready && st.st_nlink == 0 && !replacedComplete) ready = Status::error(ESTALE, "replaced");
  if (!ready) {
    log::warn("read '{}' [{}, +{}): {}", *path, offset, size, ready.status().message());
    req.err(fuseReadErrno(ready.status().code()));
    return;
  }
  auto buf = std::make_unique_for_overwrite<char[]>(size);
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd, buf.get() + got, size - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      log::warn("read '{}': pread: {}", *path, std::strerror(errno));
      req.err(fuseReadErrno(errno));
      return;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  req.buf(buf.get(), got);
}

void FuseFrontend::opendir(FuseRequest& req, uint64_t ino, fuse_file_info* fi) {
  dirOpens_++;
  struct Timed {
    PercentileHistogram& h;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    ~Timed() { h.record(std::chrono::steady_clock::now() - start); }
  } timed{dirLatency_};
  auto path = pathOf(req, ino);
  if (!path) return;
  Status s = populator_.ensureListed(*path);
  if (!s) {
    log::warn("open directory '{}': {}", displayPath(*path), s.message());
    req.err(fuseErrno(s.code()));
    return;
  }
  // A revalidated listing may have replaced names of this directory: `ls; stat name` must
  // not find the old entry still cached. The kernel holds no lock of the directory here.
  waitInvalidationsSent(std::chrono::seconds(5));
  auto fd = cache_.openBeneath(*path, O_RDONLY | O_DIRECTORY);
  if (!fd) {
    req.err(fuseErrno(fd.status().code()));
    return;
  }
  auto h = std::make_unique<DirHandle>();
  h->path = *path;
  struct stat self {};
  struct stat parent {};
  if (::fstat(fd->get(), &self) != 0) {
    req.err(EIO);
    return;
  }
  parent = self;
  if (!path->empty()) {
    struct stat pst {};
    if (statPath(std::string(parentPath(*path)), &pst)) parent = pst;
  }
  h->entries.push_back({".", self.st_ino, DT_DIR});
  h->entries.push_back({"..", parent.st_ino, DT_DIR});
  int dup = ::fcntl(fd->get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    req.err(fuseErrno(errno));
    return;
  }
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    req.err(fuseErrno(errno));
    return;
  }
  while (struct dirent* de = ::readdir(d)) {
    if (isDotName(de->d_name)) continue;
    h->entries.push_back({de->d_name, de->d_ino, de->d_type});
  }
  ::closedir(d);
  h->fd = std::move(*fd);
  fi->fh = reinterpret_cast<uint64_t>(h.get());
  if (req.open(*fi)) h.release();
}

void FuseFrontend::readdir(FuseRequest& req, uint64_t /*ino*/, size_t size, int64_t off,
                           fuse_file_info* fi, bool plus) {
  auto* h = reinterpret_cast<DirHandle*>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  std::vector<uint64_t> refs;  // lookup references handed over with this reply
  for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < h->entries.size(); ++i) {
    const auto& ent = h->entries[i];
    const auto next = static_cast<off_t>(i + 1);
    if (!plus) {
      struct stat st {};
      st.st_ino = ent.ino;
      st.st_mode = DTTOIF(ent.type);
      size_t need =
          fuse_add_direntry(req.get(), buf.data() + used, size - used, ent.name.c_str(), &st, next);
      if (need > size - used) break;
      used += need;
      continue;
    }
    fuse_entry_param e{};
    if (isDotName(ent.name)) {
      // No node id: the kernel takes no reference for "." and "..".
      e.attr.st_ino = ent.ino;
      e.attr.st_mode = DTTOIF(ent.type);
    } else {
      if (::fstatat(h->fd.get(), ent.name.c_str(), &e.attr, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed since opendir (a revalidated listing)
        e.attr = {};
        e.attr.st_ino = ent.ino;
        e.attr.st_mode = DTTOIF(ent.type);
      } else {
        e.attr_timeout = config_.attrTimeout;
        e.entry_timeout = config_.entryTimeout;
      }
    }
    size_t need = fuse_add_direntry_plus(req.get(), nullptr, 0, ent.name.c_str(), nullptr, 0);
    if (need > size - used) break;
    if (!isDotName(ent.name) && e.entry_timeout > 0) {
      e.ino = nodes_.ref(joinPath(h->path, ent.name), e.attr.st_ino);
      refs.push_back(e.ino);
    }
    used += fuse_add_direntry_plus(req.get(), buf.data() + used, size - used, ent.name.c_str(), &e,
                                   next);
  }
  if (!req.buf(buf.data(), used)) {
    for (uint64_t id : refs) nodes_.forget(id, 1);
  }
}

void FuseFrontend::readlink(FuseRequest& req, uint64_t ino) {
  auto path = pathOf(req, ino);
  if (!path) return;
  if (path->empty()) {
    req.err(EINVAL);
    return;
  }
  auto dir = cache_.openBeneath(std::string(parentPath(*path)), O_PATH | O_DIRECTORY);
  if (!dir) {
    req.err(fuseErrno(dir.status().code()));
    return;
  }
  std::string name(baseName(*path));
  char target[PATH_MAX + 1];
  ssize_t n = ::readlinkat(dir->get(), name.c_str(), target, PATH_MAX);
  if (n < 0) {
    req.err(fuseErrno(errno));
    return;
  }
  target[n] = '\0';
  req.readlink(target);
}

void FuseFrontend::statfs(FuseRequest& req) {
  struct statvfs sv {};
  if (::fstatvfs(cache_.treeFd(), &sv) != 0) {
    req.err(fuseErrno(errno));
    return;
  }
  req.statfs(sv);
}

Result<std::string> FuseFrontend::stateOf(const std::string& path, const struct stat& st) {
  if (S_ISREG(st.st_mode)) {
    auto info = hydrator_.info(path);
    if (!info) return info.status();
    return std::string(cache::stateName(info->state));
  }
  if (S_ISDIR(st.st_mode)) {
    auto row = cache_.entry(path);
    if (!row) return row.status();
    if (!row->has_value()) return Status::error(ENODATA, "not in the index");
    return std::string((*row)->state == cache::kDirListed ? "listed" : "unlisted");
  }
  return Status::error(ENODATA, "no state");
}

void FuseFrontend::getxattr(FuseRequest& req, uint64_t ino, const char* name, size_t size) {
  auto path = pathOf(req, ino);
  if (!path) return;
  if (std::strcmp(name, kStateXattr) != 0) {
    req.err(ENODATA);
    return;
  }
  struct stat st {};
  Status s = statPath(*path, &st);
  if (!s) {
    req.err(fuseErrno(s.code()));
    return;
  }
  auto value = stateOf(*path, st);
  if (!value) {
    req.err(fuseErrno(value.status().code()));
    return;
  }
  if (size == 0) {
    req.xattrSize(value->size());
  } else if (size < value->size()) {
    req.err(ERANGE);
  } else {
    req.buf(value->data(), value->size());
  }
}

void FuseFrontend::listxattr(FuseRequest& req, uint64_t ino, size_t size) {
  auto path = pathOf(req, ino);
  if (!path) return;
  struct stat st {};
  Status s = statPath(*path, &st);
  if (!s) {
    req.err(fuseErrno(s.code()));
    return;
  }
  // The name with its NUL; symlinks carry no user.* attributes.
  const size_t len = (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) ? sizeof kStateXattr : 0;
  if (size == 0) {
    req.xattrSize(len);
  } else if (size < len) {
    req.err(ERANGE);
  } else {
    req.buf(kStateXattr, len);
  }
}

}  // namespace hsm::frontend
