// The CPU worker pool (see pool.hpp).
#include "e2e/pool.hpp"

#include "codec/common.hpp"

namespace df11::e2e {

Pool::Pool(int n_threads) : n_(resolve_threads(n_threads)) {
  // Where the system refuses a thread (a limit on threads or address space), the pool keeps half
  // of the workers that started (size() says how many, with the caller's) and ends the rest: the
  // refusal means the limit is reached, and a pool holding all of it (each stack is 8 MB of
  // address space) leaves the run none for its own buffers.
  try {
    threads_.reserve(static_cast<std::size_t>(n_ - 1));
    for (int w = 1; w < n_; ++w) threads_.emplace_back([this, w] { work(w); });
  } catch (const std::exception&) {  // std::system_error, std::bad_alloc
    const std::size_t keep = threads_.size() / 2;
    {
      std::lock_guard lock(mutex_);
      n_ = static_cast<int>(keep) + 1;  // workers numbered n_ and above return
    }
    wake_.notify_all();
    for (std::size_t i = keep; i < threads_.size(); ++i) threads_[i].join();
    threads_.resize(keep);
  }
}

Pool::~Pool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void Pool::drain(int worker) {
  for (;;) {
    std::size_t task;
    {
      std::lock_guard lock(mutex_);
      if (next_ >= n_tasks_ || error_) return;
      task = next_++;
    }
    try {
      (*fn_)(task, worker);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    std::lock_guard lock(mutex_);
    ++finished_;
  }
}

void Pool::work(int worker) {
  unsigned long seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || worker >= n_ || generation_ != seen; });
      if (stop_ || worker >= n_) return;
      seen = generation_;
      ++busy_;
    }
    drain(worker);
    {
      std::lock_guard lock(mutex_);
      --busy_;
    }
    done_.notify_all();
  }
}

void Pool::run(std::size_t n_tasks, const std::function<void(std::size_t, int)>& fn) {
  if (n_tasks == 0) return;
  if (n_ == 1 || n_tasks == 1) {
    for (std::size_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    fn_ = &fn;
    n_tasks_ = n_tasks;
    next_ = 0;
    finished_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  drain(0);
  std::exception_ptr error;
  {
    std::unique_lock lock(mutex_);
    // Wait until every task ran (or was abandoned after an error) and no worker still holds fn.
    done_.wait(lock, [&] { return busy_ == 0 && (finished_ == n_tasks_ || error_); });
    error = error_;
    fn_ = nullptr;
    n_tasks_ = 0;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace df11::e2e
