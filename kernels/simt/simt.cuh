// The CUDA built-ins a kernel body uses, written so that one body compiles for the GPU (nvcc,
// device pass: the real built-ins) and for the host SIMT executor (simt_host.hpp: threads,
// barriers, warp exchanges). Kernels keep their bodies in DF11_HD functions that call only
// these for thread/block coordinates, barriers, shuffles and asynchronous copies; the
// __global__ wrapper passes its shared memory in, the host test launches the same body with
// simt::launch.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "codec/bf16.hpp"
#include "codec/common.hpp"
#if !defined(__CUDA_ARCH__)
#include "simt/simt_host.hpp"
#endif

namespace df11::simt {

DF11_HD unsigned tid_x() {
#if defined(__CUDA_ARCH__)
  return threadIdx.x;
#else
  return thread_idx().x;
#endif
}

// The thread's lane, read afresh on every call on the device (%laneid through a volatile asm, which
// the compiler may not move out of a loop or keep in a register across one): for addresses that
// are cheaper to recompute where they are used than to hold, where holding them would spill.
DF11_HD unsigned lane_fresh() {
#if defined(__CUDA_ARCH__)
  unsigned l;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(l));
  return l;
#else
  return thread_idx().x % 32u;
#endif
}

DF11_HD unsigned bid_x() {
#if defined(__CUDA_ARCH__)
  return blockIdx.x;
#else
  return block_idx().x;
#endif
}

DF11_HD unsigned bid_y() {
#if defined(__CUDA_ARCH__)
  return blockIdx.y;
#else
  return block_idx().y;
#endif
}

DF11_HD unsigned bid_z() {
#if defined(__CUDA_ARCH__)
  return blockIdx.z;
#else
  return block_idx().z;
#endif
}

DF11_HD unsigned bdim_x() {
#if defined(__CUDA_ARCH__)
  return blockDim.x;
#else
  return block_dim().x;
#endif
}

DF11_HD unsigned gdim_x() {
#if defined(__CUDA_ARCH__)
  return gridDim.x;
#else
  return grid_dim().x;
#endif
}

DF11_HD void sync_block() {
#if defined(__CUDA_ARCH__)
  __syncthreads();
#else
  sync_threads();
#endif
}

// __syncwarp() over all 32 lanes: the warp's shared-memory writes before it are visible to its
// lanes after it.
DF11_HD void sync_warp() {
#if defined(__CUDA_ARCH__)
  __syncwarp();
#else
  syncwarp();
#endif
}

#if !defined(__CUDA_ARCH__)
template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 64 bits");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
#endif

// Lane lane-delta's value (own value for lane < delta); all 32 lanes of the warp take part.
// T: any 4- or 8-byte type __shfl_*_sync takes (unsigned, int, float, int64_t, ...).
template <class T>
DF11_HD T warp_shfl_up(T v, unsigned delta) {
#if defined(__CUDA_ARCH__)
  return __shfl_up_sync(0xFFFFFFFFu, v, delta);
#else
  return from_bits<T>(shfl_up(0xFFFFFFFFu, to_bits(v), delta));
#endif
}

template <class T>
DF11_HD T warp_shfl_xor(T v, unsigned lane_mask) {
#if defined(__CUDA_ARCH__)
  return __shfl_xor_sync(0xFFFFFFFFu, v, lane_mask);
#else
  return from_bits<T>(shfl_xor(0xFFFFFFFFu, to_bits(v), lane_mask));
#endif
}

// Lane src_lane's value, for every lane (all 32 take part).
template <class T>
DF11_HD T warp_shfl(T v, unsigned src_lane) {
#if defined(__CUDA_ARCH__)
  return __shfl_sync(0xFFFFFFFFu, v, src_lane);
#else
  return from_bits<T>(shfl_idx(0xFFFFFFFFu, to_bits(v), src_lane));
#endif
}

// D += A B for one warp's 16 x 8 x 16 BF16 tile with float accumulators (mma.sync.aligned
// .m16n8k16.row.col.f32.bf16.bf16.f32, sm_80 and later), fragments as PTX lays them out: with
// g = lane / 4 and t = lane % 4, register r of A holds A[g + 8 (r % 2)][2 t + 8 (r / 2) + {0, 1}]
// (low half first), register r of B holds B[2 t + 8 r + {0, 1}][g], accumulator r is
// D[g + 8 (r / 2)][2 t + r % 2]. All 32 lanes take part. On the host each output is its C plus
// the 16 products in k order, one rounding per product (a BF16 product is exact in float, so an
// FMA adds it with one rounding); the tensor cores' order and rounding inside an instruction
// differ, so a host result equals a device one only within float rounding, while two runs on the
// same side give the same bits for the same operands.
DF11_HD void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // no tensor-core BF16 MMA before sm_80 (the kernels that call this are sm_80+ only)
#endif
#else
  const unsigned lane = thread_idx().x % 32u, g = lane / 4u, t = lane % 4u;
  // Every lane's fragments in one exchange: A's registers 0-1 and 2-3, B's 0-1, a word each.
  const uint64_t mine[3] = {a[0] | static_cast<uint64_t>(a[1]) << 32, a[2] | static_cast<uint64_t>(a[3]) << 32,
                            b[0] | static_cast<uint64_t>(b[1]) << 32};
  uint64_t all[32 * 3];
  warp_all_gather(mine, 3, all);
  auto reg = [&all](unsigned from, unsigned r) {  // register r (A: 0-3, B: 4-5) of lane `from`
    return static_cast<uint32_t>(all[from * 3 + r / 2] >> (32 * (r % 2)));
  };
  auto half = [](uint32_t v, unsigned h) { return bf16_to_float(static_cast<uint16_t>(v >> (16 * h))); };
  // Row g and g + 8 of A live in lanes 4 g .. 4 g + 3, columns 2 t and 2 t + 1 of B in lanes
  // 8 t .. 8 t + 7: register r of lane 4 g + q holds k = 2 q + 8 (r / 2) + {0, 1} (A), 2 q + 8 r + {0, 1} (B).
  float ar[2][16], bc[2][16];
  for (unsigned q = 0; q < 4; ++q) {
    for (unsigned h = 0; h < 2; ++h) {
      for (unsigned r = 0; r < 4; ++r) ar[r % 2][2 * q + 8 * (r / 2) + h] = half(reg(4 * g + q, r), h);
      for (unsigned c = 0; c < 2; ++c) {
        for (unsigned r = 0; r < 2; ++r) bc[c][2 * q + 8 * r + h] = half(reg(4 * (2 * t + c) + q, 4 + r), h);
      }
    }
  }
  for (unsigned r = 0; r < 4; ++r) {
    float acc = d[r];
    for (unsigned k = 0; k < 16; ++k) acc = std::fma(ar[r / 2][k], bc[r % 2][k], acc);
    d[r] = acc;
  }
#endif
}

// atomicAdd on a 32-bit word of global memory: returns the value before the add. On the host
// a real atomic, since the threads of a block run concurrently there.
DF11_HD uint32_t atomic_add(uint32_t* p, uint32_t v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(p, v);
#else
  return std::atomic_ref<uint32_t>(*p).fetch_add(v);
#endif
}

// 64-bit atomicAdd / atomicMin on global memory (unsigned long long, as CUDA names the type);
// return the value before. On the host real atomics.
DF11_HD unsigned long long atomic_add_u64(unsigned long long* p, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  return atomicAdd(p, v);
#else
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
#endif
}

DF11_HD unsigned long long atomic_min_u64(unsigned long long* p, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  return atomicMin(p, v);
#else
  std::atomic_ref<unsigned long long> a(*p);
  unsigned long long old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
#endif
}

// atomicInc: *p becomes old >= limit ? 0 : old + 1; returns old. limit + 1 calls from 0 take
// 0 .. limit and leave 0 behind.
DF11_HD uint32_t atomic_inc(uint32_t* p, uint32_t limit) {
#if defined(__CUDA_ARCH__)
  return atomicInc(p, limit);
#else
  std::atomic_ref<uint32_t> a(*p);
  uint32_t old = a.load();
  while (!a.compare_exchange_weak(old, old >= limit ? 0u : old + 1u)) {
  }
  return old;
#endif
}

// __byte_perm: byte i of the result is byte (selector nibble i & 7) of the 8 bytes y:x (x the
// low four). The host version follows the PTX prmt definition (default mode), so the selector
// constants a kernel uses are tested on the host too.
DF11_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t selector) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, selector);
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (unsigned i = 0; i < 4; ++i) {
    r |= static_cast<uint32_t>((v >> (8 * ((selector >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
  }
  return r;
#endif
}

// A hint to bring the line holding p into L2 (prefetch.L2): no result, nothing waits on
// it. On the host it reads the byte at p, so that the sanitizer builds check every hinted
// address lies inside its buffer, as the device needs.
DF11_HD void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.L2 [%0];\n" ::"l"(p));  // generic addressing: p is a generic pointer
#else
  const volatile uint8_t* b = static_cast<const volatile uint8_t*>(p);
  (void)*b;
#endif
}

// Programmatic dependent launch (sm_90 and later): waits until the grids this one depends on have
// completed and their memory is visible (griddepcontrol.wait). Returns at once in a grid launched
// without such a dependency, on older GPUs, and on the host, where kernels run one at a time.
DF11_HD void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Asynchronous global -> shared copy of N bytes (4, 8 or 16; both addresses N-aligned),
// complete for the issuing thread after cp_async_wait_all(), for the block after a barrier.
// On the host the copy happens at once.
template <int N>
DF11_HD void cp_async(void* smem_dst, const void* gmem_src) {
  static_assert(N == 4 || N == 8 || N == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__)
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  if constexpr (N == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(gmem_src), "n"(N));
  }
#else
  std::memcpy(smem_dst, gmem_src, N);
#endif
}

DF11_HD void cp_async_wait_all() {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");  // later loads of the copied bytes stay after it
#endif
}

}  // namespace df11::simt
