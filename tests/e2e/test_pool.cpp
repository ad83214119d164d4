// The worker pools under an address-space limit: where the system refuses threads, the pool and
// parallel_for run with fewer and leave the run room for its own buffers (a pool that held every
// byte the limit allows made generate fail with "out of host memory" on CI's machine).
#include <catch2/catch.hpp>

#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "codec/common.hpp"
#include "e2e/pool.hpp"

// The sanitizers' shadow memory does not live under an RLIMIT_AS: their builds leave these out.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)

namespace {

// This process's address space now (VmSize), in bytes; 0 where /proc does not say.
long long address_space_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmSize:") {
      long long kb = 0;
      f >> kb;
      return kb * 1024;
    }
    f.ignore(1 << 12, '\n');
  }
  return 0;
}

constexpr long long kHeadroom = 2LL << 30;

// Runs body in a child process whose address space may grow by kHeadroom more; returns its exit
// status (0: body returned 0), or -1 where it did not exit normally. glibc gives each thread that
// allocates an arena of its own, 64 MB of address space, up to 8 a core: the child allows 4, so
// that what the test measures is the pools, whatever the machine's cores.
int under_address_limit(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(120);  // a pool that hangs ends the child (SIGALRM), not the test run
    if (::mallopt(M_ARENA_MAX, 4) != 1) ::_exit(89);
    const long long now = address_space_bytes();
    if (now <= 0) ::_exit(90);
    const rlimit lim{static_cast<rlim_t>(now + kHeadroom), static_cast<rlim_t>(now + kHeadroom)};
    if (::setrlimit(RLIMIT_AS, &lim) != 0) ::_exit(91);
    int rc = 92;
    try {
      rc = body();
    } catch (...) {
      rc = 93;
    }
    ::_exit(rc);
  }
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Whether `bytes` more can be mapped now (not touched: the limit is on address space).
bool can_map(std::size_t bytes) {
  void* p = std::malloc(bytes);
  std::free(p);
  return p != nullptr;
}

}  // namespace

TEST_CASE("Pool: threads the system refuses leave the pool smaller and the run room to allocate",
          "[e2e][pool]") {
  // 4096 stacks of 8 MB do not fit in 2 GB: some are refused.
  const int rc = under_address_limit([] {
    df11::e2e::Pool pool(4096);
    if (pool.size() <= 1 || pool.size() >= 4096) return 10;
    if (!can_map(size_t{256} << 20)) return 11;  // the run's own buffers
    std::atomic<int> done{0};
    pool.run(static_cast<std::size_t>(pool.size()) * 8, [&](std::size_t, int worker) {
      if (worker < 0 || worker >= pool.size()) throw std::runtime_error("worker out of range");
      std::string scratch(size_t{1} << 20, 'x');  // per-task buffers, as the forward pass has
      done += scratch[12345] == 'x' ? 1 : 0;
    });
    if (done != pool.size() * 8) return 12;
    return 0;
  });
  CHECK(rc == 0);
}

TEST_CASE("parallel_for: threads the system refuses leave the tasks room to allocate", "[e2e][pool]") {
  const int rc = under_address_limit([] {
    std::atomic<int> done{0}, big{0};
    df11::parallel_for(4096, 4096, [&](std::size_t task) {
      if (task == 4095) big = can_map(size_t{256} << 20) ? 1 : 0;  // after the threads started
      // Every task maps a buffer as it starts: one that started while the threads were still
      // being made (the address space nearly all stacks) would find no room.
      std::string scratch(size_t{4} << 20, 'x');
      // Tasks that take a while, so that many hold their buffers at once.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      done += scratch[4321] == 'x' ? 1 : 0;
    });
    if (big != 1) return 20;
    return done == 4096 ? 0 : 21;
  });
  CHECK(rc == 0);
}

#endif  // not under the sanitizers
