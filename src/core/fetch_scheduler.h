// FetchScheduler: runs the Hydrator's fetches on a bounded set of threads (the mount's
// concurrency limit towards its source), in an order that keeps one greedy or slow file
// from starving the others.
//
// Contract
// - post() queues a job. Exactly one of its `run` or `drop` functions is called, once:
//   `run` on a scheduler thread, `drop` (the job will never run) on the thread that calls
//   cancel() or stop(). After stop(), post() refuses the job (returns 0) and calls
//   neither: the caller, which may hold locks `drop` takes, undoes it itself.
// - Capacity: at most `slots` jobs run that started less than `longAfter` ago. A job that
//   has run longer (a source that drips, a stalled transfer) stops holding its slot for
//   demand jobs: one may start beside it, up to `maxRunning` jobs in all, so readers stuck
//   on a slow file never keep a reader of a fast one waiting for a slot. Readahead runs
//   only within `slots`, on at most `readaheadMax` of them. Threads are started as needed
//   (`slots` at first, then one spare while fewer than `maxRunning` exist); they are
//   joined by stop().
// - Order: demand jobs (a reader waits) before readahead jobs; among demand jobs, the one
//   whose key (a file) has the fewest jobs running, then the oldest.
// - promote(id): a queued readahead job becomes a demand job (a reader now waits for it).
// - Readahead gives way: when a demand job is queued and cannot start, a running
//   readahead job is asked to stop (its `preempt` function, if it has one: it must be
//   quick, take no lock, and return false if the job may not stop, e.g. a reader now
//   waits for it). The job then ends early as its owner decides (a cancelled fetch).
// - cancel(id): a queued job is removed and dropped; false if it is not queued (it runs
//   already or is done: its owner stops it by its own means).
// - stop(): refuses new jobs, drops queued ones, and waits for running ones, which must
//   end promptly (their owner cancels them first).
// Thread-safe. Its lock (rank 88) is a leaf: jobs run and are dropped without it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace hsm::core {

struct FetchSchedulerStats {
  uint64_t running = 0;
  uint64_t runningLong = 0;  // of `running`: started `longAfter` ago or more
  uint64_t queuedDemand = 0;
  uint64_t queuedReadahead = 0;
  uint64_t slots = 0;
  uint64_t maxRunning = 0;
  uint64_t threads = 0;    // started so far
  uint64_t preempted = 0;  // readahead jobs asked to stop for a waiting demand job
};

class FetchScheduler {
 public:
  enum class Priority { kDemand, kReadahead };

  using Clock = std::chrono::steady_clock;

  // `maxRunning` below `slots` counts as `slots` (no job runs beside long ones).
  FetchScheduler(size_t slots, size_t readaheadMax, std::string name, size_t maxRunning = 0,
                 std::chrono::milliseconds longAfter = std::chrono::seconds(2));
  ~FetchScheduler();  // stop()
  FetchScheduler(const FetchScheduler&) = delete;
  FetchScheduler& operator=(const FetchScheduler&) = delete;

  // Returns the job's id (never 0), or 0 after stop().
  uint64_t post(std::string key, Priority priority, std::function<void()> run,
                std::function<void()> drop, std::function<bool()> preempt = {});
  bool promote(uint64_t id);
  bool cancel(uint64_t id);
  void stop();
  FetchSchedulerStats stats() const;

 private:
  struct Job {
    uint64_t id = 0;
    std::string key;
    Priority priority = Priority::kDemand;
    std::function<void()> run, drop;
    std::function<bool()> preempt;
  };
  struct Running {
    uint64_t id = 0;
    bool readahead = false;
    Clock::time_point started;
    std::function<bool()> preempt;  // moved from the job; empty once used
  };
  // Running jobs that started less than longAfter_ before `now`; the start of the oldest
  // of them goes to `*oldestYoung` (if given and earlier than it).
  size_t youngLocked(Clock::time_point now, Clock::time_point* oldestYoung) const;
  // Whether a demand job may start now; if not because every slot is held by a young
  // job, `*longAt` is when the oldest of them becomes long (caller holds mu_).
  bool demandMayStartLocked(Clock::time_point now, Clock::time_point* longAt) const;
  // A demand job waits and cannot start: ask one running readahead job to stop.
  void preemptLocked();
  void spawnLocked();
  void loop();
  // The next job to run (caller holds mu_), or queue_.end() if none may run now; then
  // `*wakeAt` is when one may (Clock::time_point::max(): when something changes).
  std::list<Job>::iterator pickLocked(Clock::time_point now, Clock::time_point* wakeAt);

  const size_t slots_, readaheadMax_, maxRunning_;
  const std::chrono::milliseconds longAfter_;
  const std::string name_;
  mutable std::mutex mu_;  // rank 88 (leaf)
  std::condition_variable cv_;
  std::list<Job> queue_;  // oldest first
  std::unordered_map<std::string, unsigned> runningPerKey_;
  size_t running_ = 0, runningReadahead_ = 0;
  std::list<Running> runningJobs_;  // oldest first
  uint64_t preempted_ = 0;
  uint64_t nextId_ = 1;
  bool stopping_ = false;
  std::vector<std::thread> threads_;  // grows under mu_ until stop()
};

}  // namespace hsm::core
