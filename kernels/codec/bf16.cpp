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

float bf16_to_float(uint16_t w) {
  const uint32_t bits = static_cast<uint32_t>(w) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN, keep the sign
  }
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

}  // namespace df11
