// Layout parameters, naming and validation; EncodedUnit accessors.
#include "codec/layout.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "codec/common.hpp"

namespace df11 {

Layout Layout::df11() { return Layout{}; }

Layout Layout::canonical(int max_code_length, int threads_per_block, int bytes_per_thread,
                         PositionScheme positions) {
  Layout l;
  l.max_code_length = max_code_length;
  l.tables = TableScheme::canonical;
  l.threads_per_block = threads_per_block;
  l.bytes_per_thread = bytes_per_thread;
  // A gap is the offset of the first code boundary in a chunk, < max_code_length.
  l.gap_bits = std::max(1, static_cast<int>(std::bit_width(static_cast<unsigned>(max_code_length - 1))));
  l.positions = positions;
  return l;
}

bool Layout::is_df11() const { return *this == Layout::df11(); }

std::string to_string(TableScheme s) {
  switch (s) {
    case TableScheme::df11_chained: return "df11-chained";
    case TableScheme::canonical: return "canonical";
  }
  return "?";
}

std::string to_string(PositionScheme s) {
  switch (s) {
    case PositionScheme::block: return "block";
    case PositionScheme::thread: return "thread";
    case PositionScheme::count: return "count";
  }
  return "?";
}

std::string Layout::name() const {
  if (is_df11()) return "df11";
  return fmt::format("{}{}.t{}.b{}.g{}.p{}", tables == TableScheme::df11_chained ? "chain" : "canon",
                     max_code_length, threads_per_block, bytes_per_thread, gap_bits,
                     to_string(positions));
}

void Layout::validate() const {
  auto bad = [&](const std::string& what) { throw Error(fmt::format("layout {}: {}", name(), what)); };
  if (max_code_length < 1 || max_code_length > 32) bad("max_code_length must be in 1..32");
  if (tables == TableScheme::canonical && max_code_length < 8) {
    bad("a canonical layout must represent all 256 exponents, which needs max_code_length >= 8");
  }
  if (!std::has_single_bit(static_cast<unsigned>(bytes_per_thread)) || bytes_per_thread < 4 ||
      bytes_per_thread > 64) {
    bad("bytes_per_thread must be a power of two in 4..64");
  }
  if (chunk_bits() < max_code_length) bad("a thread chunk must be at least one maximal code long");
  if (threads_per_block < 1 || threads_per_block > 1024) bad("threads_per_block must be in 1..1024");
  if (gap_bits < 1 || gap_bits > 8) bad("gap_bits must be in 1..8");
  if ((uint64_t{1} << gap_bits) < static_cast<uint64_t>(max_code_length)) {
    bad("gap_bits too small to hold offsets below max_code_length");
  }
  if ((threads_per_block * gap_bits) % 8 != 0) bad("a block's gaps must fill whole bytes");
  // A count byte holds up to 255 codes: chunks of up to 128 bits hold at most 128 (1-bit codes).
  if (positions == PositionScheme::count && bytes_per_thread > 16) bad("count positions need bytes_per_thread <= 16");
}

uint64_t EncodedUnit::n_chunks() const {
  const uint64_t b = static_cast<uint64_t>(layout.bytes_per_thread);
  return (encoded_exponent.size() + b - 1) / b;
}

uint64_t EncodedUnit::n_blocks() const {
  const uint64_t b = layout.block_bytes();
  return (encoded_exponent.size() + b - 1) / b;
}

uint64_t EncodedUnit::stored_bytes() const {
  return luts.size() + encoded_exponent.size() + sign_mantissa.size() + output_positions.size() +
         gaps.size() + thread_counts.size() + split_positions.size() * sizeof(int64_t);
}

uint32_t EncodedUnit::position(uint64_t i) const {
  const uint8_t* p = output_positions.data() + 4 * i;
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace df11
