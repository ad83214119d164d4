// The host SIMT executor (see simt_host.hpp). One OS thread per CUDA thread of a block; the
// threads walk the grid's blocks in order together, meeting at a start barrier whose last
// arriver prepares the next block (poisoned shared memory, barrier counts reset to every
// thread). A thread that returns from the body leaves the block's barriers, as an exited GPU
// thread no longer holds up __syncthreads. Waiting threads sleep on a futex (atomic wait), so
// a barrier of hundreds of threads on two cores does not turn into a lock convoy; the
// launching thread is the watchdog that turns a barrier nobody completes into an error.
#include "simt/simt_host.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "codec/common.hpp"

namespace df11::simt {
namespace {

struct Aborted {};  // unwinds a thread's body once the launch is aborted

struct Launch;

// A reusable barrier over a changing number of participants (arrive: under a short mutex;
// wait: on the generation word, woken by the last arriver or by an abort).
class Barrier {
 public:
  explicit Barrier(const char* what = "") : what_(what) {}
  void reset(unsigned expected) {
    std::lock_guard lk(m_);
    expected_ = expected;
    arrived_ = 0;
  }
  unsigned expected() {
    std::lock_guard lk(m_);
    return expected_;
  }
  // on_complete runs in the last arriving thread before anyone is released.
  template <class F>
  void arrive_and_wait(Launch& l, F&& on_complete);
  void arrive_and_wait(Launch& l);
  void drop(Launch& l);  // one participant leaves for good (its thread exited the body)
  void wake() {          // after an abort: every waiter rechecks
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
  }
  std::string state() {
    std::lock_guard lk(m_);
    return arrived_ ? fmt::format("{}: {} of {} arrived", what_, arrived_, expected_) : std::string();
  }

 private:
  void release(Launch& l);
  const char* what_;
  std::mutex m_;
  unsigned expected_ = 0, arrived_ = 0;
  std::atomic<uint64_t> generation_{0};
};

struct Launch {
  Dim3 grid, block;
  unsigned n_threads = 0, n_warps = 0;
  LaunchOptions opt;
  std::unique_ptr<uint8_t[], void (*)(uint8_t*)> smem{nullptr, [](uint8_t* p) { ::operator delete[](p, std::align_val_t{16}); }};
  std::size_t smem_bytes = 0;
  const std::function<void(uint8_t*)>* body = nullptr;
  Barrier start{"the start of a block"}, block_bar{"__syncthreads"};
  std::vector<std::unique_ptr<Barrier>> warp_bar;
  std::vector<uint64_t> slots;  // kSlotWords exchange words per thread
  std::vector<const char*> warp_op;  // per thread: the warp operation it is in (shuffles, syncwarp)
  uint64_t current_block = 0;
  std::atomic<bool> aborted{false};
  std::atomic<uint64_t> progress{0};  // barriers released + bodies finished
  std::atomic<unsigned> waiting{0};   // threads asleep in a barrier
  unsigned finished = 0;              // threads done with the whole grid (under the pool's mutex)
  std::mutex err_m;
  std::exception_ptr error;

  void abort(std::exception_ptr e) {
    {
      std::lock_guard lk(err_m);
      if (!error) error = std::move(e);
    }
    aborted.store(true);
    start.wake();
    block_bar.wake();
    for (auto& w : warp_bar) w->wake();
  }
};

Dim3 unflatten(uint64_t i, Dim3 d) {
  return {static_cast<unsigned>(i % d.x), static_cast<unsigned>((i / d.x) % d.y),
          static_cast<unsigned>(i / (uint64_t{d.x} * d.y))};
}

std::string str(Dim3 d) { return fmt::format("({},{},{})", d.x, d.y, d.z); }

struct ThreadCtx {
  Launch* launch = nullptr;
  unsigned linear = 0;  // thread index in the block
  Dim3 tid;
};

thread_local ThreadCtx* tl_ctx = nullptr;

ThreadCtx& ctx(const char* what) {
  if (tl_ctx == nullptr) throw Error(std::string("simt::") + what + " called outside simt::launch");
  return *tl_ctx;
}

void Barrier::release(Launch& l) {  // m_ held by the caller
  arrived_ = 0;
  l.progress.fetch_add(1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
}

template <class F>
void Barrier::arrive_and_wait(Launch& l, F&& on_complete) {
  uint64_t gen = 0;
  {
    std::lock_guard lk(m_);
    if (l.aborted.load()) throw Aborted{};
    gen = generation_.load(std::memory_order_relaxed);
    if (++arrived_ >= expected_) {
      on_complete();
      release(l);
      return;
    }
  }
  l.waiting.fetch_add(1);
  while (generation_.load(std::memory_order_acquire) == gen) generation_.wait(gen, std::memory_order_acquire);
  l.waiting.fetch_sub(1);
  if (l.aborted.load()) throw Aborted{};
}

void Barrier::arrive_and_wait(Launch& l) {
  arrive_and_wait(l, [] {});
}

void Barrier::drop(Launch& l) {
  std::lock_guard lk(m_);
  if (expected_ > 0) --expected_;
  if (arrived_ > 0 && arrived_ == expected_) release(l);
}

unsigned lanes_of_warp(const Launch& l, unsigned warp) { return std::min(32u, l.n_threads - warp * 32); }

void thread_main(Launch& l, unsigned linear) {
  ThreadCtx c{&l, linear, unflatten(linear, l.block)};
  tl_ctx = &c;
  const unsigned warp = linear / 32;
  const uint64_t n_blocks = l.grid.count();
  for (uint64_t b = 0; b < n_blocks; ++b) {
    try {
      l.start.arrive_and_wait(l, [&] {
        if (b > 0 && l.opt.after_block) l.opt.after_block(l.smem.get(), b - 1);
        l.current_block = b;
        std::memset(l.smem.get(), l.opt.smem_poison, l.smem_bytes);
        l.block_bar.reset(l.n_threads);
        for (unsigned w = 0; w < l.n_warps; ++w) l.warp_bar[w]->reset(lanes_of_warp(l, w));
      });
      (*l.body)(l.smem.get());
    } catch (const Aborted&) {
      break;
    } catch (...) {
      l.abort(std::current_exception());
      break;
    }
    l.progress.fetch_add(1, std::memory_order_relaxed);
    l.block_bar.drop(l);
    l.warp_bar[warp]->drop(l);
  }
  tl_ctx = nullptr;
}

// The watchdog's test, in the launching thread: no barrier released and no body finished for
// the timeout while threads sleep in barriers means a barrier or shuffle some thread never
// reaches; the launch is aborted with what every barrier was waiting for.
void check_deadlock(Launch& l, uint64_t& last, std::chrono::steady_clock::time_point& since) {
  const uint64_t now_progress = l.progress.load();
  const auto now = std::chrono::steady_clock::now();
  if (now_progress != last || l.waiting.load() == 0) {
    last = now_progress;
    since = now;
    return;
  }
  if (now - since < l.opt.deadlock_timeout || l.aborted.load()) return;
  std::string where;
  for (Barrier* b : {&l.block_bar, &l.start}) {
    if (const std::string st = b->state(); !st.empty()) where += "; " + st;
  }
  for (unsigned w = 0; w < l.n_warps; ++w) {
    if (const std::string st = l.warp_bar[w]->state(); !st.empty()) where += fmt::format("; warp {} {}", w, st);
  }
  l.abort(std::make_exception_ptr(Error(fmt::format(
      "simt: deadlock in block {}: nothing moved for {} ms ({} threads waiting{}): a barrier or shuffle that not "
      "every thread reaches",
      str(unflatten(l.current_block, l.grid)), l.opt.deadlock_timeout.count(), l.waiting.load(), where))));
}

// Worker threads kept across launches (creating hundreds of threads per launch would cost more
// than most test kernels). One launch at a time; worker i plays thread i of every block.
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  void run(Launch& l) {
    std::lock_guard one_at_a_time(launch_m_);
    {
      std::lock_guard lk(m_);
      while (workers_.size() < l.n_threads) {
        const unsigned i = static_cast<unsigned>(workers_.size());
        workers_.emplace_back([this, i] { work(i); });
      }
      job_ = &l;
      ++job_id_;
    }
    cv_.notify_all();
    uint64_t last = 0;
    auto since = std::chrono::steady_clock::now();
    std::unique_lock lk(m_);
    // Workers touch l only before their increment of l.finished, under m_: once all have
    // counted, l may go.
    while (!idle_cv_.wait_for(lk, std::chrono::milliseconds(20), [&] { return l.finished == l.n_threads; })) {
      check_deadlock(l, last, since);
    }
    job_ = nullptr;
  }
  ~Pool() {
    {
      std::lock_guard lk(m_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void work(unsigned i) {
    uint64_t seen = 0;
    std::unique_lock lk(m_);
    while (true) {
      cv_.wait(lk, [&] { return shutdown_ || (job_id_ != seen && job_ != nullptr); });
      if (shutdown_) return;
      seen = job_id_;
      Launch* l = job_;
      if (i >= l->n_threads) continue;
      lk.unlock();
      thread_main(*l, i);
      lk.lock();
      if (++l->finished == l->n_threads) idle_cv_.notify_all();
    }
  }
  std::mutex launch_m_, m_;
  std::condition_variable cv_, idle_cv_;
  std::vector<std::thread> workers_;
  Launch* job_ = nullptr;
  uint64_t job_id_ = 0;
  bool shutdown_ = false;
};

// After a warp barrier: every lane of the warp arrived from the same operation (a lane in a
// shuffle paired with lanes in another shuffle or a syncwarp is a divergent kernel).
void check_same_warp_op(const Launch& l, unsigned warp, unsigned lanes, const char* what) {
  for (unsigned i = 0; i < lanes; ++i) {
    const char* other = l.warp_op[warp * 32 + i];
    if (other != what) {
      throw Error(fmt::format("simt::{}: lane {} of warp {} is in {} at the same time (divergent warp operations)",
                              what, i, warp, other ? other : "nothing"));
    }
  }
}

// A warp exchange: every lane of the calling thread's warp (mask: all of them) puts n words into
// its slots; after the warp's barrier, read(launch, warp, lane, lanes) reads any lane's; a second
// barrier before anyone may overwrite them.
template <class Read>
void warp_exchange(uint32_t mask, const uint64_t* v, unsigned n, const char* what, Read&& read) {
  ThreadCtx& c = ctx(what);
  Launch& l = *c.launch;
  const unsigned warp = c.linear / 32, lanes = lanes_of_warp(l, warp);
  const uint32_t present = lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1u);
  if ((mask & present) != present) {
    throw Error(fmt::format("simt::{}: mask {:#x} leaves out lanes of the warp (partial-mask shuffles are not emulated)",
                            what, mask));
  }
  if (l.warp_bar[warp]->expected() != lanes) {
    throw Error(fmt::format("simt::{}: a lane of warp {} has exited; its value is undefined", what, warp));
  }
  std::copy(v, v + n, l.slots.begin() + static_cast<std::ptrdiff_t>(c.linear) * kSlotWords);
  l.warp_op[c.linear] = what;
  l.warp_bar[warp]->arrive_and_wait(l);
  check_same_warp_op(l, warp, lanes, what);
  read(l, warp, c.linear % 32, lanes);
  l.warp_bar[warp]->arrive_and_wait(l);  // nobody overwrites a slot before all have read
}

uint64_t exchange(uint32_t mask, uint64_t v, unsigned src_of_lane(unsigned, unsigned), unsigned arg, const char* what) {
  uint64_t r = v;
  warp_exchange(mask, &v, 1, what, [&](const Launch& l, unsigned warp, unsigned lane, unsigned lanes) {
    const unsigned src = src_of_lane(lane, arg);
    if (src < lanes) r = l.slots[(warp * 32 + src) * kSlotWords];
  });
  return r;
}

}  // namespace

void launch(Dim3 grid, Dim3 block, std::size_t smem_bytes, const std::function<void(uint8_t*)>& body,
            const LaunchOptions& opt) {
  if (grid.count() == 0) return;
  const uint64_t n = block.count();
  if (n == 0 || n > 1024) throw Error(fmt::format("simt::launch: {} threads per block (1..1024)", n));
  if (tl_ctx != nullptr) throw Error("simt::launch: called from inside a simt body");
  Launch l;
  l.grid = grid;
  l.block = block;
  l.n_threads = static_cast<unsigned>(n);
  l.n_warps = (l.n_threads + 31) / 32;
  l.opt = opt;
  l.smem_bytes = std::max<std::size_t>(smem_bytes, 16);
  l.smem.reset(static_cast<uint8_t*>(::operator new[](l.smem_bytes, std::align_val_t{16})));
  l.body = &body;
  l.start.reset(l.n_threads);
  for (unsigned w = 0; w < l.n_warps; ++w) l.warp_bar.push_back(std::make_unique<Barrier>("shuffle"));
  l.slots.assign(static_cast<std::size_t>(l.n_threads) * kSlotWords, 0);
  l.warp_op.assign(l.n_threads, nullptr);
  Pool::get().run(l);
  if (l.error) std::rethrow_exception(l.error);
  if (l.opt.after_block) l.opt.after_block(l.smem.get(), grid.count() - 1);
}

Dim3 thread_idx() { return ctx("thread_idx").tid; }
Dim3 block_idx() {
  const Launch& l = *ctx("block_idx").launch;
  return unflatten(l.current_block, l.grid);
}
Dim3 block_dim() { return ctx("block_dim").launch->block; }
Dim3 grid_dim() { return ctx("grid_dim").launch->grid; }

void sync_threads() {
  ThreadCtx& c = ctx("sync_threads");
  c.launch->block_bar.arrive_and_wait(*c.launch);
}

void syncwarp() {
  ThreadCtx& c = ctx("syncwarp");
  Launch& l = *c.launch;
  const unsigned warp = c.linear / 32;
  const unsigned lanes = lanes_of_warp(l, warp);
  if (l.warp_bar[warp]->expected() != lanes) {
    throw Error(fmt::format("simt::syncwarp: a lane of warp {} has exited", warp));
  }
  static constexpr const char* kWhat = "syncwarp";  // one pointer: lanes compare it
  l.warp_op[c.linear] = kWhat;
  l.warp_bar[warp]->arrive_and_wait(l);
  check_same_warp_op(l, warp, lanes, kWhat);
  l.warp_bar[warp]->arrive_and_wait(l);  // nobody moves on to another warp operation before all have checked
}

uint64_t shfl_up(uint32_t mask, uint64_t v, unsigned delta) {
  return exchange(
      mask, v, [](unsigned lane, unsigned d) { return lane >= d ? lane - d : lane; }, delta, "shfl_up");
}

uint64_t shfl_xor(uint32_t mask, uint64_t v, unsigned lane_mask) {
  return exchange(mask, v, [](unsigned lane, unsigned m) { return lane ^ m; }, lane_mask, "shfl_xor");
}

uint64_t shfl_idx(uint32_t mask, uint64_t v, unsigned src_lane) {
  return exchange(mask, v, [](unsigned, unsigned src) { return src & 31u; }, src_lane, "shfl_idx");  // as CUDA: % 32
}

void warp_all_gather(const uint64_t* mine, unsigned n, uint64_t* all) {
  if (n > kSlotWords) throw Error(fmt::format("simt::warp_all_gather: {} words a lane (at most {})", n, kSlotWords));
  warp_exchange(0xFFFFFFFFu, mine, n, "warp_all_gather", [&](const Launch& l, unsigned warp, unsigned, unsigned lanes) {
    if (lanes != 32) throw Error("simt::warp_all_gather: a partial warp");
    for (unsigned i = 0; i < 32; ++i) {
      std::copy_n(l.slots.begin() + static_cast<std::ptrdiff_t>(warp * 32 + i) * kSlotWords, n, all + i * n);
    }
  });
}

}  // namespace df11::simt
