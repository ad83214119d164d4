// Fused decode + GEMV on the GPU (fused_gemv.cuh): the unit's image (the multi12.gap5-warp
// exp-smem decoder's), the plan and a partials buffer on the device; kernel 1 per DF11 block,
// kernel 2 per output.
#include <cuda_runtime.h>

#include "common/cuda_util.hpp"
#include "common/device_image.cuh"
#include "fused/fused_gemv.cuh"
#include "fused/fused_gemv.hpp"

namespace df11::dec {
namespace {

template <int B>
__global__ void __launch_bounds__(fused::kThreads)
    fused_gemv_kernel(const __grid_constant__ LaunchParams p, const SmemLayout sl, const __grid_constant__ fused::GemvParams g) {
  extern __shared__ __align__(16) uint8_t smem[];
  fused::gemv_blocks<B>(p, sl, smem, g);
}

__global__ void fused_finish_kernel(const __grid_constant__ fused::GemvParams g) {
  fused::gemv_finish(g, static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
}

template <int B>
void launch_blocks(LaunchParams p, const SmemLayout& sl, const fused::GemvParams& g, uint64_t n_blocks,
                   cudaStream_t s) {
  auto kernel = fused_gemv_kernel<B>;
  const unsigned smem = fused::smem_bytes(sl);
  static thread_local unsigned opted_in = 48 * 1024;
  if (smem > opted_in) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    opted_in = smem;
  }
  // Persistent blocks: as many as are resident at once (cached per shared-memory size).
  static thread_local unsigned cached_smem = 0;
  static thread_local uint64_t cached_grid = 0;
  if (cached_smem != smem || cached_grid == 0) {
    cached_grid = cuda::resident_blocks(kernel, fused::kThreads, smem);
    cached_smem = smem;
  }
  p.block_begin = 0;
  p.block_count = static_cast<uint32_t>(n_blocks);
  const uint64_t grid = n_blocks < cached_grid ? n_blocks : cached_grid;
  kernel<<<static_cast<unsigned>(grid), fused::kThreads, smem, s>>>(p, sl, g);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

struct FusedGemvDevice::Impl {
  FusedPlan plan;
  std::unique_ptr<GapDeviceImage> image;
  cuda::DeviceBuffer<uint32_t> pair_base, row_ptr, row_pairs;
  cuda::DeviceBuffer<float> partials;
  int max_batch = 1;
};

FusedGemvDevice::FusedGemvDevice(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats, int max_batch,
                                 Stream stream)
    : impl_(std::make_unique<Impl>()) {
  if (const Status st = fused_can_implement(unit, mats, max_batch); !st.ok) throw Error(st.reason);
  impl_->plan = plan_fused(unit, mats);
  impl_->max_batch = max_batch;
  impl_->image = std::make_unique<GapDeviceImage>(fused::kSpec, prepare_image(fused::kSpec, unit), stream);
  impl_->pair_base = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.pair_base, stream);
  impl_->row_ptr = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.row_ptr, stream);
  impl_->row_pairs = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.row_pairs, stream);
  impl_->partials =
      cuda::DeviceBuffer<float>(std::max<uint64_t>(impl_->plan.n_pairs(), 1) * static_cast<uint64_t>(max_batch));
  CUDA_CHECK(cudaStreamSynchronize(stream));  // the host vectors the copies read go on living; be explicit
}

FusedGemvDevice::~FusedGemvDevice() = default;

uint64_t FusedGemvDevice::device_bytes() const {
  return impl_->image->device_bytes() + impl_->pair_base.bytes() + impl_->row_ptr.bytes() + impl_->row_pairs.bytes() +
         impl_->partials.bytes();
}

// One partials buffer: runs on different streams at the same time would race; callers use one.
void FusedGemvDevice::run(const std::vector<const uint16_t*>& x, const std::vector<uint16_t*>& y, int batch,
                          Stream stream, const uint16_t* weights) const {
  const Impl& d = *impl_;
  if (batch < 1 || batch > d.max_batch) {
    throw Error("fused gemv: batch " + std::to_string(batch) + " outside 1.." + std::to_string(d.max_batch));
  }
  fused::GemvParams g = fused::gemv_params(d.plan, x, y, batch, weights);
  g.pair_base = d.pair_base.get();
  g.row_ptr = d.row_ptr.get();
  g.row_pairs = d.row_pairs.get();
  g.partials = d.partials.get();
  const HostImage& h = d.image->host();
  const LaunchParams p = d.image->params(nullptr, 0, h.n_elements);
  fused::choose_vector_paths(g, p.sign_mantissa);
  const SmemLayout sl = smem_layout(fused::kSpec, h.n_rows, h.max_block_elements);
  if (h.n_blocks > 0) {
    fused::with_batch_size(batch, [&](auto b) { launch_blocks<decltype(b)::value>(p, sl, g, h.n_blocks, stream); });
  }
  const uint64_t n_out = d.plan.n_rows * static_cast<uint64_t>(batch);
  const unsigned threads = 256;
  if (n_out > 0) {
    fused_finish_kernel<<<static_cast<unsigned>((n_out + threads - 1) / threads), threads, 0, stream>>>(g);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace df11::dec
