#include "frontend/fanotify/group_guard.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

#include "frontend/fanotify/fanotify_defs.h"
#include "frontend/fanotify/view_usage.h"

namespace hsm::frontend {
namespace {

constexpr int kContentFd = 3, kOpenFd = 4, kPipeFd = 5;

// Only the pre-content group may carry an errno in a denial (see PermissionEvent).
void denyFd(int group, int fd) {
  struct fanotify_response r {};
  r.fd = fd;
  r.response = group == kContentFd ? FAN_DENY_ERRNO(EIO) : FAN_DENY;
  ssize_t n = ::write(group, &r, sizeof r);  // ENOENT for fd numbers with no pending event
  (void)n;
}

// Reads and denies what is queued on `group`; returns how many events it saw.
int denyQueued(int group) {
  alignas(struct fanotify_event_metadata) char buf[16384];
  int seen = 0;
  while (true) {
    ssize_t len = ::read(group, buf, sizeof buf);
    if (len <= 0) return seen;
    auto* m = reinterpret_cast<struct fanotify_event_metadata*>(buf);
    for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
      if (m->fd < 0) continue;
      denyFd(group, m->fd);
      ::close(m->fd);
      ++seen;
    }
  }
}

}  // namespace

Result<GroupGuard> GroupGuard::spawn(int contentGroup, int openGroup, const std::string& mountpoint) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::fromErrno(errno, "pipe for the group guard");
  // Everything the child needs is prepared before fork(): after it, only async-signal-safe
  // calls until exec (the daemon has threads).
  std::string mp = mountpoint;
  char arg0[] = "fanhsm";
  char arg1[] = "__guard";
  char* argv[] = {arg0, arg1, mp.data(), nullptr};
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(p[0]);
    ::close(p[1]);
    return Status::fromErrno(err, "fork the group guard");
  }
  if (pid == 0) {
    // Move the three fds out of the way of 3..5, then into place (dup2 clears CLOEXEC).
    int c = ::fcntl(contentGroup, F_DUPFD, 100);
    int o = ::fcntl(openGroup, F_DUPFD, 100);
    int r = ::fcntl(p[0], F_DUPFD, 100);
    if (c < 0 || o < 0 || r < 0 || ::dup2(c, kContentFd) < 0 || ::dup2(o, kOpenFd) < 0 ||
        ::dup2(r, kPipeFd) < 0) {
      _exit(127);
    }
    ::syscall(SYS_close_range, kPipeFd + 1, ~0U, 0);
    ::execv("/proc/self/exe", argv);
    _exit(127);
  }
  ::close(p[0]);
  GroupGuard g;
  g.pid_ = pid;
  g.pipe_.reset(p[1]);
  return g;
}

GroupGuard::GroupGuard(GroupGuard&& o) noexcept : pid_(o.pid_), pipe_(std::move(o.pipe_)) { o.pid_ = -1; }

GroupGuard& GroupGuard::operator=(GroupGuard&& o) noexcept {
  if (this != &o) {
    release();
    pid_ = o.pid_;
    pipe_ = std::move(o.pipe_);
    o.pid_ = -1;
  }
  return *this;
}

GroupGuard::~GroupGuard() { release(); }

void GroupGuard::setViewMountId(uint64_t mountId) {
  if (!pipe_) return;
  std::string msg = "M" + std::to_string(mountId) + "\n";
  ssize_t n = ::write(pipe_.get(), msg.data(), msg.size());
  (void)n;
}

void GroupGuard::release() {
  if (pid_ < 0) return;
  if (pipe_) {
    ssize_t n = ::write(pipe_.get(), "Q", 1);
    (void)n;
    pipe_.reset();
  }
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

int runGroupGuard(const std::string& mountpoint) {
  ::prctl(PR_SET_NAME, "fanhsm-guard", 0, 0, 0);
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  uint64_t viewId = 0;
  std::string line;
  while (true) {
    char c;
    ssize_t n = ::read(kPipeFd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the daemon is gone without a goodbye
    if (c == 'Q') return 0;
    if (c == '\n') {
      if (line.size() > 1 && line[0] == 'M') viewId = std::strtoull(line.c_str() + 1, nullptr, 10);
      line.clear();
    } else if (line.size() < 64) {
      line.push_back(c);
    }
  }
  // The daemon died holding the view. First no new opens, then no reader left waiting.
  if (viewId != 0 && mountIdOf(mountpoint) == viewId) {
    ::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
  }
  struct rlimit rl {};
  rlim_t maxFd = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
  if (maxFd > (1u << 20)) maxFd = 1u << 20;
  for (int group : {kContentFd, kOpenFd}) {
    ::fcntl(group, F_SETFL, ::fcntl(group, F_GETFL) | O_NONBLOCK);
    denyQueued(group);
    for (rlim_t fd = 0; fd < maxFd; ++fd) denyFd(group, static_cast<int>(fd));
  }
  // Files still open on the detached view keep raising events: deny them until none is
  // left open (bounded).
  auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::hours(1)) {
    struct pollfd fds[2] = {{kContentFd, POLLIN, 0}, {kOpenFd, POLLIN, 0}};
    ::poll(fds, 2, 200);
    denyQueued(kContentFd);
    denyQueued(kOpenFd);
    if (viewId == 0 || openFdsOnMount(viewId) == 0) break;
  }
  return 0;
}

}  // namespace hsm::frontend
