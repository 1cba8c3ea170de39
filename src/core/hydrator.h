// Hydrator: the only caller of Remote::read(). Decides what to fetch and when, and who
// waits: merges concurrent requests, reads ahead for sequential readers, and hands what
// arrives to the cache (cache::ContentFile), whose state machine writes, commits and
// releases it.
//
// Design note
// - Files are cut into chunks (HydratorConfig::chunkSize). A fetch ("flight") covers a run
//   of missing chunks, at most maxFetch bytes. A chunk is in one of three in-memory sets
//   per file: present (written to the cache file), inflight (a flight owns it), or
//   missing. Callers that need an inflight chunk wait for its flight and share its result:
//   concurrent readers of one cold chunk cause one remote read.
// - Bytes are written through the cache's private path (never the view), so they raise no
//   fanotify events. A reader is let through as soon as its chunks are written (the page
//   cache is coherent); durability is recorded later: a sync thread commits files with new
//   chunks (ContentFile::commit: sync, then record). After a crash, unrecorded chunks are
//   simply fetched again; recorded chunks are never holes.
// - A file that becomes complete is fsync()ed and recorded as full by the sync thread (woken
//   at once) before ensure() reports it full, so a frontend may stop watching it (fanotify
//   ignore mark) from then on; the reader that completed it does not wait for the fsync.
// - Sequential access (a request starting where the previous one ended) schedules
//   readahead of the next `readahead` bytes, in flights of maxFetch.
// - No caller's thread waits for the remote (ensureAsync): a request whose range is not
//   present is parked (a Waiter: a table entry, not a thread) and answered by the fetch
//   thread that completes or fails its range. Flights run on a FetchScheduler: at most
//   `connections` at a time (not counting long ones, up to maxConnections), demand before
//   readahead, fair across files; a request that needs a chunk of a queued readahead
//   flight promotes it. ensure() is the blocking form.
// - A parked request whose requester is gone (its `alive` check fails; checked by the sync
//   thread every syncInterval) is dropped, and a demand flight no live request needs any
//   more is cancelled: the Remote sees ByteSink::cancelled() and stops within about a
//   second. Readahead is cancelled when no one has the file open (releaseAllocation(),
//   and the sweep), and gives way to a waiting reader when every connection is busy.
// - Remote errors fail the requests waiting on that flight; the chunks go back to missing
//   and a request after HydratorConfig::failureMemory tries again (before it, it gets the
//   same error at once). Bytes from a failed fetch are never marked present.
// - A failed sync makes the chunks written since the last record missing again (the kernel
//   reports the error once: a retry on the same descriptor would hide it).
// - Each loaded file is one ContentFile: one version on one cache inode, the one its index
//   row names. A request from a reader of another inode (the file changed since it was
//   opened) fails with ESTALE instead of filling the wrong one.
//
// Thread-safety: all methods are thread-safe. Locks: files map (rank 10) -> per-file
// (rank 20) -> active files (rank 22, leaf) -> MetaDb (rank 30). No lock is held across
// remote reads or fdatasync, and callbacks (Done) are called with none held.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <functional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/cache_store.h"
#include "cache/content_file.h"
#include "remote/remote.h"
#include "core/fetch_scheduler.h"
#include "util/percentile_histogram.h"

namespace hsm::core {

struct HydratorConfig {
  // The bound on fetches running at once, long ones included (see maxConnections).
  static size_t fetchesAtMost(size_t connections, size_t maxConnections) {
    return maxConnections ? std::max(maxConnections, connections) : 8 * connections;
  }
  uint64_t chunkSize = 1 << 20;
  uint64_t maxFetch = 8 << 20;
  uint64_t readahead = 32 << 20;
  // Fetches running at a time (the concurrency limit towards the source); readahead uses
  // at most readaheadThreads of them. A fetch running longer than longFetch stops counting
  // for reads that wait: one starts beside it, up to maxConnections in all (0: 8 times
  // `connections`), so readers stuck on a dripping file never hold up the others.
  size_t connections = 64;
  size_t maxConnections = 0;
  std::chrono::milliseconds longFetch{2000};
  size_t readaheadThreads = 4;
  std::chrono::milliseconds syncInterval{200};
  // A fetch that failed (not cancelled, not for lack of space) is remembered this long:
  // requests for its chunks get its error at once instead of asking the source again (a
  // reader retrying in a loop must not hammer a failing server).
  std::chrono::milliseconds failureMemory{1000};
  // A source without range support streams every read from the start of the file. A
  // flight then runs to the end of the file (one stream instead of the prefix again for
  // every later read) only if that is at most this many bytes; otherwise it ends with the
  // range asked for (the prefix is streamed past, not cached), so one small read of a
  // huge file cannot fill the cache (with a quota: a quarter of it).
  uint64_t streamToEofLimit = UINT64_MAX;
  // Called by ensure() (no lock held) when a write to the cache failed because its
  // filesystem is full (ENOSPC, EDQUOT): frees space now if it can and returns true if
  // it did; ensure() then tries once more, else fails with that error.
  std::function<bool()> onCacheFull;
  // The cache's file system calls (tests inject failures here; empty: the real ones).
  cache::CacheIo io;
};

struct FileInfo {
  std::string path;
  cache::State state = cache::State::kEmpty;
  uint64_t size = 0;
  uint64_t bytesPresent = 0;  // written to the cache (may not all be durable yet)
  uint64_t bytesDurable = 0;  // recorded in the index
};

struct HydratorStats {
  uint64_t fetches = 0;          // remote reads started
  uint64_t fetchedBytes = 0;     // bytes written to the cache
  uint64_t fetchErrors = 0;
  uint64_t readaheadFetches = 0;
  uint64_t waits = 0;            // requests that waited for another request's fetch
  uint64_t filesCompleted = 0;
  uint64_t releasedFiles = 0;  // release(): files whose content was freed
  uint64_t releasedBytes = 0;
  uint64_t releaseBusy = 0;    // release(): files skipped because in use
  uint64_t hits = 0;           // ensure() calls that found every chunk present
  uint64_t misses = 0;         // ensure() calls that waited for a fetch
  // Failed fetches by cause: the cache filesystem full, the remote changed (ESTALE) or
  // removed (ENOENT) the file, permission, anything else (EIO, timeouts...).
  uint64_t errNoSpace = 0, errStale = 0, errGone = 0, errAccess = 0, errOther = 0;
  uint64_t syncErrors = 0;  // failed fsync/fdatasync: the chunks written since are refetched
  uint64_t cancelledFetches = 0;  // stopped because no live request needed them
  uint64_t abandoned = 0;         // parked requests dropped because their requester was gone
  uint64_t remembered = 0;        // requests failed at once with a recent fetch's error
  uint64_t preempted = 0;         // readahead fetches stopped for a waiting reader
  uint64_t parked = 0;            // requests waiting for a fetch now
  FetchSchedulerStats scheduler;
  PercentileHistogram::Counts fetchLatency;   // one remote read (a flight)
  PercentileHistogram::Counts ensureLatency;  // one ensure() that was a miss
};

class Hydrator {
 public:
  Hydrator(remote::Remote& remote, cache::CacheStore& cache, HydratorConfig config);
  ~Hydrator();  // stops readahead and the sync thread, then records what is durable
  Hydrator(const Hydrator&) = delete;
  Hydrator& operator=(const Hydrator&) = delete;

  // Makes [offset, offset+length) of the file at `path` present (clipped to its size) and
  // blocks until it is. Returns true if the whole file is now present and durably
  // recorded. A zero-length range fetches nothing. `ino`, if not 0, is the cache inode the
  // caller reads (the frontend's open file): if the name now refers to another inode (the
  // remote changed the file since it was opened) the request fails with ESTALE instead of
  // filling a file the caller does not read. Errors: ENOENT (not a file of the tree),
  // ESTALE (remote changed), the remote's errno, ENOSPC/EIO from the cache filesystem.
  Result<bool> ensure(const std::string& path, uint64_t offset, uint64_t length,
                      uint64_t ino = 0);

  // What ensure() and prepareOpen() return, delivered to a callback. Called exactly once,
  // with no lock of this class held: before ensureAsync() returns (the range is present,
  // or an immediate error), or later on a fetch thread. Must not block for long.
  using Done = std::function<void(Result<bool>)>;
  // Whether the requester still waits (e.g. its process is alive). Called from the sync
  // thread with a file lock held: must be quick and must not call into this class.
  using Alive = std::function<bool()>;
  // ensure() without waiting: the request is parked until its range lands or fails. A
  // request whose `alive` turns false is answered with ECANCELED and its fetches, unless
  // another request needs them, are cancelled. After shutdown(): EIO at once.
  void ensureAsync(const std::string& path, uint64_t offset, uint64_t length, uint64_t ino,
                   Done done, Alive alive = {});

  // A file of `path` (cache inode `ino`, as in ensure()) is being opened. A file of one
  // chunk is fetched whole (what its first read would fetch). Otherwise, unless it is
  // complete, its missing chunks are allocated (unwritten extents: they read as zeros and
  // cost disk space until releaseAllocation() or release()), so that st_blocks no longer
  // says "sparse" and copy tools (cp, tar --sparse) read it instead of asking SEEK_DATA,
  // which raises no event (docs/SEMANTICS.md, 10). Returns true if the file is complete
  // and durably recorded (the frontend may stop watching it). Errors: as ensure(), and
  // ENOSPC/EDQUOT when the cache filesystem has no room for the allocation (no content is
  // released for it: it lasts only while the file is open).
  Result<bool> prepareOpen(const std::string& path, uint64_t ino);
  // prepareOpen() without waiting for the fetch of a one-chunk file (as ensureAsync()).
  void prepareOpenAsync(const std::string& path, uint64_t ino, Done done, Alive alive = {});
  // A file was closed: if no one has it open any more (a write lease on this class's own
  // descriptor is granted only then; new opens wait while it is held), the chunks still
  // missing and not being fetched are punched out again, so the allocation lasts only
  // while the file is open. Returns whether it did. The sync thread tries again for
  // allocated files every syncInterval, so a close handled while something else still
  // held the file is not the last chance. Errors: as ensure() (ESTALE if `path`
  // now names another inode than `ino`).
  Result<bool> releaseAllocation(const std::string& path, uint64_t ino);
  // Whether prepareOpen() allocated missing ranges of `path` that releaseAllocation() has
  // not given back yet (false if the file is not loaded: its next load gives back what is
  // allocated beyond the recorded chunks when no one has it open). A frontend watches the
  // closes only of such files: a queued close notification holds the file, and with it
  // the mount, until it is read.
  bool allocated(const std::string& path);

  Result<FileInfo> info(const std::string& path);

  // Frees the content of files no one uses, race-free (docs/SEMANTICS.md, 8): a file
  // loaded here with fetches running, chunks not yet recorded, or a caller inside ensure()
  // is busy; otherwise it is unloaded, loads of it wait, and cache::releaseContent() runs
  // the protocol (lease, `beforePunch(fd)` — the fanotify frontend drops its ignore marks
  // there —, durable empty record, punch, unlease). Busy files are counted, not waited
  // for. The process must ignore SIGIO (the kernel signals the lease holder when an open
  // blocks; the lease is short-lived anyway).
  using ReleaseRequest = cache::ReleaseRequest;
  using ReleaseResult = cache::ReleaseResult;
  Result<ReleaseResult> release(const std::vector<ReleaseRequest>& files,
                                const std::function<Status(int fd)>& beforePunch);

  // Forgets what is loaded for `path` and everything below it (the remote changed or
  // removed it): the next request loads the index's new state. Fetches still running for
  // the old version finish into the old inode. A state attribute still pending is written.
  void forget(const std::string& path);
  // A reader of `ino`, an inode a listing has just replaced (nlink 0) whose state attribute
  // does not say "full": true if it is a loaded file known complete and durable (its
  // attribute waited for the last close; it is written now). Covers the moment between
  // the replacing rename and forget().
  bool completeReplaced(uint64_t ino);
  HydratorStats stats() const;

  // Records everything written so far (fdatasync + index). Used on stop and by tests.
  Status flush();

  // The daemon stops: every parked request is answered with EIO, every fetch cancelled,
  // new requests fail with EIO at once. Returns when no fetch runs any more (a cancelled
  // fetch ends within about a second, whatever the source does). Idempotent.
  void shutdown();

 private:
  struct Flight;
  struct FileState;
  struct Waiter;
  struct Completion {
    Done done;
    Result<bool> result;
  };

  Result<std::shared_ptr<FileState>> file(const std::string& path);
  // file(), checked against the inode `ino` the caller reads (0: any); see ensure().
  Result<std::shared_ptr<FileState>> fileFor(const std::string& path, uint64_t ino);
  // Starts a flight for missing chunks at `first` (caller holds fs.mu) and queues it on
  // the scheduler; returns it, or nullptr if the scheduler is stopping.
  std::shared_ptr<Flight> startFlightLocked(const std::shared_ptr<FileState>& fs,
                                            uint64_t first, uint64_t limit, bool readahead);
  // Runs a flight: remote read into the cache file, then publishes the result.
  void runFlight(const std::shared_ptr<FileState>& fs, const std::shared_ptr<Flight>& f);
  // A flight ended (ran, failed or was dropped): its chunks from `published` on become
  // present (ok) or missing again, and its waiters are settled.
  void finishFlight(const std::shared_ptr<FileState>& fs, const std::shared_ptr<Flight>& f,
                    const Status& s, uint64_t published, bool freedSpace);
  // Makes progress for a parked request (caller holds fs.mu): starts flights for its
  // missing chunks that have none, promotes queued readahead it needs. Returns true once
  // its whole range is present; an error if no flight could be started.
  Result<bool> advanceLocked(const std::shared_ptr<FileState>& fs, Waiter& w);
  // Answers the parked requests of `fs` that are ready or failed (caller holds fs.mu);
  // `failed`: a flight that just failed (its waiters fail with its status, unless space
  // was freed for them once already).
  void settleLocked(const std::shared_ptr<FileState>& fs, const Flight* failed, bool freedSpace,
                    std::vector<Completion>& out);
  // The answer for a request whose range is present (caller holds fs.mu).
  bool readyLocked(FileState& fs);
  void scheduleReadaheadLocked(const std::shared_ptr<FileState>& fs, uint64_t fromChunk);
  Result<bool> allocateMissing(const std::shared_ptr<FileState>& fs);
  // Cancels the flights of `fs` that `which` selects (caller holds fs.mu); the ids of the
  // queued ones go to `queued`, to be dropped by the caller without the file's lock.
  template <typename Pred>
  size_t cancelFlightsLocked(FileState& fs, Pred which, std::vector<uint64_t>& queued);
  void dropQueued(const std::vector<uint64_t>& ids);
  void complete(std::vector<Completion>& out);
  void wakeSync();
  // Drops parked requests whose requester is gone and cancels flights no one needs.
  void sweepWaiters();
  // releaseAllocation() of a loaded file.
  Result<bool> releaseAllocationOf(const std::shared_ptr<FileState>& fs);
  // Gives back the allocations of loaded files no one has open any more (their close was
  // handled while another descriptor still held them: two close notifications handled at
  // once each see the other's). Called by the sync thread.
  void releaseIdleAllocations();
  // Writes the state attributes that waited for their files' last close
  // (cache::ContentFile::settleState). Called by the sync thread.
  void settleStates();
  std::vector<std::shared_ptr<FileState>> activeFiles();
  // fdatasync + record one file; `full` files are fsync()ed.
  Status syncFile(const std::shared_ptr<FileState>& fs);
  void syncLoop();

  remote::Remote& remote_;
  cache::CacheStore& cache_;
  const HydratorConfig config_;

  std::mutex mu_;  // rank 10: files_, loading_, releasing_
  std::condition_variable releasedCv_;  // releasing_ shrank
  std::unordered_map<std::string, std::shared_ptr<FileState>> files_;
  std::unordered_map<std::string, int> loading_;  // paths being loaded by file(): count
  std::unordered_set<std::string> releasing_;     // paths inside release(): no loads
  uint64_t forgetEpoch_ = 0;  // counts forget() calls: a load that overlapped one reloads

  std::atomic<uint64_t> fetches_{0}, fetchedBytes_{0}, fetchErrors_{0}, readaheadFetches_{0},
      waits_{0}, filesCompleted_{0}, releasedFiles_{0}, releasedBytes_{0}, releaseBusy_{0},
      hits_{0}, misses_{0}, errNoSpace_{0}, errStale_{0}, errGone_{0}, errAccess_{0}, errOther_{0},
      syncErrors_{0};
  std::atomic<uint64_t> cancelledFetches_{0}, abandoned_{0}, parked_{0}, remembered_{0},
      preempted_{0};
  PercentileHistogram fetchLatency_, ensureLatency_;
  std::atomic<bool> closed_{false};  // shutdown(): no new requests
  std::atomic<bool> syncRequested_{false};  // readyLocked(): complete() wakes the sync thread
  // Files with flights or parked requests (for sweepWaiters() and shutdown(), which must
  // also reach files forget() dropped from files_).
  std::mutex activeMu_;  // rank 22 (leaf)
  std::unordered_map<const FileState*, std::weak_ptr<FileState>> active_;

  std::mutex syncMu_;  // rank 5: sync thread wakeup (leaf)
  std::condition_variable syncCv_;
  bool stopping_ = false;
  bool syncWanted_ = false;  // a file became complete: record it now, not at the interval
  std::thread syncThread_;
  FetchScheduler scheduler_;
};

}  // namespace hsm::core
