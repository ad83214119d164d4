// BF16 split/merge: every one of the 65536 patterns against the DF11 bit formulas.
#include <catch2/catch.hpp>

#include "codec/bf16.hpp"

using namespace df11;

TEST_CASE("split and merge are inverse on all 65536 BF16 patterns", "[codec][bf16]") {
  std::vector<uint16_t> all(65536);
  for (uint32_t w = 0; w < 65536; ++w) all[w] = static_cast<uint16_t>(w);
  std::vector<uint8_t> e(65536), sm(65536);
  split_bf16(all.data(), all.size(), e.data(), sm.data());
  std::vector<uint16_t> back(65536, 0xDEAD);
  merge_bf16(e.data(), sm.data(), all.size(), back.data());
  for (uint32_t w = 0; w < 65536; ++w) {
    // The published formulas, written independently of the implementation.
    REQUIRE(e[w] == ((w >> 7) & 0xFF));
    REQUIRE(sm[w] == (((w >> 8) & 0x80) | (w & 0x7F)));
    const uint8_t hi = static_cast<uint8_t>((sm[w] & 0x80) | (e[w] >> 1));
    const uint8_t lo = static_cast<uint8_t>(((e[w] & 1) << 7) | (sm[w] & 0x7F));
    REQUIRE(back[w] == static_cast<uint16_t>((hi << 8) | lo));
    REQUIRE(back[w] == w);
  }
}

TEST_CASE("float conversion is exact for BF16 values and rounds to nearest even", "[codec][bf16]") {
  REQUIRE(bf16_to_float(0x3F80) == 1.0f);
  REQUIRE(float_to_bf16(1.0f) == 0x3F80);
  REQUIRE(float_to_bf16(-2.0f) == 0xC000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  REQUIRE(float_to_bf16(1.0f + 1.0f / 256) == 0x3F80);
  REQUIRE(float_to_bf16(1.0f + 3.0f / 256) == 0x3F82);
  for (uint32_t w = 0; w < 65536; ++w) {
    const float f = bf16_to_float(static_cast<uint16_t>(w));
    if (f != f) {
      REQUIRE((float_to_bf16(f) & 0x7FC0) == 0x7FC0);  // NaN stays NaN
    } else {
      REQUIRE(float_to_bf16(f) == w);
    }
  }
}
