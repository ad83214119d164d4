// Encoder. Pass 1: per-task exponent histograms (fixed task size, so the split never depends
// on the thread count). The code follows from the sum; each task's bit count from its own
// histogram, so every task knows where its bits start. Pass 2: each task writes its codes
// straight into the stream (only the words it shares with a neighbour are merged afterwards),
// its sign-mantissa bytes, and the gaps and positions of the chunks and blocks whose first
// code it holds.
#include "codec/encoder.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "codec/bf16.hpp"
#include "codec/common.hpp"
#include "codec/tables.hpp"

namespace df11 {
namespace {

constexpr uint64_t kTaskElements = uint64_t{1} << 20;

// The unit's tensors as one concatenated sequence, cut into [begin, end) pieces.
class Segments {
 public:
  explicit Segments(const UnitView& unit) : unit_(unit) {
    uint64_t off = 0;
    for (const auto& t : unit.tensors) {
      starts_.push_back(off);
      off += t.data.size();
    }
    total_ = off;
  }
  [[nodiscard]] uint64_t total() const { return total_; }
  // Calls fn(ptr, count, global_index_of_ptr0) for each tensor piece of [begin, end).
  template <class Fn>
  void for_each(uint64_t begin, uint64_t end, Fn&& fn) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), begin);
    std::size_t k = static_cast<std::size_t>(it - starts_.begin()) - 1;
    while (begin < end && k < starts_.size()) {
      const uint64_t t_end = starts_[k] + unit_.tensors[k].data.size();
      const uint64_t stop = std::min(end, t_end);
      if (stop > begin) fn(unit_.tensors[k].data.data() + (begin - starts_[k]), stop - begin, begin);
      begin = stop;
      ++k;
    }
  }
  // (tensor index, index inside the tensor) of a global element index.
  [[nodiscard]] std::pair<std::size_t, uint64_t> locate(uint64_t i) const {
    auto it = std::upper_bound(starts_.begin(), starts_.end(), i);
    const std::size_t k = static_cast<std::size_t>(it - starts_.begin()) - 1;
    return {k, i - starts_[k]};
  }

 private:
  const UnitView& unit_;
  std::vector<uint64_t> starts_;
  uint64_t total_ = 0;
};

void histogram_piece(const uint16_t* p, uint64_t n, Histogram& h) {
  // Four sub-histograms break the store-to-load dependency on runs of equal exponents.
  uint32_t sub[4][256] = {};
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++sub[0][exponent_of(p[i])];
    ++sub[1][exponent_of(p[i + 1])];
    ++sub[2][exponent_of(p[i + 2])];
    ++sub[3][exponent_of(p[i + 3])];
  }
  for (; i < n; ++i) ++sub[0][exponent_of(p[i])];
  for (int e = 0; e < 256; ++e) h[e] += uint64_t{sub[0][e]} + sub[1][e] + sub[2][e] + sub[3][e];
}

inline void store_be32(uint8_t* p, uint32_t v) {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
}
inline uint32_t load_be32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}

std::string describe_bf16(uint16_t w) {
  const float f = bf16_to_float(w);
  return fmt::format("0x{:04x} ({})", w, f);
}

struct Partial {
  uint64_t word;
  uint32_t bits;
};

void split_sign_mantissa(const uint16_t* __restrict p, uint64_t n, uint8_t* __restrict sm) {
  for (uint64_t i = 0; i < n; ++i) sm[i] = sign_mantissa_of(p[i]);
}

// State of one task's bit writer; the hot loop keeps it in locals (byte stores through
// uint8_t* may alias anything, so state reached through references would be reloaded).
struct WriterState {
  uint64_t bitpos;    // global bit where the next code starts
  uint64_t acc;       // pending bits (low nacc bits valid)
  unsigned nacc;
  uint64_t word_idx;  // next 32-bit word to emit
  int64_t prev_chunk;
  int64_t prev_pos_unit;
};

struct WriterConst {
  const uint64_t* packed;  // code | length << 32 per exponent
  uint8_t* stream;
  uint8_t* chunk_gap;
  uint32_t* positions;
  int chunk_shift;
  uint64_t chunks_per_pos;  // thread chunks a position entry covers: 1, or threads_per_block
  int pos_shift;            // log2 of chunks_per_pos when it is a power of two, else -1
  uint64_t chunk_mask;
  uint64_t shared_word;  // word index that must go to partials (UINT64_MAX: none)
};

// The position entry a chunk's elements count in (its own, or its block's: threads_per_block
// need not be a power of two). kShift: chunks_per_pos is a power of two (every layout the
// variants use), so the hot loop shifts instead of dividing.
template <bool kShift = false>
inline int64_t position_unit(int64_t chunk, const WriterConst& k) {
  if (kShift || k.pos_shift >= 0) return chunk >> k.pos_shift;
  return chunk / static_cast<int64_t>(k.chunks_per_pos);
}

template <bool kShift, class Partials>
void encode_piece(const uint16_t* __restrict p, uint64_t cnt, uint64_t g0, const WriterConst& k, WriterState& st,
                  Partials& partials) {
  uint64_t bitpos = st.bitpos, acc = st.acc, word_idx = st.word_idx;
  unsigned nacc = st.nacc;
  int64_t prev_chunk = st.prev_chunk, prev_pos_unit = st.prev_pos_unit;
  const uint64_t* __restrict packed = k.packed;
  uint8_t* __restrict stream = k.stream;
  for (uint64_t i = 0; i < cnt; ++i) {
    const uint64_t pc = packed[exponent_of(p[i])];
    const int64_t chunk = static_cast<int64_t>(bitpos >> k.chunk_shift);
    if (chunk != prev_chunk) [[unlikely]] {
      k.chunk_gap[chunk] = static_cast<uint8_t>(bitpos & k.chunk_mask);
      prev_chunk = chunk;
      const int64_t unit_idx = position_unit<kShift>(chunk, k);
      for (int64_t u = prev_pos_unit + 1; u <= unit_idx; ++u) k.positions[u] = static_cast<uint32_t>(g0 + i);
      prev_pos_unit = std::max(prev_pos_unit, unit_idx);
    }
    const unsigned len = static_cast<unsigned>(pc >> 32);
    acc = (acc << len) | (pc & 0xFFFFFFFFu);
    nacc += len;
    bitpos += len;
    if (nacc >= 32) {
      nacc -= 32;
      const uint32_t out = static_cast<uint32_t>(acc >> nacc);
      if (word_idx == k.shared_word) [[unlikely]] {
        partials.push_back({word_idx, out});
      } else {
        store_be32(stream + 4 * word_idx, out);
      }
      ++word_idx;
    }
  }
  st = {bitpos, acc, nacc, word_idx, prev_chunk, prev_pos_unit};
}

}  // namespace

Histogram exponent_histogram(const UnitView& unit, int n_threads) {
  const Segments seg(unit);
  const uint64_t n_tasks = (seg.total() + kTaskElements - 1) / kTaskElements;
  std::vector<Histogram> hists(n_tasks, Histogram{});
  parallel_for(n_tasks, n_threads, [&](std::size_t t) {
    seg.for_each(t * kTaskElements, std::min(seg.total(), (t + 1) * kTaskElements),
                 [&](const uint16_t* p, uint64_t n, uint64_t) { histogram_piece(p, n, hists[t]); });
  });
  Histogram h{};
  for (const auto& th : hists)
    for (int e = 0; e < 256; ++e) h[e] += th[e];
  return h;
}

EncodedUnit encode(const UnitView& unit, const Layout& layout, int n_threads) {
  layout.validate();
  const Segments seg(unit);
  const uint64_t n = seg.total();
  if (n > 0xFFFFFFFFull) {
    throw Error(fmt::format("unit {}: {} elements; positions are 32-bit, so a unit holds at most 2^32-1",
                            unit.name, n));
  }
  // The official kernel takes n_elements and n_bytes as int: a DF11-layout unit past 2^31-1
  // elements would be written but not decoded by it (one Llama-3.1-405B layer has ~3.2e9 weights).
  if (layout.is_df11() && n > 0x7FFFFFFFull) {
    throw Error(fmt::format("unit {}: {} elements; the official DF11 kernel counts them in an int, so a DF11 "
                            "unit holds at most 2^31-1 (a pattern_dict with smaller units splits it)",
                            unit.name, n));
  }
  for (const auto& t : unit.tensors) {
    if (element_count(t.shape) != t.data.size()) {
      throw Error(fmt::format("unit {}: tensor {}: shape holds {} elements but {} were given", unit.name, t.name,
                              element_count(t.shape), t.data.size()));
    }
  }

  // Pass 1: histograms per task.
  const uint64_t n_tasks = (n + kTaskElements - 1) / kTaskElements;
  std::vector<Histogram> task_hist(n_tasks, Histogram{});
  parallel_for(n_tasks, n_threads, [&](std::size_t t) {
    seg.for_each(t * kTaskElements, std::min(n, (t + 1) * kTaskElements),
                 [&](const uint16_t* p, uint64_t cnt, uint64_t) { histogram_piece(p, cnt, task_hist[t]); });
  });
  Histogram hist{};
  for (const auto& th : task_hist)
    for (int e = 0; e < 256; ++e) hist[e] += th[e];

  if (!layout.all_exponents()) {
    uint64_t bad = 0;
    for (int e = kDf11PointerBase; e < 256; ++e) bad += hist[e];
    if (bad > 0) {
      // Rare error path: find the first offending element serially to name it.
      uint64_t first = n;
      uint16_t word = 0;
      seg.for_each(0, n, [&](const uint16_t* p, uint64_t cnt, uint64_t g) {
        for (uint64_t i = 0; i < cnt && first == n; ++i) {
          if (exponent_of(p[i]) >= kDf11PointerBase) {
            first = g + i;
            word = p[i];
          }
        }
      });
      const auto [k, idx] = seg.locate(first);
      throw Error(fmt::format(
          "unit {}: tensor {}: element {} is {} with exponent {}; the DF11 layout cannot hold exponents >= 240 "
          "(Inf, NaN, |x| >= 2^113); {} such elements in the unit. Use a canonical layout for such tensors.",
          unit.name, unit.tensors[k].name, idx, describe_bf16(word), exponent_of(word), bad));
    }
  }

  HuffmanCode code = build_code(hist, layout.max_code_length);
  // DF11's tables hold 16 sub-tables, one per distinct leading byte (per level) of the codes longer
  // than 8 bits: the optimal code of a unit with a long, flat tail of rare exponents may need
  // more. Then the code is rebuilt under a shorter length limit, down to 8 bits (the root table
  // alone, always enough for the < 240 symbols DF11 can hold): the cheapest limit that fits, not
  // a refusal. Units of trained weights need a few sub-tables and keep their optimal code.
  if (layout.tables == TableScheme::df11_chained) {
    for (int limit = std::min(layout.max_code_length, 32) - 1; limit >= 8 && df11_subtables(code) > kDf11MaxRows - 2;
         --limit) {
      code = build_code(hist, limit);
    }
  }

  EncodedUnit enc;
  enc.name = unit.name;
  enc.layout = layout;
  enc.n_elements = n;
  for (const auto& t : unit.tensors) {
    enc.tensor_names.push_back(t.name);
    enc.tensor_shapes.push_back(t.shape);
  }
  {
    int64_t cum = 0;
    for (std::size_t k = 0; k + 1 < unit.tensors.size(); ++k) {
      cum += static_cast<int64_t>(unit.tensors[k].data.size());
      enc.split_positions.push_back(cum);
    }
  }
  if (layout.tables == TableScheme::df11_chained) {
    try {
      enc.luts = build_df11_luts(code);
    } catch (const Error& e) {
      throw Error(fmt::format("unit {}: {}", unit.name, e.what()));
    }
  } else {
    enc.luts.assign(code.length.begin(), code.length.end());
  }

  // Bit offsets of the tasks.
  std::vector<uint64_t> task_start_bit(n_tasks + 1, 0);
  for (uint64_t t = 0; t < n_tasks; ++t) {
    task_start_bit[t + 1] = task_start_bit[t] + code.total_bits(task_hist[t]);
  }
  const uint64_t total_bits = task_start_bit[n_tasks];
  const uint64_t n_bytes = (total_bits + 7) / 8;
  if (layout.is_df11() && n_bytes > 0x7FFFFFFFull) {
    throw Error(fmt::format("unit {}: {} bytes of encoded exponents; the official DF11 kernel counts them in an int "
                            "(at most 2^31-1)",
                            unit.name, n_bytes));
  }
  const uint64_t chunk_bits = static_cast<uint64_t>(layout.chunk_bits());
  const int chunk_shift = std::countr_zero(chunk_bits);
  const uint64_t n_chunks = (n_bytes * 8 + chunk_bits - 1) / chunk_bits;
  const uint64_t tpb = static_cast<uint64_t>(layout.threads_per_block);
  const uint64_t n_blocks = (n_chunks + tpb - 1) / tpb;
  // Count layouts are encoded with per-thread positions, turned into block positions and
  // per-chunk counts at the end.
  const bool counts = layout.positions == PositionScheme::count;
  const bool per_thread = layout.positions == PositionScheme::thread || counts;
  uint64_t n_pos = per_thread ? n_chunks : n_blocks;  // position entries before the final one

  // Word buffer: whole 32-bit words, trimmed to n_bytes at the end.
  const uint64_t n_words = (total_bits + 31) / 32;
  reserve_prefaulted(enc.encoded_exponent, n_words * 4, n_threads);
  enc.encoded_exponent.assign(n_words * 4, 0);
  reserve_prefaulted(enc.sign_mantissa, n, n_threads);
  enc.sign_mantissa.resize(n);
  std::vector<uint8_t> chunk_gap(n_chunks, 0);
  std::vector<uint32_t> positions(n_pos + 1, static_cast<uint32_t>(n));

  // Packed code table: code in the low 32 bits, length above.
  uint64_t packed[256];
  for (int e = 0; e < 256; ++e) packed[e] = uint64_t{code.code[e]} | (uint64_t{code.length[e]} << 32);

  std::vector<std::vector<Partial>> partials(n_tasks);
  uint8_t* const stream = enc.encoded_exponent.data();
  uint8_t* const sm_out = enc.sign_mantissa.data();
  const uint64_t chunks_per_pos = per_thread ? 1 : tpb;
  const int pos_shift = std::has_single_bit(chunks_per_pos) ? std::countr_zero(chunks_per_pos) : -1;

  const WriterConst wk_base{packed, stream, chunk_gap.data(), positions.data(), chunk_shift, chunks_per_pos, pos_shift,
                            chunk_bits - 1, UINT64_MAX};
  parallel_for(n_tasks, n_threads, [&](std::size_t t) {
    const uint64_t begin = t * kTaskElements;
    const uint64_t end = std::min(n, begin + kTaskElements);
    WriterState st{task_start_bit[t], 0, static_cast<unsigned>(task_start_bit[t] % 32), task_start_bit[t] / 32, -1, -1};
    WriterConst wk = wk_base;
    // A task starting inside a word shares that word with the previous task.
    if (task_start_bit[t] % 32 != 0) wk.shared_word = task_start_bit[t] / 32;
    if (begin > 0) {
      // The previous element is the last of the previous task; its code starts where ours
      // starts minus its length.
      uint16_t prev_word = 0;
      seg.for_each(begin - 1, begin, [&](const uint16_t* p, uint64_t, uint64_t) { prev_word = *p; });
      const uint64_t prev_start = st.bitpos - code.length[exponent_of(prev_word)];
      st.prev_chunk = static_cast<int64_t>(prev_start >> chunk_shift);
      st.prev_pos_unit = position_unit(st.prev_chunk, wk);
    }
    auto& my_partials = partials[t];
    seg.for_each(begin, end, [&](const uint16_t* p, uint64_t cnt, uint64_t g0) {
      split_sign_mantissa(p, cnt, sm_out + g0);
      if (wk.pos_shift >= 0) {
        encode_piece<true>(p, cnt, g0, wk, st, my_partials);
      } else {
        encode_piece<false>(p, cnt, g0, wk, st, my_partials);
      }
    });
    if (st.nacc > 0) my_partials.push_back({st.word_idx, static_cast<uint32_t>(st.acc << (32 - st.nacc))});
  });
  for (const auto& list : partials) {
    for (const Partial& pa : list) store_be32(stream + 4 * pa.word, load_be32(stream + 4 * pa.word) | pa.bits);
  }
  enc.encoded_exponent.resize(n_bytes);

  // A final chunk in which no code starts (the last code spills into it) gets the offset where
  // the codes end when that is inside the last byte, as the official encoder does (its EOF code
  // starts there), and 0 when the codes end on a byte boundary (no code starts at all). Either
  // way a thread decoding from it only decodes padding past n_elements.
  if (n_chunks > 0) {
    const uint64_t last = n_chunks - 1;
    const uint64_t last_start_bit = last * chunk_bits;
    // Does any code start in the last chunk? The last code starts at total_bits - its length.
    uint16_t last_word = 0;
    seg.for_each(n - 1, n, [&](const uint16_t* p, uint64_t, uint64_t) { last_word = *p; });
    const uint64_t last_code_start = total_bits - code.length[exponent_of(last_word)];
    if (last_code_start < last_start_bit) {
      chunk_gap[last] = total_bits % 8 == 0 ? 0 : static_cast<uint8_t>(total_bits - last_start_bit);
    }
  }

  // Pack gaps: gap_bits per chunk, MSB-first, tpb entries per block (padding entries are 0).
  const uint64_t gap_bytes_per_block = tpb * static_cast<uint64_t>(layout.gap_bits) / 8;
  enc.gaps.assign(n_blocks * gap_bytes_per_block, 0);
  const int gb = layout.gap_bits;
  parallel_for(n_blocks, n_threads, [&](std::size_t b) {
    uint8_t* out = enc.gaps.data() + b * gap_bytes_per_block;
    const uint64_t c0 = b * tpb;
    const uint64_t c1 = std::min(n_chunks, c0 + tpb);
    uint64_t acc = 0;
    int nbits = 0;
    std::size_t o = 0;
    for (uint64_t c = c0; c < c1; ++c) {
      acc = (acc << gb) | chunk_gap[c];
      nbits += gb;
      while (nbits >= 8) {
        nbits -= 8;
        out[o++] = static_cast<uint8_t>(acc >> nbits);
      }
    }
    if (nbits > 0) out[o] = static_cast<uint8_t>(acc << (8 - nbits));
  });

  if (counts) {
    // Chunk c's count: the elements whose codes start in it (at most chunk_bits <= 128, by
    // Layout::validate); chunks past the stream, padding of the last block, count 0.
    enc.thread_counts.assign(n_blocks * tpb, 0);
    for (uint64_t c = 0; c < n_chunks; ++c) {
      enc.thread_counts[c] = static_cast<uint8_t>(positions[c + 1] - positions[c]);
    }
    std::vector<uint32_t> block_positions(n_blocks + 1, static_cast<uint32_t>(n));
    for (uint64_t b = 0; b < n_blocks; ++b) block_positions[b] = positions[b * tpb];
    positions = std::move(block_positions);
    n_pos = n_blocks;
  }
  enc.output_positions.resize(4 * (n_pos + 1));
  for (uint64_t i = 0; i <= n_pos; ++i) {
    const uint32_t v = positions[i];
    enc.output_positions[4 * i + 0] = static_cast<uint8_t>(v);
    enc.output_positions[4 * i + 1] = static_cast<uint8_t>(v >> 8);
    enc.output_positions[4 * i + 2] = static_cast<uint8_t>(v >> 16);
    enc.output_positions[4 * i + 3] = static_cast<uint8_t>(v >> 24);
  }
  return enc;
}

}  // namespace df11
