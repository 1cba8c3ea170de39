#include "core/fetch_scheduler.h"

#include <pthread.h>

#include <algorithm>
#include <system_error>

namespace hsm::core {

FetchScheduler::FetchScheduler(size_t slots, size_t readaheadMax, std::string name,
                               size_t maxRunning, std::chrono::milliseconds longAfter)
    : slots_(std::max<size_t>(1, slots)),
      readaheadMax_(std::max<size_t>(1, std::min(readaheadMax, slots_))),
      maxRunning_(std::max(maxRunning, slots_)),
      longAfter_(longAfter),
      name_(name.substr(0, 15)) {
  std::lock_guard lock(mu_);
  threads_.reserve(slots_);
  for (size_t i = 0; i < slots_; ++i) spawnLocked();
}

void FetchScheduler::spawnLocked() {
  threads_.emplace_back([this] { loop(); });
  pthread_setname_np(threads_.back().native_handle(), name_.c_str());
}

FetchScheduler::~FetchScheduler() { stop(); }

uint64_t FetchScheduler::post(std::string key, Priority priority, std::function<void()> run,
                              std::function<void()> drop, std::function<bool()> preempt) {
  uint64_t id = 0;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      id = nextId_++;
      queue_.push_back({id, std::move(key), priority, std::move(run), std::move(drop),
                        std::move(preempt)});
      if (priority == Priority::kDemand) preemptLocked();
    }
  }
  if (id == 0) return 0;  // refused: the caller still owns the job (see the header)
  cv_.notify_one();
  return id;
}

bool FetchScheduler::promote(uint64_t id) {
  {
    std::lock_guard lock(mu_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Job& j) { return j.id == id; });
    if (it == queue_.end()) return false;
    it->priority = Priority::kDemand;
    preemptLocked();
  }
  cv_.notify_one();
  return true;
}

bool FetchScheduler::cancel(uint64_t id) {
  std::function<void()> drop;
  {
    std::lock_guard lock(mu_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Job& j) { return j.id == id; });
    if (it == queue_.end()) return false;
    drop = std::move(it->drop);
    queue_.erase(it);
  }
  drop();
  return true;
}

void FetchScheduler::stop() {
  std::list<Job> dropped;
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;  // no thread is started after this
    dropped.swap(queue_);
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& j : dropped) j.drop();
  for (auto& t : threads) {
    if (t.joinable()) t.join();
  }
}

size_t FetchScheduler::youngLocked(Clock::time_point now, Clock::time_point* oldestYoung) const {
  size_t young = 0;
  for (const auto& r : runningJobs_) {
    if (now - r.started < longAfter_) {
      ++young;
      if (oldestYoung) *oldestYoung = std::min(*oldestYoung, r.started);
    }
  }
  return young;
}

bool FetchScheduler::demandMayStartLocked(Clock::time_point now, Clock::time_point* longAt) const {
  if (running_ < slots_) return true;
  if (running_ >= maxRunning_) return false;
  Clock::time_point oldestYoung = Clock::time_point::max();
  if (youngLocked(now, &oldestYoung) < slots_) return true;
  if (longAt) *longAt = oldestYoung + longAfter_;
  return false;
}

void FetchScheduler::preemptLocked() {
  if (demandMayStartLocked(Clock::now(), nullptr)) return;  // it starts as soon as a thread looks
  for (auto& r : runningJobs_) {
    if (!r.readahead || !r.preempt) continue;
    auto preempt = std::move(r.preempt);
    r.preempt = nullptr;
    if (preempt()) {
      ++preempted_;
      return;
    }
  }
}

FetchSchedulerStats FetchScheduler::stats() const {
  std::lock_guard lock(mu_);
  FetchSchedulerStats s;
  s.running = running_;
  s.runningLong = runningJobs_.size() - youngLocked(Clock::now(), nullptr);
  s.slots = slots_;
  s.maxRunning = maxRunning_;
  s.preempted = preempted_;
  s.threads = threads_.size();
  for (const auto& j : queue_) {
    (j.priority == Priority::kDemand ? s.queuedDemand : s.queuedReadahead)++;
  }
  return s;
}

std::list<FetchScheduler::Job>::iterator FetchScheduler::pickLocked(Clock::time_point now,
                                                                    Clock::time_point* wakeAt) {
  auto best = queue_.end();
  unsigned bestRunning = 0;
  bool demandQueued = false;
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->priority != Priority::kDemand) continue;
    demandQueued = true;
    auto r = runningPerKey_.find(it->key);
    unsigned n = r == runningPerKey_.end() ? 0 : r->second;
    if (best == queue_.end() || n < bestRunning) {
      best = it;
      bestRunning = n;
      if (n == 0) break;  // the oldest job of a file with nothing running: cannot do better
    }
  }
  if (demandQueued) {
    if (demandMayStartLocked(now, wakeAt)) return best;
    return queue_.end();  // readahead does not go before a waiting reader
  }
  if (running_ >= slots_ || runningReadahead_ >= readaheadMax_) return queue_.end();
  return std::find_if(queue_.begin(), queue_.end(),
                      [](const Job& j) { return j.priority == Priority::kReadahead; });
}

void FetchScheduler::loop() {
  std::unique_lock lock(mu_);
  while (true) {
    auto it = queue_.end();
    while (!stopping_) {
      auto wakeAt = Clock::time_point::max();
      it = pickLocked(Clock::now(), &wakeAt);
      if (it != queue_.end()) break;
      if (wakeAt == Clock::time_point::max()) {
        cv_.wait(lock);
      } else {
        cv_.wait_until(lock, wakeAt);  // a running job becomes long: a demand job may start
      }
    }
    if (stopping_) return;
    Job job = std::move(*it);
    queue_.erase(it);
    const bool readahead = job.priority == Priority::kReadahead;
    ++running_;
    if (readahead) ++runningReadahead_;
    ++runningPerKey_[job.key];
    auto me = runningJobs_.insert(runningJobs_.end(),
                                  {job.id, readahead, Clock::now(), std::move(job.preempt)});
    // One thread stays free to start a job beside long ones (bounded by maxRunning_). If
    // the system refuses another thread (pids.max, RLIMIT_NPROC), the threads there are do.
    if (threads_.size() <= running_ && threads_.size() < maxRunning_) {
      try {
        spawnLocked();
      } catch (const std::system_error&) {
      }
    }
    lock.unlock();
    job.run();
    job.run = nullptr;
    job.drop = nullptr;  // whatever they own is released without the lock
    lock.lock();
    auto preempt = std::move(me->preempt);
    runningJobs_.erase(me);
    lock.unlock();
    preempt = nullptr;  // released without the lock
    lock.lock();
    --running_;
    if (readahead) --runningReadahead_;
    if (auto r = runningPerKey_.find(job.key); r != runningPerKey_.end() && --r->second == 0) {
      runningPerKey_.erase(r);
    }
    // A readahead slot or a file's share freed: another thread may now pick a job.
    cv_.notify_all();
  }
}

}  // namespace hsm::core
