#include "remote/worker/worker_remote.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::remote {
namespace {

constexpr int kControlFd = 3;  // in the worker
constexpr size_t kMaxControlMessage = 1 << 20;
constexpr uint32_t kMaxFrame = 256u << 20;  // a listing of a huge directory
constexpr size_t kDataFrame = 256 << 10;
constexpr int kHelloTimeoutMs = 180000;  // opening an HTTP source probes it, with retries

// --- framing on a data channel -------------------------------------------------------

Status writeAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::fromErrno(errno, "fetch worker channel");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::ok();
}

Status writeFrame(int fd, char type, const char* data, size_t len) {
  char hdr[5] = {type};
  const auto l = static_cast<uint32_t>(len);
  for (int i = 0; i < 4; ++i) hdr[1 + i] = static_cast<char>((l >> (8 * i)) & 0xff);
  HSM_RETURN_IF_ERROR(writeAll(fd, hdr, sizeof hdr));
  return writeAll(fd, data, len);
}

Status writeFrame(int fd, char type, const std::string& s) { return writeFrame(fd, type, s.data(), s.size()); }

// Reads exactly n bytes. EPIPE at EOF (the worker went away).
Status readExact(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::fromErrno(errno, "fetch worker channel");
    }
    if (r == 0) return Status::error(EPIPE, "the fetch worker went away");
    p += r;
    n -= static_cast<size_t>(r);
  }
  return Status::ok();
}

constexpr int kCancelPollMs = 250;

// Waits until `fd` has something to read, or fails with ECANCELED once the sink is
// cancelled.
Status waitReadable(int fd, const ByteSink& sink) {
  while (true) {
    if (sink.cancelled()) return Status::error(ECANCELED, "fetch cancelled");
    struct pollfd p = {fd, POLLIN, 0};
    int n = ::poll(&p, 1, kCancelPollMs);
    if (n > 0) return Status::ok();
    if (n < 0 && errno != EINTR) return Status::fromErrno(errno, "poll fetch channel");
  }
}

Status readFrame(int fd, char* type, std::string* payload) {
  char hdr[5];
  HSM_RETURN_IF_ERROR(readExact(fd, hdr, sizeof hdr));
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= static_cast<uint32_t>(static_cast<unsigned char>(hdr[1 + i])) << (8 * i);
  if (len > kMaxFrame) return Status::error(EPROTO, "fetch worker: frame too large");
  *type = hdr[0];
  payload->resize(len);
  return readExact(fd, payload->data(), len);
}

// --- control channel (SOCK_SEQPACKET: one message per request, maybe with a fd) -------

Status sendMessage(int fd, const std::string& text, int passFd) {
  struct iovec iov = {const_cast<char*>(text.data()), text.size()};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  if (passFd >= 0) {
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof cbuf;
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &passFd, sizeof(int));
  }
  while (::sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return Status::fromErrno(errno, "fetch worker control channel");
  }
  return Status::ok();
}

// Receives one message (and the fd it carries, if any). EPIPE at EOF.
Status recvMessage(int fd, std::string* text, UniqueFd* passed) {
  text->resize(kMaxControlMessage);
  struct iovec iov = {text->data(), text->size()};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t n;
  while ((n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC)) < 0) {
    if (errno != EINTR) return Status::fromErrno(errno, "fetch worker control channel");
  }
  if (n == 0) return Status::error(EPIPE, "control channel closed");
  text->resize(static_cast<size_t>(n));
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && passed) {
      int f;
      std::memcpy(&f, CMSG_DATA(c), sizeof(int));
      passed->reset(f);
    }
  }
  return Status::ok();
}

// --- entries as JSON -------------------------------------------------------------------

// Binary strings travel as hex: a JSON string must be valid UTF-8.
std::string toHex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string fromHex(const std::string& hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out;
  if (hex.size() % 2 != 0 || hex.size() > 16384) throw std::invalid_argument("bad hex");
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]), lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) throw std::invalid_argument("bad hex");
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

nlohmann::json toJson(const Entry& e) {
  nlohmann::json j = {{"n", e.name}, {"t", static_cast<int>(e.type)}, {"s", e.size}, {"m", e.mtimeNs},
                      {"p", e.mode}, {"l", e.linkTarget}, {"v", e.version}, {"u", e.uid}, {"g", e.gid}};
  if (!e.acl.empty()) j["a"] = toHex(e.acl);
  return j;
}

Entry fromJson(const nlohmann::json& j) {
  Entry e;
  e.name = j.at("n").get<std::string>();
  e.type = static_cast<EntryType>(j.at("t").get<int>());
  e.size = j.at("s").get<uint64_t>();
  e.mtimeNs = j.at("m").get<int64_t>();
  e.mode = j.at("p").get<uint32_t>();
  e.linkTarget = j.at("l").get<std::string>();
  e.version = j.at("v").get<std::string>();
  // An owner is a uid the daemon may give a cache file: -1 (none) or a real id.
  e.uid = j.value("u", int64_t{-1});
  e.gid = j.value("g", int64_t{-1});
  if (j.contains("a")) {
    try {
      e.acl = fromHex(j.at("a").get<std::string>());
    } catch (const std::invalid_argument&) {
      throw nlohmann::json::type_error::create(302, "acl is not hex", &j);
    }
  }
  if (e.uid < -1 || e.uid >= 0xffffffffLL || e.gid < -1 || e.gid >= 0xffffffffLL) {
    throw nlohmann::json::type_error::create(302, "owner out of range", &j);
  }
  return e;
}


std::string endFrame(const Status& s, bool ranges) {
  return nlohmann::json{{"errno", s ? 0 : s.code()}, {"error", s ? "" : s.message()}, {"ranges", ranges}}
      .dump();
}

// A died worker shows as EPIPE/ECONNRESET on the data channel.
bool workerDied(const Status& s) { return s.code() == EPIPE || s.code() == ECONNRESET; }

// The errnos a Remote may fail with, the only ones the daemon takes from the worker: the
// contract's (remote.h) ESTALE, ENOENT, EACCES, EIO and ENOTDIR; what localdir passes on
// from open/openat2/readdir/pread (EPERM, ELOOP, ENAMETOOLONG, EMFILE, ENFILE, ENOMEM, and
// EAGAIN: openat2 with RESOLVE_BENEATH during a rename in the source);
// http's EFBIG (a listing too large) and EINVAL (a bad URL, at start); the worker's own
// EPROTO. No backend returns network errnos (curl failures are EIO), so neither may the
// worker. Everything else is EPROTO: the daemon acts on some errnos (ENOSPC and EDQUOT
// start an eviction pass, EPIPE/ECONNRESET restart the worker, ECANCELED means stopping),
// and those are not the worker's to choose.
constexpr int kRemoteErrnos[] = {ESTALE, ENOENT, EACCES, EIO,   ENOTDIR, EPERM,  ELOOP, ENAMETOOLONG,
                                 EMFILE, ENFILE, ENOMEM, EAGAIN, EFBIG,  EINVAL, EPROTO};

// The failure the worker reported as `err` (its JSON "errno") and `message`.
Status workerError(const nlohmann::json& err, const std::string& message) {
  // get<int64_t>() keeps every integer JSON holds apart (get<int>() would truncate 2^32+28
  // to ENOSPC); 28.0, "28" and the like are no errnos.
  const int64_t e = err.is_number_integer() ? err.get<int64_t>() : -1;
  if (e > 0 && e <= INT32_MAX && remoteMayReturn(static_cast<int>(e))) {
    return Status::error(static_cast<int>(e), message);
  }
  return Status::error(
      EPROTO, fmt::format("fetch worker: errno {} is not one a remote may return: {}",
                          err.is_number_integer() ? err.dump() : "(not an integer)", message));
}

}  // namespace

// --- decoding what the worker sends ----------------------------------------------------

Result<Listing> decodeListing(const std::string& payload) {
  auto j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error(EPROTO, "fetch worker: malformed listing");
  try {
    Listing out;
    out.skipped = j.at("skipped").get<std::vector<std::string>>();
    for (const auto& e : j.at("entries")) {
      Entry entry = fromJson(e);
      if (!validateName(entry.name, false) || static_cast<int>(entry.type) < 0 ||
          static_cast<int>(entry.type) > 2) {
        out.skipped.push_back("(from the fetch worker): invalid entry");
        continue;
      }
      out.entries.push_back(std::move(entry));
    }
    out.validator = j.at("validator").get<std::string>();
    out.notModified = j.at("not_modified").get<bool>();
    return out;
  } catch (const nlohmann::json::exception& e) {
    return Status::error(EPROTO, fmt::format("fetch worker: malformed listing: {}", e.what()));
  }
}

Status decodeEnd(const std::string& payload, bool* ranges) {
  auto j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error(EPROTO, "fetch worker: malformed end");
  try {
    *ranges = j.at("ranges").get<bool>();
    const auto& err = j.at("errno");
    std::string message = j.at("error").get<std::string>();
    if (err.is_number_integer() && err.get<int64_t>() == 0 && message.empty()) return Status::ok();
    return workerError(err, message);
  } catch (const nlohmann::json::exception& e) {
    return Status::error(EPROTO, fmt::format("fetch worker: malformed end: {}", e.what()));
  }
}

bool remoteMayReturn(int err) {
  return std::find(std::begin(kRemoteErrnos), std::end(kRemoteErrnos), err) !=
         std::end(kRemoteErrnos);
}

Status checkDataFrame(uint64_t next, uint64_t end, size_t size) {
  if (next > end || size > end - next) {
    return Status::error(EPROTO,
                         fmt::format("fetch worker: {} bytes at {} reach past the end of the "
                                     "read at {}",
                                     size, next, end));
  }
  return Status::ok();
}

// --- daemon side -----------------------------------------------------------------------

namespace {
int64_t steadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

struct WorkerRemote::Waiting {
  WorkerRemote& w;
  explicit Waiting(WorkerRemote& wr) : w(wr) {
    w.lastProgressNs_ = steadyNs();  // a call that just started is not a stall
    w.waiting_++;
  }
  ~Waiting() { w.waiting_--; }
  void progress() { w.lastProgressNs_ = steadyNs(); }
};

Result<std::unique_ptr<WorkerRemote>> WorkerRemote::start(nlohmann::json config) {
  std::unique_ptr<WorkerRemote> w(new WorkerRemote());
  w->config_ = std::move(config);
  w->watchdogLimit_ = std::chrono::seconds(std::max(1, w->config_.value("watchdog_seconds", 60)));
  {
    std::lock_guard lock(w->mu_);
    HSM_RETURN_IF_ERROR(w->spawnLocked());
  }
  w->watchdog_ = std::thread([p = w.get()] { p->watchdogLoop(); });
  return w;
}

WorkerRemote::~WorkerRemote() {
  {
    std::lock_guard lock(wdMu_);
    wdStop_ = true;
  }
  wdCv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::lock_guard lock(mu_);
  reapLocked();
}

void WorkerRemote::watchdogLoop() {
  while (true) {
    {
      std::unique_lock lock(wdMu_);  // released before mu_ (which ranks below it)
      if (wdCv_.wait_for(lock, std::chrono::seconds(1), [&] { return wdStop_; })) return;
    }
    if (waiting_ == 0) continue;
    const auto quiet = std::chrono::nanoseconds(steadyNs() - lastProgressNs_);
    if (quiet < watchdogLimit_) continue;
    std::lock_guard workerLock(mu_);
    if (pid_ > 0) {
      log::warn("the fetch worker (pid {}) sent nothing for {} s while {} call(s) waited: "
                "replacing it",
                pid_, std::chrono::duration_cast<std::chrono::seconds>(quiet).count(),
                waiting_.load());
      // The calls see their channels close, as after any death, and are sent again.
      ::kill(pid_, SIGKILL);
      watchdogKills_++;
    }
    lastProgressNs_ = steadyNs();
  }
}

Status WorkerRemote::spawnLocked() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::fromErrno(errno, "socketpair for the fetch worker");
  }
  UniqueFd mine(sv[0]), theirs(sv[1]);
  char arg0[] = "fanhsm";
  char arg1[] = "__worker";
  char* argv[] = {arg0, arg1, nullptr};
  pid_t pid = ::fork();
  if (pid < 0) return Status::fromErrno(errno, "fork the fetch worker");
  if (pid == 0) {
    // Only async-signal-safe calls until exec (the daemon has threads).
    int c = ::fcntl(theirs.get(), F_DUPFD, 100);
    if (c < 0 || ::dup2(c, kControlFd) < 0) _exit(127);
    ::syscall(SYS_close_range, kControlFd + 1, ~0U, 0);
    ::execv("/proc/self/exe", argv);
    _exit(127);
  }
  theirs.reset();
  pid_ = pid;
  control_ = std::move(mine);
  generation_++;
  Status s = sendMessage(control_.get(), config_.dump(), -1);
  if (s) {
    struct pollfd p = {control_.get(), POLLIN, 0};
    int r;
    while ((r = ::poll(&p, 1, kHelloTimeoutMs)) < 0 && errno == EINTR) {
    }
    std::string hello;
    if (r == 0) {
      s = Status::error(ETIMEDOUT, "the fetch worker did not start in time");
    } else {
      s = recvMessage(control_.get(), &hello, nullptr);
    }
    if (s) {
      auto j = nlohmann::json::parse(hello, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        s = Status::error(EPROTO, "fetch worker: malformed hello");
      } else {
        try {
          if (!j.at("ok").get<bool>()) {
            s = workerError(j.at("errno"), j.at("error").get<std::string>());
          } else {
            describe_ = j.at("describe").get<std::string>();
            if (j.contains("offline")) {
              root_ = workerError(j["offline"].at("errno"), j["offline"].at("error").get<std::string>());
            } else {
              root_ = fromJson(j.at("root"));
            }
            ranges_ = j.at("ranges").get<bool>();
          }
        } catch (const nlohmann::json::exception& e) {
          s = Status::error(EPROTO, fmt::format("fetch worker: malformed hello: {}", e.what()));
        }
      }
    } else if (workerDied(s)) {
      s = Status::error(EIO, "the fetch worker exited during start (see the log)");
    }
  }
  if (!s) reapLocked();
  return s;
}

void WorkerRemote::reapLocked() {
  control_.reset();  // the worker exits when its control channel closes
  if (pid_ <= 0) return;
  for (int i = 0; i < 100; ++i) {  // bounded: 2 s, then SIGKILL
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

Status WorkerRemote::restart(uint64_t gen) {
  std::lock_guard lock(mu_);
  if (gen != generation_) return Status::ok();  // someone restarted it already
  return restartLocked();
}

Status WorkerRemote::restartLocked() {
  auto now = std::chrono::steady_clock::now();
  std::erase_if(restartTimes_, [&](auto t) { return now - t > std::chrono::minutes(1); });
  if (restartTimes_.size() >= kMaxRestartsPerMinute) {
    // Dying again and again (killed from outside, or crashing at once): restart more
    // slowly, never stop restarting. A call fails only after kMaxAttempts deaths of its
    // own, so reads go on between the deaths instead of all failing for a minute.
    const auto extra = restartTimes_.size() - kMaxRestartsPerMinute;
    const auto delay = std::chrono::milliseconds(std::min<uint64_t>(1000, 50u << std::min<uint64_t>(extra, 5)));
    log::warn("the fetch worker died {} times in a minute; restarting it in {} ms",
              restartTimes_.size(), delay.count());
    std::this_thread::sleep_for(delay);  // callers wait for a worker anyway
  }
  restartTimes_.push_back(now);
  if (restartTimes_.size() > 4 * kMaxRestartsPerMinute) restartTimes_.erase(restartTimes_.begin());
  log::warn("the fetch worker (pid {}) died; restarting it", pid_);
  reapLocked();
  restarts_++;
  return spawnLocked();
}

Result<std::pair<UniqueFd, uint64_t>> WorkerRemote::send(const nlohmann::json& req) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::fromErrno(errno, "socketpair for a fetch");
  }
  UniqueFd mine(sv[0]), theirs(sv[1]);
  std::lock_guard lock(mu_);
  Status s = control_ ? sendMessage(control_.get(), req.dump(), theirs.get())
                      : Status::error(EPIPE, "no fetch worker");
  if (!s) {
    // The worker is gone (its end of the control channel closed): start another, once.
    HSM_RETURN_IF_ERROR(restartLocked());
    HSM_RETURN_IF_ERROR(sendMessage(control_.get(), req.dump(), theirs.get()));
  }
  return std::make_pair(std::move(mine), generation_);
}

Result<Listing> WorkerRemote::list(const std::string& dir, const std::string& validator) {
  const nlohmann::json req = {{"op", "list"}, {"path", dir}, {"validator", validator}};
  Waiting waiting(*this);
  Status last;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    if (attempt > 0) retried_++;
    auto ch = send(req);
    Status s = ch ? Status::ok() : ch.status();
    if (ch) {
      char type;
      std::string payload;
      Listing out;
      while ((s = readFrame(ch->first.get(), &type, &payload))) {
        waiting.progress();
        if (type == 'L') {
          auto l = decodeListing(payload);
          if (!l) return l.status();
          out = std::move(*l);
        } else if (type == 'E') {
          bool ranges = true;
          HSM_RETURN_IF_ERROR(decodeEnd(payload, &ranges));
          ranges_ = ranges;
          return out;
        }
      }
    }
    if (!ch) return s;  // could not even restart a worker
    if (!workerDied(s)) return s;
    last = s;
    HSM_RETURN_IF_ERROR(restart(ch->second));
  }
  return Status::error(EIO, fmt::format("listing '{}': the fetch worker kept dying ({})", dir,
                                        last.message()));
}

Status WorkerRemote::read(const std::string& path, const ObjectVersion& version, uint64_t offset,
                          uint64_t length, ByteSink& sink) {
  uint64_t next = offset;
  const uint64_t end = length > UINT64_MAX - offset ? UINT64_MAX : offset + length;
  Waiting waiting(*this);
  Status last;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    if (attempt > 0) retried_++;
    const nlohmann::json req = {{"op", "read"}, {"path", path}, {"version", version},
                                {"offset", next}, {"length", end == UINT64_MAX ? UINT64_MAX : end - next}};
    auto ch = send(req);
    Status s = ch ? Status::ok() : ch.status();
    if (ch) {
      char type;
      std::string payload;
      // Between frames, a cancelled read is noticed within kCancelPollMs: closing our end
      // of the channel (on return) makes the worker stop its transfer too.
      while ((s = waitReadable(ch->first.get(), sink)) && (s = readFrame(ch->first.get(), &type, &payload))) {
        waiting.progress();
        if (type == 'D') {
          // Nothing past the range reaches the sink, so neither can an 'E' with errno 0
          // after more than was asked for. The sink refusing (e.g. a full cache) ends the
          // call too: closing our end makes the worker's next write fail, which stops its read.
          HSM_RETURN_IF_ERROR(checkDataFrame(next, end, payload.size()));
          HSM_RETURN_IF_ERROR(sink.write(next, payload.data(), payload.size()));
          next += payload.size();
        } else if (type == 'E') {
          bool ranges = true;
          Status result = decodeEnd(payload, &ranges);
          if (result.code() != EPROTO) ranges_ = ranges;
          return result;
        }
      }
    }
    if (!ch) return s;  // could not even restart a worker
    if (!workerDied(s)) return s;
    last = s;
    HSM_RETURN_IF_ERROR(restart(ch->second));
  }
  return Status::error(EIO, fmt::format("reading '{}': the fetch worker kept dying ({})", path,
                                        last.message()));
}

Result<Entry> WorkerRemote::rootEntry() {
  std::lock_guard lock(mu_);
  return root_;
}

WorkerStats WorkerRemote::stats() const {
  std::lock_guard lock(mu_);
  return {pid_, restarts_, retried_, watchdogKills_};
}

// --- worker side -----------------------------------------------------------------------

namespace {

// Content to the data channel, in frames.
class FrameSink final : public ByteSink {
 public:
  explicit FrameSink(int fd) : fd_(fd) {}
  // The daemon closed its end: it no longer wants the bytes. Checked at most every
  // 100 ms (the backend asks often while a transfer runs).
  bool cancelled() const override {
    const auto now = std::chrono::steady_clock::now();
    if (now - lastCheck_ < std::chrono::milliseconds(100)) return gone_;
    lastCheck_ = now;
    struct pollfd p = {fd_, POLLRDHUP, 0};
    gone_ = ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    return gone_;
  }
  Status write(uint64_t, const char* data, size_t length) override {
    while (length > 0) {
      size_t n = std::min(length, kDataFrame);
      HSM_RETURN_IF_ERROR(writeFrame(fd_, 'D', data, n));
      data += n;
      length -= n;
    }
    return Status::ok();
  }

 private:
  int fd_;
  mutable std::chrono::steady_clock::time_point lastCheck_{};
  mutable bool gone_ = false;
};

void serveCall(Remote& remote, const nlohmann::json& req, int fd);

void serve(Remote& remote, const nlohmann::json& req, int fd) {
  try {
    serveCall(remote, req, fd);
  } catch (const std::exception& e) {
    (void)writeFrame(fd, 'E', endFrame(Status::error(EPROTO, e.what()), remote.supportsRanges()));
  }
}

void serveCall(Remote& remote, const nlohmann::json& req, int fd) {
  const std::string op = req.value("op", "");
  if (op == "list") {
    auto l = remote.list(req.value("path", ""), req.value("validator", ""));
    if (l) {
      nlohmann::json entries = nlohmann::json::array();
      for (const auto& e : l->entries) entries.push_back(toJson(e));
      nlohmann::json j = {{"entries", std::move(entries)}, {"skipped", l->skipped},
                          {"validator", l->validator}, {"not_modified", l->notModified}};
      if (!writeFrame(fd, 'L', j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))) return;
    }
    (void)writeFrame(fd, 'E', endFrame(l ? Status::ok() : l.status(), remote.supportsRanges()));
    return;
  }
  if (op == "read") {
    FrameSink sink(fd);
    Status s = remote.read(req.value("path", ""), req.value("version", ""),
                           req.value("offset", uint64_t{0}), req.value("length", uint64_t{0}), sink);
    (void)writeFrame(fd, 'E', endFrame(s, remote.supportsRanges()));
    return;
  }
  (void)writeFrame(fd, 'E', endFrame(Status::error(EINVAL, "unknown request"), true));
}

}  // namespace

int runFetchWorker(int controlFd,
                   const std::function<Result<std::unique_ptr<Remote>>(const nlohmann::json&)>& open,
                   const std::function<Status(const nlohmann::json&)>& dropPrivileges) {
  ::signal(SIGPIPE, SIG_IGN);
  std::string text;
  if (!recvMessage(controlFd, &text, nullptr)) return 1;
  auto config = nlohmann::json::parse(text, nullptr, false);
  if (config.is_discarded()) return 1;
  auto fail = [&](const Status& s) {
    (void)sendMessage(controlFd, nlohmann::json{{"ok", false}, {"errno", s.code()}, {"error", s.message()}}.dump(), -1);
    return 1;
  };
  auto remote = open(config);
  if (!remote) return fail(remote.status());
  if (Status s = dropPrivileges(config); !s) return fail(s);
  // A source that does not answer now is no reason to stop: the daemon may serve what its
  // cache holds (an offline start) and every call tries the source again.
  auto root = (*remote)->rootEntry();
  nlohmann::json hello = {{"ok", true}, {"describe", (*remote)->describe()},
                          {"ranges", (*remote)->supportsRanges()}};
  if (root) {
    hello["root"] = toJson(*root);
  } else {
    hello["offline"] = {{"errno", root.status().code()}, {"error", root.status().message()}};
  }
  if (!sendMessage(controlFd, hello.dump(), -1)) return 1;
  struct Call {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Call> calls;
  // At most this many calls run at once; beyond it, requests wait in the control channel
  // (the daemon bounds its own fetches and listings well below it).
  const size_t maxCalls = config.value("max_calls", size_t{256});
  auto reap = [&calls] {
    std::erase_if(calls, [](Call& c) {
      if (!*c.done) return false;
      c.thread.join();
      return true;
    });
  };
  while (true) {
    for (int i = 0; calls.size() >= maxCalls; ++i) {
      reap();
      if (calls.size() >= maxCalls) std::this_thread::sleep_for(std::chrono::milliseconds(std::min(i + 1, 50)));
    }
    UniqueFd data;
    Status s = recvMessage(controlFd, &text, &data);
    if (!s) break;  // the daemon closed the channel (or died): stop
    auto req = nlohmann::json::parse(text, nullptr, false);
    if (req.is_discarded() || !data) continue;
    reap();
    // One thread per call: calls block on the network for their whole duration.
    auto done = std::make_shared<std::atomic<bool>>(false);
    calls.push_back({std::thread([&remote, done, req = std::move(req),
                                  fd = std::make_shared<UniqueFd>(std::move(data))] {
                       serve(**remote, req, fd->get());
                       *done = true;
                     }),
                     done});
  }
  // Calls still running end on their own (bounded by the remote's timeouts); the daemon
  // has stopped listening, so their answers are dropped.
  for (auto& c : calls) c.thread.join();
  return 0;
}

}  // namespace hsm::remote
