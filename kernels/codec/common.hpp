// Shared basics of the codec: the host/device function marker, the project's error type, and
// a small deterministic parallel-for used by the encoder and the CPU decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

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
// The most threads a --threads option asks for (more would only exhaust the system's threads
// or address space; parallel_for and e2e's Pool run with fewer where the system refuses some:
// half of those that started, so that the run keeps room under the limit that refused them).
inline constexpr int kMaxThreads = 4096;

// Runs fn(task) for task in [0, n_tasks) on up to n_threads threads (0 = all cores). Tasks are
// handed out dynamically; callers make the result independent of which thread ran which task.
// After a task throws no new task starts, the running ones finish, and the exception of the
// lowest-numbered task that threw is rethrown on the caller's thread: the one a serial loop would
// report, whatever the threads' timing (tasks start in order, so every lower one has run).
void parallel_for(std::size_t n_tasks, int n_threads, const std::function<void(std::size_t)>& fn);

// Large host buffers that one thread would touch first (a vector's value-initialisation). Fresh
// memory costs a page fault and a cleared page per 4 KB on the touching thread.
// - prefault maps [p, p + bytes) in, writable, on up to n_threads threads (MADV_POPULATE_WRITE,
//   pieces of 32 MB), so that the cores share that cost. It touches no object (the kernel fills
//   page tables), so it may run over a vector's reserved capacity.
// - advise_huge_pages asks for transparent huge pages (where the kernel offers them on request,
//   its `madvise` mode, as on Debian): one fault per 2 MB. Not free where memory is fragmented
//   (the kernel compacts it first), so a caller asks where it was measured to pay.
// Both are hints on whole pages, never errors: nothing for fewer than kHugeAdviceBytes or where
// the kernel lacks them (MADV_POPULATE_WRITE: Linux 5.14).
// reserve_prefaulted reserves n elements of an empty vector and maps them in before anything
// touches them: call it before the resize or fill. Measured on this project's 2-core machine
// (two Nemo layers, embedding and head): the encoder's outputs ~5.2 -> ~4.0 s of encoding
// (huge pages made it ~1 s slower instead); a synthetic unit's words ~4.0 -> ~2.0 s with
// Pages::huge.
inline constexpr std::size_t kHugeAdviceBytes = std::size_t{8} << 20;
void advise_huge_pages(const void* p, std::size_t bytes);
void prefault(void* p, std::size_t bytes, int n_threads);
enum class Pages { normal, huge };
template <class T, class A>
void reserve_prefaulted(std::vector<T, A>& v, std::size_t n, int n_threads, Pages pages = Pages::normal) {
  const bool fresh = v.capacity() == 0;
  v.reserve(n);
  if (!fresh) return;
  if (pages == Pages::huge) advise_huge_pages(v.data(), n * sizeof(T));
  prefault(v.data(), n * sizeof(T), n_threads);
}
// Copies bytes from src to dst (not overlapping) on up to n_threads threads, in 16 MB pieces.
void parallel_copy(void* dst, const void* src, std::size_t bytes, int n_threads);

}  // namespace df11
