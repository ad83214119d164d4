// Decode tables: DF11's chained 256-entry tables with their code-length row (the official
// luts tensor), the lookup the official kernel performs on them, and a flat 2^k table.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "codec/common.hpp"
#include "codec/huffman.hpp"

namespace df11 {

// Entries >= this value in a DF11 table are pointers to row (256 - entry).
inline constexpr int kDf11PointerBase = 240;
inline constexpr int kDf11MaxRows = 18;  // root + 16 sub-tables + the length row

// Builds the official luts tensor ([rows, 256] bytes, rows = decode tables + 1) for `code`.
// Rows are built per whole-byte code prefix; inside a row a code's last chunk is left-aligned
// and fills the entries it covers. Entries no code covers (only for incomplete codes, i.e. a
// single symbol) repeat the previous covered entry, so every entry decodes to a real symbol.
// Throws df11::Error for symbols >= 240 or when more than 16 sub-tables would be needed.
[[nodiscard]] std::vector<uint8_t> build_df11_luts(const HuffmanCode& code);

// How many sub-tables (rows after the root) build_df11_luts would need for `code`; the format
// allows 16. Throws as build_df11_luts does for symbols >= 240.
[[nodiscard]] int df11_subtables(const HuffmanCode& code);

// The official kernel's lookup: up to four byte-indexed table reads on the next 32 stream bits
// (MSB-first in `window`); the code length then comes from the last row. `n_rows` counts all
// rows (decode tables + length row).
struct Df11Lookup {
  uint8_t symbol;
  uint8_t length;
};
DF11_HD Df11Lookup df11_lookup(const uint8_t* luts, int n_rows, uint32_t window) {
  unsigned v = luts[window >> 24];
  if (v >= 240u) {
    v = luts[(256u - v) * 256u + ((window >> 16) & 0xFFu)];
    if (v >= 240u) {
      v = luts[(256u - v) * 256u + ((window >> 8) & 0xFFu)];
      if (v >= 240u) v = luts[(256u - v) * 256u + (window & 0xFFu)];
    }
  }
  return {static_cast<uint8_t>(v), luts[(n_rows - 1) * 256 + v]};
}

// Checks that `luts` can be decoded safely by df11_lookup: a whole number of 256-byte rows,
// 2..18 rows, every pointer that a lookup follows (in rows reached by the first three lookups)
// names an existing decode table, and every symbol reachable has a code length in 1..32. A
// pointer in a fourth-level row is allowed (official files have them where no valid code
// leads); df11_lookup then returns it as a "symbol" of length 0, which decoders must treat as an
// invalid code.
// Throws df11::Error mentioning `context` (file and tensor) otherwise.
void validate_df11_luts(std::span<const uint8_t> luts, std::string_view context);

// The code-length row of a DF11 luts tensor.
[[nodiscard]] CodeLengths df11_length_row(std::span<const uint8_t> luts);

// Flat table of 2^k uint16 entries (symbol | length << 8) for a code whose lengths are all
// <= k <= 16; entries no codeword covers hold 0 (length 0: invalid).
[[nodiscard]] std::vector<uint16_t> build_flat_table(const HuffmanCode& code, int k);

// Resolves the symbol at the top of `window` when only its top `known_bits` bits are known
// (the rest zero): true if those bits determine what df11_lookup returns, whatever the unknown
// bits are. Used to build tables keyed on fewer bits than a full lookup reads.
bool resolve_df11(const uint8_t* luts, int n_rows, uint32_t window, int known_bits, uint8_t& symbol,
                  unsigned& length);

// A flat root table of 2^k uint16 entries (symbol | length << 8) for the codes that k bits
// determine; entry 0 (length 0) means "look further" (a second level: the chained tables, or
// the canonical limits). From DF11 luts (any prefix code, the official kernel's semantics) or
// from a code.
[[nodiscard]] std::vector<uint16_t> flat_root_from_df11_luts(std::span<const uint8_t> luts, int k);
[[nodiscard]] std::vector<uint16_t> flat_root_from_code(const HuffmanCode& code, int k);

// A multi-symbol root of 2^k uint32 entries (k <= 15) built from a flat root of the same k: for
// each k-bit window, the codes that lie whole inside it, as the flat root decodes them one after
// another, at most kMultiMaxCodes of them: symbol i in bits 8i..8i+7, their total length in bits
// 24..27, their count in bits 28..29. Count 0: the window's first code is longer than k bits (or
// the flat entry is 0), so the decoder asks the single-symbol tables. A decoder that takes an
// entry gets exactly the symbols and lengths the flat root would have given it in turn.
inline constexpr unsigned kMultiMaxCodes = 3;
[[nodiscard]] std::vector<uint32_t> multi_root_from_flat(std::span<const uint16_t> flat_root, int k);

// A wide multi-symbol root: 2^k entries of two uint32 words (k <= 15, at most the flat root's
// bits; entry w at words 2w, 2w + 1, one 8-byte load) for the k-bit windows, up to kWideMaxCodes
// codes each, as the flat root (2^kf entries, kf >= k) decodes them one after another: symbols 0..3
// in the first word's bytes, symbol 4 in the second word's low byte, the total length in its bits
// 24..27 and the count in bits 28..31 (count 0: ask the single-symbol tables). On the Nemo layer's
// exponents a 2^11 wide root (16 KB, as the 2^12 multi root) takes 3.76 codes a lookup where the
// multi root takes 2.94.
inline constexpr unsigned kWideMaxCodes = 5;
[[nodiscard]] std::vector<uint32_t> wide_root_from_flat(std::span<const uint16_t> flat_root, int k);

// Validates a canonical layout's luts (a 256-byte code-length row): lengths <= max_code_length,
// Kraft sum <= 1. Returns the canonical code. Throws df11::Error mentioning `context`.
[[nodiscard]] HuffmanCode canonical_code_from_luts(std::span<const uint8_t> luts, int max_code_length,
                                                   std::string_view context);

}  // namespace df11
