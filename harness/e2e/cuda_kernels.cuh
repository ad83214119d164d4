// The small CUDA kernels of the forward pass (everything but the GEMMs, which cuBLAS does):
// embedding lookup, RMSNorm, rotary embeddings + KV-cache store, attention, SwiGLU, argmax.
// Device layouts: activations row-major [rows][width] with rows = batch x new positions; the KV
// cache of a layer is BF16 [batch][kv_heads][max_positions][head_dim]; BF16 is raw uint16.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "datasets/synth_draw.hpp"

namespace df11::e2e::gpu {

// out[r][:] = float(table[tokens[r] - r0][:]) for the rows whose token lies in [r0, r1) (table
// holds those rows of the embedding); other rows are left alone. Token ids are checked on the
// host beforehand.
void embed(const int32_t* tokens, int64_t rows, const uint16_t* table, int64_t hidden, float* out,
           int64_t r0, int64_t r1, cudaStream_t s);

// out[r] = bf16(w * x[r] / sqrt(mean(x[r]^2) + eps)) for rows x + r * x_stride (float).
void rmsnorm(const float* x, int64_t rows, int64_t x_stride, const uint16_t* w, int64_t hidden,
             float eps, uint16_t* out, cudaStream_t s);

// Rotates q (in place) and k of every row of qkv ([rows][ld]: q heads, k heads, v heads) by the
// rope table ([max_positions][head_dim/2] (cos, sin)) at positions pos0 + t, and stores k and v
// into the layer's BF16 caches. pos_dev (a captured graph's launches): pos0 is read from the
// device there instead, when the kernel runs.
void rope_store(float* qkv, int64_t ld, int batch, int t_new, int pos0, int n_heads, int n_kv_heads,
                int head_dim, const float* rope, uint16_t* k_cache, uint16_t* v_cache,
                int max_positions, cudaStream_t s, const int* pos_dev = nullptr);

// Causal grouped-query attention of the new positions over the cache: out[r][h * D + d] (BF16,
// row stride n_heads * head_dim), one block per (position, head, batch row), the scores of the
// row held in shared memory. pos_dev: pos0 read from the device (as rope_store), the shared
// memory then sized for max_positions.
void attention(const float* qkv, int64_t ld, const uint16_t* k_cache, const uint16_t* v_cache,
               int batch, int t_new, int pos0, int n_heads, int n_kv_heads, int head_dim,
               int max_positions, uint16_t* out, cudaStream_t s, const int* pos_dev = nullptr);

// The most positions attention() can hold in shared memory on the current device.
[[nodiscard]] int attention_max_positions(int head_dim);

// out[r][i] = bf16(silu(gu[r][i]) * gu[r][inter + i]).
void swiglu(const float* gu, int64_t rows, int64_t inter, uint16_t* out, cudaStream_t s);

// out[r] = argmax of logits[r][:], ties to the lowest index, NaN never chosen.
void argmax(const float* logits, int rows, int64_t vocab, int32_t* out, cudaStream_t s);

// out[e] = element first + e (e < n) of the synthetic matrix `recipe` describes: the bits
// df11::synth::fill_recipe makes on the host (synthetic models on CUDA are generated here).
void synth_fill(uint16_t* out, uint64_t n, uint64_t first, const synth::MatrixRecipe& recipe, cudaStream_t s);

// One thread that waits about `us` microseconds on the GPU: tests delay one stream with it so
// that a missing cross-stream wait shows as a wrong result every time, not by chance.
void spin(unsigned us, cudaStream_t s);

// dst[0, n) = src[0, n), read about `us` microseconds after the kernel starts, by a kernel that
// lets the next one on s start at once (sm_90 and later): tests check with it that an early
// decode (dec::Start::early) after a reader of its output buffer stores nothing before the
// reader is done.
void late_copy(const uint16_t* src, uint16_t* dst, uint64_t n, unsigned us, cudaStream_t s);

}  // namespace df11::e2e::gpu
