// Kernels of the gap-decode family and their upload/launch. One template kernel, a wrapper
// around gap_decode_block (gap_decode.cuh), which the host also runs on the SIMT executor; the
// variant list (common/variants.inc) says which instances exist.
#include <cuda_runtime.h>

#include <cstdlib>

#include <algorithm>
#include <atomic>
#include <cstdio>

#include "common/cuda_util.hpp"
#include "common/device_image.cuh"
#include "common/variant_decoder.hpp"
#include "common/variants.inc"
#include "gap_decode/gap_decode.cuh"

namespace df11::dec {
namespace {

std::atomic<uint64_t> g_early_refused{0};  // early_launches_refused()

// An early launch (Start::early) may run beside the kernel before it on its stream, which may
// still read the output buffer: the fix64 kernels decode a unit before they wait for it (in
// gap_decode_fixed, before each copy-out), the others wait as they start.
template <Partition P>
__device__ void wait_unless_fixed() {
  if constexpr (P != Partition::fixed_out) simt::grid_dependency_wait();
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
__global__ void __launch_bounds__(TPB) gap_decode_kernel(const __grid_constant__ LaunchParams p, const SmemLayout sl) {
  extern __shared__ __align__(16) uint8_t smem[];
  wait_unless_fixed<P>();
  gap_decode_block<TK, P, S, TPB, BPT>(p, sl, smem);
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
__global__ void __launch_bounds__(TPB)
    gap_decode_persistent_kernel(const __grid_constant__ LaunchParams p, const SmemLayout sl) {
  extern __shared__ __align__(16) uint8_t smem[];
  wait_unless_fixed<P>();
  gap_decode_persistent<TK, P, S, TPB, BPT>(p, sl, smem);
}

// The dyn schedule: a kernel of its own, so that the persistent kernels keep their names (and
// their SASS) in kernel_resources.json and kernel_sass.json. Given only its block size, ptxas
// held multi12n's warp-count register one to 32 registers and spilled (4 bytes on sm_80, 12 on
// sm_90); t256 ones are told 6 blocks an SM (up to 42 registers: the t256.b16 rows' shared
// memory allows 6 anyway), t512 ones 4 (32 registers, 2048 threads, as before).
template <int TPB>
inline constexpr int kDynMinBlocks = TPB == 256 ? 6 : 2048 / TPB;

template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
__global__ void __launch_bounds__(TPB, kDynMinBlocks<TPB>)
    gap_decode_dynamic_kernel(const __grid_constant__ LaunchParams p, const SmemLayout sl) {
  extern __shared__ __align__(16) uint8_t smem[];
  wait_unless_fixed<P>();
  gap_decode_persistent<TK, P, S, TPB, BPT, true>(p, sl, smem);
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT, Schedule Sc>
void launch_kernel(const GapDeviceImage& img, uint16_t* out, uint64_t lo, uint64_t hi, cudaStream_t stream,
                   Order order, Start start) {
  constexpr bool Persist = Sc != Schedule::grid;
  const VariantSpec& spec = img.spec();
  const auto [b0, b1] = block_range(spec, img.host(), lo, hi);
  if (b1 <= b0) return;
  LaunchParams p = img.params(out, lo, hi);
  p.descending = order == Order::descending ? 1u : 0u;
  check_arrays_aligned(spec, p);
  p.block_begin = static_cast<uint32_t>(b0);
  p.block_count = static_cast<uint32_t>(b1 - b0);
  const SmemLayout sl =
      smem_layout(spec, img.host().n_rows, img.host().max_block_elements, 0, img.host().max_warp_elements);
  const auto kernel = [] {
    if constexpr (Sc == Schedule::dyn) {
      return gap_decode_dynamic_kernel<TK, P, S, TPB, BPT>;
    } else if constexpr (Persist) {
      return gap_decode_persistent_kernel<TK, P, S, TPB, BPT>;
    } else {
      return gap_decode_kernel<TK, P, S, TPB, BPT>;
    }
  }();
  // Opt in to more than 48 KiB once per kernel and size (sweeps launch per matrix and slice).
  static thread_local int opted_in = 48 * 1024;
  if (static_cast<int>(sl.total) > opted_in) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sl.total)));
    opted_in = static_cast<int>(sl.total);
  }
  uint64_t grid = grid_schedule_blocks<P, TPB>(b1 - b0);  // fixed_out: a warp per unit
  if constexpr (Persist) {
    // As many CUDA blocks as are resident at once (per shared-memory size, remembered: the e2e
    // path launches per unit), never more than there are DF11 blocks.
    static thread_local cuda::ResidentBlocks resident;
    grid = std::min(grid, resident.get(kernel, TPB, sl.total));
  }
  if constexpr (Sc == Schedule::dyn) {
    // A counter word at 0 (the kernel leaves it so: gap_decode_persistent); the warp-count
    // kernel counts (block, warp) units in it, the others their launch's blocks or units.
    const uint64_t takes = static_cast<uint64_t>(p.block_count) * (P == Partition::warp_count ? TPB / 32 : 1);
    if (takes > UINT32_MAX) throw Error("dyn schedule: too many units");
    p.work = img.work_counter();
  }
  // Early only where the loaded code has the wait: a kernel built from PTX older than sm_90's
  // (an architecture list without 90, JIT-compiled for this device) has its
  // griddepcontrol.wait compiled out, and an early start there would race the kernel before it.
  static thread_local bool refused = false;
  static const bool has_wait = [&] {
    cudaFuncAttributes fa{};
    return cudaFuncGetAttributes(&fa, kernel) == cudaSuccess && fa.ptxVersion >= 90;
  }();
  if (start == Start::early && !refused && has_wait && device_starts_early()) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(grid));
    cfg.blockDim = dim3(TPB);
    cfg.dynamicSmemBytes = sl.total;
    cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, p, sl);
    if (e == cudaSuccess) return;
    // Refused (a runtime without it, a capture that cannot record it): said once, then serial
    // from now on. (Inside a capture the refusal has invalidated it, so the serial launch below
    // fails too and the caller's capture_graph runs the work eagerly.)
    (void)cudaGetLastError();
    std::fprintf(stderr, "gap_decode: early launch refused (%s); launching serially\n", cudaGetErrorString(e));
    refused = true;
    g_early_refused.fetch_add(1, std::memory_order_relaxed);
  }
  kernel<<<static_cast<unsigned>(grid), TPB, sl.total, stream>>>(p, sl);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::unique_ptr<DeviceImage> VariantDecoder::upload(const EncodedUnit& unit, Stream stream) const {
  return std::make_unique<GapDeviceImage>(spec_, prepare_image(spec_, unit), stream);
}

void VariantDecoder::launch(const DeviceImage& image, uint16_t* out_device, uint64_t lo, uint64_t hi,
                            Stream stream, Order order, Start start) const {
  // The image must come from this very variant: variants sharing a layout prepare different
  // tables (a flat root, a canonical table) and shared-memory layouts.
  const auto* img = dynamic_cast<const GapDeviceImage*>(&image);
  if (img == nullptr || !spec_.same_kernel(img->spec())) {
    throw Error(name() + ": launch with an image uploaded by another variant");
  }
  if (lo > hi || hi > img->n_elements()) {
    throw Error(name() + ": range [" + std::to_string(lo) + ", " + std::to_string(hi) + ") is outside the unit's " +
                std::to_string(img->n_elements()) + " elements");
  }
#define DF11_LAUNCH(T, P, S, TPB, BPT, M, PS)                                                                  \
  if (spec_.same_kernel({TableKind::T, Partition::P, Staging::S, TPB, BPT, M, Schedule::PS})) {            \
    launch_kernel<TableKind::T, Partition::P, Staging::S, TPB, BPT, Schedule::PS>(*img, out_device, lo, hi,    \
                                                                                   stream, order, start);      \
    return;                                                                                                    \
  }
  DF11_GAP_VARIANTS(DF11_LAUNCH)
#undef DF11_LAUNCH
  throw Error(name() + ": no kernel instance");
}

std::unique_ptr<DeviceImage> Decoder::upload(const EncodedUnit&, Stream) const {
  throw Error(name() + ": this decoder has no device implementation");
}

void Decoder::launch(const DeviceImage&, uint16_t*, uint64_t, uint64_t, Stream, Order, Start) const {
  throw Error(name() + ": this decoder has no device implementation");
}

bool built_with_cuda() { return true; }

uint64_t early_launches_refused() { return g_early_refused.load(std::memory_order_relaxed); }

// Programmatic dependent launch: sm_90 and later; asked once per device.
bool device_starts_early() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  static thread_local int asked = -1;
  static thread_local bool answer = false;
  if (asked != dev) {
    int major = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    answer = major >= 9;
    asked = dev;
  }
  return answer;
}

}  // namespace df11::dec

namespace df11::cuda {

bool device_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    // "No device" and "no driver" are the normal answers here; anything else is worth a line,
    // or a broken driver would look like a machine without a GPU (tests would skip). On a GPU
    // machine (DF11_EXPECT_GPU set, as scripts/device_check.sh does) every answer is.
    const bool expect_gpu = std::getenv("DF11_EXPECT_GPU") != nullptr;
    if (expect_gpu || (e != cudaErrorNoDevice && e != cudaErrorInsufficientDriver)) {
      std::fprintf(stderr, "cudaGetDeviceCount: %s\n", cudaGetErrorString(e));
    }
    (void)cudaGetLastError();  // clear the sticky error
    return false;
  }
  return n > 0;
}

}  // namespace df11::cuda
