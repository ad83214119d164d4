// Test helpers: small units from vectors, seeded random BF16 data with chosen exponent mixes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "codec/bf16.hpp"
#include "codec/layout.hpp"
#include "codec/unit.hpp"

namespace df11::test {

// "" when the words are equal, else where they first differ and how many differ: what a failed
// bit-exactness check prints (Catch would print both vectors, millions of words).
inline std::string word_diff(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
  if (got.size() != want.size()) {
    return "size " + std::to_string(got.size()) + ", expected " + std::to_string(want.size());
  }
  std::size_t first = got.size(), n = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      if (n++ == 0) first = i;
    }
  }
  if (n == 0) return "";
  return std::to_string(n) + " of " + std::to_string(got.size()) + " words differ; first at " +
         std::to_string(first) + ": " + std::to_string(got[first]) + ", expected " + std::to_string(want[first]);
}

inline Unit unit_of(std::vector<uint16_t> data, const std::string& name = "u") {
  Unit u;
  u.name = name;
  const int64_t n = static_cast<int64_t>(data.size());
  u.tensors.push_back({"w", {n}, std::move(data)});
  return u;
}

// BF16 words whose exponent is center + floor(log2 |x|) for x ~ N(0,1) scaled by
// exp(spread * N(0,1)) (a Gaussian scale mixture, like trained weights), clamped to
// [0, max_exponent]; sign and mantissa uniform.
inline std::vector<uint16_t> random_weights(std::size_t n, uint64_t seed, int center = 120, double spread = 0.3,
                                            int max_exponent = 239) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<uint16_t> v(n);
  for (auto& w : v) {
    const double m = std::abs(nd(rng)) * std::exp(spread * nd(rng));
    int e = m > 0 ? center + static_cast<int>(std::floor(std::log2(m))) : 0;
    e = std::clamp(e, 0, max_exponent);
    w = merge_bf16(static_cast<uint8_t>(e), static_cast<uint8_t>(rng() & 0xFF));
  }
  return v;
}

// Every BF16 pattern a layout can hold (all 65536, or the 61440 with exponent < 240 where
// `all_exponents` is false), each once, among `trained` words of random_weights (a trained-like
// histogram, so the rare exponents get long, length-limited codes), shuffled with `seed`
// (Fisher-Yates on mt19937_64: the same words on every platform).
inline std::vector<uint16_t> every_pattern_among_trained(bool all_exponents, std::size_t trained, uint64_t seed) {
  std::vector<uint16_t> v = random_weights(trained, seed, 120, 0.6);
  for (uint32_t w = 0; w < 65536; ++w) {
    if (all_exponents || exponent_of(static_cast<uint16_t>(w)) < 240) v.push_back(static_cast<uint16_t>(w));
  }
  std::mt19937_64 rng(seed ^ 0x9E3779B97F4A7C15ull);
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
  return v;
}

// Uniformly random BF16 words whose exponent is one of `exponents` (equal frequency).
inline std::vector<uint16_t> words_with_exponents(std::size_t n, uint64_t seed, const std::vector<int>& exponents) {
  std::mt19937_64 rng(seed);
  std::vector<uint16_t> v(n);
  for (auto& w : v) {
    const uint64_t r = rng();
    w = merge_bf16(static_cast<uint8_t>(exponents[r % exponents.size()]), static_cast<uint8_t>(r >> 56));
  }
  return v;
}

// Exponent first + i appearing fib(i) times (1, 1, 2, 3, 5, ...) for i < n_terms, mantissas
// counting up, shuffled with `seed`: a histogram whose unlimited Huffman code is a chain n_terms
// deep, so length limits and second-level tables are exercised everywhere in the stream.
inline std::vector<uint16_t> fibonacci_words(int n_terms, int first, uint64_t seed) {
  std::vector<uint16_t> data;
  uint64_t a = 1, b = 1;
  for (int i = 0; i < n_terms; ++i) {
    for (uint64_t k = 0; k < a; ++k) {
      data.push_back(merge_bf16(static_cast<uint8_t>(first + i), static_cast<uint8_t>(k)));
    }
    const uint64_t c = a + b;
    a = b;
    b = c;
  }
  std::mt19937_64 rng(seed);
  std::shuffle(data.begin(), data.end(), rng);
  return data;
}

// Three damaged copies of `good`, as test_gpu's check_damaged launches them (and test_emulation
// checks that uploads take some): 16 stream bytes changed in each, and from the second on one
// gap byte too. Draws from rng in a fixed order, so a sequence of calls is reproducible.
inline std::vector<EncodedUnit> damaged_units(const EncodedUnit& good, std::mt19937_64& rng) {
  std::vector<EncodedUnit> out;
  for (int trial = 0; trial < 3; ++trial) {
    EncodedUnit bad = good;
    for (int k = 0; k < 16; ++k)
      bad.encoded_exponent[rng() % bad.encoded_exponent.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    if (trial > 0) bad.gaps[rng() % bad.gaps.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    out.push_back(std::move(bad));
  }
  return out;
}

}  // namespace df11::test
