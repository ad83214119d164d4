// Builder of the per-length-limit table of a canonical code (see canonical.hpp).
#include "codec/canonical.hpp"

#include <algorithm>
#include <cstring>

namespace df11 {

CanonicalTable make_canonical_table(const CodeLengths& lengths) {
  const HuffmanCode code = canonical_code(lengths);  // validates Kraft and the 32-bit limit
  CanonicalTable t;
  std::memset(&t, 0, sizeof t);
  int count[33] = {};
  for (int s = 0; s < 256; ++s) ++count[lengths[s]];
  count[0] = 0;
  int idx = 0;
  t.min_len = 0;
  t.max_len = 0;
  for (int l = 1; l <= 32; ++l) {
    t.offset[l] = static_cast<uint16_t>(idx);
    for (int s = 0; s < 256; ++s) {
      if (lengths[s] != l) continue;
      if (idx == t.offset[l]) t.first[l] = code.code[s];
      t.sorted[idx++] = static_cast<uint8_t>(s);
    }
    if (count[l] > 0) {
      if (t.min_len == 0) t.min_len = static_cast<uint8_t>(l);
      t.max_len = static_cast<uint8_t>(l);
    }
  }
  t.n_symbols = static_cast<uint16_t>(idx);
  // Left-aligned limits; lengths without codes inherit the previous limit so the scan skips them.
  uint64_t prev = 0;
  for (int l = 1; l <= 32; ++l) {
    if (count[l] > 0) prev = (uint64_t{t.first[l]} + static_cast<uint64_t>(count[l])) << (32 - l);
    t.limit[l] = prev;
  }
  return t;
}

}  // namespace df11
