#include "cli/daemon.h"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "cache/cache_store.h"
#include "cli/cache_jobs.h"
#include "cli/control.h"
#include "cli/metrics.h"
#include "cli/mount_watch.h"
#include "cli/registry.h"
#include "cli/version.h"
#include "core/evictor.h"
#include "core/hydrator.h"
#include "core/namespace_populator.h"
#include "frontend/fanotify/fanotify_frontend.h"
#include "frontend/fuse/fuse_frontend.h"
#include "cli/fetch_worker_main.h"
#include "remote/worker/worker_remote.h"
#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::cli {
namespace {

void report(int readyFd, const std::string& msg) {
  if (readyFd < 0) return;
  ssize_t n = ::write(readyFd, msg.data(), msg.size());
  (void)n;  // the waiting parent may be gone; nothing else to do
}

class Daemon {
 public:
  explicit Daemon(const MountConfig& config) : config_(config) {}

  Status setup() {
    // The source is read by a separate, unprivileged fetch worker (restarted if it dies).
    auto remote = remote::WorkerRemote::start(workerConfig(config_));
    if (!remote) return remote.status();
    worker_ = remote->get();
    remote_ = std::move(*remote);
    auto cache = cache::CacheStore::open(config_.cacheDir);
    if (!cache) return cache.status();
    cache_ = std::move(*cache);
    HSM_RETURN_IF_ERROR(checkCacheSettings());

    core::HydratorConfig hc;
    hc.chunkSize = config_.chunkSize;
    hc.readahead = config_.readahead;
    hc.connections = config_.connections;
    hc.maxConnections = config_.maxConnections;
    if (config_.cacheSize > 0) hc.streamToEofLimit = config_.cacheSize / 4;
    hc.readaheadThreads = std::max<size_t>(1, config_.connections / 4);
    // evictor_ is set below, before the frontend starts: no fetch can run before that.
    hc.onCacheFull = [this] { return evictor_->freeSpaceNow(); };
    hydrator_ = std::make_unique<core::Hydrator>(*remote_, *cache_, hc);
    populator_ = std::make_unique<core::NamespacePopulator>(
        *remote_, *cache_, config_.crawlParallel, std::chrono::seconds(config_.listingTtlSeconds),
        [h = hydrator_.get()](const std::string& path) { h->forget(path); }, 10000, viewPolicy(),
        core::ListingLimits{config_.maxDirEntries, config_.maxEntries, config_.maxDepth});
    HSM_RETURN_IF_ERROR(populator_->start().withContext("listing the source"));

    frontend_ = makeFrontend();
    core::EvictorConfig ec;
    ec.quotaBytes = config_.cacheSize;
    ec.highWatermark = config_.cacheHigh;
    ec.lowWatermark = config_.cacheLow;
    evictor_ = std::make_unique<core::Evictor>(
        *hydrator_, *cache_, ec, [f = frontend_.get()](int fd) { return f->beforeRelease(fd); });
    if (!config_.metrics.empty()) {
      auto m = MetricsServer::start(config_.metrics, [this] { return metrics(); });
      if (!m) return m.status();
      metrics_ = std::move(*m);
    }
    HSM_RETURN_IF_ERROR(frontend_->start());
    evictor_->start();
    if (auto w = MountWatch::open(config_.mountpoint)) {
      watch_.emplace(std::move(*w));
    } else {
      log::warn("a plain umount of the view will not stop this daemon: {}", w.status().message());
    }

    HSM_RETURN_IF_ERROR(ensureRunDir());
    auto ctl = listenControl(socketPathFor(config_.mountpoint));
    if (!ctl) return ctl.status();
    control_ = std::move(*ctl);
    MountRecord rec{config_.mountpoint, remote_->describe(), config_.cacheDir, frontend_->name(),
                    socketPathFor(config_.mountpoint), static_cast<int>(::getpid())};
    return writeRecord(rec);
  }

  std::unique_ptr<frontend::Frontend> makeFrontend() {
    if (config_.frontend == "fuse") {
      frontend::FuseConfig fc;
      fc.treePath = cache_->treePath();
      fc.mountpoint = config_.mountpoint;
      fc.workers = config_.workers;
      fc.fsName = "fanhsm:" + remote_->describe();
      // Names and attributes change only when a listing is revalidated: the kernel may keep
      // them for the listing TTL, and at most a minute.
      double ttl = config_.listingTtlSeconds == 0 ? 60.0
                                                  : std::min(60.0, double(config_.listingTtlSeconds));
      fc.entryTimeout = fc.attrTimeout = fc.negativeTimeout = ttl;
      fc.debug = config_.debug && config_.foreground;
      fc.allowOther = ::geteuid() == 0;  // an ordinary user's mount is for that user alone
      auto fuse = std::make_unique<frontend::FuseFrontend>(fc, *hydrator_, *populator_, *cache_);
      // A revalidated listing that changed or removed a name: the kernel must not keep
      // serving the old entry and attributes. shutdown() stops the populator before the
      // frontend is destroyed, so the listener never outlives it.
      populator_->addChangedListener(
          [f = fuse.get()](const std::string& path) { f->invalidate(path); });
      return fuse;
    }
    frontend::FanotifyConfig fc;
    fc.treePath = cache_->treePath();
    fc.mountpoint = config_.mountpoint;
    fc.cacheFsType = cache_->fsTypeName();
    fc.workers = config_.workers;
    fc.dirIgnoreMarks = config_.listingTtlSeconds == 0;
    fc.listingTtl = std::chrono::seconds(config_.listingTtlSeconds);
    return std::make_unique<frontend::FanotifyFrontend>(fc, *hydrator_, *populator_);
  }

  std::string sourceName() const { return remote_ ? remote_->describe() : config_.source; }

  std::string startedOffline() const { return populator_->stats().startedOffline; }

  // Serves control requests and signals until stopped. Returns the exit code.
  int serve(int sigFd) {
    while (!stop_) {
      struct pollfd fds[3] = {{sigFd, POLLIN, 0}, {control_.get(), POLLIN, 0},
                              {watch_ ? watch_->fd() : -1, POLLPRI, 0}};
      int n = ::poll(fds, 3, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        log::error("poll: {}", std::strerror(errno));
        break;
      }
      if (fds[0].revents & POLLIN) {
        struct signalfd_siginfo si {};
        if (::read(sigFd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGHUP &&
            (!config_.foreground || !config_.logFile.empty())) {
          // logrotate's signal: the log file was moved away; start a new one by its name.
          // (In the foreground without a log file it is the terminal's hangup: stop.)
          Status r = log::reopen();
          if (r) {
            log::info("SIGHUP: log file reopened");
          } else {
            log::warn("SIGHUP: reopening the log file: {}", r.message());
          }
        } else if (si.ssi_signo != 0) {
          log::info("signal {}: stopping", strsignal(static_cast<int>(si.ssi_signo)));
          Status s = frontend_->unmount(false);
          if (!s) {
            log::warn("{}; detaching the view lazily", s.message());
            s = frontend_->unmount(true);
            if (!s) log::error("{}", s.message());
            // Asked to stop: open files are served a little longer, then fail (EIO).
            if (s) drainDetached(std::chrono::seconds(10));
          }
          stop_ = true;
        }
      }
      if (fds[1].revents & POLLIN) handleConnection();
      if ((fds[2].revents & (POLLPRI | POLLERR)) && !stop_ && watch_->gone()) {
        // umount(8) or `umount -l` of the view, not `fanhsm umount`: stop as that would.
        // Files still open on a lazily detached view are served first (bounded).
        log::info("the view at {} was unmounted: stopping", config_.mountpoint);
        frontend_->viewGone();
        lazyDrain_ = true;
        stop_ = true;
      }
    }
    if (lazyDrain_) drainDetached(std::chrono::seconds(60));
    shutdown();
    return 0;
  }

  void shutdown() {
    // Jobs and eviction first: they use the frontend (beforeRelease) and the Hydrator.
    stopping_ = true;
    metrics_.reset();
    // Requests still waiting for the source fail now (EIO) and fetches are cancelled:
    // whatever the source does, nothing below waits for it (a cache job, a FUSE thread,
    // a parked fanotify event). The view is gone or detached and drained by now.
    if (hydrator_) hydrator_->shutdown();
    for (auto& j : jobs_) j.thread.join();
    jobs_.clear();
    if (evictor_) evictor_->stop();
    if (frontend_) frontend_->stop();
    if (populator_) populator_->stop();
    if (hydrator_) {
      Status s = hydrator_->flush();
      if (!s) log::error("recording cache state: {}", s.message());
    }
    evictor_.reset();
    frontend_.reset();
    populator_.reset();
    hydrator_.reset();
    if (control_) {
      control_.reset();
      ::unlink(socketPathFor(config_.mountpoint).c_str());
      removeRecord(config_.mountpoint);
    }
    log::info("stopped: {} unmounted", config_.mountpoint);
  }

 private:
  // What the view shows as owner and modes. Content of a source that needed credentials
  // (a password, a netrc, a header such as an API key) is for root alone unless the mount
  // gives modes: root must not lend its credentials to every local account.
  core::ViewPolicy viewPolicy() const {
    core::ViewPolicy p;
    p.uid = config_.uid;
    p.gid = config_.gid;
    p.fileMode = config_.fileMode;
    p.dirMode = config_.dirMode;
    const auto scheme = config_.source.find("://");
    const auto slash = scheme == std::string::npos ? std::string::npos : config_.source.find('/', scheme + 3);
    const bool urlSecret = scheme != std::string::npos && config_.source.rfind('@', slash) != std::string::npos &&
                           config_.source.rfind('@', slash) > scheme;
    p.ownerOnly = isUrl(config_.source) &&
                  (!config_.user.empty() || config_.netrc || !config_.headers.empty() || urlSecret);
    return p;
  }

  Status checkCacheSettings() {
    // The cache's range maps use its own chunk size; it refuses another source.
    auto chunk = cache_->bind(remote_->describe(), config_.chunkSize);
    if (!chunk) return chunk.status();
    config_.chunkSize = *chunk;
    return Status::ok();
  }

  void handleConnection() {
    UniqueFd conn(::accept4(control_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) return;
    auto req = readRequest(conn.get());
    if (req && isCacheJob(req->value("op", ""))) {
      // Long: served on a thread of its own, so status and umount stay responsive.
      reapJobs();
      auto done = std::make_shared<std::atomic<bool>>(false);
      std::thread t([this, done, c = std::make_shared<UniqueFd>(std::move(conn)), r = *req] {
        JobContext ctx{*hydrator_, *populator_, *cache_, *frontend_, stopping_};
        runCacheJob(ctx, c->get(), r);
        *done = true;
      });
      jobs_.push_back({std::move(t), done});
      return;
    }
    nlohmann::json resp;
    if (!req) {
      resp = {{"ok", false}, {"error", req.status().message()}, {"errno", req.status().code()}};
    } else {
      std::string op = req->value("op", "");
      if (op == "status") {
        resp = status(req->value("path", ""));
      } else if (op == "umount") {
        const bool lazy = req->value("lazy", false);
        Status s = frontend_->unmount(lazy);
        if (s) {
          resp = {{"ok", true}};
          stop_ = true;
          lazyDrain_ = lazy;
        } else {
          resp = {{"ok", false}, {"error", s.message()}, {"errno", s.code()}};
        }
      } else {
        resp = {{"ok", false}, {"error", "unknown request"}, {"errno", EINVAL}};
      }
    }
    Status w = writeResponse(conn.get(), resp);
    if (!w) log::warn("control: {}", w.message());
  }

  // Joins the job threads that have ended.
  void reapJobs() {
    std::erase_if(jobs_, [](Job& j) {
      if (!*j.done) return false;
      j.thread.join();
      return true;
    });
  }

  // A scrape of --metrics (on a server thread: only thread-safe stats() calls).
  MetricsBatch metrics() {
    MetricsBatch b;
    auto counter = [&](std::string name, std::string help, double v,
                       std::vector<std::pair<std::string, std::string>> labels = {}) {
      b.values.push_back({"fanhsm_" + std::move(name), std::move(help), true, v, std::move(labels)});
    };
    auto gauge = [&](std::string name, std::string help, double v,
                     std::vector<std::pair<std::string, std::string>> labels = {}) {
      b.values.push_back({"fanhsm_" + std::move(name), std::move(help), false, v, std::move(labels)});
    };
    auto fe = frontend_->stats();
    auto hs = hydrator_->stats();
    auto es = evictor_->stats();
    auto crawl = populator_->stats();
    const auto d = [](uint64_t v) { return static_cast<double>(v); };
    // Prometheus's info convention: constant 1, the facts in the labels.
    gauge("build_info", "fanhsm's version (always 1)", 1, {{"version", kVersion}});
    gauge("mount_info", "This daemon's mount (always 1)", 1,
          {{"mountpoint", config_.mountpoint}, {"source", remote_->describe()},
           {"frontend", frontend_->name()}, {"cache", config_.cacheDir}});
    counter("events_total", "Kernel requests served, by kind", d(fe.fileEvents), {{"kind", "content"}});
    counter("events_total", "Kernel requests served, by kind", d(fe.dirEvents), {{"kind", "dir_open"}});
    counter("events_total", "Kernel requests served, by kind", d(fe.openEvents), {{"kind", "file_open"}});
    counter("events_denied_total", "Kernel requests answered with an error", d(fe.denied));
    gauge("events_pending", "Kernel requests not answered yet", d(fe.pending));
    counter("reads_total", "Content requests, by whether every byte was present", d(hs.hits), {{"result", "hit"}});
    counter("reads_total", "Content requests, by whether every byte was present", d(hs.misses), {{"result", "miss"}});
    counter("fetches_total", "Remote reads started", d(hs.fetches));
    counter("fetch_bytes_total", "Bytes fetched into the cache", d(hs.fetchedBytes));
    counter("readahead_fetches_total", "Remote reads started by readahead", d(hs.readaheadFetches));
    gauge("fetches_running", "Remote reads running now", d(hs.scheduler.running));
    gauge("fetches_running_long", "Remote reads running for over 2 s (not counted against --connections)",
          d(hs.scheduler.runningLong));
    gauge("fetches_queued", "Remote reads waiting for a connection, by kind", d(hs.scheduler.queuedDemand), {{"kind", "demand"}});
    gauge("fetches_queued", "Remote reads waiting for a connection, by kind", d(hs.scheduler.queuedReadahead), {{"kind", "readahead"}});
    gauge("reads_parked", "Kernel requests waiting for a fetch", d(hs.parked));
    counter("fetches_cancelled_total", "Remote reads stopped because no reader needed them any more", d(hs.cancelledFetches));
    counter("reads_abandoned_total", "Waiting requests dropped because their process had exited", d(hs.abandoned));
    const char* kErr = "Failed remote reads, by cause";
    counter("fetch_errors_total", kErr, d(hs.errNoSpace), {{"cause", "cache_full"}});
    counter("fetch_errors_total", kErr, d(hs.errStale), {{"cause", "remote_changed"}});
    counter("fetch_errors_total", kErr, d(hs.errGone), {{"cause", "remote_gone"}});
    counter("fetch_errors_total", kErr, d(hs.errAccess), {{"cause", "permission"}});
    counter("fetch_errors_total", kErr, d(hs.errOther), {{"cause", "other"}});
    counter("files_completed_total", "Files that became fully present", d(hs.filesCompleted));
    counter("evicted_files_total", "Files whose content was released", d(hs.releasedFiles));
    counter("evicted_bytes_total", "Bytes of content released", d(hs.releasedBytes));
    counter("eviction_busy_total", "Releases skipped because the file was in use", d(hs.releaseBusy));
    counter("eviction_passes_total", "Eviction passes", d(es.passes));
    counter("eviction_cache_full_total", "Release passes forced by a full cache filesystem", d(es.cacheFull));
    if (auto used = cache_->contentBytes()) {
      gauge("cache_content_bytes", "Content present in the cache (recorded)", d(*used));
    }
    gauge("cache_quota_bytes", "--cache-size (0: none)", d(config_.cacheSize));
    counter("crawl_dirs_listed_total", "Directories listed", d(crawl.dirsListed));
    counter("crawl_errors_total", "Directories that failed to list", d(crawl.errors));
    b.histograms.push_back({"fanhsm_content_event_seconds",
                            "Content requests (FAN_PRE_ACCESS / FUSE read), arrival to answer", fe.contentLatency});
    b.histograms.push_back({"fanhsm_dir_open_event_seconds", "Directory opens, arrival to answer",
                            fe.dirLatency});
    b.histograms.push_back({"fanhsm_fetch_duration_seconds", "Duration of one remote read", hs.fetchLatency});
    b.histograms.push_back({"fanhsm_read_wait_seconds",
                            "Time a content request waited for missing bytes", hs.ensureLatency});
    return b;
  }

  static nlohmann::json latencyJson(const PercentileHistogram::Counts& counts) {
    const LatencySummary l = counts.summary();
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    return {{"count", l.count}, {"p50_us", us(l.p50Ns)}, {"p90_us", us(l.p90Ns)},
            {"p99_us", us(l.p99Ns)}, {"max_us", us(l.maxNs)}};
  }

  nlohmann::json status(const std::string& path) {
    if (!validateRelPath(path)) return {{"ok", false}, {"error", "bad path"}, {"errno", EINVAL}};
    if (!path.empty()) {
      auto row = cache_->entry(path);
      if (!row) return {{"ok", false}, {"error", row.status().message()}, {"errno", EIO}};
      if (!row->has_value()) {
        return {{"ok", false},
                {"error", fmt::format("'{}' is not in the mirrored tree (not listed yet?)", path)},
                {"errno", ENOENT}};
      }
      const auto& r = **row;
      nlohmann::json j = {{"ok", true}, {"path", path}};
      if (r.type == EntryType::kFile) {
        auto fi = hydrator_->info(path);
        if (!fi) return {{"ok", false}, {"error", fi.status().message()}, {"errno", fi.status().code()}};
        j["type"] = "file";
        j["state"] = cache::stateName(fi->state);
        j["size"] = fi->size;
        j["bytes_present"] = fi->bytesPresent;
        j["bytes_durable"] = fi->bytesDurable;
        j["pinned"] = r.pinned;
      } else if (r.type == EntryType::kDir) {
        j["type"] = "dir";
        j["state"] = r.state == cache::kDirListed ? "listed" : "unlisted";
      } else {
        j["type"] = "symlink";
        j["target"] = r.linkTarget;
      }
      return j;
    }
    auto st = cache_->stats();
    if (!st) return {{"ok", false}, {"error", st.status().message()}, {"errno", EIO}};
    auto crawl = populator_->stats();
    auto fe = frontend_->stats();
    auto hs = hydrator_->stats();
    auto es = evictor_->stats();
    return {{"ok", true},
            {"mountpoint", config_.mountpoint},
            {"source", remote_->describe()},
            {"cache", config_.cacheDir},
            {"cache_fs", cache_->fsTypeName()},
            {"frontend", frontend_->name()},
            {"pid", ::getpid()},
            {"chunk_size", config_.chunkSize},
            {"bytes_total", st->bytesTotal},
            {"bytes_present", st->bytesPresent},
            {"files", {{"total", st->files}, {"empty", st->filesEmpty}, {"partial", st->filesPartial}, {"full", st->filesFull}}},
            {"dirs", {{"total", st->dirs}, {"listed", st->dirsListed}}},
            {"symlinks", st->symlinks},
            {"cache_size", config_.cacheSize},
            {"worker", {{"pid", worker_->stats().pid}, {"restarts", worker_->stats().restarts},
                        {"retried_calls", worker_->stats().retriedCalls},
                        {"watchdog_kills", worker_->stats().watchdogKills},
                        {"uid", workerUid()}}},
            {"metrics", metrics_ ? fmt::format("http://{}:{}/metrics",
                                               config_.metrics.substr(0, config_.metrics.rfind(':')),
                                               metrics_->port())
                                 : ""},
            {"pinned", {{"files", st->filesPinned}, {"bytes", st->bytesPinned}}},
            {"eviction", {{"high", config_.cacheHigh}, {"low", config_.cacheLow},
                          {"passes", es.passes}, {"files", hs.releasedFiles}, {"bytes", hs.releasedBytes},
                          {"busy", hs.releaseBusy}, {"second_chances", es.secondChances},
                          {"cache_full", es.cacheFull}, {"errors", es.errors},
                          {"last_pass_bytes", es.lastPassBytes}, {"last_pass_seconds", es.lastPassSeconds}}},
            {"crawl", {{"done", crawl.done}, {"dirs_listed", crawl.dirsListed}, {"dirs_queued", crawl.dirsQueued},
                       {"dirs_active", crawl.dirsActive}, {"queued_peak", crawl.queuedPeak},
                       {"entries", crawl.entriesAdded},
                       {"errors", crawl.errors}, {"skipped", crawl.skipped}, {"seconds", crawl.seconds},
                       {"revalidated", crawl.revalidated}, {"removed", crawl.removed},
                       {"refused", crawl.refused}, {"names", crawl.names}, {"stalled", crawl.stalled},
                       {"started_offline", crawl.startedOffline}}},
            {"events", {{"content", fe.fileEvents}, {"dir_open", fe.dirEvents}, {"file_open", fe.openEvents},
                        {"denied", fe.denied}, {"ignore_marks", fe.ignoreMarks}, {"pending", fe.pending}}},
            {"latency", {{"content", latencyJson(fe.contentLatency)}, {"dir_open", latencyJson(fe.dirLatency)}}},
            {"fetch", {{"count", hs.fetches}, {"bytes", hs.fetchedBytes}, {"errors", hs.fetchErrors},
                       {"readahead", hs.readaheadFetches}, {"waits", hs.waits},
                       {"files_completed", hs.filesCompleted},
                       {"running", hs.scheduler.running}, {"queued", hs.scheduler.queuedDemand},
                       {"queued_readahead", hs.scheduler.queuedReadahead},
                       {"running_long", hs.scheduler.runningLong},
                       {"connections", hs.scheduler.slots},
                       {"max_connections", hs.scheduler.maxRunning},
                       {"threads", hs.scheduler.threads}, {"parked", hs.parked},
                       {"cancelled", hs.cancelledFetches}, {"abandoned", hs.abandoned},
                       {"remembered_failures", hs.remembered}, {"preempted", hs.preempted}}}};
  }

  MountConfig config_;
  std::unique_ptr<remote::Remote> remote_;
  remote::WorkerRemote* worker_ = nullptr;  // remote_, as the worker it is
  std::unique_ptr<cache::CacheStore> cache_;
  std::unique_ptr<core::Hydrator> hydrator_;
  std::unique_ptr<core::NamespacePopulator> populator_;
  std::unique_ptr<frontend::Frontend> frontend_;
  std::unique_ptr<core::Evictor> evictor_;
  std::unique_ptr<MetricsServer> metrics_;
  UniqueFd control_;
  std::atomic<bool> stopping_{false};  // tells running jobs to end
  struct Job {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Job> jobs_;  // cache jobs (fetch, release, pin, unpin); control thread only
  bool stop_ = false;
  bool lazyDrain_ = false;
  std::optional<MountWatch> watch_;  // the view's mount, to notice umount(8)

  // A lazily detached view can still have open files: serve them (bounded) before the
  // fanotify groups close, so they never read unfetched ranges as zeros.
  void drainDetached(std::chrono::seconds limit) {
    log::info("view detached; serving files still open on it (up to {} s)", limit.count());
    if (frontend_->waitUntilUnused(limit)) log::info("detached view unused");
  }
};

}  // namespace

// Every pending kernel request can hold a descriptor (an event's file, a cache file, a
// channel to the fetch worker): the usual soft limit of 1024 is far too low for a mount
// with many readers (issue #14, item 4). The soft limit goes up to the hard one.
static void raiseDescriptorLimit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  const rlim_t was = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    log::warn("raising the descriptor limit from {}: {}", was, std::strerror(errno));
  }
}

int runDaemon(const MountConfig& config, int readyFd) {
  raiseDescriptorLimit();
  // Signals are taken synchronously by the main loop; block them before any thread starts
  // so every thread inherits the mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Releasing content takes short write leases (Hydrator::release); an open that breaks
  // one signals the holder with SIGIO, whose default action would end the daemon.
  ::signal(SIGIO, SIG_IGN);
  UniqueFd sigFd(::signalfd(-1, &mask, SFD_CLOEXEC));
  if (!sigFd) {
    report(readyFd, fmt::format("ERR signalfd: {}\n", std::strerror(errno)));
    return 1;
  }
  Daemon d(config);
  Status s = d.setup();
  if (!s) {
    log::error("{}", s.message());
    report(readyFd, "ERR " + s.message() + "\n");
    d.shutdown();
    return 1;
  }
  log::info("mounted {} at {} (cache {})", d.sourceName(), config.mountpoint, config.cacheDir);
  const std::string offline = d.startedOffline();
  report(readyFd, offline.empty() ? "OK\n" : "OK offline: " + offline + "\n");
  if (readyFd >= 0) ::close(readyFd);
  return d.serve(sigFd.get());
}

}  // namespace hsm::cli
