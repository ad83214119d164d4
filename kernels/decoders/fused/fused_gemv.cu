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

// Registers capped at 40 for batch 1 and 64 for batches 4 and 16 (ptxas would take 64 and ~80:
// at 80 one t512 block fits an SM, not two). At 32, batch 1's segment walk spills (the fixed
// decode's too); 40 costs the two-pass and fixed (t512) kernels their fourth block an SM, not the
// one-pass (t256) kernel, which shared memory holds to six on sm_90.
// The fixed decode's kernel at batch 1 fits 32 (4 blocks of 512 an SM: every thread slot): its
// BF16 reference is a kernel of its own and its unit walk counts in 32 bits.
// fixed_mma (one kernel for every batch): 64, two blocks of 512 an SM (at 40, three blocks, ptxas
// spilled 30-90 bytes however the MMA loop was written; not measured on a GPU).
template <FusedDecode D, int B, bool kRef>
inline constexpr int kFusedMinBlocks =
    65536 / (fused::kThreads<D> *
             (D == FusedDecode::fixed_mma ? 64 : B == 1 ? (is_fixed(D) && !kRef ? 32 : 40) : 64));
template <FusedDecode D, int B, bool kRef>
__global__ void __launch_bounds__(fused::kThreads<D>, (kFusedMinBlocks<D, B, kRef>))
    fused_gemv_kernel(const __grid_constant__ LaunchParams p, const SmemLayout sl, const __grid_constant__ fused::GemvParams g) {
  extern __shared__ __align__(16) uint8_t smem[];
  fused::gemv_blocks<D, B, kRef>(p, sl, smem, g);
}

__global__ void fused_finish_kernel(const __grid_constant__ fused::GemvParams g) {
  fused::gemv_finish(g, static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
}

template <FusedDecode D, int B, bool kRef>
void launch_kernel(LaunchParams p, const SmemLayout& sl, const fused::GemvParams& g, uint64_t b0, uint64_t b1,
                   cudaStream_t s) {
  auto kernel = fused_gemv_kernel<D, B, kRef>;
  constexpr int kThreads = fused::kThreads<D>;
  const unsigned smem = fused::smem_bytes<D, B>(sl);
  static thread_local unsigned opted_in = 48 * 1024;
  if (smem > opted_in) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    opted_in = smem;
  }
  // Persistent blocks: as many as are resident at once (remembered per shared-memory size).
  static thread_local cuda::ResidentBlocks resident;
  const uint64_t resident_grid = resident.get(kernel, kThreads, smem);
  p.block_begin = static_cast<uint32_t>(b0);
  p.block_count = static_cast<uint32_t>(b1 - b0);
  // The fixed decode's blocks of work are warp units: kWarps of them a CUDA block; fixed_mma's
  // are tiles of kWarps units.
  const uint64_t per = is_fixed(D) ? static_cast<uint64_t>(fused::kWarps<D>) : 1;
  const uint64_t want = D == FusedDecode::fixed_mma ? fused::mma_tiles(g) : (b1 - b0 + per - 1) / per;
  const uint64_t grid = want < resident_grid ? want : resident_grid;
  kernel<<<static_cast<unsigned>(grid), kThreads, smem, s>>>(p, sl, g);
  CUDA_CHECK(cudaGetLastError());
}

// Kernel 1 for the run: the fixed decode's BF16 reference is a kernel of its own, fixed_nh's and
// fixed_late's too (it decodes nothing, so hints nothing: fixed's).
template <FusedDecode D, int B>
void launch_blocks(LaunchParams p, const SmemLayout& sl, const fused::GemvParams& g, uint64_t b0, uint64_t b1,
                   cudaStream_t s) {
  if constexpr (is_fixed(D)) {
    if (fused::ref_kernel<D>(g)) {
      // (fixed_mma's reference: its own tensor-core products on the BF16 weights.)
      constexpr FusedDecode kRefDecode = D == FusedDecode::fixed_mma ? D : FusedDecode::fixed;
      launch_kernel<kRefDecode, B, true>(p, sl, g, b0, b1, s);
      return;
    }
  }
  launch_kernel<D, B, false>(p, sl, g, b0, b1, s);
}

}  // namespace

struct FusedGemvDevice::Impl {
  FusedPlan plan;
  std::unique_ptr<GapDeviceImage> own_image;
  const GapDeviceImage* image = nullptr;  // own_image, a decoder's, or null (bf16_only)
  cuda::DeviceBuffer<uint32_t> positions;  // bf16_only: the block positions, the one array kernel 1 reads
  int n_rows = 0;                          // bf16_only: sizes shared memory as an image would
  uint32_t max_block_elements = 0;
  uint64_t n_elements = 0;
  cuda::DeviceBuffer<uint32_t> pair_base, block_k0, row_ptr, row_pairs;
  cuda::DeviceBuffer<float> partials;
  int max_batch = 0;
};

FusedGemvDevice::FusedGemvDevice(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats, int max_batch,
                                 Stream stream, Source source, const DeviceImage* shared,
                                 std::optional<FusedDecode> decode)
    : impl_(std::make_unique<Impl>()) {
  const int batch_limit = fused_max_batch(decode ? *decode : FusedDecode::two_pass);
  if (max_batch < 0 || max_batch > batch_limit) {
    throw Error("fused gemv: unit " + unit.name + ": max_batch " + std::to_string(max_batch) + " (0.." +
                std::to_string(batch_limit) + ")");
  }
  if (const Status st = fused_can_implement(unit, mats, std::max(max_batch, 1), decode); !st.ok) throw Error(st.reason);
  if ((source == Source::shared_image) != (shared != nullptr)) {
    throw Error("fused gemv: unit " + unit.name + ": a shared image is given exactly with Source::shared_image");
  }
  impl_->plan = plan_fused(unit, mats, decode);
  if (impl_->plan.decode == FusedDecode::fixed_mma) {  // mma.sync with BF16 operands: sm_80 and later
    int dev = 0, major = 0, minor = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    if (major < 8) {
      throw Error("fused gemv: unit " + unit.name + ": the tensor-core kernel needs sm_80 or later, the device is sm_" +
                  std::to_string(major) + std::to_string(minor));
    }
  }
  impl_->max_batch = max_batch;
  impl_->n_elements = unit.n_elements;
  const std::string who = "fused gemv: unit " + unit.name + ": the shared image ";
  switch (source) {
    case Source::shared_image: {
      const auto* gap = dynamic_cast<const GapDeviceImage*>(shared);
      if (gap == nullptr) throw Error(who + "is not a gap-decode variant's");
      // The fixed decode reads a fix64 image's multi root (the global chained tables for single
      // codes; wide for fixed_wide), start bits and word stream; the others the image's multi
      // and flat roots, gaps and positions.
      if (const Status st = fused_can_share_image(gap->spec(), impl_->plan.decode); !st.ok) throw Error(who + "is " + st.reason);
      const HostImage& h = gap->host();
      // (A fix64 image's n_blocks counts its units, as the fixed decode's plan does.)
      if (h.n_blocks != impl_->plan.n_blocks() || h.n_elements != unit.n_elements ||
          h.n_bytes != unit.encoded_exponent.size()) {
        throw Error(who + "holds another unit (" + std::to_string(h.n_blocks) + " blocks, " +
                    std::to_string(h.n_elements) + " elements, " + std::to_string(h.n_bytes) + " bytes; the unit " +
                    std::to_string(impl_->plan.n_blocks()) + ", " + std::to_string(unit.n_elements) + ", " +
                    std::to_string(unit.encoded_exponent.size()) + ")");
      }
      impl_->image = gap;
      break;
    }
    case Source::own_image: {
      const VariantSpec spec = fused_spec(impl_->plan.decode);
      impl_->own_image = std::make_unique<GapDeviceImage>(spec, prepare_image(spec, unit), stream);
      impl_->image = impl_->own_image.get();
      break;
    }
    case Source::bf16_only: {
      std::vector<uint32_t> pos(impl_->plan.block_pos.size());
      for (std::size_t b = 0; b < pos.size(); ++b) {
        if (impl_->plan.block_pos[b] > UINT32_MAX) throw Error("fused gemv: unit " + unit.name + ": over 2^32 elements");
        pos[b] = static_cast<uint32_t>(impl_->plan.block_pos[b]);
        if (b > 0) impl_->max_block_elements = std::max(impl_->max_block_elements, pos[b] - pos[b - 1]);
      }
      impl_->positions = cuda::DeviceBuffer<uint32_t>::from(pos, stream);
      impl_->n_rows = static_cast<int>(unit.luts.size() / 256);
      break;
    }
  }
  impl_->pair_base = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.pair_base, stream);
  impl_->block_k0 = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.block_k0, stream);
  impl_->row_ptr = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.row_ptr, stream);
  impl_->row_pairs = cuda::DeviceBuffer<uint32_t>::from(impl_->plan.row_pairs, stream);
  if (max_batch > 0) impl_->partials = cuda::DeviceBuffer<float>(partials_floats(max_batch));
  CUDA_CHECK(cudaStreamSynchronize(stream));  // the host vectors the copies read go on living; be explicit
}

FusedGemvDevice::~FusedGemvDevice() = default;

const FusedPlan& FusedGemvDevice::plan() const { return impl_->plan; }

uint64_t FusedGemvDevice::partials_floats(int batch) const {
  return std::max<uint64_t>(impl_->plan.n_pairs(), 1) * static_cast<uint64_t>(std::max(batch, 1));
}

uint64_t FusedGemvDevice::device_bytes() const {
  return (impl_->own_image ? impl_->own_image->device_bytes() : 0) + impl_->positions.bytes() +
         impl_->pair_base.bytes() + impl_->block_k0.bytes() + impl_->row_ptr.bytes() + impl_->row_pairs.bytes() + impl_->partials.bytes();
}

void FusedGemvDevice::run(const std::vector<const uint16_t*>& x, const std::vector<uint16_t*>& y, int batch,
                          Stream stream, const uint16_t* weights) const {
  run(plain_run(impl_->plan, weights, x, y, batch), stream);
}

// One partials buffer: runs on different streams at the same time would race; callers use one.
void FusedGemvDevice::run(const GemvRun& r, Stream stream) const {
  const Impl& d = *impl_;
  if (r.partials == nullptr && (r.batch < 1 || r.batch > d.max_batch)) {
    throw Error("fused gemv: batch " + std::to_string(r.batch) + " outside the device's 1.." +
                std::to_string(d.max_batch) + " (and no partials buffer given)");
  }
  fused::GemvParams g = fused::gemv_params(d.plan, r);
  g.pair_base = d.pair_base.get();
  g.block_k0 = d.block_k0.get();
  g.row_ptr = d.row_ptr.get();
  g.row_pairs = d.row_pairs.get();
  g.partials = r.partials != nullptr ? r.partials : d.partials.get();
  LaunchParams p{};
  SmemLayout sl;
  if (d.image != nullptr) {
    const HostImage& h = d.image->host();
    p = d.image->params(nullptr, 0, h.n_elements);
    sl = fused::fused_smem_layout(d.plan.decode, h.n_rows, h.max_block_elements);
  } else {
    if (r.weights == nullptr) throw Error("fused gemv: this device holds no DF11 image: its runs read BF16 weights");
    p.positions = d.positions.get();
    p.n_elements = d.n_elements;
    p.max_block_elements = d.max_block_elements;
    sl = fused::fused_smem_layout(d.plan.decode, d.n_rows, d.max_block_elements);
  }
  fused::choose_vector_paths(g, p.sign_mantissa);
  if (d.plan.decode == FusedDecode::fixed_mma) fused::check_mma_inputs(g);
  // Not a structured binding: the lambda below captures them (clang 14 cannot).
  const std::pair<uint64_t, uint64_t> blocks = fused::run_blocks(d.plan, g);
  const uint64_t b0 = blocks.first, b1 = blocks.second;
  if (b1 > b0) {
    fused::with_decode(d.plan.decode, [&](auto dc) {
      constexpr FusedDecode kD = decltype(dc)::value;
      if constexpr (kD == FusedDecode::fixed_mma) {
        launch_blocks<kD, fused::kMaxBatch>(p, sl, g, b0, b1, stream);  // one kernel for every batch
      } else {
        fused::with_batch_size(r.batch, [&](auto b) { launch_blocks<kD, decltype(b)::value>(p, sl, g, b0, b1, stream); });
      }
    });
  }
  const uint64_t n_out = g.row_count * static_cast<uint64_t>(r.batch);
  const unsigned threads = 256;
  if (n_out > 0) {
    fused_finish_kernel<<<static_cast<unsigned>((n_out + threads - 1) / threads), threads, 0, stream>>>(g);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace df11::dec
