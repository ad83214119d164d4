// The synthetic generator's per-element draw, for the host and for CUDA kernels alike: element i
// of a matrix is a pure function of (recipe, i), so a CPU loop and a GPU kernel that call
// draw_element produce the same bits (synthetic.cpp explains the sampling).
#pragma once

#include <cstdint>

#include "codec/bf16.hpp"
#include "codec/common.hpp"

namespace df11::synth {

// Elements per RNG block: each block's key hashes (seed, stream_id, block index).
inline constexpr uint64_t kBlockElements = 65536;

// One column of a Walker alias table over the 256 exponents: a 32-bit draw below threshold picks
// primary, else alias.
struct AliasColumn {
  uint32_t threshold;
  uint8_t primary;
  uint8_t alias;
};

// Everything that fixes a matrix's bits: the exponent distribution of its role and fan-in (as an
// alias table) and its RNG stream.
struct MatrixRecipe {
  AliasColumn columns[256];
  uint64_t seed = 0;
  uint64_t stream_id = 0;
};

DF11_HD uint64_t mix64(uint64_t x) {  // splitmix64 finalizer: a bijection with full avalanche
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

DF11_HD uint64_t block_key(uint64_t seed, uint64_t stream_id, uint64_t block) {
  uint64_t h = mix64(seed ^ 0x9E3779B97F4A7C15ULL);
  h = mix64(h ^ mix64(stream_id + 0xD1B54A32D192ED03ULL));
  return mix64(h ^ (block + 0x8CB92BA72F3D8DD7ULL));
}

// wyrand: a Weyl counter through one 64x64->128 multiply. Element j of a block (0-based) uses
// the counter key + (j + 1) * increment, so every element is independent work.
DF11_HD uint64_t wyrand_at(uint64_t key, uint64_t j) {
  constexpr uint64_t increment = 0xA0761D6478BD642FULL;
  constexpr uint64_t mix = 0xE7037ED1A0B428DBULL;
  const uint64_t state = key + (j + 1) * increment;
  const uint64_t other = state ^ mix;
#if defined(__CUDA_ARCH__)
  return __umul64hi(state, other) ^ (state * other);
#else
  __extension__ typedef unsigned __int128 u128;
  const u128 m = static_cast<u128>(state) * other;
  return static_cast<uint64_t>(m >> 64) ^ static_cast<uint64_t>(m);
#endif
}

// 8 bits pick a column, 32 bits are compared with its threshold, 8 bits are the sign-mantissa.
DF11_HD uint16_t bf16_from_bits(uint64_t bits, const AliasColumn* columns) {
  const AliasColumn& c = columns[bits & 0xFF];
  const uint8_t exponent = static_cast<uint32_t>(bits >> 8) < c.threshold ? c.primary : c.alias;
  return merge_bf16(exponent, static_cast<uint8_t>(bits >> 40));
}

// Element i of the matrix `recipe` describes (columns may be a copy of recipe.columns, e.g. in
// shared memory).
DF11_HD uint16_t draw_element(const AliasColumn* columns, uint64_t seed, uint64_t stream_id,
                              uint64_t i) {
  return bf16_from_bits(
      wyrand_at(block_key(seed, stream_id, i / kBlockElements), i % kBlockElements), columns);
}

}  // namespace df11::synth
