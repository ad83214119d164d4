// Length-limited Huffman codes over the 256 exponent values: optimal code lengths under a
// maximum length (package-merge), canonical codewords, and entropy helpers.
#pragma once

#include <array>
#include <cstdint>

namespace df11 {

using Histogram = std::array<uint64_t, 256>;
using CodeLengths = std::array<uint8_t, 256>;  // 0 = symbol absent

// A prefix code: codeword of symbol s is the low length[s] bits of code[s], emitted MSB first.
// Codes need not be canonical (official DF11 files are not); ours are.
struct HuffmanCode {
  CodeLengths length{};
  std::array<uint32_t, 256> code{};

  [[nodiscard]] int max_length() const;
  [[nodiscard]] int n_symbols() const;
  [[nodiscard]] uint64_t total_bits(const Histogram& hist) const;
};

// Optimal code lengths with every length <= max_length (1..32), by the package-merge
// algorithm (Larmore and Hirschberg). Deterministic: ties break by symbol value. One symbol gets
// length 1; no symbols gives all zeros. Throws df11::Error when 2^max_length < symbol count.
[[nodiscard]] CodeLengths limited_code_lengths(const Histogram& hist, int max_length);

// Canonical codewords for the given lengths (shorter codes first, then by symbol value).
// Throws df11::Error when the lengths violate Kraft's inequality or exceed 32.
[[nodiscard]] HuffmanCode canonical_code(const CodeLengths& lengths);

// limited_code_lengths + canonical_code.
[[nodiscard]] HuffmanCode build_code(const Histogram& hist, int max_length);

// Shannon entropy of the histogram in bits per symbol (0 for an empty histogram).
[[nodiscard]] double entropy_bits(const Histogram& hist);
// Sum of 2^-length over present symbols, scaled by 2^32 (== 2^32 for a complete code).
[[nodiscard]] uint64_t kraft_sum_scaled(const CodeLengths& lengths);

}  // namespace df11
