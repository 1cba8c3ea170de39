#include "core/hydrator.h"

#include <algorithm>
#include <cstring>
#include <functional>
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
  Status status;
};

struct Hydrator::FileState {
  std::mutex syncMu;  // rank 15: serializes syncFile() of this file
  std::mutex mu;      // rank 20: everything below
  std::condition_variable cv;
  std::string path;
  std::unique_ptr<cache::ContentFile> content;  // version, inode, size, descriptor
  uint64_t size = 0;  // content->size()
  ChunkMap present;   // written to the cache file
  ChunkMap durable;   // recorded in the index
  ChunkMap inflight;  // owned by a flight
  std::vector<std::shared_ptr<Flight>> flights;
  bool allocated = false;   // prepareOpen() allocated the missing chunks of this inode
  uint64_t nextExpected = 0;
  uint64_t raFrontier = 0;  // readahead has been scheduled up to this chunk
  unsigned seqHits = 0;
  bool seen = false;
  bool dirty = false;
  bool fullDurable = false;

  std::shared_ptr<Flight> flightFor(uint64_t chunk) const {
    for (const auto& f : flights) {
      if (chunk >= f->first && chunk < f->last) return f;
    }
    return nullptr;
  }
};

namespace {

// Hands fetched bytes to the cache file (ContentFile::write). Checks that they come in
// order and inside the flight's range: nothing outside it is written.
class CacheFileSink final : public remote::ByteSink {
 public:
  // `progress(next)` is called after each write with the new end of the written bytes.
  CacheFileSink(const cache::ContentFile& file, uint64_t begin, uint64_t end,
                std::function<void(uint64_t)> progress)
      : file_(file), next_(begin), end_(end), progress_(std::move(progress)) {}
  Status write(uint64_t offset, const char* data, size_t length) override {
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
  uint64_t next() const { return next_; }

 private:
  const cache::ContentFile& file_;
  uint64_t next_;
  const uint64_t end_;
  std::function<void(uint64_t)> progress_;
};

}  // namespace

Hydrator::Hydrator(remote::Remote& remote, cache::CacheStore& cache, HydratorConfig config)
    : remote_(remote),
      cache_(cache),
      config_(config),
      readaheadPool_(std::max<size_t>(1, config.readaheadThreads), "fanhsm-fetch") {
  syncThread_ = std::thread([this] { syncLoop(); });
}

Hydrator::~Hydrator() {
  readaheadPool_.stop();
  {
    std::lock_guard lock(syncMu_);
    stopping_ = true;
  }
  syncCv_.notify_all();
  if (syncThread_.joinable()) syncThread_.join();
  Status s = flush();
  if (!s) log::error("recording cache state on stop: {}", s.message());
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

std::shared_ptr<Hydrator::Flight> Hydrator::startFlightLocked(FileState& fs, uint64_t first,
                                                             uint64_t limit) {
  auto f = std::make_shared<Flight>();
  f->first = first;
  uint64_t maxChunks = std::max<uint64_t>(1, config_.maxFetch / config_.chunkSize);
  if (!remote_.supportsRanges()) {
    // Every read streams from the start of the file: one flight to the end, published
    // as it arrives, instead of the prefix again for every chunk.
    maxChunks = UINT64_MAX;
    limit = fs.present.chunkCount();
  }
  uint64_t c = first;
  while (c < limit && c - first < maxChunks && !fs.present.has(c) && !fs.inflight.has(c)) {
    fs.inflight.set(c);
    ++c;
  }
  f->last = c;
  fs.flights.push_back(f);
  return f;
}

void Hydrator::runFlight(const std::shared_ptr<FileState>& fs, const std::shared_ptr<Flight>& f) {
  const uint64_t begin = fs->present.chunkBegin(f->first);
  const uint64_t end = std::min(fs->size, fs->present.chunkBegin(f->last));
  fetches_++;
  if (f->readahead) readaheadFetches_++;
  const auto started = std::chrono::steady_clock::now();
  // Chunks are published as soon as they are written, so a reader waiting for the start
  // of a long flight does not wait for its end.
  uint64_t published = f->first;
  auto publishUpTo = [&](uint64_t endChunk) {
    if (endChunk <= published) return;
    {
      std::lock_guard lock(fs->mu);
      for (uint64_t c = published; c < endChunk; ++c) {
        fs->inflight.reset(c);
        fs->present.set(c);
      }
      fs->dirty = true;
    }
    published = endChunk;
    fs->cv.notify_all();
  };
  CacheFileSink sink(*fs->content, begin, end, [&](uint64_t next) {
    publishUpTo(next >= end ? f->last : next / config_.chunkSize);
  });
  Status s = remote_.read(fs->path, fs->content->version(), begin, end - begin, sink);
  if (s && sink.next() != end) {
    s = Status::error(EIO, fmt::format("remote delivered {} of {} bytes of '{}' at {}",
                                       sink.next() - begin, end - begin, fs->path, begin));
  }
  // Writing moved the cache file's mtime; the view must show the remote's.
  if (published > f->first) fs->content->restoreTimes();
  fetchLatency_.record(std::chrono::steady_clock::now() - started);
  if (s) {
    fetchedBytes_ += end - begin;
  } else {
    fetchedBytes_ += fs->present.chunkBegin(published) - begin;
    fetchErrors_++;
    switch (s.code()) {
      case ENOSPC:
      case EDQUOT:
        errNoSpace_++;
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
    log::warn("fetch '{}' [{}, {}): {}", fs->path, begin, end, s.message());
  }
  bool nowFull = false;
  {
    std::lock_guard lock(fs->mu);
    for (uint64_t c = published; c < f->last; ++c) {
      fs->inflight.reset(c);
      if (s) fs->present.set(c);
    }
    if (s) fs->dirty = true;
    f->done = true;
    f->status = s;
    std::erase(fs->flights, f);
    nowFull = fs->present.full();
  }
  fs->cv.notify_all();
  if (nowFull) {
    {
      std::lock_guard wake(syncMu_);
      syncWanted_ = true;
    }
    syncCv_.notify_one();
  }
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
    auto f = startFlightLocked(*fs, c, limit);
    f->readahead = true;
    c = f->last - 1;
    // The task fails its flight if the pool drops it, so no waiter is left hanging.
    struct Task {
      Hydrator* h = nullptr;
      std::shared_ptr<FileState> fs;
      std::shared_ptr<Flight> f;
      bool ran = false;
      ~Task() {
        if (ran || !fs) return;
        {
          std::lock_guard lock(fs->mu);
          for (uint64_t k = f->first; k < f->last; ++k) fs->inflight.reset(k);
          f->done = true;
          f->status = Status::error(ECANCELED, "fetch cancelled: daemon stopping");
          std::erase(fs->flights, f);
        }
        fs->cv.notify_all();
      }
    };
    auto task = std::make_shared<Task>();  // built in place: no temporary to destroy here
    task->h = this;
    task->fs = fs;
    task->f = f;
    readaheadPool_.post([task] {
      task->ran = true;
      task->h->runFlight(task->fs, task->f);
    });
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

Result<bool> Hydrator::prepareOpen(const std::string& path, uint64_t ino) {
  auto fsr = fileFor(path, ino);
  if (!fsr) return fsr.status();
  std::shared_ptr<FileState> fs = *fsr;
  if (fs->size <= config_.chunkSize) {
    // One chunk: fetched whole now, which is what its first read would fetch. A complete
    // file is right for every tool, also those that ask SEEK_DATA without looking at
    // st_blocks. If the fetch fails, the open goes on with an allocation: its reads fail
    // with the fetch's error then, where the reader expects one.
    auto whole = ensure(path, 0, fs->size, ino);
    if (whole) return *whole;
  }
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // missing chunks
  {
    std::lock_guard lock(fs->mu);
    if (fs->fullDurable) return true;
    if (fs->allocated) return false;
    runs = cache::chunkRuns(fs->present, [&](uint64_t c) { return !fs->present.has(c); });
  }
  // Without a lock: a flight writing into a run meanwhile keeps its bytes (allocating
  // leaves written blocks alone), and a run written already is allocated already. No room:
  // the caller goes on without (releasing cached content for an allocation that lasts
  // only while the file is open would empty the cache for one look at a huge file); what
  // was allocated before the failure is given back at the close as usual.
  HSM_RETURN_IF_ERROR(fs->content->allocate(runs));
  std::lock_guard lock(fs->mu);
  fs->allocated = true;
  return false;
}

Result<bool> Hydrator::releaseAllocation(const std::string& path, uint64_t ino) {
  auto fsr = fileFor(path, ino);
  if (!fsr) return fsr.status();
  std::shared_ptr<FileState> fs = *fsr;
  // Under the file's lock: no flight can start on a chunk while it is punched (a flight
  // owns its chunks, marked inflight under this lock, before it writes). Punching ranges
  // without data is a short metadata operation, and the lease is held for no longer.
  std::lock_guard lock(fs->mu);
  if (fs->present.full()) return false;
  // Granted only if no other open file of the inode exists (ours is read-write: no other
  // writer and no reader; an open in progress counts as a reader before it raises its
  // open event). The kernel signals us (SIGIO, ignored) if an open has to wait for it.
  if (!fs->content->tryLease()) return false;
  Status s = fs->content->punch(cache::chunkRuns(
      fs->present, [&](uint64_t c) { return !fs->present.has(c) && !fs->inflight.has(c); }));
  fs->content->unlease();
  HSM_RETURN_IF_ERROR(s);
  fs->allocated = false;
  return true;
}

Result<bool> Hydrator::ensure(const std::string& path, uint64_t offset, uint64_t length,
                              uint64_t ino) {
  auto fsr = fileFor(path, ino);
  if (!fsr) return fsr.status();
  std::shared_ptr<FileState> fs = *fsr;
  const auto started = std::chrono::steady_clock::now();
  bool missed = false;
  struct LatencyRecord {
    Hydrator* h;
    const std::chrono::steady_clock::time_point& started;
    const bool& missed;
    ~LatencyRecord() {
      if (missed) h->ensureLatency_.record(std::chrono::steady_clock::now() - started);
      (missed ? h->misses_ : h->hits_)++;
    }
  } latencyRecord{this, started, missed};
  {
    std::unique_lock lock(fs->mu);
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
      bool freedSpace = false;
      uint64_t c = first;
      while (c < last) {
        if (fs->present.has(c)) {
          ++c;
          continue;
        }
        missed = true;
        if (auto other = fs->flightFor(c)) {
          waits_++;
          fs->cv.wait(lock, [&] { return other->done || fs->present.has(c); });
          if (!fs->present.has(c) && !other->status) return other->status;
          continue;  // re-check c: it is present now
        }
        auto mine = startFlightLocked(*fs, c, last);
        lock.unlock();
        runFlight(fs, mine);
        const int err = mine->status ? 0 : mine->status.code();
        // A full cache filesystem: free space (without our locks) and try once more.
        const bool retry = (err == ENOSPC || err == EDQUOT) && !freedSpace && config_.onCacheFull &&
                           config_.onCacheFull();
        lock.lock();
        if (retry) {
          freedSpace = true;
          continue;
        }
        if (!mine->status) return mine->status;
      }
    }
    // A file that just became complete is recorded by the sync thread (fsync, then the
    // index), not on this reader's path: an fsync per completed file would dominate a walk
    // of small files. Until it is recorded this returns false, so the frontend keeps
    // watching the file; a later request sees it durable (and sets the ignore mark).
    if (fs->present.full() && !fs->fullDurable) {
      lock.unlock();
      {
        std::lock_guard wake(syncMu_);
        syncWanted_ = true;
      }
      syncCv_.notify_one();
      return false;
    }
    return fs->fullDurable;
  }
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
        forget = !fs->dirty && fs->flights.empty() &&
                 (fs->fullDurable || files_.size() > kKeepLoaded);
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
  // thread recording it, a request on its fast path: both short) is tried again a few
  // times, at most 50 ms, instead of being called busy.
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
          bool quiet;  // no fetch running, nothing unrecorded
          {
            std::lock_guard fl(fs->mu);
            quiet = !fs->dirty && fs->flights.empty();
          }
          if (!quiet || fs.use_count() != 1) {
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
    it = match ? files_.erase(it) : std::next(it);
  }
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
  s.fetchLatency = fetchLatency_.counts();
  s.ensureLatency = ensureLatency_.counts();
  return s;
}

}  // namespace hsm::core
