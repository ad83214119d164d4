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
template <FusedDecode D>
inline constexpr int kThreads = Shape<D>::spec.threads_per_block;
template <FusedDecode D>
inline constexpr int kWarps = kThreads<D> / 32;

// Calls f(std::integral_constant<FusedDecode, D>{}) for the plan's decode.
template <class F>
void with_decode(FusedDecode d, F&& f) {
  if (d == FusedDecode::two_pass) {
    f(std::integral_constant<FusedDecode, FusedDecode::two_pass>{});
  } else {
    f(std::integral_constant<FusedDecode, FusedDecode::one_pass>{});
  }
}

// The matrices of the unit, in element order, and the batch's activations and outputs. A matrix
// with a null x is not part of the run: kernel 1 skips its rows, kernel 2 its outputs.
struct GemvParams {
  int n_mats = 0;
  uint64_t offset[kMaxMatrices] = {};  // first element of matrix m in the unit
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
  if (run.batch < 1 || run.batch > kMaxBatch) {
    throw Error("fused gemv: batch " + std::to_string(run.batch) + " (1.." + std::to_string(kMaxBatch) + ")");
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

// Shared memory of kernel 1: the decoder's layout, then kWarps x kMaxBatch floats for the
// block reduction.
DF11_HD unsigned reduce_offset(const SmemLayout& sl) { return align_up(sl.total); }
template <FusedDecode D>
DF11_HD unsigned smem_bytes(const SmemLayout& sl) {
  return reduce_offset(sl) + kWarps<D> * kMaxBatch * 4;
}

// Kernel 1 for DF11 block blk, the tables already in shared memory. B: the batch rounded up to
// a compiled size (rows b >= g.batch are skipped).
template <FusedDecode D, int B>
DF11_HD void gemv_one_block(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, const GemvParams& g,
                            uint64_t blk) {
  constexpr VariantSpec kSpec = Shape<D>::spec;
  constexpr int kTpb = kThreads<D>;
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5;
  uint64_t first = 0, end = 0, base = 0;
  const uint8_t* exps = smem + sl.exps;
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
  uint32_t pair = g.pair_base[blk];
  int m = 0;
  for (uint64_t row_start = first; row_start < end; ++pair) {
    while (row_start >= g.offset[m] + static_cast<uint64_t>(g.out[m] * g.in[m])) ++m;
    const uint64_t in = static_cast<uint64_t>(g.in[m]);
    const uint64_t rel = row_start - g.offset[m];
    const uint64_t row_end = g.offset[m] + (rel / in + 1) * in;
    const uint64_t seg_end = row_end < end ? row_end : end;
    const uint64_t k0 = rel % in;
    const uint16_t* x = g.x[m];
    if (x == nullptr) {  // not in this run (uniform across the block: no barrier is skipped by some threads only)
      row_start = seg_end;
      continue;
    }
    const int nb = B == 1 ? 1 : (g.batch < B ? g.batch : B);  // batch >= 1 (gemv_params): no row test at B = 1
    float acc[B];
    for (int b = 0; b < B; ++b) acc[b] = 0.0f;
    // Element idx of the row: its weight times X[b][k] into acc[b].
    auto scalar = [&](uint64_t idx) {
      const uint16_t word = g.weights ? g.weights[idx] : merge_bf16(exps[idx - base], p.sign_mantissa[idx]);
      const float w = bf16_to_float(word);
      const uint64_t k = k0 + (idx - row_start);
      for (int b = 0; b < B; ++b) {
        if (b < nb) acc[b] = fma_rn(w, bf16_to_float(x[static_cast<uint64_t>(b) * in + k]), acc[b]);
      }
    };
    // 8 elements per step where they are 8-aligned in the unit and in X (8-byte loads of
    // exponents and sign/mantissa, 16-byte loads of weights and X); a scalar head and tail.
    uint64_t a = seg_end, z = seg_end;
    if (g.vec[m]) {
      a = (row_start + 7) & ~uint64_t{7};
      z = seg_end & ~uint64_t{7};
      if (a > z) a = z = seg_end;
    }
    for (uint64_t idx = row_start + t; idx < a; idx += kTpb) scalar(idx);
    // The 8-wide steps in 32-bit offsets from pointers set up once (a segment lies within one
    // DF11 block), so the loop does no 64-bit index arithmetic; the weights are read or decoded
    // in two loops (the choice is uniform), each word pair turns into floats by a shift and a
    // mask. The same FMAs in the same order as element by element.
    if (a < z) {
      const unsigned n_vec = static_cast<unsigned>(z - a);
      const uint8_t* x0 = reinterpret_cast<const uint8_t*>(x + (k0 + (a - row_start)));  // X[0] at element a
      const uint32_t x_stride = static_cast<uint32_t>(in * 2);  // bytes between batch rows of X (gemv_params)
      auto steps = [&](auto load_words) {
        const uint8_t* xo = x0 + 16u * t;
        for (unsigned o = 8u * t; o < n_vec; o += 8u * kTpb, xo += 16u * kTpb) {
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
              acc[b] = fma_rn(w0, pair_lo_float(xv), acc[b]);
              acc[b] = fma_rn(w1, pair_hi_float(xv), acc[b]);
              acc[b] = fma_rn(w2, pair_lo_float(xv >> 32), acc[b]);
              acc[b] = fma_rn(w3, pair_hi_float(xv >> 32), acc[b]);
            }
          }
        }
      };
      if (g.weights) {
        const uint8_t* wp = reinterpret_cast<const uint8_t*>(g.weights + a);
        steps([wp](unsigned o) { return Words8{load8(wp + 2u * o), load8(wp + 2u * o + 8)}; });
      } else {
        const uint8_t* ep = exps + (a - base);
        const uint8_t* smp = p.sign_mantissa + a;
        steps([ep, smp](unsigned o) { return merge8(load8(ep + o), load8(smp + o)); });
      }
    }
    for (uint64_t idx = z + t; idx < seg_end; idx += kTpb) scalar(idx);
    // Fixed-order reduction: butterfly in each warp, then the warps in order.
    for (int b = 0; b < B; ++b) {
      if (b >= nb) break;
      float v = acc[b];
      for (unsigned o = 16; o > 0; o >>= 1) v += simt::warp_shfl_xor(v, o);
      if (lane == 0) red[warp * kMaxBatch + b] = v;
    }
    simt::sync_block();
    if (t < static_cast<unsigned>(g.batch)) {
      float s = 0.0f;
      for (int w = 0; w < kWarps<D>; ++w) s += red[w * kMaxBatch + t];
      g.partials[static_cast<uint64_t>(pair) * g.batch + t] = s;
    }
    simt::sync_block();  // red is reused by the next row
    row_start = seg_end;
  }
}

// Kernel 1, persistent: about as many CUDA blocks as are resident at once; each loads the
// decode tables once (24 KB for multi12, against 4 KB of stream per DF11 block) and takes DF11
// blocks block_begin + bid, + gridDim, ... below block_begin + block_count. Shared memory is
// reused, so a barrier ends every block.
template <FusedDecode D, int B>
DF11_HD void gemv_blocks(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, const GemvParams& g) {
  if (g.weights == nullptr) {
    constexpr VariantSpec spec = Shape<D>::spec;  // a local copy: device code may not bind the host constant
    load_tables(spec, p, smem, sl, simt::tid_x(), spec.threads_per_block);
    simt::sync_block();
  }
  const uint64_t end = static_cast<uint64_t>(p.block_begin) + p.block_count;
  for (uint64_t blk = p.block_begin + simt::bid_x(); blk < end; blk += simt::gdim_x()) {
    gemv_one_block<D, B>(p, sl, smem, g, blk);
    simt::sync_block();
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
