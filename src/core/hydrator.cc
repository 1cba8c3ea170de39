#include "core/hydrator.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "cache/content_file.h"
#include "util/chunk_map.h"
#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::core {

struct Hydrator::Flight {
  uint64_t first = 0;
  uint64_t last = 0;  // exclusive
  bool readahead = false;
  bool done = false;
  bool running = false;          // a scheduler thread took it
  uint64_t job = 0;              // its FetchScheduler id
  std::atomic<bool> cancel{false};  // no live request needs it: stop (ByteSink::cancelled)
  std::atomic<bool> wanted{false};  // a request waits for it: readahead may not give way
  Status status;
};

// A parked request: ensureAsync() for chunks [first, last) that were not all present.
struct Hydrator::Waiter {
  uint64_t first = 0;
  uint64_t last = 0;  // exclusive
  Done done;
  Alive alive;
  std::chrono::steady_clock::time_point started;
  bool freedSpace = false;  // an eviction pass already ran for it (once per request)
};

struct Hydrator::FileState {
  std::mutex syncMu;  // rank 15: serializes syncFile() of this file
  std::mutex mu;      // rank 20: everything below
  std::string path;
  std::unique_ptr<cache::ContentFile> content;  // version, inode, size, descriptor
  uint64_t size = 0;  // content->size()
  ChunkMap present;   // written to the cache file
  ChunkMap durable;   // recorded in the index
  ChunkMap inflight;  // owned by a flight
  std::vector<std::shared_ptr<Flight>> flights;
  std::vector<std::shared_ptr<Waiter>> waiters;
  bool allocated = false;   // prepareOpen() allocated the missing chunks of this inode
  uint64_t nextExpected = 0;
  uint64_t raFrontier = 0;  // readahead has been scheduled up to this chunk
  unsigned seqHits = 0;
  bool seen = false;
  bool dirty = false;
  bool fullDurable = false;
  // The last failed fetch (HydratorConfig::failureMemory): its chunks and error.
  uint64_t failedFirst = 0, failedLast = 0;
  std::chrono::steady_clock::time_point failedUntil{};
  Status failure;

  std::shared_ptr<Flight> flightFor(uint64_t chunk) const {
    for (const auto& f : flights) {
      if (chunk >= f->first && chunk < f->last) return f;
    }
    return nullptr;
  }
  // Whether a parked request needs a chunk of `f` that is not present yet.
  bool needed(const Flight& f) const {
    for (const auto& w : waiters) {
      for (uint64_t c = std::max(w->first, f.first); c < std::min(w->last, f.last); ++c) {
        if (!present.has(c)) return true;
      }
    }
    return false;
  }
};

namespace {

// Hands fetched bytes to the cache file (ContentFile::write). Checks that they come in
// order and inside the flight's range: nothing outside it is written.
class CacheFileSink final : public remote::ByteSink {
 public:
  // `progress(next)` is called after each write with the new end of the written bytes.
  CacheFileSink(const cache::ContentFile& file, uint64_t begin, uint64_t end,
                const std::atomic<bool>& cancel, std::function<void(uint64_t)> progress)
      : file_(file), next_(begin), end_(end), cancel_(cancel), progress_(std::move(progress)) {}
  Status write(uint64_t offset, const char* data, size_t length) override {
    if (cancelled()) return Status::error(ECANCELED, "fetch cancelled");
    if (offset != next_) {
      return Status::error(EIO, fmt::format("remote delivered offset {} where {} was expected",
                                            offset, next_));
    }
    if (length > end_ - next_) {
      return Status::error(EPROTO, fmt::format("remote delivered {} bytes at {}, past the end "
                                               "of the range at {}", length, offset, end_));
    }
    HSM_RETURN_IF_ERROR(file_.write(offset, data, length));
    next_ += length;
    progress_(next_);
    return Status::ok();
  }
  bool cancelled() const override { return cancel_.load(std::memory_order_relaxed); }
  uint64_t next() const { return next_; }

 private:
  const cache::ContentFile& file_;
  uint64_t next_;
  const uint64_t end_;
  const std::atomic<bool>& cancel_;
  std::function<void(uint64_t)> progress_;
};

// Waits for the callback of an asynchronous request (ensure(), prepareOpen()).
template <typename Start>
Result<bool> waitFor(Start start) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<bool>> result;
  };
  auto shared = std::make_shared<Shared>();
  start([shared](Result<bool> r) {
    {
      std::lock_guard lock(shared->mu);
      shared->result.emplace(std::move(r));
    }
    shared->cv.notify_all();
  });
  std::unique_lock lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->result.has_value(); });
  return std::move(*shared->result);
}

Status stopping() { return Status::error(EIO, "fanhsm is stopping"); }

}  // namespace

Hydrator::Hydrator(remote::Remote& remote, cache::CacheStore& cache, HydratorConfig config)
    : remote_(remote),
      cache_(cache),
      config_(config),
      scheduler_(std::max<size_t>(1, config.connections), config.readaheadThreads, "fanhsm-fetch",
                 HydratorConfig::fetchesAtMost(config.connections, config.maxConnections), config.longFetch) {
  syncThread_ = std::thread([this] { syncLoop(); });
}

Hydrator::~Hydrator() {
  shutdown();
  {
    std::lock_guard lock(syncMu_);
    stopping_ = true;
  }
  syncCv_.notify_all();
  if (syncThread_.joinable()) syncThread_.join();
  Status s = flush();
  if (!s) log::error("recording cache state on stop: {}", s.message());
}

std::vector<std::shared_ptr<Hydrator::FileState>> Hydrator::activeFiles() {
  std::vector<std::shared_ptr<FileState>> out;
  std::lock_guard lock(activeMu_);
  for (auto it = active_.begin(); it != active_.end();) {
    if (auto fs = it->second.lock()) {
      out.push_back(std::move(fs));
      ++it;
    } else {
      it = active_.erase(it);
    }
  }
  return out;
}

void Hydrator::complete(std::vector<Completion>& out) {
  if (syncRequested_.exchange(false)) wakeSync();
  for (auto& c : out) c.done(std::move(c.result));
  out.clear();
}

void Hydrator::wakeSync() {
  {
    std::lock_guard wake(syncMu_);
    syncWanted_ = true;
  }
  syncCv_.notify_one();
}

void Hydrator::dropQueued(const std::vector<uint64_t>& ids) {
  for (uint64_t id : ids) scheduler_.cancel(id);  // drops it: finishFlight(ECANCELED)
}

template <typename Pred>
size_t Hydrator::cancelFlightsLocked(FileState& fs, Pred which, std::vector<uint64_t>& queued) {
  size_t n = 0;
  for (const auto& f : fs.flights) {
    if (f->done || f->cancel || !which(*f)) continue;
    f->cancel = true;
    if (!f->running) queued.push_back(f->job);
    ++n;
  }
  cancelledFetches_ += n;
  return n;
}

void Hydrator::shutdown() {
  if (closed_.exchange(true)) return;
  std::vector<Completion> out;
  std::vector<uint64_t> queued;
  for (const auto& fs : activeFiles()) {
    std::lock_guard lock(fs->mu);
    for (auto& w : fs->waiters) out.push_back({std::move(w->done), stopping()});
    parked_ -= fs->waiters.size();
    fs->waiters.clear();
    cancelFlightsLocked(*fs, [](const Flight&) { return true; }, queued);
  }
  complete(out);
  dropQueued(queued);
  scheduler_.stop();  // drops what is still queued, waits for the running (cancelled) ones
}

Result<std::shared_ptr<Hydrator::FileState>> Hydrator::file(const std::string& path) {
  uint64_t epoch = 0;
  {
    std::unique_lock lock(mu_);
    while (true) {
      auto it = files_.find(path);
      if (it != files_.end()) return it->second;
      if (!releasing_.contains(path)) break;
      releasedCv_.wait(lock);  // a release takes milliseconds (no remote I/O)
    }
    ++loading_[path];
    epoch = forgetEpoch_;
  }
  struct LoadingGuard {
    Hydrator* h;
    const std::string& path;
    ~LoadingGuard() {
      std::lock_guard lock(h->mu_);
      auto it = h->loading_.find(path);
      if (--it->second == 0) h->loading_.erase(it);
    }
  } loadingGuard{this, path};
  // The content at the row's version, on the inode the row describes (ContentFile::load).
  for (int attempt = 0;; ++attempt) {
    auto content = cache::ContentFile::load(cache_, path, config_.chunkSize, config_.io);
    if (!content) return content.status();
    auto fs = std::make_shared<FileState>();
    fs->path = path;
    fs->content = std::move(*content);
    fs->size = fs->content->size();
    fs->present = fs->content->recorded();
    fs->durable = fs->present;
    fs->inflight = ChunkMap(fs->size, config_.chunkSize);
    fs->fullDurable = fs->present.full();

    std::lock_guard lock(mu_);
    // forget() ran since the row was read: it may describe what that forget() replaced.
    if (forgetEpoch_ != epoch && attempt < 3) {
      epoch = forgetEpoch_;
      continue;
    }
    auto [it, inserted] = files_.emplace(path, fs);
    return it->second;  // another thread may have loaded it first: use that one
  }
}

std::shared_ptr<Hydrator::Flight> Hydrator::startFlightLocked(const std::shared_ptr<FileState>& fs,
                                                             uint64_t first, uint64_t limit,
                                                             bool readahead) {
  if (closed_) return nullptr;
  auto f = std::make_shared<Flight>();
  f->first = first;
  f->readahead = readahead;
  uint64_t maxChunks = std::max<uint64_t>(1, config_.maxFetch / config_.chunkSize);
  if (!remote_.supportsRanges()) {
    // Every read streams from the start of the file: one flight to the end, published
    // as it arrives, instead of the prefix again for every chunk, unless that is more
    // than the cache should take for one read (HydratorConfig::streamToEofLimit).
    maxChunks = UINT64_MAX;
    if (fs->size - fs->present.chunkBegin(first) <= config_.streamToEofLimit) {
      limit = fs->present.chunkCount();
    }
  }
  uint64_t c = first;
  while (c < limit && c - first < maxChunks && !fs->present.has(c) && !fs->inflight.has(c)) {
    ++c;
  }
  f->last = c;
  // Queued before it owns its chunks: a scheduler that refuses it (stopping) leaves the
  // file as it was. The job cannot run before it takes fs->mu, which the caller holds.
  f->job = scheduler_.post(
      fs->path, readahead ? FetchScheduler::Priority::kReadahead : FetchScheduler::Priority::kDemand,
      [this, fs, f] { runFlight(fs, f); },
      [this, fs, f] { finishFlight(fs, f, Status::error(ECANCELED, "fetch cancelled"), f->first, false); },
      // Readahead gives way to a waiting reader (FetchScheduler): no lock, just the flags.
      [this, f] {
        if (f->wanted) return false;
        f->cancel = true;
        preempted_++;
        return true;
      });
  if (f->job == 0) return nullptr;
  for (uint64_t k = f->first; k < f->last; ++k) fs->inflight.set(k);
  fs->flights.push_back(f);
  {
    std::lock_guard lock(activeMu_);
    active_.emplace(fs.get(), fs);
  }
  return f;
}

void Hydrator::runFlight(const std::shared_ptr<FileState>& fs, const std::shared_ptr<Flight>& f) {
  {
    std::lock_guard lock(fs->mu);
    f->running = true;
  }
  const uint64_t begin = fs->present.chunkBegin(f->first);
  const uint64_t end = std::min(fs->size, fs->present.chunkBegin(f->last));
  // Chunks are published as soon as they are written, so a reader waiting for the start
  // of a long flight does not wait for its end.
  uint64_t published = f->first;
  auto publishUpTo = [&](uint64_t endChunk) {
    if (endChunk <= published) return;
    // Writing moved the cache file's mtime; the view must show the remote's before a
    // reader is let through (it may stat the file at once).
    fs->content->restoreTimes();
    std::vector<Completion> out;
    {
      std::lock_guard lock(fs->mu);
      for (uint64_t c = published; c < endChunk; ++c) {
        fs->inflight.reset(c);
        fs->present.set(c);
      }
      fs->dirty = true;
      published = endChunk;
      if (!fs->waiters.empty()) settleLocked(fs, nullptr, false, out);
    }
    complete(out);
  };
  if (f->cancel) {
    finishFlight(fs, f, Status::error(ECANCELED, "fetch cancelled"), published, false);
    return;
  }
  fetches_++;
  if (f->readahead) readaheadFetches_++;
  const auto started = std::chrono::steady_clock::now();
  CacheFileSink sink(*fs->content, begin, end, f->cancel, [&](uint64_t next) {
    publishUpTo(next >= end ? f->last : next / config_.chunkSize);
  });
  Status s = remote_.read(fs->path, fs->content->version(), begin, end - begin, sink);
  if (s && sink.next() != end) {
    s = Status::error(EIO, fmt::format("remote delivered {} of {} bytes of '{}' at {}",
                                       sink.next() - begin, end - begin, fs->path, begin));
  }
  if (!s && f->cancel) s = Status::error(ECANCELED, "fetch cancelled");
  // Bytes written after the last publish (a failed or cancelled flight) moved the cache
  // file's mtime: the view must show the remote's. Not otherwise: each restore moves ctime,
  // and a reader let in at the last publish may compare it (GNU tar).
  if (sink.next() > std::min(end, fs->present.chunkBegin(published))) fs->content->restoreTimes();
  fetchLatency_.record(std::chrono::steady_clock::now() - started);
  bool freedSpace = false;
  if (s) {
    fetchedBytes_ += end - begin;
  } else {
    fetchedBytes_ += fs->present.chunkBegin(published) - begin;
    if (s.code() != ECANCELED) {
      fetchErrors_++;
      log::warn("fetch '{}' [{}, {}): {}", fs->path, begin, end, s.message());
    }
    switch (s.code()) {
      case ENOSPC:
      case EDQUOT:
        errNoSpace_++;
        // A full cache filesystem: free space (without our locks); the requests waiting
        // for this flight then try once more.
        freedSpace = config_.onCacheFull && config_.onCacheFull();
        break;
      case ECANCELED:
        break;
      case ESTALE:
        errStale_++;
        break;
      case ENOENT:
        errGone_++;
        break;
      case EACCES:
      case EPERM:
        errAccess_++;
        break;
      default:
        errOther_++;
    }
  }
  finishFlight(fs, f, s, published, freedSpace);
}

void Hydrator::finishFlight(const std::shared_ptr<FileState>& fs, const std::shared_ptr<Flight>& f,
                            const Status& s, uint64_t published, bool freedSpace) {
  std::vector<Completion> out;
  bool nowFull = false;
  {
    std::lock_guard lock(fs->mu);
    for (uint64_t c = published; c < f->last; ++c) {
      fs->inflight.reset(c);
      if (s) fs->present.set(c);
    }
    if (s && published < f->last) fs->dirty = true;
    const int err = s.code();
    // Only the source's failures are remembered: a full cache filesystem is the cache's
    // state, and the next release pass may have changed it already.
    if (!s && err != ECANCELED && err != ENOSPC && err != EDQUOT &&
        config_.failureMemory.count() > 0) {
      fs->failedFirst = published;
      fs->failedLast = f->last;
      fs->failedUntil = std::chrono::steady_clock::now() + config_.failureMemory;
      fs->failure = s;
    }
    f->done = true;
    f->status = s;
    std::erase(fs->flights, f);
    settleLocked(fs, s ? nullptr : f.get(), freedSpace, out);
    nowFull = fs->present.full();
    if (fs->flights.empty() && fs->waiters.empty()) {
      std::lock_guard active(activeMu_);
      active_.erase(fs.get());
    }
  }
  complete(out);
  if (nowFull) wakeSync();
}

Result<bool> Hydrator::advanceLocked(const std::shared_ptr<FileState>& fs, Waiter& w) {
  bool ready = true;
  for (uint64_t c = w.first; c < w.last; ++c) {
    if (fs->present.has(c)) continue;
    ready = false;
    auto f = fs->flightFor(c);
    if (!f) {
      if (c >= fs->failedFirst && c < fs->failedLast &&
          std::chrono::steady_clock::now() < fs->failedUntil) {
        remembered_++;
        return fs->failure;
      }
      f = startFlightLocked(fs, c, w.last, false);
      if (!f) return stopping();
    } else if (f->readahead && !f->running && !f->cancel) {
      // A reader waits for it now: it goes before every other readahead.
      f->readahead = false;
      scheduler_.promote(f->job);
    }
    f->wanted = true;
    c = f->last - 1;
  }
  return ready;
}

void Hydrator::settleLocked(const std::shared_ptr<FileState>& fs, const Flight* failed,
                            bool freedSpace, std::vector<Completion>& out) {
  const auto now = std::chrono::steady_clock::now();
  auto& ws = fs->waiters;
  for (size_t i = 0; i < ws.size();) {
    Waiter& w = *ws[i];
    std::optional<Status> error;
    if (closed_) {
      error = stopping();
    } else if (failed && failed->status.code() != ECANCELED && w.first < failed->last &&
               failed->first < w.last) {
      bool hit = false;  // the request needs a chunk the failed flight was to bring
      for (uint64_t c = std::max(w.first, failed->first); c < std::min(w.last, failed->last); ++c) {
        hit = hit || !fs->present.has(c);
      }
      if (hit) {
        const int err = failed->status.code();
        if ((err == ENOSPC || err == EDQUOT) && freedSpace && !w.freedSpace) {
          w.freedSpace = true;  // space was freed: try once more
        } else {
          error = failed->status;
        }
      }
    }
    if (!error) {
      auto ready = advanceLocked(fs, w);
      if (!ready) {
        error = ready.status();
      } else if (!*ready) {
        ++i;
        continue;
      }
    }
    out.push_back({std::move(w.done), error ? Result<bool>(*error) : Result<bool>(readyLocked(*fs))});
    ensureLatency_.record(now - w.started);
    ws.erase(ws.begin() + static_cast<std::ptrdiff_t>(i));
    parked_--;
  }
}

bool Hydrator::readyLocked(FileState& fs) {
  // A file that just became complete is recorded by the sync thread (fsync, then the
  // index), not on this reader's path: an fsync per completed file would dominate a walk
  // of small files. Until it is recorded this returns false, so the frontend keeps
  // watching the file; a later request sees it durable (and sets the ignore mark).
  if (fs.present.full() && !fs.fullDurable) {
    syncRequested_ = true;  // complete() wakes the sync thread, without this lock
    return false;
  }
  return fs.fullDurable;
}

void Hydrator::scheduleReadaheadLocked(const std::shared_ptr<FileState>& fs, uint64_t fromChunk) {
  if (fs->seqHits == 0) return;
  uint64_t window = std::min<uint64_t>(config_.readahead, config_.chunkSize << std::min(fs->seqHits, 16u));
  uint64_t limit = std::min(fs->present.chunkCount(), fromChunk + window / config_.chunkSize);
  // Top the window up only when less than half of it is left ahead of the reader, so
  // readahead goes out in flights of maxFetch, not one chunk per read.
  if (fs->raFrontier > fromChunk && fs->raFrontier - fromChunk > (limit - fromChunk) / 2) return;
  uint64_t start = std::max(fromChunk, fs->raFrontier);
  fs->raFrontier = limit;
  for (uint64_t c = start; c < limit; ++c) {
    if (fs->present.has(c) || fs->inflight.has(c)) continue;
    auto f = startFlightLocked(fs, c, limit, true);
    if (!f) return;
    c = f->last - 1;
  }
}

Result<std::shared_ptr<Hydrator::FileState>> Hydrator::fileFor(const std::string& path,
                                                               uint64_t ino) {
  auto fsr = file(path);
  if (!fsr || ino == 0 || (*fsr)->content->ino() == ino) return fsr;
  // Loaded before a change of the file, or the reader holds the inode a change replaced.
  forget(path);
  fsr = file(path);
  if (fsr && (*fsr)->content->ino() != ino) {
    return Status::error(ESTALE, fmt::format("'{}' changed at the remote while it was open; "
                                             "open it again for the new version", path));
  }
  return fsr;
}

Result<bool> Hydrator::allocateMissing(const std::shared_ptr<FileState>& fs) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // missing chunks
  {
    std::lock_guard lock(fs->mu);
    if (fs->fullDurable) return true;
    if (fs->allocated) return false;
    runs = cache::chunkRuns(fs->present, [&](uint64_t c) { return !fs->present.has(c); });
    // Set first: an allocation that fails half way (no room) has allocated some runs,
    // which the close must give back as well (the frontend watches closes only of files
    // for which this is set).
    fs->allocated = true;
  }
  // Without a lock: a flight writing into a run meanwhile keeps its bytes (allocating
  // leaves written blocks alone), and a run written already is allocated already. No room:
  // the caller goes on without (releasing cached content for an allocation that lasts
  // only while the file is open would empty the cache for one look at a huge file); what
  // was allocated before the failure is given back at the close as usual.
  HSM_RETURN_IF_ERROR(fs->content->allocate(runs));
  return false;
}

void Hydrator::prepareOpenAsync(const std::string& path, uint64_t ino, Done done, Alive alive) {
  auto fsr = fileFor(path, ino);
  if (!fsr) return done(fsr.status());
  std::shared_ptr<FileState> fs = *fsr;
  if (fs->size > config_.chunkSize) return done(allocateMissing(fs));
  // One chunk: fetched whole now, which is what its first read would fetch. A complete
  // file is right for every tool, also those that ask SEEK_DATA without looking at
  // st_blocks. If the fetch fails, the open goes on with an allocation: its reads fail
  // with the fetch's error then, where the reader expects one.
  ensureAsync(
      path, 0, fs->size, ino,
      [this, fs, done = std::move(done)](Result<bool> whole) {
        if (whole || closed_) return done(std::move(whole));
        done(allocateMissing(fs));
      },
      std::move(alive));
}

Result<bool> Hydrator::prepareOpen(const std::string& path, uint64_t ino) {
  return waitFor([&](Done done) { prepareOpenAsync(path, ino, std::move(done)); });
}

Result<bool> Hydrator::releaseAllocation(const std::string& path, uint64_t ino) {
  auto fsr = fileFor(path, ino);
  if (!fsr) return fsr.status();
  return releaseAllocationOf(*fsr);
}

Result<bool> Hydrator::releaseAllocationOf(const std::shared_ptr<FileState>& fs) {
  std::vector<uint64_t> queued;
  Status s;
  {
    // Under the file's lock: no flight can start on a chunk while it is punched (a flight
    // owns its chunks, marked inflight under this lock, before it writes). Punching ranges
    // without data is a short metadata operation, and the lease is held for no longer.
    std::lock_guard lock(fs->mu);
    if (fs->present.full()) return false;
    // Granted only if no other open file of the inode exists (ours is read-write: no other
    // writer and no reader; an open in progress counts as a reader before it raises its
    // open event). The kernel signals us (SIGIO, ignored) if an open has to wait for it.
    if (!fs->content->tryLease()) return false;
    // No one reads the file: its readahead (and any fetch no request waits for) stops.
    cancelFlightsLocked(*fs, [&](const Flight& f) { return !fs->needed(f); }, queued);
    s = fs->content->punch(cache::chunkRuns(
        fs->present, [&](uint64_t c) { return !fs->present.has(c) && !fs->inflight.has(c); }));
    fs->content->unlease();
    if (s) fs->allocated = false;
  }
  dropQueued(queued);
  HSM_RETURN_IF_ERROR(s);
  return true;
}

bool Hydrator::allocated(const std::string& path) {
  std::shared_ptr<FileState> fs;
  {
    std::lock_guard lock(mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return false;
    fs = it->second;
  }
  std::lock_guard lock(fs->mu);
  return fs->allocated;
}

void Hydrator::ensureAsync(const std::string& path, uint64_t offset, uint64_t length, uint64_t ino,
                           Done done, Alive alive) {
  if (closed_) return done(stopping());
  auto fsr = fileFor(path, ino);
  if (!fsr) return done(fsr.status());
  std::shared_ptr<FileState> fs = *fsr;
  std::vector<Completion> out;
  bool answered = false;  // parked, or failed
  {
    std::lock_guard lock(fs->mu);
    // Nothing to read (a zero-length read, or one at or past the end): nothing to fetch.
    const bool nothing = length == 0 || offset >= fs->size;
    if (!fs->present.full() && !nothing) {
      auto [first, last] = fs->present.chunksFor(offset, length);
      // Sequential detection: this request starts where the previous one ended.
      bool sequential = fs->seen ? offset == fs->nextExpected : offset == 0;
      fs->seqHits = sequential ? fs->seqHits + 1 : 0;
      fs->seen = true;
      fs->nextExpected = std::min(fs->size, offset + length);
      scheduleReadaheadLocked(fs, last);
      auto w = std::make_shared<Waiter>();
      w->first = first;
      w->last = last;
      w->started = std::chrono::steady_clock::now();
      for (uint64_t c = first; c < last; ++c) {
        if (fs->inflight.has(c)) {
          waits_++;  // shares another request's fetch
          break;
        }
      }
      auto ready = advanceLocked(fs, *w);
      if (!ready || !*ready) {
        misses_++;
        answered = true;
        if (!ready) {
          out.push_back({std::move(done), ready.status()});
        } else {
          w->done = std::move(done);
          w->alive = std::move(alive);
          fs->waiters.push_back(std::move(w));
          parked_++;
          std::lock_guard active(activeMu_);
          active_.emplace(fs.get(), fs);
        }
      }
    }
    if (!answered) {
      hits_++;
      out.push_back({std::move(done), readyLocked(*fs)});
    }
  }
  complete(out);
}

Result<bool> Hydrator::ensure(const std::string& path, uint64_t offset, uint64_t length,
                              uint64_t ino) {
  return waitFor([&](Done done) { ensureAsync(path, offset, length, ino, std::move(done)); });
}

void Hydrator::releaseIdleAllocations() {
  std::vector<std::shared_ptr<FileState>> allocatedFiles;
  {
    std::lock_guard lock(mu_);
    for (auto& [path, fs] : files_) {
      std::lock_guard fl(fs->mu);
      if (fs->allocated && fs->waiters.empty()) allocatedFiles.push_back(fs);
    }
  }
  for (const auto& fs : allocatedFiles) {
    auto r = releaseAllocationOf(fs);
    if (!r) log::warn("'{}': giving back the space of its missing ranges: {}", fs->path, r.status().message());
  }
}

void Hydrator::settleStates() {
  std::vector<std::shared_ptr<FileState>> pending;
  {
    std::lock_guard lock(mu_);
    for (auto& [path, fs] : files_) {
      if (fs->content->statePending()) pending.push_back(fs);
    }
  }
  for (const auto& fs : pending) {
    std::lock_guard lock(fs->mu);  // no other lease holder meanwhile
    fs->content->settleState();
  }
}

void Hydrator::sweepWaiters() {
  std::vector<Completion> out;
  std::vector<uint64_t> queued;
  for (const auto& fs : activeFiles()) {
    std::lock_guard lock(fs->mu);
    auto& ws = fs->waiters;
    for (size_t i = 0; i < ws.size();) {
      if (!ws[i]->alive || ws[i]->alive()) {
        ++i;
        continue;
      }
      out.push_back({std::move(ws[i]->done), Status::error(ECANCELED, "the reader is gone")});
      ws.erase(ws.begin() + static_cast<std::ptrdiff_t>(i));
      parked_--;
      abandoned_++;
    }
    // Demand fetches no live request needs any more stop.
    cancelFlightsLocked(*fs, [&](const Flight& f) { return !f.readahead && !fs->needed(f); },
                        queued);
    // Readahead stops once no one has the file open (the write lease on our own
    // descriptor is granted only then). Usually the last close does it
    // (releaseAllocation), but a killed reader's close comes while its parked event
    // still holds the file open: the sweep after its answer catches that.
    const bool readahead = std::any_of(fs->flights.begin(), fs->flights.end(), [](const auto& f) {
      return f->readahead && !f->cancel && !f->done;
    });
    if (readahead && fs->waiters.empty() && fs->content->tryLease()) {
      cancelFlightsLocked(*fs, [](const Flight& f) { return f.readahead; }, queued);
      fs->content->unlease();
    }
  }
  complete(out);
  dropQueued(queued);
}

Status Hydrator::syncFile(const std::shared_ptr<FileState>& fs) {
  std::lock_guard syncLock(fs->syncMu);
  ChunkMap snapshot;
  {
    std::lock_guard lock(fs->mu);
    if (!fs->dirty) return Status::ok();
    snapshot = fs->present;
    fs->dirty = false;
  }
  const bool full = snapshot.full();
  bool syncFailed = false;
  Status s = fs->content->commit(snapshot, &syncFailed);
  std::lock_guard lock(fs->mu);
  if (!s && syncFailed) {
    // Chunks written since the last record are not present any more: they are fetched
    // (and written) again, and only a sync after that records them (ContentFile::commit).
    for (uint64_t c = 0; c < fs->present.chunkCount(); ++c) {
      if (fs->present.has(c) && !fs->durable.has(c) && !fs->inflight.has(c)) fs->present.reset(c);
    }
    fs->dirty = false;
    syncErrors_++;
    return s;
  }
  if (!s) {
    fs->dirty = true;  // the index failed: the bytes are durable, record them later
    return s;
  }
  fs->durable = snapshot;
  fs->content->settleState();  // under fs->mu: no other lease holder meanwhile
  if (full && !fs->fullDurable) {
    fs->fullDurable = true;
    filesCompleted_++;
  }
  return Status::ok();
}

Status Hydrator::flush() {
  std::vector<std::shared_ptr<FileState>> dirty;
  {
    std::lock_guard lock(mu_);
    for (auto& [path, fs] : files_) {
      std::lock_guard fl(fs->mu);
      // Also files whose last chunks another thread is recording right now: syncFile()
      // waits for that (syncMu), so flush() returns only once all is recorded.
      if (fs->dirty || (fs->present.full() && !fs->fullDurable)) dirty.push_back(fs);
    }
  }
  Status first;
  for (auto& fs : dirty) {
    Status s = syncFile(fs);
    if (!s && first) first = s;
  }
  return first;
}

void Hydrator::syncLoop() {
  constexpr size_t kKeepLoaded = 4096;
  while (true) {
    {
      std::unique_lock lock(syncMu_);
      syncCv_.wait_for(lock, config_.syncInterval, [this] { return stopping_ || syncWanted_; });
      if (stopping_) return;
      syncWanted_ = false;
    }
    Status s = flush();
    if (!s) log::warn("recording cache state: {}", s.message());
    sweepWaiters();
    releaseIdleAllocations();
    settleStates();
    // Forget idle, fully recorded files: complete ones at once (they raise no events while
    // their ignore mark lasts, and a loaded file's open descriptor would pin its inode, and
    // with it the mark, against reclaim), partial ones beyond a bound. The index has their
    // state; the next request loads it again.
    std::lock_guard lock(mu_);
    for (auto it = files_.begin(); it != files_.end();) {
      auto& fs = it->second;
      bool forget = false;
      if (fs.use_count() == 1) {
        std::lock_guard fl(fs->mu);
        // A file whose state attribute waits for its last close stays (up to the bound).
        forget = !fs->dirty && fs->flights.empty() && fs->waiters.empty() &&
                 ((fs->fullDurable && !fs->content->statePending()) || files_.size() > kKeepLoaded);
      }
      it = forget ? files_.erase(it) : std::next(it);
    }
  }
}

Result<FileInfo> Hydrator::info(const std::string& path) {
  FileInfo fi;
  fi.path = path;
  {
    std::lock_guard lock(mu_);
    auto it = files_.find(path);
    if (it != files_.end()) {
      auto& fs = it->second;
      std::lock_guard fl(fs->mu);
      fi.size = fs->size;
      fi.bytesPresent = fs->present.bytesPresent();
      fi.bytesDurable = fs->durable.bytesPresent();
      fi.state = fs->present.full() ? cache::State::kFull
                                    : (fs->present.empty() ? cache::State::kEmpty
                                                           : cache::State::kPartial);
      return fi;
    }
  }
  auto row = cache_.entry(path);
  if (!row) return row.status();
  if (!row->has_value() || (*row)->type != EntryType::kFile) {
    return Status::error(ENOENT, fmt::format("'{}' is not a file of the mirrored tree", path));
  }
  fi.size = (*row)->size;
  fi.bytesPresent = fi.bytesDurable = (*row)->bytesPresent;
  fi.state = static_cast<cache::State>((*row)->state);
  return fi;
}

Result<Hydrator::ReleaseResult> Hydrator::release(const std::vector<ReleaseRequest>& files,
                                                  const std::function<Status(int fd)>& beforePunch) {
  ReleaseResult result;
  std::vector<std::string> claimed;  // in releasing_
  std::vector<std::shared_ptr<FileState>> unloaded;  // destroyed outside mu_
  // 1. Claim the paths: unload idle files, refuse busy ones, block loads. A file with no
  // fetch running and nothing unrecorded whose shared state is still referenced (the sync
  // thread recording it, a request on its fast path, a fetch that has published all its
  // bytes and is ending: all short) is tried again a few times, at most 50 ms, instead of
  // being called busy.
  std::vector<const ReleaseRequest*> pending;
  for (const auto& r : files) pending.push_back(&r);
  for (int attempt = 0; !pending.empty(); ++attempt) {
    std::vector<const ReleaseRequest*> transient;
    {
      std::lock_guard lock(mu_);
      for (const ReleaseRequest* r : pending) {
        if (releasing_.contains(r->path) || loading_.contains(r->path)) {
          result.busy++;
          continue;
        }
        auto it = files_.find(r->path);
        if (it != files_.end()) {
          auto& fs = it->second;
          bool quiet, settled;  // nothing fetching or unrecorded; and no flight left at all
          {
            std::lock_guard fl(fs->mu);
            quiet = !fs->dirty && fs->inflight.empty() && fs->waiters.empty();
            // A flight whose bytes are all published (its readers answered) is ending.
            settled = quiet && fs->flights.empty();
          }
          if (!settled || fs.use_count() != 1) {
            if (quiet && attempt < 25) {
              transient.push_back(r);
            } else {
              result.busy++;
            }
            continue;
          }
          unloaded.push_back(std::move(fs));
          files_.erase(it);
        }
        releasing_.insert(r->path);
        claimed.push_back(r->path);
      }
    }
    pending = std::move(transient);
    if (!pending.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  unloaded.clear();  // closes the read-write descriptors this class held
  struct Unclaim {
    Hydrator* h;
    std::vector<std::string>& paths;
    ~Unclaim() {
      {
        std::lock_guard lock(h->mu_);
        for (const auto& p : paths) h->releasing_.erase(p);
      }
      h->releasedCv_.notify_all();
    }
  } unclaim{this, claimed};

  // 2.-6. The cache's release protocol (cache::releaseContent), for the claimed files.
  std::unordered_set<std::string> claimedSet(claimed.begin(), claimed.end());
  std::vector<cache::ReleaseRequest> mine;
  for (const auto& r : files) {
    if (claimedSet.contains(r.path)) mine.push_back(r);
  }
  auto released = cache::releaseContent(cache_, mine, beforePunch, config_.io);
  if (!released) return released.status();
  result += *released;
  releasedFiles_ += result.files;
  releasedBytes_ += result.bytes;
  releaseBusy_ += result.busy;
  return result;
}

void Hydrator::forget(const std::string& path) {
  std::lock_guard lock(mu_);
  ++forgetEpoch_;
  const std::string below = path + "/";
  for (auto it = files_.begin(); it != files_.end();) {
    bool match = it->first == path || it->first.compare(0, below.size(), below) == 0;
    if (match) {
      // A reader may hold the replaced inode: a complete one reads whole if its attribute
      // says so (completeReplaced() covers the moment before this).
      std::lock_guard fl(it->second->mu);
      it->second->content->settleState(/*force=*/true);
    }
    it = match ? files_.erase(it) : std::next(it);
  }
}

bool Hydrator::completeReplaced(uint64_t ino) {
  std::lock_guard lock(mu_);
  for (auto& [path, fs] : files_) {
    std::lock_guard fl(fs->mu);
    if (fs->content->ino() != ino) continue;
    if (!fs->fullDurable) return false;
    fs->content->settleState(/*force=*/true);
    return true;
  }
  return false;
}

HydratorStats Hydrator::stats() const {
  HydratorStats s;
  s.fetches = fetches_;
  s.fetchedBytes = fetchedBytes_;
  s.fetchErrors = fetchErrors_;
  s.readaheadFetches = readaheadFetches_;
  s.waits = waits_;
  s.filesCompleted = filesCompleted_;
  s.releasedFiles = releasedFiles_;
  s.releasedBytes = releasedBytes_;
  s.releaseBusy = releaseBusy_;
  s.hits = hits_;
  s.misses = misses_;
  s.errNoSpace = errNoSpace_;
  s.errStale = errStale_;
  s.errGone = errGone_;
  s.errAccess = errAccess_;
  s.errOther = errOther_;
  s.syncErrors = syncErrors_;
  s.cancelledFetches = cancelledFetches_;
  s.abandoned = abandoned_;
  s.remembered = remembered_;
  s.preempted = preempted_;
  s.parked = parked_;
  s.scheduler = scheduler_.stats();
  s.fetchLatency = fetchLatency_.counts();
  s.ensureLatency = ensureLatency_.counts();
  return s;
}

}  // namespace hsm::core

