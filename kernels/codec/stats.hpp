// Size accounting of an encoded unit: where the bits per weight go, and how far the code is
// from the entropy bound.
#pragma once

#include <cstdint>

#include "codec/huffman.hpp"
#include "codec/layout.hpp"

namespace df11 {

struct UnitStats {
  uint64_t n_elements = 0;
  double exponent_entropy_bits = 0;  // per exponent
  int min_code_length = 0, max_code_length = 0;
  int n_symbols = 0;
  // Bytes of each stored tensor (positions_bytes: output_positions and, in count layouts,
  // thread_counts).
  uint64_t luts_bytes = 0, exponent_bytes = 0, sign_mantissa_bytes = 0, positions_bytes = 0, gaps_bytes = 0,
           split_bytes = 0;
  uint64_t stored_bytes = 0, bf16_bytes = 0;
  double ratio = 0;            // stored / BF16
  double bits_per_weight = 0;  // stored bits / element
  double exponent_bits_per_weight = 0, gaps_bits_per_weight = 0, positions_bits_per_weight = 0,
         tables_bits_per_weight = 0;
  // The ratio if the exponents were coded at their entropy, all other bytes unchanged.
  double bound_ratio = 0;
};

// `hist` is the unit's exponent histogram (the encoder's input statistics).
[[nodiscard]] UnitStats unit_stats(const EncodedUnit& unit, const Histogram& hist);

// Histogram of exponents from decoded BF16 words.
[[nodiscard]] Histogram histogram_of(const uint16_t* words, uint64_t n);

}  // namespace df11
