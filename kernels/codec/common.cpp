// Thread helpers of the codec (see common.hpp).
#include "codec/common.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codec/unit.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace df11 {

int resolve_threads(int n_threads) {
  if (n_threads > 0) return n_threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void parallel_for(std::size_t n_tasks, int n_threads, const std::function<void(std::size_t)>& fn) {
  if (n_tasks == 0) return;
  const std::size_t workers =
      std::min<std::size_t>(static_cast<std::size_t>(resolve_threads(n_threads)), n_tasks);
  if (workers <= 1) {
    for (std::size_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;  // of the lowest-numbered task that threw
  std::size_t first_error_task = n_tasks;
  std::mutex error_mutex;
  std::atomic<std::size_t> active{workers};  // workers numbered `active` and above return
  // The threads wait until all have been started (0) and those past `active` have ended (1):
  // then (2) they take tasks.
  std::atomic<int> phase{0};
  auto work = [&](std::size_t worker) {
    for (int p = phase.load(); p != 2; p = phase.load()) {
      if (p == 1 && worker >= active.load()) return;
      phase.wait(p);
    }
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const std::size_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_tasks) return;
      try {
        fn(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (t < first_error_task) {
          first_error_task = t;
          first_error = std::current_exception();
        }
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  // Where the system refuses a thread (a limit on threads or address space), half of the ones
  // that started, and this one, do all the tasks: they take them one by one. The others end
  // before taking one, giving their stacks back: the limit is reached, and the tasks need room
  // for their own buffers (no task starts before that, or tasks would meet the limit too).
  try {
    pool.reserve(workers - 1);
    for (std::size_t w = 1; w < workers; ++w) pool.emplace_back(work, w);
  } catch (const std::exception&) {  // std::system_error, std::bad_alloc
    const std::size_t keep = pool.size() / 2;
    active = keep + 1;
    phase = 1;
    phase.notify_all();
    for (std::size_t i = keep; i < pool.size(); ++i) pool[i].join();
    pool.resize(keep);
  }
  phase = 2;
  phase.notify_all();
  work(0);
  for (auto& th : pool) th.join();
  if (first_error) std::rethrow_exception(first_error);
}

namespace {
// The whole pages inside [p, p + bytes), as [first, last) addresses; empty (first >= last) for
// null or fewer than kHugeAdviceBytes, which the hints leave alone.
std::pair<uintptr_t, uintptr_t> hinted_pages(const void* p, std::size_t bytes) {
  if (p == nullptr || bytes < kHugeAdviceBytes) return {0, 0};
#if defined(__linux__)
  static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
#else
  constexpr uintptr_t page = 4096;
#endif
  return {(reinterpret_cast<uintptr_t>(p) + page - 1) / page * page,
          (reinterpret_cast<uintptr_t>(p) + bytes) / page * page};
}
}  // namespace

void advise_huge_pages(const void* p, std::size_t bytes) {
  const auto [first, last] = hinted_pages(p, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // The result is ignored: EINVAL where the kernel has no THP, and the buffer works either way.
  if (last > first) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)first;
  (void)last;
#endif
}

void prefault(void* p, std::size_t bytes, int n_threads) {
  // Plain copies, not a structured binding: the lambda below captures them (clang 14, the fuzz
  // preset's compiler, cannot capture bindings).
  const auto range = hinted_pages(p, bytes);
  const uintptr_t first = range.first, last = range.second;
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  if (last <= first) return;
  constexpr uintptr_t kPiece = uintptr_t{32} << 20;
  const std::size_t pieces = (last - first + kPiece - 1) / kPiece;
  std::atomic<bool> refused{false};
  parallel_for(pieces, n_threads, [&](std::size_t t) {
    if (refused.load(std::memory_order_relaxed)) return;
    const uintptr_t a = first + t * kPiece, z = std::min<uintptr_t>(last, a + kPiece);
    // EINVAL on a kernel without it: the first touch then faults the pages in, as without this.
    if (::madvise(reinterpret_cast<void*>(a), z - a, MADV_POPULATE_WRITE) != 0) refused = true;
  });
#else
  (void)first;
  (void)last;
  (void)n_threads;
#endif
}

void parallel_copy(void* dst, const void* src, std::size_t bytes, int n_threads) {
  constexpr std::size_t kPiece = std::size_t{16} << 20;
  parallel_for((bytes + kPiece - 1) / kPiece, n_threads, [&](std::size_t t) {
    const std::size_t lo = t * kPiece, n = std::min(bytes, lo + kPiece) - lo;
    std::memcpy(static_cast<uint8_t*>(dst) + lo, static_cast<const uint8_t*>(src) + lo, n);
  });
}

void throw_bad_shape(const std::vector<int64_t>& shape) {
  throw Error(fmt::format("shape [{}]: a negative dimension or more than 2^63 elements", fmt::join(shape, ",")));
}

}  // namespace df11
