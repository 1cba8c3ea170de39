#include "core/fetch_scheduler.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace hsm::core {
namespace {

using Priority = FetchScheduler::Priority;

// Jobs that block until released, and record the order in which they started.
class Jobs {
 public:
  std::function<void()> job(const std::string& name) {
    return [this, name] {
      std::unique_lock lock(mu_);
      started_.push_back(name);
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_.contains(name) || all_; });
    };
  }
  std::function<void()> dropped(const std::string& name) {
    return [this, name] {
      std::lock_guard lock(mu_);
      drops_.push_back(name);
    };
  }
  void release(const std::string& name) {
    std::lock_guard lock(mu_);
    released_.insert(name);
    cv_.notify_all();
  }
  void releaseAll() {
    std::lock_guard lock(mu_);
    all_ = true;
    cv_.notify_all();
  }
  bool waitStarted(size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return started_.size() >= n; });
  }
  std::vector<std::string> started() {
    std::lock_guard lock(mu_);
    return started_;
  }
  std::vector<std::string> drops() {
    std::lock_guard lock(mu_);
    return drops_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> started_, drops_;
  std::set<std::string> released_;
  bool all_ = false;
};

TEST(FetchSchedulerTest, AFileWithNothingRunningGoesFirst) {
  Jobs jobs;
  FetchScheduler s(2, 1, "test");
  for (const char* n : {"a1", "a2", "a3"}) s.post("a", Priority::kDemand, jobs.job(n), jobs.dropped(n));
  ASSERT_TRUE(jobs.waitStarted(2));
  s.post("b", Priority::kDemand, jobs.job("b1"), jobs.dropped("b1"));
  jobs.release("a1");
  ASSERT_TRUE(jobs.waitStarted(3));
  // a3 is older, but file a has a fetch running and b has none.
  EXPECT_EQ(jobs.started()[2], "b1");
  jobs.releaseAll();
  ASSERT_TRUE(jobs.waitStarted(4));
  s.stop();
  EXPECT_TRUE(jobs.drops().empty());
}

TEST(FetchSchedulerTest, DemandBeforeReadaheadAndReadaheadBounded) {
  Jobs jobs;
  FetchScheduler s(3, 1, "test");
  s.post("r", Priority::kReadahead, jobs.job("r1"), jobs.dropped("r1"));
  ASSERT_TRUE(jobs.waitStarted(1));
  s.post("r", Priority::kReadahead, jobs.job("r2"), jobs.dropped("r2"));
  s.post("d", Priority::kDemand, jobs.job("d1"), jobs.dropped("d1"));
  ASSERT_TRUE(jobs.waitStarted(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // r2 waits although a thread is free: readahead may use one thread only.
  EXPECT_EQ(jobs.started(), (std::vector<std::string>{"r1", "d1"}));
  EXPECT_EQ(s.stats().queuedReadahead, 1u);
  jobs.release("r1");
  ASSERT_TRUE(jobs.waitStarted(3));
  EXPECT_EQ(jobs.started()[2], "r2");
  jobs.releaseAll();
  s.stop();
}

TEST(FetchSchedulerTest, PromotedReadaheadRunsAsDemand) {
  Jobs jobs;
  FetchScheduler s(2, 1, "test");
  s.post("r", Priority::kReadahead, jobs.job("r1"), jobs.dropped("r1"));
  ASSERT_TRUE(jobs.waitStarted(1));
  uint64_t r2 = s.post("r", Priority::kReadahead, jobs.job("r2"), jobs.dropped("r2"));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(jobs.started().size(), 1u);
  EXPECT_TRUE(s.promote(r2));  // a reader waits for it now
  ASSERT_TRUE(jobs.waitStarted(2));
  EXPECT_EQ(jobs.started()[1], "r2");
  jobs.releaseAll();
  s.stop();
}

TEST(FetchSchedulerTest, ReadaheadGivesWayToAWaitingDemandJob) {
  Jobs jobs;
  FetchScheduler s(2, 2, "test");
  std::atomic<int> asked{0};
  s.post("r", Priority::kReadahead, jobs.job("r1"), jobs.dropped("r1"), [&] {
    asked++;
    jobs.release("r1");  // the job stops when asked
    return true;
  });
  s.post("x", Priority::kDemand, jobs.job("x1"), jobs.dropped("x1"));
  ASSERT_TRUE(jobs.waitStarted(2));  // both threads busy
  EXPECT_EQ(asked, 0);
  s.post("d", Priority::kDemand, jobs.job("d1"), jobs.dropped("d1"));
  ASSERT_TRUE(jobs.waitStarted(3));  // r1 stopped: d1 got its thread
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(jobs.started()[2], "d1");
  EXPECT_EQ(s.stats().preempted, 1u);
  jobs.releaseAll();
  s.stop();
}

TEST(FetchSchedulerTest, CancelDropsQueuedJobsAndStopDropsTheRest) {
  Jobs jobs;
  FetchScheduler s(1, 1, "test");
  s.post("a", Priority::kDemand, jobs.job("a1"), jobs.dropped("a1"));
  ASSERT_TRUE(jobs.waitStarted(1));
  uint64_t a2 = s.post("a", Priority::kDemand, jobs.job("a2"), jobs.dropped("a2"));
  s.post("a", Priority::kDemand, jobs.job("a3"), jobs.dropped("a3"));
  EXPECT_TRUE(s.cancel(a2));
  EXPECT_FALSE(s.cancel(a2));
  EXPECT_EQ(jobs.drops(), (std::vector<std::string>{"a2"}));
  std::thread stopper([&] { s.stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  jobs.releaseAll();  // stop() waits for the running job
  stopper.join();
  EXPECT_EQ(jobs.drops(), (std::vector<std::string>{"a2", "a3"}));
  EXPECT_EQ(jobs.started(), (std::vector<std::string>{"a1"}));
  // After stop(): refused, neither run nor dropped by the scheduler.
  EXPECT_EQ(s.post("a", Priority::kDemand, jobs.job("late"), jobs.dropped("late")), 0u);
}

TEST(FetchSchedulerTest, ALongJobLetsAReaderOfAnotherFileStartBesideIt) {
  // Issue #14: with every slot held by readers stuck on a dripping file, a read of a fast
  // file waited for a slot (minutes). A job running longer than longAfter stops holding
  // its slot for demand jobs, up to maxRunning in all.
  Jobs jobs;
  FetchScheduler s(1, 1, "test", 2, std::chrono::milliseconds(50));
  s.post("slow", Priority::kDemand, jobs.job("slow"), jobs.dropped("slow"));
  ASSERT_TRUE(jobs.waitStarted(1));
  s.post("fast", Priority::kDemand, jobs.job("fast"), jobs.dropped("fast"));
  ASSERT_TRUE(jobs.waitStarted(2));  // while "slow" still runs
  EXPECT_EQ(jobs.started(), (std::vector<std::string>{"slow", "fast"}));
  // Two run, the bound: a third waits even once both are long, until one ends.
  s.post("third", Priority::kDemand, jobs.job("third"), jobs.dropped("third"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(jobs.started().size(), 2u);
  EXPECT_EQ(s.stats().running, 2u);
  EXPECT_EQ(s.stats().runningLong, 2u);
  jobs.release("fast");
  ASSERT_TRUE(jobs.waitStarted(3));
  EXPECT_EQ(jobs.started()[2], "third");
  jobs.releaseAll();
  s.stop();
  EXPECT_TRUE(jobs.drops().empty());
  EXPECT_EQ(s.stats().threads, 0u);  // joined
}

TEST(FetchSchedulerTest, ReadaheadNeverRunsBesideALongJob) {
  Jobs jobs;
  FetchScheduler s(1, 1, "test", 4, std::chrono::milliseconds(50));
  s.post("slow", Priority::kDemand, jobs.job("slow"), jobs.dropped("slow"));
  ASSERT_TRUE(jobs.waitStarted(1));
  s.post("ra", Priority::kReadahead, jobs.job("ra"), jobs.dropped("ra"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // "slow" is long by now
  EXPECT_EQ(jobs.started().size(), 1u);
  jobs.release("slow");
  ASSERT_TRUE(jobs.waitStarted(2));
  EXPECT_EQ(jobs.started()[1], "ra");
  jobs.releaseAll();
}

TEST(FetchSchedulerTest, YoungJobsHoldTheirSlots) {
  // Without long jobs the bound is `slots`, whatever maxRunning says.
  Jobs jobs;
  FetchScheduler s(2, 1, "test", 8, std::chrono::seconds(3600));
  for (const char* n : {"a", "b", "c"}) s.post(n, Priority::kDemand, jobs.job(n), jobs.dropped(n));
  ASSERT_TRUE(jobs.waitStarted(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(jobs.started().size(), 2u);
  jobs.release("a");
  ASSERT_TRUE(jobs.waitStarted(3));
  jobs.releaseAll();
}

}  // namespace
}  // namespace hsm::core
