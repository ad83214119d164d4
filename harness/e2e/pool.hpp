// A persistent worker pool for the CPU forward pass: a forward step runs dozens of short
// parallel loops, too short to pay for starting threads each time (codec's parallel_for does).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace df11::e2e {

class Pool {
 public:
  // n_threads = 0: all cores. The calling thread works too, so n - 1 threads are started; where
  // the system refuses one, half of those that started stay (size() says how many).
  explicit Pool(int n_threads);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  [[nodiscard]] int size() const { return n_; }
  // Runs fn(task, worker) for task in [0, n_tasks), worker in [0, size()); returns when all are
  // done; rethrows the first exception. Which worker runs which task varies: callers make
  // results independent of it (per-worker scratch only).
  void run(std::size_t n_tasks, const std::function<void(std::size_t, int)>& fn);

 private:
  void work(int worker);
  void drain(int worker);

  int n_;
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(std::size_t, int)>* fn_ = nullptr;
  std::size_t n_tasks_ = 0, next_ = 0, finished_ = 0;
  unsigned long generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace df11::e2e
