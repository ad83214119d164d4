// Fused decode + GEMV for small batches: Y_m[b, r] = sum_k W_m[r, k] * X_m[b, k] for every
// matrix m of a DF11 unit, straight from the encoding, without writing the decoded weights to
// global memory. The BF16 words exist only in shared memory (as exponent bytes) and registers.
//
// Kernel 1, persistent blocks looping over the DF11 blocks: decode a block's exponents into shared memory (the
// phases of a multi12 exp-smem decoder: up to three codes per table lookup, which the instruction
// budget of a memory-bound fused GEMV needs; two passes on DF11's layout, one on the count layout,
// FusedDecode in fused_gemv.hpp), then for every row the block's
// elements touch, multiply its part of the row by X and reduce over the block in a fixed order
// into one partial sum per (block, row, batch row). Kernel 2: per output, the partials of the
// blocks that touch its row, in block order, rounded to BF16 once.
//
// Every sum runs in an order fixed by the partition alone, so the same kernels reading BF16
// weights instead of decoding them (`weights` non-null) give bit-identical outputs: that is
// the reference a fused method is verified against (not cuBLAS, whose order differs). The
// bodies are __host__ __device__ on simt.cuh: the host SIMT executor runs them in CI.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "fused/fused_gemv.hpp"
#include "gap_decode/gap_decode.cuh"

namespace df11::dec::fused {

inline constexpr int kMaxMatrices = 8;
inline constexpr int kMaxBatch = kFusedMaxBatch;  // fused_gemv.hpp

// The decoder whose phases kernel 1 runs (threads per block = the decoder's, one DF11 block per
// CUDA block). Pass 2 of both is the counted decode loop (multi12n: the multi root's three bytes
// stored per lookup, runs bounded by each thread's code count); the layouts are multi12's.
template <FusedDecode D>
struct Shape;
template <>
struct Shape<FusedDecode::two_pass> {
  static constexpr VariantSpec spec{TableKind::multi_lut_n, Partition::gap_warp, Staging::exp_smem, 512, 8, false};
};
template <>
struct Shape<FusedDecode::one_pass> {
  static constexpr VariantSpec spec{TableKind::multi_lut_n, Partition::thread_count, Staging::exp_smem, 256, 16, false};
};
template <>
struct Shape<FusedDecode::fixed> {
  static constexpr VariantSpec spec{TableKind::multi_lut_ng, Partition::fixed_out, Staging::exp_smem, 512, 8, false};
};
template <>
struct Shape<FusedDecode::fixed_nh> {
  static constexpr VariantSpec spec{TableKind::multi_lut_ng, Partition::fixed_out, Staging::exp_smem_nh, 512, 8, false};
};
template <>
struct Shape<FusedDecode::fixed_late> {
  static constexpr VariantSpec spec{TableKind::multi_lut_ng, Partition::fixed_out, Staging::exp_smem_late, 512, 8,
                                    false};
};
template <>
struct Shape<FusedDecode::fixed_wide> {
  static constexpr VariantSpec spec{TableKind::multi_lut_w, Partition::fixed_out, Staging::exp_smem, 512, 8, false};
};
template <>
struct Shape<FusedDecode::fixed_mma> {  // fixed's decode; the products on the tensor cores
  static constexpr VariantSpec spec = Shape<FusedDecode::fixed>::spec;
};
template <FusedDecode D>
inline constexpr int kThreads = Shape<D>::spec.threads_per_block;
template <FusedDecode D>
inline constexpr int kWarps = kThreads<D> / 32;

// Calls f(std::integral_constant<FusedDecode, D>{}) for the plan's decode.
template <class F>
void with_decode(FusedDecode d, F&& f) {
  if (d == FusedDecode::two_pass) {
    f(std::integral_constant<FusedDecode, FusedDecode::two_pass>{});
  } else if (d == FusedDecode::one_pass) {
    f(std::integral_constant<FusedDecode, FusedDecode::one_pass>{});
  } else if (d == FusedDecode::fixed) {
    f(std::integral_constant<FusedDecode, FusedDecode::fixed>{});
  } else if (d == FusedDecode::fixed_nh) {
    f(std::integral_constant<FusedDecode, FusedDecode::fixed_nh>{});
  } else if (d == FusedDecode::fixed_wide) {
    f(std::integral_constant<FusedDecode, FusedDecode::fixed_wide>{});
  } else if (d == FusedDecode::fixed_mma) {
    f(std::integral_constant<FusedDecode, FusedDecode::fixed_mma>{});
  } else {
    f(std::integral_constant<FusedDecode, FusedDecode::fixed_late>{});
  }
}

// The matrices of the unit, in element order, and the batch's activations and outputs. A matrix
// with a null x is not part of the run: kernel 1 skips its rows, kernel 2 its outputs.
struct GemvParams {
  int n_mats = 0;
  uint64_t offset[kMaxMatrices] = {};  // first element of matrix m in the unit
  uint64_t end[kMaxMatrices] = {};     // one past its last: offset + out * in
  int64_t out[kMaxMatrices] = {};      // rows
  int64_t in[kMaxMatrices] = {};       // columns (row length)
  const uint16_t* x[kMaxMatrices] = {};  // X_m: [batch][in] BF16
  bool vec[kMaxMatrices] = {};  // matrix m may take 8 elements per step (offset, in and pointers 8-aligned)
  uint16_t* y[kMaxMatrices] = {};   // Y_m: [batch][ld] BF16, or
  float* yf[kMaxMatrices] = {};     // Y_m: [batch][ld] float (the sum, not rounded)
  int64_t ldy[kMaxMatrices] = {};   // elements between batch rows of Y_m
  bool acc[kMaxMatrices] = {};      // float outputs: y += sum
  int batch = 1;
  const uint16_t* weights = nullptr;  // BF16 weights of the unit: the reference; null: decode
  const uint32_t* pair_base = nullptr;  // per block: index of its first (block, row) pair
  const uint32_t* block_k0 = nullptr;   // per block: its first element's column in its row
  const uint32_t* row_ptr = nullptr;    // per global row: CSR into row_pairs (+1 entry)
  const uint32_t* row_pairs = nullptr;  // the row's pairs, in block order
  float* partials = nullptr;            // [pair][batch]
  uint64_t row_begin = 0, row_count = 0;  // the global rows of the run's matrices (kernel 2)
};

// The parameters of a run (host; the caller adds the plan's arrays and the partials, sets
// p.block_begin/block_count from run_blocks, then choose_vector_paths). Checks the counts, the
// batch and the output strides. Throws df11::Error.
inline GemvParams gemv_params(const FusedPlan& plan, const GemvRun& run) {
  const std::size_t n = plan.mats.size();
  if (run.x.size() != n || run.y.size() != n) {
    throw Error("fused gemv: " + std::to_string(n) + " matrices, " + std::to_string(run.x.size()) + " inputs and " +
                std::to_string(run.y.size()) + " outputs given");
  }
  if (run.batch < 1 || run.batch > fused_max_batch(plan.decode)) {
    throw Error("fused gemv: batch " + std::to_string(run.batch) + " (1.." +
                std::to_string(fused_max_batch(plan.decode)) + ")");
  }
  GemvParams g;
  g.n_mats = static_cast<int>(n);
  uint64_t row = 0;
  bool any = false;
  for (int i = 0; i < g.n_mats; ++i) {
    const auto ui = static_cast<std::size_t>(i);
    const GemvMatrix& m = plan.mats[ui];
    const GemvOut& o = run.y[ui];
    g.offset[i] = m.offset;
    g.end[i] = m.offset + static_cast<uint64_t>(m.out) * static_cast<uint64_t>(m.in);
    g.out[i] = m.out;
    g.in[i] = m.in;
    if (run.x[ui] != nullptr) {
      if ((o.bf16 == nullptr) == (o.f32 == nullptr)) {
        throw Error("fused gemv: matrix " + std::to_string(i) + " needs exactly one output (BF16 or float)");
      }
      if (o.ld != 0 && o.ld < m.out) {
        throw Error("fused gemv: matrix " + std::to_string(i) + ": output stride " + std::to_string(o.ld) + " < " +
                    std::to_string(m.out) + " rows");
      }
      if (o.accumulate && o.f32 == nullptr) throw Error("fused gemv: only float outputs accumulate");
      if (m.in > (int64_t{1} << 30)) {  // the kernel steps through X rows in 32-bit byte strides
        throw Error("fused gemv: matrix " + std::to_string(i) + ": rows of " + std::to_string(m.in) +
                    " elements (at most 2^30)");
      }
      g.x[i] = run.x[ui];
      g.y[i] = o.bf16;
      g.yf[i] = o.f32;
      g.ldy[i] = o.ld != 0 ? o.ld : m.out;
      g.acc[i] = o.accumulate;
      if (!any) g.row_begin = row;
      any = true;
      g.row_count = row + static_cast<uint64_t>(m.out) - g.row_begin;
    }
    row += static_cast<uint64_t>(m.out);
  }
  if (!any) throw Error("fused gemv: a run without matrices (every input is null)");
  g.batch = run.batch;
  g.weights = run.weights;
  return g;
}

// The DF11 blocks a run's matrices touch: [first, second).
inline std::pair<uint64_t, uint64_t> run_blocks(const FusedPlan& plan, const GemvParams& g) {
  uint64_t lo = UINT64_MAX, hi = 0;
  for (int m = 0; m < g.n_mats; ++m) {
    if (g.x[m] == nullptr) continue;
    lo = lo < g.offset[m] ? lo : g.offset[m];
    const uint64_t end = g.offset[m] + static_cast<uint64_t>(g.out[m] * g.in[m]);
    hi = hi > end ? hi : end;
  }
  return plan.blocks(lo, hi);
}

// Calls f(std::integral_constant<int, B>{}) with the compiled batch size B that serves batch.
template <class F>
void with_batch_size(int batch, F&& f) {
  if (batch == 1) {
    f(std::integral_constant<int, 1>{});
  } else if (batch <= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 16>{});
  }
}

// Which matrices take the 8-wide path: offsets and row lengths multiples of 8 and X aligned for
// 16-byte loads. The choice decides how a row's elements split across threads, hence the float
// sums, so it must not depend on whether the weights are decoded or read: instead the BF16
// weights (16-byte loads) and the sign/mantissa bytes (8-byte loads) must be aligned, or the run
// is refused. Set after x and weights are.
inline void choose_vector_paths(GemvParams& g, const uint8_t* sign_mantissa) {
  auto aligned = [](const void* ptr, uintptr_t n) { return (reinterpret_cast<uintptr_t>(ptr) & (n - 1)) == 0; };
  if (g.weights != nullptr && !aligned(g.weights, 16)) {
    throw Error("fused gemv: the BF16 weights must be 16-byte aligned (their address decides no arithmetic)");
  }
  if (g.weights == nullptr && !aligned(sign_mantissa, 8)) {
    throw Error("fused gemv: the sign/mantissa bytes must be 8-byte aligned");
  }
  for (int m = 0; m < g.n_mats; ++m) g.vec[m] = g.offset[m] % 8 == 0 && g.in[m] % 8 == 0 && aligned(g.x[m], 16);
}

// acc + w * x rounded once (an explicit FMA, so that no compiler choice can make the decoded
// and the BF16 paths differ).
DF11_HD float fma_rn(float w, float x, float acc) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(w, x, acc);
#else
  return std::fma(w, x, acc);
#endif
}

// The float of the BF16 word in the low (pair_lo_float) or high half of a 32-bit pair: exactly
// bf16_to_float of that word, in one shift or one mask.
DF11_HD float pair_lo_float(uint64_t pair) { return bits_to_float(static_cast<uint32_t>(pair) << 16); }
DF11_HD float pair_hi_float(uint64_t pair) { return bits_to_float(static_cast<uint32_t>(pair) & 0xFFFF0000u); }
// Four weights (elements 0..3 of half an 8-wide step) times X's four BF16 words xv, added to acc
// in element order: the one order of every 8-wide step (warp_piece_sums, warp_unit_sum_b1).
DF11_HD float fma4(float w0, float w1, float w2, float w3, uint64_t xv, float acc) {
  acc = fma_rn(w0, pair_lo_float(xv), acc);
  acc = fma_rn(w1, pair_hi_float(xv), acc);
  acc = fma_rn(w2, pair_lo_float(xv >> 32), acc);
  return fma_rn(w3, pair_hi_float(xv >> 32), acc);
}

// The shared-memory layout of kernel 1's decode: the decoder's (smem_layout), but for fixed_mma
// each warp's rows 32 bytes further apart (kMmaRowPad): its MMA step reads 32 bytes of each of 4
// units a half-warp, at the decoder's stride (2304 bytes, a multiple of 128) all on the same 8
// banks, 4 ways conflicted; 2336 puts them on 4 disjoint sets. The rows are the layout's last
// region (checked), so nothing moves but its end.
inline constexpr unsigned kMmaRowPad = 32;
inline SmemLayout fused_smem_layout(FusedDecode d, int n_rows, unsigned max_block_elements, unsigned guard = 0) {
  const VariantSpec spec = fused_spec(d);
  SmemLayout l = smem_layout(spec, n_rows, max_block_elements, guard);
  if (d != FusedDecode::fixed_mma) return l;
  if (l.total != align_up(l.exps + l.exps_bytes + guard)) {
    throw Error("fused gemv (tensor cores): the warps' rows are not the last region of the decoder's shared memory");
  }
  l.exps_stride += kMmaRowPad;
  l.exps_bytes = static_cast<unsigned>(spec.threads_per_block / 32) * l.exps_stride;
  l.total = align_up(l.exps + l.exps_bytes + guard);
  return l;
}

// Shared memory of kernel 1 at compiled batch B: the decoder's layout, then the block
// reduction's buffer: for each of up to kSegments row segments, B x kWarps floats (one per batch
// row and warp); none for the fixed decode, whose warps write their partials themselves.
inline constexpr unsigned kSegments = 4;
DF11_HD unsigned reduce_offset(const SmemLayout& sl) { return align_up(sl.total); }
// fixed_mma: each warp's 16 x 16 accumulators of a tile (16 rows of X by the tile's 16 units).
inline constexpr unsigned kMmaRows = 16;  // rows of X an instruction takes; units a tile
template <FusedDecode D, int B>
DF11_HD unsigned smem_bytes(const SmemLayout& sl) {
  if constexpr (D == FusedDecode::fixed_mma) return reduce_offset(sl) + kWarps<D> * kMmaRows * kMmaRows * 4;
  return reduce_offset(sl) + (is_fixed(D) ? 0u : kSegments * B * kWarps<D> * 4);
}

// In a block or unit of n elements from element `first`: the end of the row segment that starts
// at offset at, column kc; mm: its matrix (advanced to it from an earlier one).
DF11_HD uint32_t row_segment_end(const GemvParams& g, uint64_t first, uint32_t n, uint32_t at, int& mm, uint32_t kc) {
  while (first + at >= g.end[mm]) ++mm;
  const uint64_t left = static_cast<uint64_t>(g.in[mm]) - kc;  // the row's elements from at on
  return n - at > left ? at + static_cast<uint32_t>(left) : n;
}

// A warp's products of elements [p0, p1) of a block or unit (offsets from its first element,
// i 8-aligned in the unit iff (i + mis) % 8 == 0) with X_m, per batch row, into acc[b], summed
// over the warp's lanes (a butterfly: every lane ends with the sums). xs: X_m[0] at element p0's
// column. The weights: wb[i] when reading BF16 (wb non-null), else exponent eb[ex(i)] and
// sign/mantissa smb[i]. Lanes take 8 elements a step (8-byte loads of exponents and
// sign/mantissa, 16-byte loads of weights and X) where the elements are 8-aligned in the unit and
// X_m allows it (g.vec[m]), the rest one by one: the split depends on offsets, row lengths and
// X alone, so decoding and reading BF16 sum in the same order.
template <int B, class Ex>
DF11_HD void warp_piece_sums(const GemvParams& g, int m, uint32_t p0, uint32_t p1, const uint16_t* xs, unsigned mis,
                             int nb, unsigned lane, const uint16_t* wb, const uint8_t* eb, Ex ex, const uint8_t* smb,
                             float (&acc)[B]) {
  const uint32_t in = static_cast<uint32_t>(g.in[m]);  // <= 2^30 (fused_can_implement)
  // Element i of the piece: its weight times X[b][column] into acc[b].
  auto scalar = [&](uint32_t i) {
    const uint16_t word = wb != nullptr ? wb[i] : merge_bf16(eb[ex(i)], smb[i]);
    const float w = bf16_to_float(word);
    const uint32_t k = i - p0;
    for (int b = 0; b < B; ++b) {
      if (b < nb) acc[b] = fma_rn(w, bf16_to_float(xs[static_cast<uint64_t>(b) * in + k]), acc[b]);
    }
  };
  uint32_t a = p1, z = p1;  // the 8-wide range [a, z)
  if (g.vec[m]) {
    const uint32_t a8 = (p0 + mis + 7u) & ~7u, z8 = (p1 + mis) & ~7u;  // in offsets + mis
    if (a8 < z8) {  // then a8 >= mis: no wrap below
      a = a8 - mis;
      z = z8 - mis;
    }
  }
  // The scalar head [p0, a) and tail [z, p1) first (fewer values live across the steps).
  const uint32_t n_head = a - p0, n_scalar = n_head + (p1 - z);
  for (uint32_t j = lane; j < n_scalar; j += 32u) scalar(j < n_head ? p0 + j : z + (j - n_head));
  // The 8-wide steps: each word pair turns into floats by a shift and a mask; the same FMAs in
  // the same order as element by element. The weights are read or decoded in two loops (the
  // choice is uniform).
  if (a < z) {
    const unsigned n_vec = z - a;
    const uint8_t* x0 = reinterpret_cast<const uint8_t*>(xs + (a - p0));  // X[0] at element a
    const uint32_t x_stride = in * 2u;  // bytes between batch rows of X
    auto steps = [&](auto load_words) {
      const uint8_t* xo = x0 + 16u * lane;
      for (unsigned o = 8u * lane; o < n_vec; o += 8u * 32u, xo += 16u * 32u) {
        const Words8 w8 = load_words(o);
        // Elements 0-3, then 4-7, over every batch row: each acc[b] still takes them in order,
        // and only four weights are live at a time (registers at batch 16).
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int h = 0; h < 2; ++h) {
          const uint64_t wh = h == 0 ? w8.lo : w8.hi;
          const float w0 = pair_lo_float(wh), w1 = pair_hi_float(wh), w2 = pair_lo_float(wh >> 32),
                      w3 = pair_hi_float(wh >> 32);
          for (int b = 0; b < B; ++b) {
            if (b >= nb) continue;
            const uint64_t xv = load8(xo + b * static_cast<uint64_t>(x_stride) + 8u * h);
            acc[b] = fma4(w0, w1, w2, w3, xv, acc[b]);
          }
        }
      }
    };
    if (wb != nullptr) {
      const uint8_t* wp = reinterpret_cast<const uint8_t*>(wb + a);
      steps([wp](unsigned o) { return Words8{load8(wp + 2u * o), load8(wp + 2u * o + 8)}; });
    } else {
      const uint8_t* smp = smb + a;
      steps([&](unsigned o) { return merge8(load8(eb + ex(a + o)), load8(smp + o)); });
    }
  }
  // The warp's sum per batch row.
  for (int b = 0; b < B; ++b) {
    if (b >= nb) break;
    float v = acc[b];
    for (unsigned o = 16; o > 0; o >>= 1) v += simt::warp_shfl_xor(v, o);
    acc[b] = v;
  }
}

// Kernel 1 for DF11 block blk, the tables already in shared memory. B: the batch rounded up to
// a compiled size (rows b >= g.batch are skipped).
//
// The block's elements fall into row segments (cut where a row ends; matrices end at row ends),
// one (block, row) pair each. They go in rounds of up to kSegments segments: the round's
// elements are cut into one contiguous chunk per warp (8-aligned in the unit), each warp sums
// the products of its chunk's part of each segment per batch row (lanes 8 elements apart, then
// a butterfly) and lane 0 puts the warp's sum (0 where the chunk misses the segment) into the
// reduction buffer; one barrier, then a thread per (segment, batch row) adds the warps' sums in
// warp order into the pair's partial. A warp so walks its own ~1/kWarps of the block (a segment
// or two for Nemo's rows) instead of every segment, and a segment costs no barrier and no
// division: the plan gives the block's first column (block_k0), the rest of the walk is
// additions in 32-bit offsets from the block's first element.
template <FusedDecode D, int B>
DF11_HD void gemv_one_block(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, const GemvParams& g,
                            uint64_t blk) {
  constexpr VariantSpec kSpec = Shape<D>::spec;
  constexpr int kTpb = kThreads<D>;
  constexpr unsigned kW = kWarps<D>;
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5;
  uint64_t first = 0, end = 0, base = 0;
  if (g.weights == nullptr) {
    const auto c =
        decode_phases<kSpec.table, kSpec.partition, kSpec.staging, kTpb, kSpec.bytes_per_thread, (B < 16)>(p, sl, smem,
                                                                                                         blk);
    first = c.block_first;
    end = c.block_end;
    base = exp_base(c);
  } else {
    first = p.positions[blk];
    end = p.positions[blk + 1];
  }
  simt::sync_block();  // exponents complete
  float* red = reinterpret_cast<float*>(smem + reduce_offset(sl));
  const uint32_t n = static_cast<uint32_t>(end - first);  // a DF11 block's elements fit 32 bits
  // Element i of the block (0 <= i < n): exponent eb[i] and sign/mantissa smb[i], or weight wb[i].
  const uint8_t* eb = g.weights == nullptr ? smem + sl.exps + (first - base) : nullptr;
  const uint8_t* smb = g.weights == nullptr ? p.sign_mantissa + first : nullptr;
  const uint16_t* wb = g.weights != nullptr ? g.weights + first : nullptr;
  const unsigned mis = static_cast<unsigned>(first & 7u);  // i is 8-aligned in the unit iff (i + mis) % 8 == 0
  const int nb = B == 1 ? 1 : (g.batch < B ? g.batch : B);  // batch >= 1 (gemv_params): no row test at B = 1
  auto segment_end = [&](uint32_t at, int& mm, uint32_t kc) { return row_segment_end(g, first, n, at, mm, kc); };
  uint32_t pair = g.pair_base[blk];
  uint32_t k0 = g.block_k0[blk];  // column of the next segment's first element
  int m = 0;
  for (uint32_t lo = 0; lo < n;) {
    // The round: segments [lo, hi), ns of them.
    uint32_t hi = lo;
    {
      int mm = m;
      uint32_t kc = k0;
      for (unsigned ns = 0; ns < kSegments && hi < n; ++ns, kc = 0) hi = segment_end(hi, mm, kc);
    }
    // This warp's chunk [c0, c1): interior cuts at 8-aligned elements, per (a multiple of 8) apart.
    const uint32_t per = ((hi - lo + kW - 1) / kW + 7u) & ~7u;
    const uint32_t cut = ((lo + mis + 7u) & ~7u) - mis;  // the first 8-aligned element >= lo
    auto chunk_bound = [&](unsigned w) {
      if (w == 0) return lo;
      const uint64_t b = cut + static_cast<uint64_t>(w) * per;
      return w == kW || b >= hi ? hi : static_cast<uint32_t>(b);
    };
    const uint32_t c0 = chunk_bound(warp), c1 = chunk_bound(warp + 1);
    // A matrix not in the run (uniform) sums to 0: its pairs' partials are written, never read.
    unsigned s = 0;
    for (uint32_t s_lo = lo; s_lo < hi; ++s) {
      const uint32_t s_hi = segment_end(s_lo, m, k0);
      {
        const uint16_t* x = g.x[m];
        const uint32_t p0 = c0 > s_lo ? c0 : s_lo, p1 = c1 < s_hi ? c1 : s_hi;  // the warp's piece
        float acc[B];
        for (int b = 0; b < B; ++b) acc[b] = 0.0f;
        if (p0 < p1 && x != nullptr) {  // warp-uniform
          warp_piece_sums<B>(g, m, p0, p1, x + (k0 + (p0 - s_lo)), mis, nb, lane, wb,
                             eb, [](uint32_t i) { return i; }, smb, acc);
        }
        if (lane == 0) {
          for (int b = 0; b < B; ++b) {
            if (b < nb) red[(s * B + static_cast<unsigned>(b)) * kW + warp] = acc[b];
          }
        }
      }
      k0 = 0;
      s_lo = s_hi;
    }
    simt::sync_block();  // the warps' sums are in red
    if (t < s * B) {  // s: the round's segments
      const unsigned b = t % B;  // B: a power of two
      if (b < static_cast<unsigned>(nb)) {
        float v = 0.0f;
        for (unsigned w = 0; w < kW; ++w) v += red[t * kW + w];
        g.partials[static_cast<uint64_t>(pair + t / B) * g.batch + b] = v;
      }
    }
    pair += s;
    lo = hi;
    if (lo < n) simt::sync_block();  // red is reused by the next round (gemv_blocks syncs after the block)
  }
}

// warp_piece_sums at batch 1 over a whole fix64 unit (elements [0, kFixedUnit) of one row, X
// 16-byte aligned at element 0): lane l's steps are elements 8 l + 256 k, k = 0..7, each 8 wide,
// so every address is a constant offset from the lane's three bases (its exponent row byte,
// sign/mantissa byte and X element) and no step computes one; the steps' FMAs (fma4) and the
// butterfly are warp_piece_sums' in its order (no scalar head or tail here), so the sum is bit for
// bit its sum, which the BF16 reference kernel (kRef) computes.
DF11_HD float warp_unit_sum_b1(const uint16_t* xs, const uint8_t* rows, const uint8_t* smb, unsigned lane) {
  constexpr unsigned kSteps = kFixedUnit / 256;
  static_assert(kFixedUnit % 256 == 0 && 256 % VariantSpec::kFixedCodes == 0, "whole steps of whole rows");
  constexpr unsigned kRowStep = 256 / VariantSpec::kFixedCodes * VariantSpec::kFixedStride;
  const uint8_t* ep = rows + fixed_exp_at(8u * lane);
  const uint8_t* sp = smb + 8u * lane;
  const uint8_t* xp = reinterpret_cast<const uint8_t*>(xs) + 16u * lane;
  float acc = 0.0f;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (unsigned k = 0; k < kSteps; ++k) {
    const Words8 w8 = merge8(load8(ep + kRowStep * k), load8(sp + 256u * k));
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int h = 0; h < 2; ++h) {
      const uint64_t wh = h == 0 ? w8.lo : w8.hi;
      const uint64_t xv = load8(xp + 512u * k + 8u * h);
      acc = fma4(pair_lo_float(wh), pair_hi_float(wh), pair_lo_float(wh >> 32), pair_hi_float(wh >> 32), xv, acc);
    }
  }
  for (unsigned o = 16; o > 0; o >>= 1) acc += simt::warp_shfl_xor(acc, o);
  return acc;
}

// Kernel 1, persistent: about as many CUDA blocks as are resident at once; each loads the
// decode tables once (24 KB for multi12, against 4 KB of stream per DF11 block) and takes DF11
// blocks block_begin + bid, + gridDim, ... below block_begin + block_count. Shared memory is
// reused, so a barrier ends every block.
// Kernel 1 of the fixed decode, persistent: the tables once per CUDA block, then each warp on its
// own over the units (kFixedUnit elements: the plan's blocks) block_begin + warp id, + warps in
// the grid, ...: lane l decodes its 64 codes into its row of the warp's shared memory (the
// fix64 decoder's fixed_lane_decode), then the warp walks the unit's row segments (a unit lies
// in two or three of Nemo's rows), and lane b writes batch row b's sum of each segment as that
// (unit, row) pair's partial. No block barrier after the tables, no cross-warp sum.
// kRef: the BF16 reference (g.weights) instead of decoding, in a kernel of its own, so that the
// decoding kernel carries no weight pointer or test (registers: 32 instead of 40 on sm_90).
// D: fixed, fixed_nh (the same without the next unit's L2 hints: hints_l2 of its spec) or
// fixed_late (the hints after the unit's decode, before its GEMV: hints_late).
template <FusedDecode D, int B, bool kRef>
DF11_HD void gemv_fixed_units_as(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, const GemvParams& g) {
  constexpr VariantSpec kSpec = Shape<D>::spec;
  constexpr unsigned kW = kWarps<D>;
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5;
  if constexpr (!kRef) {
    load_tables(kSpec, p, smem, sl, t, kSpec.threads_per_block);
    simt::sync_block();  // the only block barrier
  }
  const auto table = make_table<kSpec.table>(p, smem, sl);
  uint8_t* rows = smem + sl.exps + warp * sl.exps_stride;
  const int nb = B == 1 ? 1 : (g.batch < B ? g.batch : B);
  // 32-bit unit counts (block_begin and block_count are; registers at batch 1).
  const uint32_t stride = simt::gdim_x() * kW;
  for (uint32_t r = simt::bid_x() * kW + warp; r < p.block_count; r += stride) {
    const uint32_t u = p.block_begin + r;
    const uint64_t first = static_cast<uint64_t>(u) * kFixedUnit;
    const uint32_t n = static_cast<uint32_t>(p.n_elements - first < kFixedUnit ? p.n_elements - first : kFixedUnit);
    if constexpr (!kRef) {
      // As the fix64 decoder: the warp's next unit hinted into L2 around this unit's decode.
      const uint32_t nr = r + stride, nu = p.block_begin + nr;
      fixed_unit_decode_hinted<kSpec.staging>(p, table, rows, u, nu, nr < p.block_count && nr > r,
                                              lane);  // (nr > r: no wrap)
      simt::sync_warp();  // the warp's exponents are complete
    }
    const uint16_t* wb = kRef ? g.weights + first : nullptr;
    const uint8_t* smb = kRef ? nullptr : p.sign_mantissa + first;
    if constexpr (B == 1 && !kRef) {
      // Batch 1, a whole unit in one row of a matrix in the run, X 16-byte aligned (most units
      // of Nemo's rows): the sum of the loop below, in its order, at constant offsets.
      int m1 = 0;
      uint32_t k1 = g.block_k0[u];
      if (n == kFixedUnit && row_segment_end(g, first, n, 0, m1, k1) == n && g.x[m1] != nullptr && g.vec[m1]) {
        // The lane read afresh: its three bases are computed here, not held across the unit loop
        // (sm_90: held, the hinting decodes spilled one to local memory).
        const float v = warp_unit_sum_b1(g.x[m1] + k1, rows, smb, simt::lane_fresh());
        if (lane == 0) g.partials[g.pair_base[u]] = v;  // batch 1: the pair's one partial
        simt::sync_warp();  // the rows are the next unit's
        continue;
      }
    }
    uint32_t pair = g.pair_base[u], k0 = g.block_k0[u];
    int m = 0;
    for (uint32_t lo = 0; lo < n; ++pair) {
      const uint32_t hi = row_segment_end(g, first, n, lo, m, k0);
      if (const uint16_t* x = g.x[m]) {  // a matrix not in the run: no partials (none are read)
        // At most 4 batch rows a pass over the piece (batch 16: four, the later ones re-reading
        // the weights from the rows and L1; each row's sum in the same order; 8 rows a pass
        // spilled on sm_80 at the 64-register cap).
        constexpr int kH = B > 4 ? 4 : B;
        for (int h0 = 0; h0 < nb; h0 += kH) {
          float acc[kH];
          for (int b = 0; b < kH; ++b) acc[b] = 0.0f;
          const int nh = nb - h0 < kH ? nb - h0 : kH;
          warp_piece_sums<kH>(g, m, lo, hi, x + (k0 + static_cast<uint64_t>(h0) * g.in[m]), 0u, nh, lane, wb, rows,
                              [](uint32_t i) { return fixed_exp_at(i); }, smb, acc);
          if (lane < static_cast<unsigned>(nh)) {  // lane b writes batch row h0 + b (every lane has every sum)
            float v = acc[0];
            for (int b = 1; b < kH; ++b) v = lane == static_cast<unsigned>(b) ? acc[b] : v;
            g.partials[static_cast<uint64_t>(pair) * g.batch + static_cast<unsigned>(h0) + lane] = v;
          }
        }
      }
      k0 = 0;
      lo = hi;
    }
    simt::sync_warp();  // the rows are the next unit's
  }
}

// ---- fixed_mma: fix64's units decoded by a CUDA block's 16 warps, the products on the tensor cores ----
// A matrix whose first element starts a unit, with rows of `in` elements (a multiple of 128, at
// least kFixedUnit): its units repeat their columns every P = kFixedUnit / gcd(in, kFixedUnit)
// rows, so units u, u + du, ..., u + 15 du (du = P in / kFixedUnit units) lie at the same columns
// of 16 rows P apart: a tile. Each group of 16 P rows holds du tiles (fused_can_implement: rows
// in whole groups). A unit that reaches its row's end goes on at column 0 of the next row, at
// the same element of the unit for all 16, a multiple of 128 (a warp's columns never straddle).

// du for rows of `in` elements (in >> the power of two gcd(in, kFixedUnit) has).
DF11_HD uint32_t mma_unit_step(int64_t in) {
  uint32_t v = static_cast<uint32_t>(in);
  for (unsigned sh = 0; sh < 11 && (v & 1u) == 0; ++sh) v >>= 1;
  static_assert(kFixedUnit == 2048, "2^11 elements a unit");
  return v;
}
DF11_HD uint64_t mma_tiles_of(const GemvParams& g, int m) {
  return static_cast<uint64_t>(g.out[m]) * static_cast<uint64_t>(g.in[m]) / (kFixedUnit * kMmaRows);
}
// The run's tiles: its matrices' in order.
DF11_HD uint64_t mma_tiles(const GemvParams& g) {
  uint64_t n = 0;
  for (int m = 0; m < g.n_mats; ++m) n += g.x[m] != nullptr ? mma_tiles_of(g, m) : 0;
  return n;
}
// Tile T of the run (T < mma_tiles(g)): its first unit; m its matrix, du the step to its next units.
DF11_HD uint32_t mma_tile_unit(const GemvParams& g, uint64_t T, int& m, uint32_t& du) {
  for (m = 0;; ++m) {
    if (g.x[m] == nullptr) continue;
    const uint64_t n = mma_tiles_of(g, m);
    if (T < n) break;
    T -= n;
  }
  du = mma_unit_step(g.in[m]);
  return static_cast<uint32_t>(g.offset[m] / kFixedUnit + (T / du) * kMmaRows * du + T % du);
}

// Eight BF16 words at a 16-aligned address (one 16-byte load on the device), as merge8 gives them.
DF11_HD Words8 load_words8(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  const ulonglong2 v = *reinterpret_cast<const ulonglong2*>(p);
  return {v.x, v.y};
#else
  return {load8(p), load8(p + 8)};
#endif
}

// Kernel 1 of fixed_mma, persistent over the run's tiles: warp w decodes unit w of the tile into its
// rows (fixed's decode and L2 hints: the warp's unit of the block's next tile), one barrier; then
// for each 16 rows of X, warp w multiplies columns [128 w, 128 w + 128) of the 16 units by X on the
// tensor cores (16 x 8 x 16 instructions: the 16 units by 8 rows of X, per 16 columns), puts its 16 x 16
// sums into shared memory, one barrier, and a thread per (unit, row of X) adds the warps' sums in
// warp order, the warps past the row's end apart: the partials of the unit's one or two (unit, row)
// pairs; one barrier before the sums (or, after the last rows of X, the rows) are reused. Within
// 16 columns an instruction takes, lane (g, t) holds elements 8 t + 4 h .. 8 t + 4 h + 3 of 32 in
// instruction h (a permutation of k, the same for X and the weights): an 8-byte load each of
// exponents and sign/mantissa per unit, a 16-byte load of X per row, for two instructions. kRef: the BF16 weights (g.weights) instead of
// decoding, the same instructions in the same order: bit for bit the decoded run's sums.
template <bool kRef>
DF11_HD void gemv_mma_tiles(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, const GemvParams& g) {
  constexpr FusedDecode D = FusedDecode::fixed_mma;
  constexpr VariantSpec kSpec = Shape<D>::spec;
  constexpr unsigned kW = kWarps<D>;
  static_assert(kW == kMmaRows, "a warp decodes one unit of a tile and multiplies 1/16 of its columns");
  constexpr unsigned kCols = static_cast<unsigned>(kFixedUnit) / kW;  // a warp's columns of each unit
  static_assert(kCols % 32 == 0, "whole 32-column steps");
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5, gid = lane >> 2, tig = lane & 3u;
  if constexpr (!kRef) {
    load_tables(kSpec, p, smem, sl, t, kSpec.threads_per_block);
    simt::sync_block();
  }
  const auto table = make_table<kSpec.table>(p, smem, sl);
  float* red = reinterpret_cast<float*>(smem + reduce_offset(sl));
  const uint64_t n_tiles = mma_tiles(g);
  const unsigned batch = static_cast<unsigned>(g.batch);
  const unsigned kw = warp * kCols;  // the warp's first element of each unit
  for (uint64_t T = simt::bid_x(); T < n_tiles; T += simt::gdim_x()) {
    int m = 0;
    uint32_t du = 0;
    const uint32_t u0 = mma_tile_unit(g, T, m, du);
    if constexpr (!kRef) {
      const uint64_t nt_ = T + simt::gdim_x();
      const bool has_next = nt_ < n_tiles;
      int nm = 0;
      uint32_t ndu = 0;
      const uint32_t nu = has_next ? mma_tile_unit(g, nt_, nm, ndu) + warp * ndu : 0u;
      fixed_unit_decode_hinted<kSpec.staging>(p, table, smem + sl.exps + warp * sl.exps_stride, u0 + warp * du, nu,
                                              has_next, lane);
    }
    simt::sync_block();  // every unit's exponents are in
    const uint32_t in = static_cast<uint32_t>(g.in[m]);
    const uint32_t cross = in - g.block_k0[u0];  // the units' elements before their rows end
    const uint32_t col = kw < cross ? g.block_k0[u0] + kw : kw - cross;  // the warp's first column
    // This lane's bases (at the warp's first column of each unit, and the lane's eight columns of
    // 32): unit gid's exponents in its warp's rows and its sign/mantissa bytes (or BF16 weights),
    // unit gid + 8's a fixed step on; X at the warp's first column.
    const uint64_t lane_e = static_cast<uint64_t>(u0 + gid * du) * kFixedUnit + kw + 8u * tig;
    const uint32_t unit8 = 8u * du * static_cast<uint32_t>(kFixedUnit);  // elements from unit j to j + 8
    const uint8_t* eb = smem + sl.exps + gid * sl.exps_stride + fixed_exp_at(kw) + 8u * tig;
    const uint8_t* wb = kRef ? reinterpret_cast<const uint8_t*>(g.weights + lane_e) : p.sign_mantissa + lane_e;
    const uint8_t* xb = reinterpret_cast<const uint8_t*>(g.x[m] + col + 8u * tig);
    for (unsigned mt = 0; mt < batch; mt += kMmaRows) {
      // D^T = W X^T: the 16 units are the instruction's rows (A, from the decode: its registers
      // are the merges' own, no moves), 8 rows of X its columns (B: two registers of one 8-byte
      // half of a 16-byte load of one row); rows mt .. mt + 7 of X, then (a second instruction
      // on the same A) mt + 8 .. mt + 15 where the batch has them.
      float d[2][4] = {};
      const bool two = mt + 8 < batch;
      const bool has0 = mt + gid < batch, has8 = mt + 8 + gid < batch;  // the rows of X this lane loads
      const uint8_t* x0 = xb + 2ull * (mt + gid) * in;
      // One 32-column step at a time (unrolled, the steps' loads held more registers than the
      // 64 the kernel has); in it the lane's eight columns in one load each of exponents and
      // sign/mantissa per unit (8 bytes; the BF16 weights: 16) and of X per row (16 bytes), for
      // two or four instructions.
#if defined(__CUDA_ARCH__)
#pragma unroll 1
#endif
      for (unsigned q = 0; q < kCols / 32; ++q) {
        const unsigned c = 32u * q;  // of the warp's columns, beyond the lane's 8 t
        // fixed_exp_at(kw + c + 8 t) - fixed_exp_at(kw) - 8 t: kw a multiple of 64, c + 8 t < 128.
        const unsigned ec = (q >> 1) * VariantSpec::kFixedStride + 32u * (q & 1u);
        Words8 wg, w8;  // units gid and gid + 8: the lane's eight columns
        if constexpr (kRef) {
          wg = load_words8(wb + 2u * c);
          w8 = load_words8(wb + 2ull * (unit8 + c));
        } else {
          wg = merge8(load8(eb + ec), load8(wb + c));
          w8 = merge8(load8(eb + 8u * sl.exps_stride + ec), load8(wb + unit8 + c));
        }
        const Words8 xa = has0 ? load_words8(x0 + 2u * c) : Words8{0, 0};
        const Words8 xc = has8 ? load_words8(x0 + 16ull * in + 2u * c) : Words8{0, 0};
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (unsigned h = 0; h < 2; ++h) {  // columns 0-3 of the lane's eight, then 4-7
          const uint64_t ag = h == 0 ? wg.lo : wg.hi, a8 = h == 0 ? w8.lo : w8.hi;
          const uint32_t a[4] = {static_cast<uint32_t>(ag), static_cast<uint32_t>(a8), static_cast<uint32_t>(ag >> 32),
                                 static_cast<uint32_t>(a8 >> 32)};
          const uint64_t xv = h == 0 ? xa.lo : xa.hi;
          const uint32_t b[2] = {static_cast<uint32_t>(xv), static_cast<uint32_t>(xv >> 32)};
          simt::mma_bf16_16816(d[0], a, b);
          if (two) {  // (uniform: every lane of the block has the same batch)
            const uint64_t xw = h == 0 ? xc.lo : xc.hi;
            const uint32_t b8[2] = {static_cast<uint32_t>(xw), static_cast<uint32_t>(xw >> 32)};
            simt::mma_bf16_16816(d[1], a, b8);
          }
        }
      }
      // Accumulator r of instruction i: unit gid + 8 (r / 2), row 8 i + 2 t + r % 2 of X (from mt).
      for (unsigned i = 0; i < 2; ++i) {
        for (unsigned r = 0; r < 4; ++r) {
          red[(warp * kMmaRows + 8u * i + 2u * tig + (r & 1u)) * kMmaRows + gid + 8u * (r / 2)] = d[i][r];
        }
      }
      simt::sync_block();
      if (t < kMmaRows * kMmaRows) {
        const unsigned j = t / kMmaRows, xr = t % kMmaRows, b = mt + xr;
        if (b < batch) {
          float s0 = 0.0f, s1 = 0.0f;
          for (unsigned w = 0; w < kW; ++w) {
            const float v = red[(w * kMmaRows + xr) * kMmaRows + j];
            if (w * kCols < cross) {
              s0 += v;
            } else {
              s1 += v;
            }
          }
          const uint64_t pair = g.pair_base[u0 + j * du];
          g.partials[pair * batch + b] = s0;
          if (cross < kFixedUnit) g.partials[(pair + 1) * batch + b] = s1;  // the next row's pair
        }
      }
      simt::sync_block();  // the sums (and after the last rows of X the units' rows) are free
    }
  }
}

// The inputs fixed_mma needs besides the plan's tiles: each run matrix on the 8-wide path, i.e.
// (its offsets and rows being whole units and multiples of 128) X 16-byte aligned. After
// choose_vector_paths. Throws df11::Error.
inline void check_mma_inputs(const GemvParams& g) {
  for (int m = 0; m < g.n_mats; ++m) {
    if (g.x[m] != nullptr && !g.vec[m]) {
      throw Error("fused gemv (tensor cores): X of matrix " + std::to_string(m) + " must be 16-byte aligned");
    }
  }
}

// Kernel 1. kRef (the fixed decode only): the BF16 reference, a kernel of its own (ref_kernel);
// the other decodes test g.weights as they go.
template <FusedDecode D>
DF11_HD bool ref_kernel(const GemvParams& g) {
  return is_fixed(D) && g.weights != nullptr;
}
template <FusedDecode D, int B, bool kRef = false>
DF11_HD void gemv_blocks(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, const GemvParams& g) {
  if constexpr (D == FusedDecode::fixed_mma) {
    gemv_mma_tiles<kRef>(p, sl, smem, g);
  } else if constexpr (is_fixed(D)) {
    gemv_fixed_units_as<D, B, kRef>(p, sl, smem, g);
  } else {
    if (g.weights == nullptr) {
      constexpr VariantSpec spec = Shape<D>::spec;  // a local copy: device code may not bind the host constant
      load_tables(spec, p, smem, sl, simt::tid_x(), spec.threads_per_block);
      simt::sync_block();
    }
    for (uint32_t i = simt::bid_x(); i < p.block_count; i += simt::gdim_x()) {
      gemv_one_block<D, B>(p, sl, smem, g, static_cast<uint64_t>(p.block_begin) + i);
      simt::sync_block();
    }
  }
}

// Kernel 2: output i = (batch row, global row of the run), rows fastest so that neighbouring
// threads store neighbouring outputs; the row's partials in block order.
DF11_HD void gemv_finish(const GemvParams& g, uint64_t i) {
  if (i >= g.row_count * static_cast<uint64_t>(g.batch)) return;
  const uint64_t row = g.row_begin + i % g.row_count;
  const int b = static_cast<int>(i / g.row_count);
  int m = 0;
  uint64_t r = row;
  while (r >= static_cast<uint64_t>(g.out[m])) r -= static_cast<uint64_t>(g.out[m++]);
  if (g.x[m] == nullptr) return;  // a matrix between two of the run's, not in it
  float s = 0.0f;
  for (uint32_t q = g.row_ptr[row]; q < g.row_ptr[row + 1]; ++q) {
    s += g.partials[static_cast<uint64_t>(g.row_pairs[q]) * g.batch + b];
  }
  const uint64_t at = static_cast<uint64_t>(b) * static_cast<uint64_t>(g.ldy[m]) + r;
  if (g.yf[m] != nullptr) {
    g.yf[m][at] = g.acc[m] ? g.yf[m][at] + s : s;
  } else {
    g.y[m][at] = float_to_bf16(s);
  }
}

}  // namespace df11::dec::fused
