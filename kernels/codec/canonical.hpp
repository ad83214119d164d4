// A canonical code decoded with per-length limits: no large table, ~1 KB that fits in shared
// or constant memory. Plain data plus a __host__ __device__ lookup, used by the CPU decoder and
// the GPU decoders alike.
#pragma once

#include <cstdint>

#include "codec/common.hpp"
#include "codec/huffman.hpp"

namespace df11 {

struct CanonicalTable {
  // limit[L]: one past the last codeword of length <= L, left-aligned in 32 bits (as uint64 so
  // that the full code space, 2^32, is representable). A window w has length L for the
  // smallest L with w < limit[L].
  uint64_t limit[33];
  uint32_t first[33];   // first codeword of length L (right-aligned)
  uint16_t offset[33];  // index in `sorted` of the first symbol of length L
  uint8_t sorted[256];  // symbols ordered by (length, value)
  uint8_t min_len;
  uint8_t max_len;
  uint16_t n_symbols;

  // Symbol and length of the codeword at the top of `window`; length 0 when no codeword
  // matches (only possible for an incomplete code).
  DF11_HD void lookup(uint32_t window, uint8_t& symbol, unsigned& length) const {
    for (unsigned l = min_len; l <= max_len; ++l) {
      if (static_cast<uint64_t>(window) < limit[l]) {
        symbol = sorted[offset[l] + ((window >> (32 - l)) - first[l])];
        length = l;
        return;
      }
    }
    symbol = 0;
    length = 0;
  }
};

// Builds the table of the canonical code with these lengths (as canonical_code assigns them).
[[nodiscard]] CanonicalTable make_canonical_table(const CodeLengths& lengths);

}  // namespace df11
