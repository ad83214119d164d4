// Fused decode + GEMV on DF11 units (fused_gemv.cuh has the algorithm): the host plan, a run on
// the host SIMT executor (tests), and the device path (CUDA builds; elsewhere it throws).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "codec/layout.hpp"
#include "common/variant.hpp"
#include "decoder.hpp"

namespace df11::dec {

// A matrix of the unit: elements [offset, offset + out * in), row-major [out][in].
struct GemvMatrix {
  uint64_t offset = 0;
  int64_t out = 0, in = 0;
};

// Where a matrix's outputs go in a run: BF16 (rounded once) or float (the sum itself, written or
// added to what is there); `ld` elements between batch rows (0: the matrix's rows, `out`).
struct GemvOut {
  uint16_t* bf16 = nullptr;
  float* f32 = nullptr;
  int64_t ld = 0;
  bool accumulate = false;  // float outputs only: y += sum
};

// One run of the fused kernels over some of a plan's matrices: those with a non-null x. A model
// runs a block's matrices in groups as its data flow allows (q, k, v; o; gate, up; down); a run
// decodes only the DF11 blocks its matrices touch.
struct GemvRun {
  std::vector<const uint16_t*> x;  // per matrix of the plan: X_m [batch][in_m] BF16, or null
  std::vector<GemvOut> y;          // per matrix of the plan (ignored where x is null)
  int batch = 1;
  const uint16_t* weights = nullptr;  // the unit's BF16 words: the reference run; null: decode
  // Device runs: scratch for the partial sums (FusedGemvDevice::partials_floats(batch) floats),
  // so that a model's units can share one buffer; null: the device's own.
  float* partials = nullptr;
};

// The decode the fused kernels run, and so the layout they read:
//   two_pass: the multi12.gap5-warp.exp-smem-v16.t512.b8 decoder's phases on DF11's own layout
//             (counting pass, warp scan, decoding pass);
//   one_pass: the multi12.gap5-cnt.exp-smem-v16.t256.b16 decoder's on DF11's tables with a count
//             byte per thread (chain32.t256.b16.g5.pcount): the scan runs over the stored counts
//             and the codes are decoded once.
//   fixed:    the multi12ng.gap5-fix64.exp-smem-v16.t512.b8 decoder's lanes on DF11's own layout
//             (64 codes a thread from start bits the upload derives); its plan's blocks are the
//             decoder's units of 2048 elements, one warp's each, so the GEMV needs no block
//             reduction. Picked by naming a fix64 variant (fused_decode_for(Decoder)), never by
//             layout alone.
//   fixed_nh: fixed without its L2 hints of each warp's next unit (named by a fix64 exp-smem-nh
//             variant): whether hints a unit ahead are evicted before use and read twice.
//   fixed_late: fixed with those hints issued after the unit's decode, before its GEMV (named by
//             a fix64 exp-smem-late variant): hints a GEMV ahead of their use, not a whole unit.
//   fixed_wide: fixed over the wide root (named by the multi11w fix64 variant): up to five codes
//             a lookup instead of three.
//   fixed_mma: fixed's decode (its spec, tables and hints), the products on the tensor cores
//             (mma.sync m16n8k16, BF16 in, float sums; sm_80 and later) instead of FMAs: a CUDA
//             block's 16 warps decode 16 units that lie at the same column of 16 rows, then
//             multiply the 16 x 2048 tile by X, each warp 128 of its columns, for batches up to
//             kFusedMmaMaxBatch (16 rows of X an instruction). Never picked by a decoder's name
//             (fused_decode_for): asked for explicitly (the sweep's df11-fused-mma, e2e's
//             --fused-mma). Its matrices must tile into such groups (fused_can_implement says
//             which do not).
enum class FusedDecode { two_pass, one_pass, fixed, fixed_nh, fixed_late, fixed_wide, fixed_mma };
// How many (fixed_mma the last: fused_gemv.cpp checks its names count this many).
inline constexpr std::size_t kFusedDecodes = static_cast<std::size_t>(FusedDecode::fixed_mma) + 1;
// The decodes over fix64's units.
[[nodiscard]] constexpr bool is_fixed(FusedDecode d) {
  return d == FusedDecode::fixed || d == FusedDecode::fixed_nh || d == FusedDecode::fixed_late ||
         d == FusedDecode::fixed_wide || d == FusedDecode::fixed_mma;
}
// The decoder spec of each (its layout() is what the unit must be in).
[[nodiscard]] VariantSpec fused_spec(FusedDecode d);
// The fused decode that reads units of this layout, if any (two_pass or one_pass).
[[nodiscard]] std::optional<FusedDecode> fused_decode_for(const Layout& layout);
// The fused decode a decoder variant asks for: fixed for a fix64 variant on DF11's layout, else
// by its layout.
[[nodiscard]] std::optional<FusedDecode> fused_decode_for(const Decoder& decoder);

// Whether the fused kernels of `decode` can read the device image of a variant of `spec`
// (FusedGemvDevice's Source::shared_image, as e2e's DF11 model uses them): the fixed decodes a
// fix64 variant's multi root (the wide one for fixed_wide) and start bits, the others a
// non-fix64 variant's multi and flat roots, gaps and positions; both in fused_spec(decode)'s
// layout. A variant whose layout fused_decode_for maps to a fused decode may still fail this
// (lut8x4 has no multi root, multi12ng no flat one): said before a model is built.
[[nodiscard]] Status fused_can_share_image(const VariantSpec& spec, FusedDecode decode);

// Which (block, row) pairs the unit's blocks of work (DF11 blocks; the fixed decode: fix64's
// units) produce and which pairs make each output row.
struct FusedPlan {
  FusedDecode decode = FusedDecode::two_pass;  // the caller's, else the unit layout's
  std::vector<GemvMatrix> mats;
  std::vector<uint32_t> pair_base;  // per block, + the total
  std::vector<uint32_t> block_k0;   // per block: the column of its first element in that element's row
  std::vector<uint32_t> row_ptr;    // per global row (matrices in order), + 1
  std::vector<uint32_t> row_pairs;  // CSR: each row's pairs in block order
  std::vector<uint64_t> block_pos;  // per block: its first element, + the unit's elements
  uint64_t n_rows = 0;
  [[nodiscard]] uint64_t n_pairs() const { return pair_base.empty() ? 0 : pair_base.back(); }
  [[nodiscard]] uint64_t n_blocks() const { return block_pos.empty() ? 0 : block_pos.size() - 1; }
  // Blocks [first, second) whose elements meet [lo, hi).
  [[nodiscard]] std::pair<uint64_t, uint64_t> blocks(uint64_t lo, uint64_t hi) const;
};

inline constexpr int kFusedMaxBatch = 16;
inline constexpr int kFusedMmaMaxBatch = 64;
// The largest batch a fused decode's kernels take.
[[nodiscard]] constexpr int fused_max_batch(FusedDecode d) {
  return d == FusedDecode::fixed_mma ? kFusedMmaMaxBatch : kFusedMaxBatch;
}
// The fused decode of a name: two_pass, one_pass, fixed, fixed_nh, fixed_late, fixed_wide,
// fixed_mma (none for another name); and the name of one.
[[nodiscard]] std::optional<FusedDecode> fused_decode_named(std::string_view name);
[[nodiscard]] const char* fused_decode_name(FusedDecode d);

// The most rows a pass should run through the fused kernels of this decode rather than decode
// whole blocks and run cuBLAS: where they stopped being faster on the H200 (2026-11-28,
// reports/2026-11-28_h200_nemo_layer, one Nemo layer, us, against the best decode-then-GEMM at
// ~500-505 for every batch up to 16). fixed: 315, 411, 468 at batch 1, 2, 4, then 826 at 8 (a
// unit is decoded again for every 4 rows); one_pass: 463 at 1, 564 at 2; two_pass: 788 at 1
// (its own decoder's decode-then-GEMM 798). e2e's default (ModelRequest::fused_max_rows).
// fixed_mma: not measured yet; its cost should barely grow with the batch up to 16 (one
// instruction takes 16 rows of X), so it is offered for every batch e2e's passes take.
[[nodiscard]] constexpr int fused_default_max_rows(FusedDecode d) {
  return d == FusedDecode::fixed_mma ? kFusedMaxBatch : is_fixed(d) ? 4 : 1;
}

// Whether the fused kernels can run this unit at this batch: a layout of fused_decode_for, at
// most 8 matrices that tile the unit, batch 1..16. The reason when not.
// decode: the fused decode to run (none: the layout's, fused_decode_for(unit.layout)).
[[nodiscard]] Status fused_can_implement(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats, int batch,
                                         std::optional<FusedDecode> decode = std::nullopt);

// The plan (throws df11::Error naming the unit when fused_can_implement says no, batch aside).
[[nodiscard]] FusedPlan plan_fused(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats,
                                   std::optional<FusedDecode> decode = std::nullopt);

// Y_m = X_m W_m^T for every matrix, on the host SIMT executor: the kernels themselves, decoding
// the unit, or (weights non-null: the unit's BF16 words) reading BF16 with the same arithmetic.
// x[m]: [batch][in_m] BF16; y[m]: [batch][out_m] BF16.
void fused_gemv_simt(const EncodedUnit& unit, const FusedPlan& plan, const uint16_t* weights,
                     const std::vector<const uint16_t*>& x, const std::vector<uint16_t*>& y, int batch);
// The run of every matrix with BF16 outputs (stride out) that the plain entry points make.
[[nodiscard]] GemvRun plain_run(const FusedPlan& plan, const uint16_t* weights, const std::vector<const uint16_t*>& x,
                                const std::vector<uint16_t*>& y, int batch);
// The general run (matrix subsets, float outputs, strides, accumulation) on the SIMT executor.
void fused_gemv_simt(const EncodedUnit& unit, const FusedPlan& plan, const GemvRun& run);

// Whether y, one BF16 output of a fused run, lies within rounding of the double-precision dot
// product of a weight row and an activation row (n BF16 elements each): BF16 output rounding
// plus float accumulation over n terms. The double result goes to *reference when given. The
// one tolerance of every check of the fused kernels (tests, the sweep).
[[nodiscard]] bool fused_output_close(const uint16_t* w_row, const uint16_t* x_row, int64_t n, uint16_t y,
                                      double* reference = nullptr);

// The device side: the unit's image, the plan and a partials buffer on the GPU.
class FusedGemvDevice {
 public:
  // Where kernel 1 gets the unit's DF11 arrays: its own upload; a decoder's image of the unit
  // (`shared`: it must outlive this object and carry the multi-symbol tables of the unit's
  // layout, i.e. come from a multi12 variant of that layout: multi12.gap5-{warp,block}.*.t512.b8
  // for DF11's, multi12.gap5-cnt.*.t256.b16 for the count layout); or none, for a device whose
  // runs only ever read BF16 weights (GemvRun::weights): it uploads the block positions alone.
  enum class Source { own_image, shared_image, bf16_only };
  // max_batch: the batches the device's own partials buffer serves (0: none; every run then
  // brings GemvRun::partials).
  // decode: the fused decode (none: the unit layout's, fused_decode_for(unit.layout)).
  FusedGemvDevice(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats, int max_batch, Stream stream,
                  Source source = Source::own_image, const DeviceImage* shared = nullptr,
                  std::optional<FusedDecode> decode = std::nullopt);
  ~FusedGemvDevice();
  FusedGemvDevice(const FusedGemvDevice&) = delete;
  FusedGemvDevice& operator=(const FusedGemvDevice&) = delete;
  // Device pointers: x[m] [batch][in_m], y[m] [batch][out_m]; weights: the unit's BF16 words on
  // the device for the reference run, or null to decode.
  void run(const std::vector<const uint16_t*>& x, const std::vector<uint16_t*>& y, int batch, Stream stream,
           const uint16_t* weights = nullptr) const;
  // The general run (device pointers throughout). One partials buffer: runs that share one must
  // be ordered (one stream).
  void run(const GemvRun& run, Stream stream) const;
  [[nodiscard]] const FusedPlan& plan() const;
  // Floats of partial sums a run of this batch needs.
  [[nodiscard]] uint64_t partials_floats(int batch) const;
  // Device bytes this object allocated (a shared image not counted).
  [[nodiscard]] uint64_t device_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace df11::dec
