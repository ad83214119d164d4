// Kernels of the CUDA forward pass (see cuda_kernels.cuh). Simple and exact in float: they are
// not where the time goes (the GEMMs and the weight decode are), and the same kernels serve the
// BF16 and DF11 models, so they cannot make the two differ.
#include "e2e/cuda_kernels.cuh"

#include <cfloat>

#include "common/cuda_util.hpp"

namespace df11::e2e::gpu {
namespace {

__device__ __forceinline__ float bf2f(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

// Round to nearest even, NaN kept quiet (as df11::float_to_bf16 on the host).
__device__ __forceinline__ uint16_t f2bf(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}

// Sum (or max) over the block; every thread gets the result. red: 32 floats of shared memory.
template <bool kMax>
__device__ float block_reduce(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = (blockDim.x + 31) >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // red may still be read by an earlier reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < n_warps ? red[lane] : (kMax ? -FLT_MAX : 0.0f);
  r = kMax ? warp_max(r) : warp_sum(r);
  return r;
}

__global__ void embed_kernel(const int32_t* tokens, const uint16_t* table, int64_t hidden,
                             float* out) {
  const int64_t r = blockIdx.x;
  const uint16_t* e = table + static_cast<int64_t>(tokens[r]) * hidden;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x) out[r * hidden + d] = bf2f(e[d]);
}

__global__ void rmsnorm_kernel(const float* x, int64_t x_stride, const uint16_t* w, int64_t hidden,
                               float eps, uint16_t* out) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * x_stride;
  float ss = 0.0f;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x) ss += xr[d] * xr[d];
  ss = block_reduce<false>(ss, red);
  const float inv = rsqrtf(ss / static_cast<float>(hidden) + eps);
  uint16_t* o = out + blockIdx.x * hidden;
  for (int64_t d = threadIdx.x; d < hidden; d += blockDim.x)
    o[d] = f2bf(bf2f(w[d]) * (xr[d] * inv));
}

__global__ void rope_store_kernel(float* qkv, int64_t ld, int t_new, int pos0, int n_heads,
                                  int n_kv_heads, int head_dim, const float* rope, uint16_t* kc,
                                  uint16_t* vc, int max_positions) {
  const int r = blockIdx.x, b = r / t_new, pos = pos0 + r % t_new, half = head_dim / 2;
  float* row = qkv + static_cast<int64_t>(r) * ld;
  const float* cs = rope + static_cast<int64_t>(pos) * half * 2;
  const int n_pairs = (n_heads + n_kv_heads) * half;
  for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int head = p / half, i = p % half;
    float* v = row + head * head_dim;
    const float c = cs[2 * i], sn = cs[2 * i + 1], x1 = v[i], x2 = v[i + half];
    const float y1 = x1 * c - x2 * sn, y2 = x2 * c + x1 * sn;
    if (head < n_heads) {
      v[i] = y1;
      v[i + half] = y2;
    } else {
      const int kh = head - n_heads;
      uint16_t* k =
          kc + ((static_cast<int64_t>(b) * n_kv_heads + kh) * max_positions + pos) * head_dim;
      k[i] = f2bf(y1);
      k[i + half] = f2bf(y2);
    }
  }
  const float* vrow = row + (n_heads + n_kv_heads) * head_dim;
  for (int e = threadIdx.x; e < n_kv_heads * head_dim; e += blockDim.x) {
    const int kh = e / head_dim, d = e % head_dim;
    vc[((static_cast<int64_t>(b) * n_kv_heads + kh) * max_positions + pos) * head_dim + d] =
        f2bf(vrow[e]);
  }
}

constexpr int kAttnThreads = 128;

__global__ void __launch_bounds__(kAttnThreads)
    attention_kernel(const float* qkv, int64_t ld, const uint16_t* kc, const uint16_t* vc,
                     int t_new, int pos0, int n_heads, int n_kv_heads, int head_dim,
                     int max_positions, float scale, uint16_t* out) {
  extern __shared__ float sm[];
  const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int kh = h / (n_heads / n_kv_heads), n = pos0 + t + 1;  // causal: positions 0..pos0+t
  float* q = sm;                                                // head_dim
  float* red = sm + head_dim;                                   // 32
  float* p = red + 32;                                          // n scores
  const int64_t r = static_cast<int64_t>(b) * t_new + t;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) q[d] = qkv[r * ld + h * head_dim + d];
  __syncthreads();
  const int64_t base = (static_cast<int64_t>(b) * n_kv_heads + kh) * max_positions * head_dim;
  const uint16_t* K = kc + base;
  const uint16_t* V = vc + base;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  for (int j = warp; j < n; j += n_warps) {  // a warp per position: coalesced reads of a K row
    float s = 0.0f;
    for (int d = lane; d < head_dim; d += 32)
      s += q[d] * bf2f(K[static_cast<int64_t>(j) * head_dim + d]);
    s = warp_sum(s);
    if (lane == 0) p[j] = s * scale;
  }
  __syncthreads();
  float m = -FLT_MAX;
  for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, p[j]);
  m = block_reduce<true>(m, red);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = expf(p[j] - m);
    p[j] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, red);  // its barriers also publish the p[j] writes
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < n; ++j) acc += p[j] * bf2f(V[static_cast<int64_t>(j) * head_dim + d]);
    out[r * n_heads * head_dim + h * head_dim + d] = f2bf(acc / sum);
  }
}

__global__ void swiglu_kernel(const float* gu, int64_t rows, int64_t inter, uint16_t* out) {
  const int64_t n = rows * inter;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / inter, i = e % inter;
    const float g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
    out[e] = f2bf(g / (1.0f + expf(-g)) * u);
  }
}

constexpr int kArgmaxThreads = 1024;

__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* logits, int64_t vocab, int32_t* out) {
  __shared__ float best_v[32];
  __shared__ int64_t best_i[32];
  const float* row = logits + blockIdx.x * vocab;
  float bv = -FLT_MAX;
  int64_t bi = -1;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (!isnan(v) && (bi < 0 || v > bv)) {  // strided ascending: the first maximum of this thread
      bv = v;
      bi = i;
    }
  }
  // Merge: larger value wins; equal values go to the lower index; an empty slot (-1) loses.
  auto better = [](float v, int64_t i, float w, int64_t j) {
    if (j < 0) return true;
    if (i < 0) return false;
    return v > w || (v == w && i < j);
  };
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xFFFFFFFFu, bv, o);
    const int64_t i = __shfl_xor_sync(0xFFFFFFFFu, bi, o);
    if (!better(bv, bi, v, i)) {
      bv = v;
      bi = i;
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_v[warp] = bv;
    best_i[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x >> 5;
    bv = lane < n_warps ? best_v[lane] : -FLT_MAX;
    bi = lane < n_warps ? best_i[lane] : -1;
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xFFFFFFFFu, bv, o);
      const int64_t i = __shfl_xor_sync(0xFFFFFFFFu, bi, o);
      if (!better(bv, bi, v, i)) {
        bv = v;
        bi = i;
      }
    }
    if (lane == 0) out[blockIdx.x] = static_cast<int32_t>(bi < 0 ? 0 : bi);
  }
}

std::size_t attention_smem(int head_dim, int positions) {
  return sizeof(float) *
         (static_cast<std::size_t>(head_dim) + 32 + static_cast<std::size_t>(positions));
}

}  // namespace

void embed(const int32_t* tokens, int64_t rows, const uint16_t* table, int64_t hidden, float* out,
           cudaStream_t s) {
  if (rows == 0) return;
  embed_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(tokens, table, hidden, out);
  CUDA_CHECK(cudaGetLastError());
}

void rmsnorm(const float* x, int64_t rows, int64_t x_stride, const uint16_t* w, int64_t hidden,
             float eps, uint16_t* out, cudaStream_t s) {
  if (rows == 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(x, x_stride, w, hidden, eps, out);
  CUDA_CHECK(cudaGetLastError());
}

void rope_store(float* qkv, int64_t ld, int batch, int t_new, int pos0, int n_heads, int n_kv_heads,
                int head_dim, const float* rope, uint16_t* k_cache, uint16_t* v_cache,
                int max_positions, cudaStream_t s) {
  const int rows = batch * t_new;
  if (rows == 0) return;
  rope_store_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(
      qkv, ld, t_new, pos0, n_heads, n_kv_heads, head_dim, rope, k_cache, v_cache, max_positions);
  CUDA_CHECK(cudaGetLastError());
}

int attention_max_positions(int head_dim) {
  int device = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return optin / static_cast<int>(sizeof(float)) - head_dim - 32;
}

void attention(const float* qkv, int64_t ld, const uint16_t* k_cache, const uint16_t* v_cache,
               int batch, int t_new, int pos0, int n_heads, int n_kv_heads, int head_dim,
               int max_positions, uint16_t* out, cudaStream_t s) {
  if (batch == 0 || t_new == 0) return;
  const std::size_t smem = attention_smem(head_dim, pos0 + t_new);
  if (smem > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(t_new), static_cast<unsigned>(n_heads),
                  static_cast<unsigned>(batch));
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  attention_kernel<<<grid, kAttnThreads, smem, s>>>(qkv, ld, k_cache, v_cache, t_new, pos0, n_heads,
                                                    n_kv_heads, head_dim, max_positions, scale,
                                                    out);
  CUDA_CHECK(cudaGetLastError());
}

void swiglu(const float* gu, int64_t rows, int64_t inter, uint16_t* out, cudaStream_t s) {
  const int64_t n = rows * inter;
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535LL * 16));
  swiglu_kernel<<<blocks, 256, 0, s>>>(gu, rows, inter, out);
  CUDA_CHECK(cudaGetLastError());
}

void argmax(const float* logits, int rows, int64_t vocab, int32_t* out, cudaStream_t s) {
  if (rows == 0) return;
  argmax_kernel<<<static_cast<unsigned>(rows), kArgmaxThreads, 0, s>>>(logits, vocab, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace df11::e2e::gpu
