// Kernels of the CUDA forward pass (see cuda_kernels.cuh): __global__ wrappers around the
// bodies in kernel_bodies.cuh (which the host SIMT executor runs in CI), and their launches.
// Simple and exact in float: they are not where the time goes (the GEMMs and the weight decode
// are), and the same kernels serve the BF16 and DF11 models, so they cannot make the two differ.
#include "e2e/cuda_kernels.cuh"
#include "e2e/kernel_bodies.cuh"

#include <cfloat>

#include "common/cuda_util.hpp"

namespace df11::e2e::gpu {
namespace {

using body::kArgmaxThreads;
using body::kAttnThreads;

__global__ void embed_kernel(const int32_t* tokens, const uint16_t* table, int64_t hidden, float* out, int64_t r0,
                             int64_t r1) {
  body::embed(tokens, table, hidden, out, r0, r1);
}

__global__ void rmsnorm_kernel(const float* x, int64_t x_stride, const uint16_t* w, int64_t hidden, float eps,
                               uint16_t* out) {
  __shared__ float red[32];
  body::rmsnorm(x, x_stride, w, hidden, eps, out, red);
}

// pos_dev (a replayed graph's position, written before each replay): the first new position is
// *pos_dev, else pos0.
__global__ void rope_store_kernel(float* qkv, int64_t ld, int t_new, int pos0, const int* pos_dev, int n_heads,
                                  int n_kv_heads, int head_dim, const float* rope, uint16_t* kc, uint16_t* vc,
                                  int max_positions) {
  body::rope_store(qkv, ld, t_new, pos_dev ? *pos_dev : pos0, n_heads, n_kv_heads, head_dim, rope, kc, vc,
                   max_positions);
}

__global__ void __launch_bounds__(kAttnThreads)
    attention_kernel(const float* qkv, int64_t ld, const uint16_t* kc, const uint16_t* vc, int t_new, int pos0,
                     const int* pos_dev, int n_heads, int n_kv_heads, int head_dim, int max_positions, float scale,
                     uint16_t* out) {
  extern __shared__ float sm[];
  body::attention(qkv, ld, kc, vc, t_new, pos_dev ? *pos_dev : pos0, n_heads, n_kv_heads, head_dim, max_positions,
                  scale, out, sm);
}

__global__ void swiglu_kernel(const float* gu, int64_t rows, int64_t inter, uint16_t* out) {
  body::swiglu(gu, rows, inter, out);
}

__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const float* logits, int64_t vocab, int32_t* out) {
  __shared__ float best_v[32];
  __shared__ int64_t best_i[32];
  body::argmax(logits, vocab, out, best_v, best_i);
}

__global__ void synth_fill_kernel(uint16_t* out, uint64_t n, uint64_t first, synth::MatrixRecipe recipe) {
  __shared__ synth::AliasColumn staged[256];
  body::synth_fill(out, n, first, recipe.columns, recipe.seed, recipe.stream_id, staged);
}

__global__ void spin_kernel(unsigned us) {
  const long long end = clock64() + static_cast<long long>(us) * 2000;  // ~2 GHz: about us microseconds
  while (clock64() < end) __nanosleep(1000);
}

// Lets the next kernel on its stream launch at once (an early one: programmatic dependent
// launch), then waits about `us` and only then reads src: a reader still reading when the next
// kernel runs beside it.
__global__ void late_copy_kernel(const uint16_t* src, uint16_t* dst, uint64_t n, unsigned us) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  const long long end = clock64() + static_cast<long long>(us) * 2000;
  while (clock64() < end) __nanosleep(1000);
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    dst[i] = src[i];
  }
}

std::size_t attention_smem(int head_dim, int positions) {
  return sizeof(float) * body::attention_smem_floats(head_dim, positions);
}

}  // namespace

void embed(const int32_t* tokens, int64_t rows, const uint16_t* table, int64_t hidden, float* out,
           int64_t r0, int64_t r1, cudaStream_t s) {
  if (rows == 0 || r1 <= r0) return;
  embed_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(tokens, table, hidden, out, r0, r1);
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
                int max_positions, cudaStream_t s, const int* pos_dev) {
  const int rows = batch * t_new;
  if (rows == 0) return;
  rope_store_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(
      qkv, ld, t_new, pos0, pos_dev, n_heads, n_kv_heads, head_dim, rope, k_cache, v_cache, max_positions);
  CUDA_CHECK(cudaGetLastError());
}

int attention_max_positions(int head_dim) {
  int device = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return optin / static_cast<int>(sizeof(float)) - static_cast<int>(body::attention_smem_floats(head_dim, 0));
}

void attention(const float* qkv, int64_t ld, const uint16_t* k_cache, const uint16_t* v_cache,
               int batch, int t_new, int pos0, int n_heads, int n_kv_heads, int head_dim,
               int max_positions, uint16_t* out, cudaStream_t s, const int* pos_dev) {
  if (batch == 0 || t_new == 0) return;
  // From the device's position: room for any it may hold (the cache's positions).
  const std::size_t smem = attention_smem(head_dim, pos_dev ? max_positions : pos0 + t_new);
  // The opt-in limit only ever rises: a captured step's launch was sized for the cache's positions,
  // and an eager pass after it (a prompt after reset, --kernel-times' untraced prompt) must not
  // lower the limit under what that graph node asks for. (One device, one host thread.)
  static std::size_t opted_in = 48 * 1024;
  if (smem > opted_in) {
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    opted_in = smem;
  }
  const dim3 grid(static_cast<unsigned>(t_new), static_cast<unsigned>(n_heads),
                  static_cast<unsigned>(batch));
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  attention_kernel<<<grid, kAttnThreads, smem, s>>>(qkv, ld, k_cache, v_cache, t_new, pos0, pos_dev, n_heads,
                                                    n_kv_heads, head_dim, max_positions, scale, out);
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

void synth_fill(uint16_t* out, uint64_t n, uint64_t first, const synth::MatrixRecipe& recipe, cudaStream_t s) {
  if (n == 0) return;
  const auto blocks = static_cast<unsigned>(std::min<uint64_t>((n + 255) / 256, 65535ULL * 16));
  synth_fill_kernel<<<blocks, 256, 0, s>>>(out, n, first, recipe);
  CUDA_CHECK(cudaGetLastError());
}

void spin(unsigned us, cudaStream_t s) {
  spin_kernel<<<1, 1, 0, s>>>(us);
  CUDA_CHECK(cudaGetLastError());
}

void late_copy(const uint16_t* src, uint16_t* dst, uint64_t n, unsigned us, cudaStream_t s) {
  late_copy_kernel<<<2, 256, 0, s>>>(src, dst, n, us);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace df11::e2e::gpu
