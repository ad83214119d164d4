// A host SIMT executor: runs the body of a CUDA kernel on the CPU with one OS thread per CUDA
// thread of a block, real barriers for __syncthreads, warp exchanges for shuffles and a
// poisoned shared-memory buffer per block. Kernels written once against kernels/simt/simt.cuh
// run unchanged here, so CI executes their block-level code (scans, staging, barriers) without
// a GPU; under ThreadSanitizer a missing barrier between a shared-memory write and another
// thread's read is reported as a data race (a host-side racecheck).
//
// Blocks run one after another (the threads of one block run concurrently). A barrier or
// shuffle that not every live thread reaches is reported as a deadlock after a timeout instead
// of hanging; an exception thrown by any thread aborts the launch and is rethrown by launch().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace df11::simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
  [[nodiscard]] constexpr uint64_t count() const { return uint64_t{x} * y * z; }
};

struct LaunchOptions {
  uint8_t smem_poison = 0xCD;                          // every block's shared memory starts so
  std::chrono::milliseconds deadlock_timeout{30'000};  // nothing moves for longer while threads wait: deadlock
  // Called with a block's shared memory once all its threads are done, before the next block
  // starts (e.g. to check guard bytes); what it throws aborts the launch.
  std::function<void(const uint8_t* smem, uint64_t block)> after_block;
};

// Runs body(smem) for every thread of every block of the grid; smem is the block's shared
// memory (smem_bytes, 16-byte aligned). Throws df11::Error on a deadlock, a partial-mask
// shuffle, or rethrows the first exception a thread threw.
void launch(Dim3 grid, Dim3 block, std::size_t smem_bytes, const std::function<void(uint8_t* smem)>& body,
            const LaunchOptions& opt = {});

// Inside a body: the calling thread's coordinates and the block-level operations. Calling them
// outside launch() throws df11::Error.
[[nodiscard]] Dim3 thread_idx();
[[nodiscard]] Dim3 block_idx();
[[nodiscard]] Dim3 block_dim();
[[nodiscard]] Dim3 grid_dim();
void sync_threads();
// __syncwarp(): every lane of the calling thread's warp (all of them must take part).
void syncwarp();
// Warp exchanges of up to 64 bits (every lane of the warp must take part, mask = all of its
// lanes): shfl_up returns the value of lane - delta (its own value when lane < delta); shfl_xor
// the value of lane ^ lane_mask (its own when that lane is past the end of a partial warp).
[[nodiscard]] uint64_t shfl_up(uint32_t mask, uint64_t v, unsigned delta);
[[nodiscard]] uint64_t shfl_xor(uint32_t mask, uint64_t v, unsigned lane_mask);
// shfl_idx: the value of lane src_lane (its own when that lane is past the end of a partial warp).
[[nodiscard]] uint64_t shfl_idx(uint32_t mask, uint64_t v, unsigned src_lane);
// Host-only (warp-level operations the device does in hardware, such as the tensor cores' MMA,
// emulated in one exchange instead of a shuffle per word): every lane of a whole warp gives n
// words (n <= kSlotWords), and every lane gets all of them, lane i's at all[i * n].
inline constexpr unsigned kSlotWords = 4;
void warp_all_gather(const uint64_t* mine, unsigned n, uint64_t* all);

}  // namespace df11::simt
