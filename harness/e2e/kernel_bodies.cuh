// The bodies of the CUDA forward pass's small kernels (cuda_kernels.cu wraps each in a
// __global__ function), written against kernels/simt/simt.cuh so that the host SIMT executor
// runs the same code in CI (tests/e2e/test_e2e_simt.cpp): indexing, block reductions with their
// barriers, warp shuffles, the KV-cache layout. Shared memory comes in as pointers: the
// wrappers pass their __shared__ arrays, the host test a block's buffer.
// Float math: exact IEEE operations except rsqrtf/expf, which the GPU computes to within a few
// ulp and the host with the C library; tests compare against a double reference with a
// tolerance, never bit for bit.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "codec/bf16.hpp"
#include "codec/common.hpp"
#include "datasets/synth_draw.hpp"
#include "simt/simt.cuh"

namespace df11::e2e::body {

inline constexpr int kAttnThreads = 256;
inline constexpr int kArgmaxThreads = 1024;

// BF16 <-> float as the host model does it (codec/bf16.hpp).
DF11_HD float bf2f(uint16_t h) { return bf16_to_float(h); }
DF11_HD uint16_t f2bf(float f) { return float_to_bf16(f); }

DF11_HD float rsqrt_f(float x) {
#if defined(__CUDA_ARCH__)
  return rsqrtf(x);
#else
  return 1.0f / std::sqrt(x);
#endif
}

DF11_HD float exp_f(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}

DF11_HD float max_f(float a, float b) {  // fmaxf: a NaN operand gives the other
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  return std::fmax(a, b);
#endif
}

DF11_HD float warp_sum(float v) {
  for (unsigned o = 16; o > 0; o >>= 1) v += simt::warp_shfl_xor(v, o);
  return v;
}

DF11_HD float warp_max(float v) {
  for (unsigned o = 16; o > 0; o >>= 1) v = max_f(v, simt::warp_shfl_xor(v, o));
  return v;
}

// Sum (or max) over the block; every thread gets the result. red: 32 floats of shared memory.
// blockDim.x a multiple of 32.
template <bool kMax>
DF11_HD float block_reduce(float v, float* red) {
  const unsigned lane = simt::tid_x() & 31, warp = simt::tid_x() >> 5, n_warps = (simt::bdim_x() + 31) >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  simt::sync_block();  // red may still be read by an earlier reduction
  if (lane == 0) red[warp] = v;
  simt::sync_block();
  float r = lane < n_warps ? red[lane] : (kMax ? -FLT_MAX : 0.0f);
  r = kMax ? warp_max(r) : warp_sum(r);
  return r;
}

// Block r: out[r][:] = float(table[tokens[r] - r0][:]) when r0 <= tokens[r] < r1 (table holds
// embedding rows r0..r1-1); otherwise row r is left as it is.
DF11_HD void embed(const int32_t* tokens, const uint16_t* table, int64_t hidden, float* out, int64_t r0, int64_t r1) {
  const int64_t r = simt::bid_x(), tok = tokens[r];
  if (tok < r0 || tok >= r1) return;
  const uint16_t* e = table + (tok - r0) * hidden;
  for (int64_t d = simt::tid_x(); d < hidden; d += simt::bdim_x()) out[r * hidden + d] = bf2f(e[d]);
}

// Block r: out[r] = bf16(w * x[r] / sqrt(mean(x[r]^2) + eps)). red: 32 floats.
DF11_HD void rmsnorm(const float* x, int64_t x_stride, const uint16_t* w, int64_t hidden, float eps, uint16_t* out,
                     float* red) {
  const float* xr = x + simt::bid_x() * x_stride;
  float ss = 0.0f;
  for (int64_t d = simt::tid_x(); d < hidden; d += simt::bdim_x()) ss += xr[d] * xr[d];
  ss = block_reduce<false>(ss, red);
  const float inv = rsqrt_f(ss / static_cast<float>(hidden) + eps);
  uint16_t* o = out + simt::bid_x() * hidden;
  for (int64_t d = simt::tid_x(); d < hidden; d += simt::bdim_x()) o[d] = f2bf(bf2f(w[d]) * (xr[d] * inv));
}

// Block r (= batch row b * t_new + t): rotates q (in place) and k of row r of qkv by the rope
// table at position pos0 + t and stores k and v into the BF16 caches
// [batch][n_kv_heads][max_positions][head_dim].
DF11_HD void rope_store(float* qkv, int64_t ld, int t_new, int pos0, int n_heads, int n_kv_heads, int head_dim,
                        const float* rope, uint16_t* kc, uint16_t* vc, int max_positions) {
  const int r = static_cast<int>(simt::bid_x()), b = r / t_new, pos = pos0 + r % t_new, half = head_dim / 2;
  float* row = qkv + static_cast<int64_t>(r) * ld;
  const float* cs = rope + static_cast<int64_t>(pos) * half * 2;
  const int n_pairs = (n_heads + n_kv_heads) * half;
  for (int p = static_cast<int>(simt::tid_x()); p < n_pairs; p += static_cast<int>(simt::bdim_x())) {
    const int head = p / half, i = p % half;
    float* v = row + head * head_dim;
    const float c = cs[2 * i], sn = cs[2 * i + 1], x1 = v[i], x2 = v[i + half];
    const float y1 = x1 * c - x2 * sn, y2 = x2 * c + x1 * sn;
    if (head < n_heads) {
      v[i] = y1;
      v[i + half] = y2;
    } else {
      const int kh = head - n_heads;
      uint16_t* k = kc + ((static_cast<int64_t>(b) * n_kv_heads + kh) * max_positions + pos) * head_dim;
      k[i] = f2bf(y1);
      k[i + half] = f2bf(y2);
    }
  }
  const float* vrow = row + (n_heads + n_kv_heads) * head_dim;
  for (int e = static_cast<int>(simt::tid_x()); e < n_kv_heads * head_dim; e += static_cast<int>(simt::bdim_x())) {
    const int kh = e / head_dim, d = e % head_dim;
    vc[((static_cast<int64_t>(b) * n_kv_heads + kh) * max_positions + pos) * head_dim + d] = f2bf(vrow[e]);
  }
}

// Shared floats attention() needs: q, the reduction words, one score per position, and the
// warps' partial outputs (a head_dim row per warp of kAttnThreads).
DF11_HD std::size_t attention_smem_floats(int head_dim, int positions) {
  return static_cast<std::size_t>(head_dim) * (1 + kAttnThreads / 32) + 32 + static_cast<std::size_t>(positions);
}

// C consecutive BF16 values at p (p a multiple of C elements from an aligned buffer) as floats, in
// one load of 2C bytes on the GPU.
template <int C>
DF11_HD void load_bf16s(const uint16_t* p, float* f) {
  static_assert(C == 2 || C == 4 || C == 8, "2, 4 or 8 values");
  struct alignas(16) Word16 {
    uint32_t w[4];
  };
  using Word = std::conditional_t<C == 2, uint32_t, std::conditional_t<C == 4, uint64_t, Word16>>;
  Word w;
#if defined(__CUDA_ARCH__)
  w = *reinterpret_cast<const Word*>(p);
#else
  std::memcpy(&w, p, sizeof(Word));
#endif
  uint16_t h[C];
  std::memcpy(h, &w, sizeof(Word));
  for (int i = 0; i < C; ++i) f[i] = bf2f(h[i]);
}

// Attention's output for C = head_dim / 32 values a lane: warp w sums positions w, w + n_warps,
// ... of p x V over its lane's C consecutive dimensions (a warp reads a V row in one coalesced
// load), leaves its sums in part[w][:], and after a barrier thread d adds the warps' sums for
// dimension d in warp order. Four positions' rows are loaded before their sums (in position
// order), so that a warp has four loads in flight, not one.
template <int C>
DF11_HD void attention_out(const float* p, const uint16_t* V, int n, int head_dim, float* part, float inv_sum,
                           uint16_t* o) {
  const int tid = static_cast<int>(simt::tid_x()), nthreads = static_cast<int>(simt::bdim_x());
  const int lane = tid & 31, warp = tid >> 5, n_warps = nthreads >> 5;
  float acc[C];
  for (int i = 0; i < C; ++i) acc[i] = 0.0f;
  const uint16_t* Vl = V + lane * C;
  int j = warp;
  for (; j + 3 * n_warps < n; j += 4 * n_warps) {
    float v[4][C];
    for (int u = 0; u < 4; ++u) load_bf16s<C>(Vl + static_cast<int64_t>(j + u * n_warps) * head_dim, v[u]);
    for (int u = 0; u < 4; ++u) {
      const float pj = p[j + u * n_warps];
      for (int i = 0; i < C; ++i) acc[i] += pj * v[u][i];
    }
  }
  for (; j < n; j += n_warps) {
    float v[C];
    load_bf16s<C>(Vl + static_cast<int64_t>(j) * head_dim, v);
    const float pj = p[j];
    for (int i = 0; i < C; ++i) acc[i] += pj * v[i];
  }
  for (int i = 0; i < C; ++i) part[warp * head_dim + lane * C + i] = acc[i];
  simt::sync_block();
  for (int d = tid; d < head_dim; d += nthreads) {
    float total = 0.0f;
    for (int w = 0; w < n_warps; ++w) total += part[w * head_dim + d];
    o[d] = f2bf(total * inv_sum);
  }
}

// Block (t, h, b): causal grouped-query attention of new position t of batch row b, query head
// h, over cache positions 0..pos0+t. sm: attention_smem_floats(head_dim, pos0 + t_new) floats;
// blockDim.x kAttnThreads. Scores: a thread a position (its K row in loads of 8 values, four in
// flight, where head_dim is a multiple of 32; else of 4, or one by one; q from shared memory),
// so a block scores nthreads positions at a time; softmax over the block; the
// output by warps over positions (attention_out) where head_dim is 64, 128 or 256, else a thread
// a dimension over every position.
DF11_HD void attention(const float* qkv, int64_t ld, const uint16_t* kc, const uint16_t* vc, int t_new, int pos0,
                       int n_heads, int n_kv_heads, int head_dim, int max_positions, float scale, uint16_t* out,
                       float* sm) {
  const int t = static_cast<int>(simt::bid_x()), h = static_cast<int>(simt::bid_y()), b = static_cast<int>(simt::bid_z());
  const int kh = h / (n_heads / n_kv_heads), n = pos0 + t + 1;
  const int tid = static_cast<int>(simt::tid_x()), nthreads = static_cast<int>(simt::bdim_x());
  float* q = sm;                 // head_dim
  float* red = sm + head_dim;    // 32
  float* p = red + 32;           // n scores
  float* part = p + n;           // n_warps x head_dim partial outputs
  const int64_t r = static_cast<int64_t>(b) * t_new + t;
  for (int d = tid; d < head_dim; d += nthreads) q[d] = qkv[r * ld + h * head_dim + d];
  simt::sync_block();
  const int64_t base = (static_cast<int64_t>(b) * n_kv_heads + kh) * max_positions * head_dim;
  const uint16_t* K = kc + base;
  const uint16_t* V = vc + base;
  for (int j = tid; j < n; j += nthreads) {
    const uint16_t* k = K + static_cast<int64_t>(j) * head_dim;
    float s = 0.0f;
    int d = 0;
    if (head_dim % 32 == 0) {
      for (; d < head_dim; d += 32) {
        float kv[32];
        for (int u = 0; u < 4; ++u) load_bf16s<8>(k + d + 8 * u, kv + 8 * u);
        for (int i = 0; i < 32; ++i) s += q[d + i] * kv[i];
      }
    } else if (head_dim % 4 == 0) {
      for (; d < head_dim; d += 4) {
        float kv[4];
        load_bf16s<4>(k + d, kv);
        s += q[d] * kv[0];
        s += q[d + 1] * kv[1];
        s += q[d + 2] * kv[2];
        s += q[d + 3] * kv[3];
      }
    }
    for (; d < head_dim; ++d) s += q[d] * bf2f(k[d]);
    p[j] = s * scale;
  }
  simt::sync_block();
  float m = -FLT_MAX;
  for (int j = tid; j < n; j += nthreads) m = max_f(m, p[j]);
  m = block_reduce<true>(m, red);
  float sum = 0.0f;
  for (int j = tid; j < n; j += nthreads) {
    const float e = exp_f(p[j] - m);
    p[j] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, red);  // its barriers also publish the p[j] writes
  uint16_t* o = out + r * n_heads * head_dim + h * head_dim;
  const float inv_sum = 1.0f / sum;
  switch (head_dim) {
    case 64: return attention_out<2>(p, V, n, head_dim, part, inv_sum, o);
    case 128: return attention_out<4>(p, V, n, head_dim, part, inv_sum, o);
    case 256: return attention_out<8>(p, V, n, head_dim, part, inv_sum, o);
    default: break;
  }
  for (int d = tid; d < head_dim; d += nthreads) {
    float acc = 0.0f;
    for (int j = 0; j < n; ++j) acc += p[j] * bf2f(V[static_cast<int64_t>(j) * head_dim + d]);
    o[d] = f2bf(acc * inv_sum);
  }
}

// Grid-stride: out[r][i] = bf16(silu(gu[r][i]) * gu[r][inter + i]).
DF11_HD void swiglu(const float* gu, int64_t rows, int64_t inter, uint16_t* out) {
  const int64_t n = rows * inter;
  const int64_t step = static_cast<int64_t>(simt::gdim_x()) * simt::bdim_x();
  for (int64_t e = static_cast<int64_t>(simt::bid_x()) * simt::bdim_x() + simt::tid_x(); e < n; e += step) {
    const int64_t r = e / inter, i = e % inter;
    const float g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
    out[e] = f2bf(g / (1.0f + exp_f(-g)) * u);
  }
}

// out[e] = element first + e (e < n) of the synthetic matrix of (table, seed, stream_id)
// (datasets/synth_draw.hpp: the bits the host generator makes); the alias table is staged in the
// block's shared memory (`staged`, 256 columns) first. Grid-stride, one element per step.
DF11_HD void synth_fill(uint16_t* out, uint64_t n, uint64_t first, const synth::AliasColumn* table, uint64_t seed,
                        uint64_t stream_id, synth::AliasColumn* staged) {
  for (unsigned c = simt::tid_x(); c < 256; c += simt::bdim_x()) staged[c] = table[c];
  simt::sync_block();
  const uint64_t step = static_cast<uint64_t>(simt::gdim_x()) * simt::bdim_x();
  for (uint64_t e = static_cast<uint64_t>(simt::bid_x()) * simt::bdim_x() + simt::tid_x(); e < n; e += step) {
    out[e] = synth::draw_element(staged, seed, stream_id, first + e);
  }
}

// Merge rule of argmax: larger value wins; equal values go to the lower index; an empty slot
// (index -1) loses.
DF11_HD bool argmax_better(float v, int64_t i, float w, int64_t j) {
  if (j < 0) return true;
  if (i < 0) return false;
  return v > w || (v == w && i < j);
}

// Every lane of the warp ends with the warp's best (value, index) under argmax_better.
DF11_HD void warp_argmax(float& bv, int64_t& bi) {
  for (unsigned o = 16; o > 0; o >>= 1) {
    const float v = simt::warp_shfl_xor(bv, o);
    const int64_t i = simt::warp_shfl_xor(bi, o);
    if (!argmax_better(bv, bi, v, i)) {
      bv = v;
      bi = i;
    }
  }
}

// Block r: out[r] = index of the largest logits[r][:], ties to the lowest index, NaN never
// chosen (0 when every value is NaN). best_v, best_i: 32 entries of shared memory each.
DF11_HD void argmax(const float* logits, int64_t vocab, int32_t* out, float* best_v, int64_t* best_i) {
  const float* row = logits + static_cast<int64_t>(simt::bid_x()) * vocab;
  float bv = -FLT_MAX;
  int64_t bi = -1;
  for (int64_t i = simt::tid_x(); i < vocab; i += simt::bdim_x()) {
    const float v = row[i];
    if (v == v && (bi < 0 || v > bv)) {  // strided ascending: the first maximum of this thread
      bv = v;
      bi = i;
    }
  }
  warp_argmax(bv, bi);
  const unsigned lane = simt::tid_x() & 31, warp = simt::tid_x() >> 5;
  if (lane == 0) {
    best_v[warp] = bv;
    best_i[warp] = bi;
  }
  simt::sync_block();
  if (warp == 0) {
    const unsigned n_warps = simt::bdim_x() >> 5;
    bv = lane < n_warps ? best_v[lane] : -FLT_MAX;
    bi = lane < n_warps ? best_i[lane] : -1;
    warp_argmax(bv, bi);
    if (lane == 0) out[simt::bid_x()] = static_cast<int32_t>(bi < 0 ? 0 : bi);
  }
}

}  // namespace df11::e2e::body
