// Bulk BF16 split/merge (written as plain loops the compiler vectorizes).
#include "codec/bf16.hpp"

#include <cstring>

namespace df11 {

void split_bf16(const uint16_t* words, std::size_t n, uint8_t* exponents, uint8_t* sign_mantissa) {
  for (std::size_t i = 0; i < n; ++i) {
    exponents[i] = exponent_of(words[i]);
    sign_mantissa[i] = sign_mantissa_of(words[i]);
  }
}

void merge_bf16(const uint8_t* exponents, const uint8_t* sign_mantissa, std::size_t n, uint16_t* words) {
  for (std::size_t i = 0; i < n; ++i) words[i] = merge_bf16(exponents[i], sign_mantissa[i]);
}

}  // namespace df11
