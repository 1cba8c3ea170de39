#include "core/hydrator.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

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
  std::string version;
  uint64_t size = 0;
  int64_t mtimeNs = 0;  // the remote's mtime, restored after writes
  ChunkMap present;   // written to the cache file
  ChunkMap durable;   // recorded in the index
  ChunkMap inflight;  // owned by a flight
  std::vector<std::shared_ptr<Flight>> flights;
  UniqueFd fd;        // read-write, on the private path
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

// Writes fetched bytes into the cache file. Runs of zeros are skipped: the cache file is
// sparse (zeros) wherever nothing was written, so the result is byte-identical and sparse
// source files stay sparse in the cache.
class CacheFileSink final : public remote::ByteSink {
 public:
  // `progress(next)` is called after each write with the new end of the written bytes.
  CacheFileSink(int fd, uint64_t begin, std::function<void(uint64_t)> progress)
      : fd_(fd), next_(begin), progress_(std::move(progress)) {}
  Status write(uint64_t offset, const char* data, size_t length) override {
    if (offset != next_) {
      return Status::error(EIO, fmt::format("remote delivered offset {} where {} was expected",
                                            offset, next_));
    }
    if (!allZero(data, length)) {
      size_t done = 0;
      while (done < length) {
        ssize_t n = ::pwrite(fd_, data + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0) {
          if (errno == EINTR) continue;
          return Status::fromErrno(errno, "write to cache");
        }
        done += static_cast<size_t>(n);
      }
    }
    next_ += length;
    progress_(next_);
    return Status::ok();
  }
  uint64_t next() const { return next_; }

 private:
  static bool allZero(const char* p, size_t n) {
    if (n == 0) return true;
    return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
  }
  int fd_;
  uint64_t next_;
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

namespace {

int64_t realtimeNs() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

struct timespec toTimespec(int64_t ns) {
  int64_t sec = ns / 1000000000, nsec = ns % 1000000000;
  if (nsec < 0) {
    nsec += 1000000000;
    sec -= 1;
  }
  return {static_cast<time_t>(sec), static_cast<long>(nsec)};
}

// Gives the cache file the remote's mtime, and the same atime: with relatime (the view's
// default) the next read through the view then moves atime to the time of that read, which
// tells the evictor the file was used (see Evictor).
void restoreTimes(int fd, int64_t mtimeNs, const std::string& path) {
  struct timespec ts[2] = {toTimespec(mtimeNs), toTimespec(mtimeNs)};
  if (::futimens(fd, ts) != 0) log::warn("restoring the mtime of '{}': {}", path, std::strerror(errno));
}

void setStateAttr(int fd, cache::State state, const std::string& path) {
  const char* v = cache::stateName(state);
  if (::fsetxattr(fd, cache::kStateXattr, v, std::strlen(v), 0) != 0 && errno != ENOTSUP) {
    log::warn("setting {} on '{}': {}", cache::kStateXattr, path, std::strerror(errno));
  }
}

}  // namespace

Result<std::shared_ptr<Hydrator::FileState>> Hydrator::file(const std::string& path) {
  {
    std::unique_lock lock(mu_);
    while (true) {
      auto it = files_.find(path);
      if (it != files_.end()) return it->second;
      if (!releasing_.contains(path)) break;
      releasedCv_.wait(lock);  // a release takes milliseconds (no remote I/O)
    }
    ++loading_[path];
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
  auto row = cache_.db().get(path);
  if (!row) return row.status();
  if (!row->has_value() || (*row)->type != EntryType::kFile) {
    return Status::error(ENOENT, fmt::format("'{}' is not a file of the mirrored tree", path));
  }
  const cache::EntryRow& r = **row;
  auto fs = std::make_shared<FileState>();
  fs->path = path;
  fs->version = r.version;
  fs->size = r.size;
  fs->mtimeNs = r.mtimeNs;
  auto fd = cache_.openBeneath(path, O_RDWR | O_NOFOLLOW);
  if (!fd) return fd.status();
  fs->fd = std::move(*fd);
  struct stat st {};
  if (::fstat(fs->fd.get(), &st) != 0) return Status::fromErrno(errno, "fstat cache file");
  auto map = ChunkMap::deserialize(r.present, r.size, config_.chunkSize);
  if (static_cast<uint64_t>(st.st_size) != r.size) {
    // The cache file does not match the index (crash between create and record): start
    // over with a sparse file of the right size.
    log::warn("cache file '{}' has size {} instead of {}: discarding its content", path,
              st.st_size, r.size);
    if (::ftruncate(fs->fd.get(), 0) != 0 ||
        ::ftruncate(fs->fd.get(), static_cast<off_t>(r.size)) != 0) {
      return Status::fromErrno(errno, fmt::format("truncate cache file '{}'", path));
    }
    map.reset();
  }
  if (r.state == static_cast<int>(cache::State::kFull) && map && !map->full()) map.reset();
  fs->present = map ? *map : ChunkMap(r.size, config_.chunkSize);
  fs->durable = fs->present;
  fs->inflight = ChunkMap(r.size, config_.chunkSize);
  fs->fullDurable = fs->present.full();

  std::lock_guard lock(mu_);
  auto [it, inserted] = files_.emplace(path, fs);
  return it->second;  // another thread may have loaded it first: use that one
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
  CacheFileSink sink(fs->fd.get(), begin, [&](uint64_t next) {
    publishUpTo(next >= end ? f->last : next / config_.chunkSize);
  });
  Status s = remote_.read(fs->path, fs->version, begin, end - begin, sink);
  if (s && sink.next() != end) {
    s = Status::error(EIO, fmt::format("remote delivered {} of {} bytes of '{}' at {}",
                                       sink.next() - begin, end - begin, fs->path, begin));
  }
  // Writing moved the cache file's mtime; the view must show the remote's.
  if (published > f->first) restoreTimes(fs->fd.get(), fs->mtimeNs, fs->path);
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

Result<bool> Hydrator::ensure(const std::string& path, uint64_t offset, uint64_t length) {
  auto fsr = file(path);
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
    if (!fs->present.full()) {
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
  int rc = full ? ::fsync(fs->fd.get()) : ::fdatasync(fs->fd.get());
  Status s;
  if (rc != 0) {
    s = Status::fromErrno(errno, fmt::format("sync cache file '{}'", fs->path));
  } else {
    cache::ContentUpdate u;
    u.path = fs->path;
    u.version = fs->version;
    u.state = full ? cache::State::kFull
                   : (snapshot.empty() ? cache::State::kEmpty : cache::State::kPartial);
    u.present = snapshot.serialize();
    u.bytesPresent = snapshot.bytesPresent();
    u.accessNs = realtimeNs();
    s = cache_.db().recordContent({u});
    if (s) setStateAttr(fs->fd.get(), u.state, fs->path);
  }
  std::lock_guard lock(fs->mu);
  if (!s) {
    fs->dirty = true;  // try again later
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
  auto row = cache_.db().get(path);
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
  struct Leased {
    const ReleaseRequest* req;
    UniqueFd fd;
    uint64_t size = 0;
    int64_t mtimeNs = 0;
    uint64_t bytesPresent = 0;
  };
  std::vector<Leased> leased;
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

  // 2. Lease every claimed file no one has open.
  std::unordered_set<std::string> claimedSet(claimed.begin(), claimed.end());
  for (const auto& r : files) {
    if (!claimedSet.contains(r.path)) continue;
    auto fd = cache_.openBeneath(r.path, O_RDWR | O_NOFOLLOW);
    if (!fd) {
      result.gone++;
      continue;
    }
    if (::fcntl(fd->get(), F_SETLEASE, F_WRLCK) != 0) {
      if (errno != EAGAIN && errno != EBUSY) {
        log::warn("release '{}': write lease: {}", r.path, std::strerror(errno));
      }
      result.busy++;
      continue;
    }
    auto row = cache_.db().get(r.path);
    if (!row || !row->has_value() || (*row)->version != r.version ||
        (*row)->type != EntryType::kFile) {
      ::fcntl(fd->get(), F_SETLEASE, F_UNLCK);
      result.gone++;
      continue;
    }
    leased.push_back({&r, std::move(*fd), (*row)->size, (*row)->mtimeNs, (*row)->bytesPresent});
  }
  auto unlease = [&] {
    for (auto& l : leased) ::fcntl(l.fd.get(), F_SETLEASE, F_UNLCK);
  };
  // 3. No one can open them now.
  std::erase_if(leased, [&](Leased& l) {
    Status s = beforePunch(l.fd.get());
    if (s) return false;
    log::warn("release '{}': {}; keeping its content", l.req->path, s.message());
    ::fcntl(l.fd.get(), F_SETLEASE, F_UNLCK);
    result.failed++;
    return true;
  });
  // 4. Record them empty, durably, before a single byte is punched out.
  std::vector<std::pair<std::string, std::string>> pv;
  pv.reserve(leased.size());
  for (auto& l : leased) pv.emplace_back(l.req->path, l.req->version);
  auto recorded = cache_.db().releaseContent(pv);
  if (!recorded) {
    unlease();
    return recorded.status();
  }
  // 5. Punch.
  Status firstError;
  for (auto& l : leased) {
    // Past EOF up to a block boundary: a partial last block is otherwise only zeroed, not
    // freed (KEEP_SIZE leaves the size alone).
    const uint64_t punchLen = (l.size + 65535) & ~uint64_t{65535};
    if (l.size > 0 && ::fallocate(l.fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                                  static_cast<off_t>(punchLen)) != 0) {
      // Recorded empty already: the bytes left behind are fetched again, never trusted.
      if (firstError) firstError = Status::fromErrno(errno, fmt::format("punch '{}'", l.req->path));
    }
    restoreTimes(l.fd.get(), l.mtimeNs, l.req->path);
    setStateAttr(l.fd.get(), l.size == 0 ? cache::State::kFull : cache::State::kEmpty, l.req->path);
    result.files++;
    result.bytes += l.bytesPresent;
  }
  // 6. Let blocked opens continue.
  unlease();
  releasedFiles_ += result.files;
  releasedBytes_ += result.bytes;
  releaseBusy_ += result.busy;
  if (!firstError) log::warn("release: {}", firstError.message());
  return result;
}

void Hydrator::forget(const std::string& path) {
  std::lock_guard lock(mu_);
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
  s.fetchLatency = fetchLatency_.counts();
  s.ensureLatency = ensureLatency_.counts();
  return s;
}

}  // namespace hsm::core
