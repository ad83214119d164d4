// Size accounting (see stats.hpp).
#include "codec/stats.hpp"

#include <algorithm>

#include "codec/bf16.hpp"
#include "codec/tables.hpp"

namespace df11 {

UnitStats unit_stats(const EncodedUnit& u, const Histogram& hist) {
  UnitStats s;
  s.n_elements = u.n_elements;
  s.exponent_entropy_bits = entropy_bits(hist);
  const CodeLengths lengths = u.layout.tables == TableScheme::df11_chained
                                  ? df11_length_row(u.luts)
                                  : [&] {
                                      CodeLengths l{};
                                      std::copy_n(u.luts.begin(), std::min<std::size_t>(256, u.luts.size()), l.begin());
                                      return l;
                                    }();
  int lo = 0, hi = 0;
  for (int e = 0; e < 256; ++e) {
    if (hist[e] == 0 || lengths[e] == 0) continue;
    lo = lo == 0 ? lengths[e] : std::min<int>(lo, lengths[e]);
    hi = std::max<int>(hi, lengths[e]);
    ++s.n_symbols;
  }
  s.min_code_length = lo;
  s.max_code_length = hi;
  s.luts_bytes = u.luts.size();
  s.exponent_bytes = u.encoded_exponent.size();
  s.sign_mantissa_bytes = u.sign_mantissa.size();
  s.positions_bytes = u.output_positions.size() + u.thread_counts.size();  // count layouts: both say where
  s.gaps_bytes = u.gaps.size();
  s.split_bytes = u.split_positions.size() * sizeof(int64_t);
  s.stored_bytes = u.stored_bytes();
  s.bf16_bytes = u.bf16_bytes();
  if (s.n_elements == 0) return s;
  const double n = static_cast<double>(s.n_elements);
  s.ratio = static_cast<double>(s.stored_bytes) / static_cast<double>(s.bf16_bytes);
  s.bits_per_weight = 8.0 * static_cast<double>(s.stored_bytes) / n;
  s.exponent_bits_per_weight = 8.0 * static_cast<double>(s.exponent_bytes) / n;
  s.gaps_bits_per_weight = 8.0 * static_cast<double>(s.gaps_bytes) / n;
  s.positions_bits_per_weight = 8.0 * static_cast<double>(s.positions_bytes) / n;
  s.tables_bits_per_weight = 8.0 * static_cast<double>(s.luts_bytes) / n;
  const double bound_bytes =
      static_cast<double>(s.stored_bytes - s.exponent_bytes) + s.exponent_entropy_bits * n / 8.0;
  s.bound_ratio = bound_bytes / static_cast<double>(s.bf16_bytes);
  return s;
}

Histogram histogram_of(const uint16_t* words, uint64_t n) {
  Histogram h{};
  for (uint64_t i = 0; i < n; ++i) ++h[exponent_of(words[i])];
  return h;
}

}  // namespace df11
