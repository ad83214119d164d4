// Shared basics of the codec: the host/device function marker, the project's error type, and
// a small deterministic parallel-for used by the encoder and the CPU decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define DF11_HD __host__ __device__ __forceinline__
#else
#define DF11_HD inline
#endif

namespace df11 {

// Every error a user can cause (bad file, bad tensor, bad parameter) is a df11::Error whose
// message names the file, tensor and offset where they are known. CLIs catch it and exit 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Number of worker threads to use when the caller says 0 ("all"): the hardware concurrency.
[[nodiscard]] int resolve_threads(int n_threads);

// Runs fn(task) for task in [0, n_tasks) on up to n_threads threads (0 = all cores). Tasks are
// handed out dynamically; callers make the result independent of which thread ran which task.
// After a task throws no new task starts, the running ones finish, and the exception of the
// lowest-numbered task that threw is rethrown on the caller's thread: the one a serial loop would
// report, whatever the threads' timing (tasks start in order, so every lower one has run).
void parallel_for(std::size_t n_tasks, int n_threads, const std::function<void(std::size_t)>& fn);

}  // namespace df11
