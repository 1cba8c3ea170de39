// ThreadPool: a fixed number of threads running queued tasks in FIFO order.
//
// Contract: post() never blocks and never runs the task inline. stop() (also called by the
// destructor) stops accepting tasks, lets running tasks finish, and destroys queued tasks
// without running them — tasks that own a kernel request answer it in their destructor.
// Thread-safe. The queue lock (rank 90) is a leaf: tasks run without it.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hsm {

class ThreadPool {
 public:
  using Task = std::function<void()>;

  ThreadPool(size_t threads, std::string name);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Returns false (and drops the task) after stop().
  bool post(Task task);
  void stop();
  size_t queued() const;

 private:
  void run();

  mutable std::mutex mu_;  // rank 90 (leaf)
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::string name_;
};

}  // namespace hsm
