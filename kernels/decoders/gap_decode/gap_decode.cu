// Kernels of the gap-decode family and their upload/launch. One template kernel; the variant
// list (common/variants.inc) says which instances exist. Per block: tables to shared memory,
// optional cp.async staging of the encoded bytes, then the per-thread phases of gap_decode.cuh
// separated by the block scan and barriers.
#include <cuda_runtime.h>

#include "common/cuda_util.hpp"
#include "common/device_image.cuh"
#include "common/variant_decoder.hpp"
#include "common/variants.inc"
#include "gap_decode/gap_decode.cuh"

namespace df11::dec {
namespace {

template <int N>
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  if constexpr (N == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(gmem_src), "n"(N));
  }
}

__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::); }

// Exclusive scan of one value per thread: Hillis-Steele over a double buffer in shared memory
// (2 * TPB words), the official kernel's kind of block scan.
template <int TPB>
__device__ __forceinline__ unsigned scan_block_smem(unsigned v, uint32_t* buf) {
  const unsigned t = threadIdx.x;
  uint32_t* a = buf;
  uint32_t* b = buf + TPB;
  a[t] = v;
  __syncthreads();
#pragma unroll
  for (int off = 1; off < TPB; off <<= 1) {
    uint32_t x = a[t];
    if (t >= static_cast<unsigned>(off)) x += a[t - off];
    b[t] = x;
    __syncthreads();
    uint32_t* tmp = a;
    a = b;
    b = tmp;
  }
  return a[t] - v;
}

// Exclusive scan by warp shuffles: scan in each warp, one shared word per warp, scan of the
// warp totals by warp 0.
template <int TPB>
__device__ __forceinline__ unsigned scan_block_warp(unsigned v, uint32_t* totals) {
  constexpr int kWarps = TPB / 32;
  const unsigned t = threadIdx.x, lane = t & 31u, warp = t >> 5;
  unsigned x = v;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned y = __shfl_up_sync(0xFFFFFFFFu, x, off);
    if (lane >= static_cast<unsigned>(off)) x += y;
  }
  if (lane == 31) totals[warp] = x;
  __syncthreads();
  if (warp == 0) {
    unsigned w = lane < kWarps ? totals[lane] : 0u;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const unsigned y = __shfl_up_sync(0xFFFFFFFFu, w, off);
      if (lane >= static_cast<unsigned>(off)) w += y;
    }
    if (lane < kWarps) totals[lane] = w;
  }
  __syncthreads();
  return x - v + (warp > 0 ? totals[warp - 1] : 0u);
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
__global__ void __launch_bounds__(TPB) gap_decode_kernel(const __grid_constant__ LaunchParams p, const SmemLayout sl) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr VariantSpec spec{TK, P, S, TPB, BPT, false};
  constexpr bool kStaged = S == Staging::cp_async;
  const unsigned t = threadIdx.x;
  const uint64_t b = p.block_begin + blockIdx.x;
  load_tables(spec, p, smem, sl, t, TPB);
  if constexpr (kStaged) {
    const uint8_t* src = p.stream + b * (TPB * BPT);
    uint8_t* dst = smem + sl.input;
    cp_async<BPT>(dst + t * BPT, src + t * BPT);
    if (t == 0) cp_async<16>(dst + TPB * BPT, src + TPB * BPT);
    cp_async_wait_all();
  }
  __syncthreads();
  const auto table = make_table<TK>(p, smem, sl);
  BlockCtx<decltype(table)> c{&p, table, b, 0, 0, kStaged ? smem + sl.input : p.stream + b * (TPB * BPT),
                              TPB, BPT, smem, sl};
  if constexpr (P == Partition::thread_pos) {
    c.block_first = p.positions[b * TPB];
    const uint64_t last = (b + 1) * TPB < p.n_chunks ? (b + 1) * TPB : p.n_chunks;
    c.block_end = p.positions[last];
    if (chunk_exists(p, b, TPB, t)) pass2<S, !kStaged>(c, t, p.positions[b * TPB + t], 0);
  } else {
    c.block_first = p.positions[b];
    c.block_end = p.positions[b + 1];
    const unsigned count = pass1<S, !kStaged>(c, t);
    uint32_t* scan = reinterpret_cast<uint32_t*>(smem + sl.scan);
    const unsigned excl = P == Partition::gap_warp ? scan_block_warp<TPB>(count, scan) : scan_block_smem<TPB>(count, scan);
    pass2<S, !kStaged>(c, t, c.block_first + excl, count);
  }
  if constexpr (S != Staging::direct) {
    __syncthreads();
    copy_out<S>(c, t);
  }
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
void launch_kernel(const GapDeviceImage& img, uint16_t* out, uint64_t lo, uint64_t hi, cudaStream_t stream) {
  const VariantSpec& spec = img.spec();
  const auto [b0, b1] = block_range(spec, img.host(), lo, hi);
  if (b1 <= b0) return;
  LaunchParams p = img.params(out, lo, hi);
  p.block_begin = static_cast<uint32_t>(b0);
  const SmemLayout sl = smem_layout(spec, img.host().n_rows, img.host().max_block_elements);
  auto kernel = gap_decode_kernel<TK, P, S, TPB, BPT>;
  if (sl.total > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sl.total)));
  }
  kernel<<<static_cast<unsigned>(b1 - b0), TPB, sl.total, stream>>>(p, sl);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::unique_ptr<DeviceImage> VariantDecoder::upload(const EncodedUnit& unit, Stream stream) const {
  return std::make_unique<GapDeviceImage>(spec_, prepare_image(spec_, unit), stream);
}

void VariantDecoder::launch(const DeviceImage& image, uint16_t* out_device, uint64_t lo, uint64_t hi,
                            Stream stream) const {
  const auto* img = dynamic_cast<const GapDeviceImage*>(&image);
  if (img == nullptr || !(img->spec().layout() == spec_.layout())) {
    throw Error(name() + ": launch with an image uploaded for another layout");
  }
  if (lo > hi || hi > img->n_elements()) {
    throw Error(name() + ": range [" + std::to_string(lo) + ", " + std::to_string(hi) + ") is outside the unit's " +
                std::to_string(img->n_elements()) + " elements");
  }
#define DF11_LAUNCH(T, P, S, TPB, BPT, M)                                                                      \
  if (spec_.table == TableKind::T && spec_.partition == Partition::P && spec_.staging == Staging::S &&         \
      spec_.threads_per_block == TPB && spec_.bytes_per_thread == BPT) {                                       \
    launch_kernel<TableKind::T, Partition::P, Staging::S, TPB, BPT>(*img, out_device, lo, hi, stream);          \
    return;                                                                                                    \
  }
  DF11_GAP_VARIANTS(DF11_LAUNCH)
#undef DF11_LAUNCH
  throw Error(name() + ": no kernel instance");
}

std::unique_ptr<DeviceImage> Decoder::upload(const EncodedUnit&, Stream) const {
  throw Error(name() + ": this decoder has no device implementation");
}

void Decoder::launch(const DeviceImage&, uint16_t*, uint64_t, uint64_t, Stream) const {
  throw Error(name() + ": this decoder has no device implementation");
}

bool built_with_cuda() { return true; }

}  // namespace df11::dec

namespace df11::cuda {

bool device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" / "no device" error
    return false;
  }
  return n > 0;
}

}  // namespace df11::cuda
