// BF16 split and merge exactly as DFloat11 does it: the 8-bit exponent is entropy coded, the
// sign and the 7 mantissa bits travel raw as one "sign-mantissa" byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "codec/common.hpp"

namespace df11 {

// w = s eeeeeeee mmmmmmm
DF11_HD uint8_t exponent_of(uint16_t w) { return static_cast<uint8_t>((w >> 7) & 0xFF); }
DF11_HD uint8_t sign_mantissa_of(uint16_t w) {
  return static_cast<uint8_t>(((w >> 8) & 0x80) | (w & 0x7F));
}
DF11_HD uint16_t merge_bf16(uint8_t exponent, uint8_t sign_mantissa) {
  return static_cast<uint16_t>(((sign_mantissa & 0x80u) << 8) | (static_cast<unsigned>(exponent) << 7) |
                               (sign_mantissa & 0x7Fu));
}

// Bulk forms (host): out arrays hold n elements.
void split_bf16(const uint16_t* words, std::size_t n, uint8_t* exponents, uint8_t* sign_mantissa);
void merge_bf16(const uint8_t* exponents, const uint8_t* sign_mantissa, std::size_t n, uint16_t* words);

// The float with these bits (host and device).
[[nodiscard]] DF11_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// BF16 pattern -> float (exact) and float -> BF16 (round to nearest even; a NaN stays a quiet
// NaN with its sign). Host and device (kernels use them too).
[[nodiscard]] DF11_HD float bf16_to_float(uint16_t w) { return bits_to_float(static_cast<uint32_t>(w) << 16); }
[[nodiscard]] DF11_HD uint16_t float_to_bf16(float f) {
#if defined(__CUDA_ARCH__)
  const uint32_t bits = __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
#endif
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN, keep the sign
  }
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

}  // namespace df11
