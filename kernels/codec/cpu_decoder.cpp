// CPU decoder. The hot loop reads a 64-bit big-endian window and looks its top K bits up in a
// table built for the CPU (not the GPU's): each entry holds up to four whole symbols that the K
// bits determine, so one lookup usually yields several exponents. Entries that the K bits do
// not determine (long codes) fall back to the layout's full lookup. Exponents go to a per-block
// byte buffer and are merged with the sign-mantissa bytes in a vectorizable second loop.
#include "codec/cpu_decoder.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "codec/bf16.hpp"
#include "codec/canonical.hpp"
#include "codec/common.hpp"
#include "codec/huffman.hpp"
#include "codec/tables.hpp"

namespace df11 {
namespace {

constexpr int kMultiBits = 12;  // K: 4096 entries x 8 bytes = 32 KiB, the size of L1d
constexpr int kMaxPerEntry = 4;

inline uint64_t load_be64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}

// The layout's complete lookup of one symbol from the next 32 bits: DF11's chained tables or
// a canonical code's per-length limits.
class SymbolLookup {
 public:
  SymbolLookup(const EncodedUnit& u, const std::string& ctx) {
    if (u.layout.tables == TableScheme::df11_chained) {
      luts_ = u.luts.data();
      n_rows_ = static_cast<int>(u.luts.size() / 256);
      lengths_ = df11_length_row(u.luts);
    } else {
      lengths_ = canonical_code_from_luts(u.luts, u.layout.max_code_length, ctx).length;
      canon_ = make_canonical_table(lengths_);
    }
  }
  // Returns false when no codeword matches (possible only for incomplete canonical codes).
  bool lookup(uint32_t window, uint8_t& sym, unsigned& len) const {
    if (luts_) {
      const Df11Lookup r = df11_lookup(luts_, n_rows_, window);
      sym = r.symbol;
      len = r.length;
      return len != 0;  // 0: the walk ended on a pointer (no valid code)
    }
    canon_.lookup(window, sym, len);
    return len != 0;
  }
  // The symbol at the start of `kb` known bits (MSB-aligned in `window`, the rest zero) if
  // those bits alone determine it, whatever the unknown bits are.
  bool resolve(uint32_t window, int kb, uint8_t& sym, unsigned& len) const {
    if (kb <= 0) return false;
    if (luts_) return resolve_df11(luts_, n_rows_, window, kb, sym, len);
    if (!lookup(window, sym, len)) return false;
    return static_cast<int>(len) <= kb;
  }

 private:
  const uint8_t* luts_ = nullptr;
  int n_rows_ = 0;
  CodeLengths lengths_{};
  CanonicalTable canon_{};
};

struct alignas(8) MultiEntry {
  uint8_t sym[kMaxPerEntry];
  uint8_t n;        // 0: not determined by K bits, use the full lookup
  uint8_t bits;     // bits consumed by the n symbols (may exceed K for the last one)
  uint16_t starts;  // start bit of symbols 1..3 in 4-bit fields (15: no such symbol)
};
static_assert(kMultiBits < 15, "start offsets must fit 4 bits and stay below the 'none' value");

// Start bit of symbol k (1..3) of an entry; 15 when the entry has fewer symbols.
inline unsigned entry_start(const MultiEntry& e, unsigned k) { return (e.starts >> (4 * (k - 1))) & 0xFu; }

// The symbols of an entry (n > 0) that start within `limit` bits of its start (at least the
// first), and the bits from its start to the first one that does not (all of its bits when every
// symbol does): what a decode that stops at a chunk's end takes of it.
struct EntryPart {
  unsigned symbols;
  unsigned bits;
};
inline EntryPart entry_part(const MultiEntry& e, uint64_t limit) {
  const uint64_t l = std::min<uint64_t>(limit, 15);  // 15: the start of a symbol the entry lacks
  const unsigned k = 1u + (entry_start(e, 1) < l) + (entry_start(e, 2) < l) + (entry_start(e, 3) < l);
  return {k, k == e.n ? e.bits : entry_start(e, k)};
}

std::vector<MultiEntry> build_multi_table(const SymbolLookup& lk) {
  std::vector<MultiEntry> table(std::size_t{1} << kMultiBits);
  for (uint32_t i = 0; i < table.size(); ++i) {
    MultiEntry e{};
    e.starts = 0xFFF;
    int pos = 0;
    while (e.n < kMaxPerEntry && pos < kMultiBits) {
      const int kb = kMultiBits - pos;
      const uint32_t window = (i << (32 - kMultiBits)) << pos;
      uint8_t sym;
      unsigned len;
      if (!lk.resolve(window, kb, sym, len)) break;
      if (e.n > 0) {
        const unsigned shift = 4 * (e.n - 1u);
        e.starts = static_cast<uint16_t>((e.starts & ~(0xFu << shift)) | (static_cast<unsigned>(pos) << shift));
      }
      e.sym[e.n++] = sym;
      pos += static_cast<int>(len);
    }
    e.bits = static_cast<uint8_t>(pos);
    table[i] = e;
  }
  return table;
}

struct DecodeContext {
  const EncodedUnit& u;
  const SymbolLookup& lk;
  const std::vector<MultiEntry>& multi;
  std::string ctx;
};

// Decodes the codes that start in [start_bit, end_bit) of a chunk whose bytes begin at `p`
// (with at least end_bit/8 + 8 readable bytes). Returns the number of exponents written to
// `out` (which has room for end_bit + kMaxPerEntry); `*end_pos` gets the bit after the last code.
uint64_t decode_chunk(const DecodeContext& dc, const uint8_t* p, unsigned start_bit, unsigned end_bit, uint8_t* out,
                      uint64_t* end_pos, uint64_t chunk_index) {
  uint64_t pos = start_bit;
  uint8_t* o = out;
  const MultiEntry* multi = dc.multi.data();
  auto full = [&](uint64_t window64) {
    uint8_t sym;
    unsigned len;
    if (!dc.lk.lookup(static_cast<uint32_t>(window64 >> 32), sym, len) || len == 0) {
      throw Error(fmt::format("{}: invalid code at bit {} of chunk {}", dc.ctx, pos, chunk_index));
    }
    *o++ = sym;
    pos += len;
  };
  while (pos + kMultiBits <= end_bit) {
    const uint64_t window = load_be64(p + (pos >> 3)) << (pos & 7);
    const MultiEntry& e = multi[window >> (64 - kMultiBits)];
    if (e.n == 0) {
      full(window);
      continue;
    }
    std::memcpy(o, e.sym, kMaxPerEntry);
    o += e.n;
    pos += e.bits;
  }
  // Fewer than K bits left: take only the entry's symbols that start before end_bit.
  while (pos < end_bit) {
    const uint64_t window = load_be64(p + (pos >> 3)) << (pos & 7);
    const MultiEntry& e = multi[window >> (64 - kMultiBits)];
    if (e.n == 0) {
      full(window);
      continue;
    }
    const EntryPart part = entry_part(e, end_bit - pos);
    std::memcpy(o, e.sym, kMaxPerEntry);
    o += part.symbols;
    pos += part.bits;
  }
  *end_pos = pos;
  return static_cast<uint64_t>(o - out);
}

// The chunk holding the unit's last code: the code must end inside the stream, in its last
// byte, and a final chunk in which no code starts must have that end as its gap. Catches a
// truncated stream whose missing bits the zero padding would otherwise decode.
void check_stream_end(const DecodeContext& dc, const uint8_t* p, unsigned gap, uint64_t remaining,
                      uint64_t chunk) {
  const EncodedUnit& u = dc.u;
  uint64_t pos = gap;
  for (uint64_t k = 0; k < remaining; ++k) {
    const uint64_t window = load_be64(p + (pos >> 3)) << (pos & 7);
    uint8_t sym;
    unsigned len;
    if (!dc.lk.lookup(static_cast<uint32_t>(window >> 32), sym, len) || len == 0) {
      throw Error(fmt::format("{}: invalid code at bit {} of chunk {}", dc.ctx, pos, chunk));
    }
    pos += len;
  }
  const uint64_t chunk_bits = static_cast<uint64_t>(u.layout.chunk_bits());
  const uint64_t end = chunk * chunk_bits + pos;
  const uint64_t n_bytes = u.encoded_exponent.size();
  if (end > n_bytes * 8) {
    throw Error(fmt::format("{}: encoded_exponent is truncated: the last code ends at bit {}, the stream has {} bits",
                            dc.ctx, end, n_bytes * 8));
  }
  if ((end + 7) / 8 != n_bytes) {
    throw Error(fmt::format("{}: encoded_exponent has {} bytes but its codes end in byte {}", dc.ctx, n_bytes,
                            (end + 7) / 8));
  }
  // A final chunk where no element's code starts holds the offset where the codes end (the
  // official EOF code starts there) or 0 (codes end on a byte boundary, nothing starts).
  const uint64_t last = u.n_chunks() - 1;
  if (last != chunk && end > last * chunk_bits) {
    const uint64_t off = end - last * chunk_bits;
    if (u.gap(last) != off && !(u.gap(last) == 0 && end % 8 == 0)) {
      throw Error(fmt::format("{}: gaps: the final chunk {} has gap {}, but the codes end at its bit {}", dc.ctx, last,
                              u.gap(last), off));
    }
  }
}


// Several stretches of a block decoded at once. A chunk's decode is a chain of dependent loads
// (window, entry, next position): ~13 cycles a lookup on this machine's cores, most of it waiting.
// Interleaving kLanes independent chains fills those cycles. A lane decodes a run of whole chunks
// straight through their boundaries (the codes of a valid stream continue into the next chunk
// exactly where its gap says), taking whole multi-symbol entries without looking at the
// boundaries; it only notes, without a branch, the lookup that crosses each one. A second pass
// over those notes then does what the one-chunk-at-a-time path does at every boundary: the chain
// check against the next chunk's gap and the chunk's count where the layout stores one. The
// lane's last chunk ends through decode_chunk, whose tail stops at the lane's end exactly.
// Used for blocks that are not the unit's last and whose chunks all lie before the stream's last
// 8 bytes, in layouts of chunks of 64 bits or more (a lookup consumes at most K + 32 = 44 bits,
// so it crosses at most one boundary); any failed check sends the block back to the serial path,
// which names the error.
constexpr int kLanes = 4;
constexpr uint64_t kMaxLookupBits = kMultiBits + 32;

struct Crossing {
  uint32_t pos;  // where the lookup that crossed a boundary started (bits from the block's start)
  uint32_t out;  // the low 32 bits of the lane's output pointer before it (differences are exact)
};

struct Lane {
  uint64_t pos = 0;           // bit of the next code, from the block's first chunk
  uint8_t* o = nullptr;       // next exponent
  Crossing* log = nullptr;    // the next crossing's entry: one per boundary crossed
  bool bad = false;
};

inline uint32_t low32(const uint8_t* q) { return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(q)); }

template <PositionScheme kPositions>
struct LaneDecoder {
  const DecodeContext& dc;
  const uint8_t* p;  // the block's first chunk
  uint64_t chunk_bits;

  // One lookup, whole entry, no boundary test (the caller keeps the lane short of its last
  // chunk). Static, with the stream, the table and the chunk size as arguments: copies in the
  // caller's registers, which the exponent stores (through uint8_t*, which may alias anything)
  // cannot force the compiler to load again. Chunks are powers of two and a lookup crosses at most
  // one boundary, so it crossed one when its start and end differ in a bit at or above the chunk
  // size's.
  static inline void step(Lane& l, const uint8_t* src, const MultiEntry* multi, uint64_t cbits,
                          const SymbolLookup& lk) {
    const uint64_t pos = l.pos;
    const uint64_t window = load_be64(src + (pos >> 3)) << (pos & 7);
    const MultiEntry& e = multi[window >> (64 - kMultiBits)];
    unsigned n = e.n;
    unsigned bits = e.bits;
    if (n == 0) [[unlikely]] {
      uint8_t sym = 0;
      if (!lk.lookup(static_cast<uint32_t>(window >> 32), sym, bits) || bits == 0) {
        l.bad = true;
        bits = kMaxLookupBits;  // moves the lane to its end; its result is discarded
      }
      *l.o = sym;
      n = 1;
    } else {
      std::memcpy(l.o, e.sym, kMaxPerEntry);
    }
    const uint64_t next = pos + bits;
    *l.log = Crossing{static_cast<uint32_t>(pos), low32(l.o)};
    l.log += (pos ^ next) >= cbits;
    l.o += n;
    l.pos = next;
  }

  // Where the first code at or after boundary `at` starts, and how many exponents start before
  // it in the lane (whose output starts at o0), given the lookup that crossed it.
  bool resolve_crossing(const Crossing& c, const uint8_t* o0, uint64_t at, uint64_t& next_code,
                        uint64_t& before) const {
    const uint64_t out = static_cast<uint32_t>(c.out - low32(o0));
    const uint64_t window = load_be64(p + (c.pos >> 3)) << (c.pos & 7);
    const MultiEntry& e = dc.multi[window >> (64 - kMultiBits)];
    if (e.n == 0) {
      uint8_t sym;
      unsigned len;
      if (!dc.lk.lookup(static_cast<uint32_t>(window >> 32), sym, len) || len == 0) return false;
      next_code = c.pos + len;
      before = out + 1;
      return true;
    }
    const EntryPart part = entry_part(e, at - c.pos);
    next_code = c.pos + part.bits;
    before = out + part.symbols;
    return true;
  }

  // The count the layout stores for chunk c, if any.
  [[nodiscard]] bool count_ok(uint64_t c, uint64_t got) const {
    if constexpr (kPositions == PositionScheme::thread) return got == dc.u.position(c + 1) - dc.u.position(c);
    if constexpr (kPositions == PositionScheme::count) return got == dc.u.thread_counts[c];
    return true;
  }

  // Decodes the block starting at chunk `first` (tpb chunks) as kLanes runs of chunks into lane
  // buffers of `cap` bytes each at `exps`, with `log` holding ceil(tpb / kLanes) crossings a lane
  // (a lane of m chunks crosses m - 1 boundaries, and writes one entry past the last).
  // counts[j] gets lane j's exponents. False when a check failed.
  bool run(uint64_t first, uint64_t tpb, uint8_t* exps, uint64_t cap, Crossing* log, uint64_t counts[kLanes]) const {
    const uint64_t per = (tpb + kLanes - 1) / kLanes;
    const uint8_t* const stream = p;
    const MultiEntry* const multi = dc.multi.data();
    const uint64_t cb = chunk_bits;
    const SymbolLookup& lk = dc.lk;
    Lane lanes[kLanes];
    uint64_t a[kLanes];
    uint64_t b[kLanes];
    // No range check of the gaps (the serial path's "gap >= max code length"): the first code
    // at or after a boundary starts less than a maximal code past it, so an out-of-range gap fails
    // the chain check of the chunk before it, here or in the block before.
    for (int j = 0; j < kLanes; ++j) {
      a[j] = std::min(tpb, j * per);
      b[j] = std::min(tpb, a[j] + per);
      Lane& l = lanes[j];
      l.pos = a[j] * chunk_bits + (a[j] < b[j] ? dc.u.gap(first + a[j]) : 0);
      l.o = exps + j * cap;
      l.log = log + j * per;
    }
    // A lookup that starts before the lane's last chunk ends inside it (it consumes at most
    // kMaxLookupBits < chunk_bits), so every boundary but the lane's end is crossed by such
    // lookups, each noted. Rounds of lookups that every lane can take, all lanes interleaved:
    auto stop_of = [&](int j) { return (b[j] - 1) * chunk_bits; };  // the lane's last chunk
    auto headroom = [&](int j) -> uint64_t {
      if (a[j] == b[j] || lanes[j].pos >= stop_of(j)) return 0;
      return (stop_of(j) - lanes[j].pos + kMaxLookupBits - 1) / kMaxLookupBits;
    };
    for (;;) {
      uint64_t rounds = headroom(0);
      for (int j = 1; j < kLanes; ++j) rounds = std::min(rounds, headroom(j));
      if (rounds == 0) break;
      // Copies the compiler can keep in registers (the array is indexed by variables below).
      Lane l0 = lanes[0];
      Lane l1 = lanes[1];
      Lane l2 = lanes[2];
      Lane l3 = lanes[3];
      for (uint64_t r = 0; r < rounds; ++r) {
        step(l0, stream, multi, cb, lk);
        step(l1, stream, multi, cb, lk);
        step(l2, stream, multi, cb, lk);
        step(l3, stream, multi, cb, lk);
      }
      lanes[0] = l0;
      lanes[1] = l1;
      lanes[2] = l2;
      lanes[3] = l3;
    }
    for (int j = 0; j < kLanes; ++j) {
      counts[j] = 0;
      if (a[j] == b[j]) continue;
      Lane& l = lanes[j];
      uint8_t* const o0 = exps + j * cap;
      while (l.pos < stop_of(j)) step(l, stream, multi, cb, lk);
      const Crossing* const crossings = log + j * per;
      const auto n_crossed = static_cast<uint64_t>(l.log - crossings);
      // (Each lookup before the last chunk crosses at most one boundary and the loop ran until
      // the last one was crossed, so the count holds by construction; checked as the log's bound.)
      if (l.bad || n_crossed != b[j] - a[j] - 1) return false;
      // The boundaries: the serial path's chain check and count at each.
      uint64_t before_prev = 0;  // exponents of the lane before the current chunk
      uint64_t c = first + a[j];
      for (uint64_t i = 0; i < n_crossed; ++i, ++c) {
        const uint64_t at = (a[j] + i + 1) * chunk_bits;
        uint64_t next_code = 0;
        uint64_t before = 0;
        if (!resolve_crossing(crossings[i], o0, at, next_code, before)) return false;
        if (next_code != at + dc.u.gap(c + 1) || !count_ok(c, before - before_prev)) return false;
        before_prev = before;
      }
      // The last chunk's codes, one entry at a time to its end: the lookup that crossed into it
      // may have taken some already (l.o is past them).
      uint64_t end_pos = 0;
      uint64_t got = 0;
      try {
        got = decode_chunk(dc, p, static_cast<unsigned>(l.pos), static_cast<unsigned>(b[j] * chunk_bits), l.o,
                           &end_pos, c);
      } catch (const Error&) {
        return false;
      }
      const uint64_t total = static_cast<uint64_t>(l.o - o0) + got;
      if (end_pos != b[j] * chunk_bits + dc.u.gap(first + b[j]) || !count_ok(c, total - before_prev)) return false;
      counts[j] = total;
    }
    return true;
  }
};
static_assert(kLanes == 4, "the interleaved loop above steps four lanes");

}  // namespace

void validate_encoded(const EncodedUnit& u) {
  const std::string ctx = fmt::format("unit {}", u.name);
  auto bad = [&](const std::string& what) { throw Error(fmt::format("{}: {}", ctx, what)); };
  try {
    u.layout.validate();
  } catch (const Error& e) {
    bad(e.what());
  }
  const uint64_t n = u.n_elements;
  if (n > 0xFFFFFFFFull) bad(fmt::format("{} elements exceed the 32-bit positions", n));
  if (u.sign_mantissa.size() != n) {
    bad(fmt::format("sign_mantissa has {} bytes, expected one per element ({})", u.sign_mantissa.size(), n));
  }
  // Shapes and split positions.
  if (u.tensor_names.size() != u.tensor_shapes.size()) bad("tensor names and shapes differ in count");
  if (!u.tensor_shapes.empty()) {
    uint64_t sum = 0;
    std::vector<int64_t> expect;
    for (std::size_t k = 0; k < u.tensor_shapes.size(); ++k) {
      for (int64_t d : u.tensor_shapes[k])
        if (d < 0) bad(fmt::format("tensor {} has a negative dimension", u.tensor_names[k]));
      const uint64_t count = element_count(u.tensor_shapes[k]);
      // Each count is under 2^63 and n under 2^32: a sum past n is wrong however it goes on.
      if (count > n - std::min(sum, n)) {
        bad(fmt::format("tensor shapes hold more than the unit's {} elements (at tensor {})", n, u.tensor_names[k]));
      }
      sum += count;
      if (k + 1 < u.tensor_shapes.size()) expect.push_back(static_cast<int64_t>(sum));
    }
    if (sum != n) bad(fmt::format("tensor shapes hold {} elements, the unit has {}", sum, n));
    if (u.split_positions != expect) bad("split_positions do not match the tensor shapes");
  }
  // Decode tables.
  if (u.layout.tables == TableScheme::df11_chained) {
    if (n > 0) {
      validate_df11_luts(u.luts, ctx);
    } else if (u.luts.size() % 256 != 0 || u.luts.size() < 512) {
      bad(fmt::format("luts: {} bytes are not two or more 256-entry rows", u.luts.size()));
    }
  } else {
    (void)canonical_code_from_luts(u.luts, u.layout.max_code_length, ctx);
  }
  // Stream, gaps and positions sizes.
  const uint64_t n_bytes = u.encoded_exponent.size();
  if (n == 0 && n_bytes != 0) bad("an empty unit has a non-empty encoded_exponent");
  if (n > 0 && n_bytes == 0) bad("encoded_exponent is empty");
  if (n_bytes > (n * static_cast<uint64_t>(u.layout.max_code_length) + 7) / 8) {
    bad(fmt::format("encoded_exponent has {} bytes, more than {} elements of at most {} bits can fill", n_bytes, n,
                    u.layout.max_code_length));
  }
  const uint64_t n_blocks = u.n_blocks();
  const uint64_t gap_bytes = n_blocks * static_cast<uint64_t>(u.layout.threads_per_block) * u.layout.gap_bits / 8;
  if (u.gaps.size() != gap_bytes) {
    bad(fmt::format("gaps has {} bytes; {} blocks of {} threads need {} (truncated or mismatched stream?)",
                    u.gaps.size(), n_blocks, u.layout.threads_per_block, gap_bytes));
  }
  const uint64_t n_pos = u.layout.positions == PositionScheme::thread ? u.n_chunks() : n_blocks;
  if (u.output_positions.size() != 4 * (n_pos + 1)) {
    bad(fmt::format("output_positions has {} bytes, expected {} ({} entries + 1)", u.output_positions.size(),
                    4 * (n_pos + 1), n_pos));
  }
  if (u.position(0) != 0) bad(fmt::format("output_positions[0] is {}, expected 0", u.position(0)));
  for (uint64_t i = 0; i < n_pos; ++i) {
    if (u.position(i + 1) < u.position(i)) {
      bad(fmt::format("output_positions decrease at entry {} ({} then {})", i, u.position(i), u.position(i + 1)));
    }
  }
  if (u.position(n_pos) != n) {
    bad(fmt::format("output_positions end at {}, expected n_elements = {}", u.position(n_pos), n));
  }
  if (u.n_chunks() > 0 && u.gap(0) != 0) bad(fmt::format("the first gap is {}, expected 0", u.gap(0)));
  // Count layouts: one count per thread of every block, summing to the block's positions, 0 for
  // the padding threads past the stream. (Whether each count is its chunk's is for the decode to
  // check; these sums are what keep a kernel's scan inside the block.)
  const uint64_t tpb = static_cast<uint64_t>(u.layout.threads_per_block);
  if (u.layout.positions != PositionScheme::count) {
    if (!u.thread_counts.empty()) bad(fmt::format("thread_counts has {} bytes in a {} layout", u.thread_counts.size(),
                                                  to_string(u.layout.positions)));
    return;
  }
  if (u.thread_counts.size() != n_blocks * tpb) {
    bad(fmt::format("thread_counts has {} bytes; {} blocks of {} threads need {}", u.thread_counts.size(), n_blocks,
                    tpb, n_blocks * tpb));
  }
  const uint64_t n_chunks = u.n_chunks();
  for (uint64_t b = 0; b < n_blocks; ++b) {
    uint64_t sum = 0;
    for (uint64_t c = b * tpb; c < (b + 1) * tpb; ++c) {
      if (c >= n_chunks && u.thread_counts[c] != 0) {
        bad(fmt::format("thread_counts[{}] is {} for a thread past the stream ({} chunks)", c, u.thread_counts[c],
                        n_chunks));
      }
      sum += u.thread_counts[c];
    }
    const uint64_t want = u.position(b + 1) - u.position(b);
    if (sum != want) {
      bad(fmt::format("thread_counts of block {} sum to {}, output_positions say {}", b, sum, want));
    }
  }
}

namespace {

// decode_cpu, or with out == nullptr check_stream: the same walk and checks, no BF16 written.
void decode_or_check(const EncodedUnit& u, uint16_t* out, int n_threads, CpuDecodePath path,
                     CpuDecodeStats* stats) {
  validate_encoded(u);
  const std::string ctx = fmt::format("unit {}", u.name);
  if (u.n_elements == 0) return;
  const SymbolLookup lk(u, ctx);
  const std::vector<MultiEntry> multi = build_multi_table(lk);
  const DecodeContext dc{u, lk, multi, ctx};

  const Layout& L = u.layout;
  const uint64_t n = u.n_elements;
  const uint64_t n_bytes = u.encoded_exponent.size();
  const uint64_t total_bits = n_bytes * 8;
  const uint64_t chunk_bits = static_cast<uint64_t>(L.chunk_bits());
  const uint64_t chunk_bytes = static_cast<uint64_t>(L.bytes_per_thread);
  const uint64_t n_chunks = u.n_chunks();
  const uint64_t tpb = static_cast<uint64_t>(L.threads_per_block);
  const uint64_t n_blocks = u.n_blocks();
  const bool per_thread = L.positions == PositionScheme::thread;
  const bool with_counts = L.positions == PositionScheme::count;
  const uint8_t* stream = u.encoded_exponent.data();
  // Chunks whose look-ahead would run past the stream decode from a zero-padded copy.
  const uint64_t safe_chunks = n_bytes >= chunk_bytes + 8 ? (n_bytes - 8) / chunk_bytes : 0;

  auto first_index = [&](uint64_t b) -> uint64_t {
    if (b >= n_blocks) return n;
    return per_thread ? u.position(b * tpb) : u.position(b);
  };

  // One chunk at a time, each from its gap: any block, and the one that names an error.
  auto serial_block = [&](uint64_t b, std::vector<uint8_t>& exps, std::vector<uint8_t>& padded) {
    const uint64_t base = first_index(b);
    const uint64_t expected = first_index(b + 1) - base;
    const bool last_block = b + 1 == n_blocks;
    uint64_t count = 0;
    const uint64_t c_end = std::min(n_chunks, (b + 1) * tpb);
    for (uint64_t c = b * tpb; c < c_end; ++c) {
      if (base + count >= n) break;  // everything after the last element is padding
      const unsigned gap = u.gap(c);
      if (gap >= static_cast<unsigned>(L.max_code_length)) {
        throw Error(fmt::format("{}: gaps: chunk {} has gap {} >= max code length {}", ctx, c, gap,
                                L.max_code_length));
      }
      const uint64_t chunk_start = c * chunk_bits;
      const unsigned end_bit = static_cast<unsigned>(std::min(chunk_bits, total_bits - chunk_start));
      const uint8_t* p = stream + c * chunk_bytes;
      if (c >= safe_chunks) {
        std::fill(padded.begin(), padded.end(), 0);
        std::memcpy(padded.data(), p, std::min<uint64_t>(n_bytes - c * chunk_bytes, padded.size()));
        p = padded.data();
      }
      uint64_t end_pos = 0;
      const uint64_t got = decode_chunk(dc, p, gap, end_bit, exps.data() + count, &end_pos, c);
      if (base + count < n && base + count + got >= n) {
        check_stream_end(dc, p, gap, n - (base + count), c);
      }
      if ((per_thread || with_counts) && c + 1 < n_chunks) {
        // Every chunk yields exactly its count (per-thread positions' difference, or its stored
        // byte), but the one holding the unit's last elements, whose padding may decode past
        // them. (A chunk before it that overruns to n_elements would otherwise pass: kernels
        // would write its extra codes over the next chunk's elements, a race, while this
        // decoder stopped early.) base + count is where the chunk starts: every chunk before
        // it in the block gave its count.
        const uint64_t want = per_thread ? u.position(c + 1) - u.position(c) : u.thread_counts[c];
        if (base + count + want >= n ? got < want : got != want) {
          throw Error(fmt::format("{}: chunk {} decoded {} elements, {} say {}", ctx, c, got,
                                  per_thread ? "output_positions" : "thread_counts", want));
        }
      }
      count += got;
      if (c + 1 < n_chunks && base + count < n) {
        // Chain check: this chunk's last code must end exactly at the next chunk's gap.
        const uint64_t next_gap = u.gap(c + 1);
        if (end_pos != chunk_bits + next_gap) {
          throw Error(fmt::format(
              "{}: chunk {} ends at bit {} of the next chunk, whose gap says {} (corrupt gaps or stream)", ctx, c,
              static_cast<int64_t>(end_pos) - static_cast<int64_t>(chunk_bits), next_gap));
        }
      }
    }
    if (last_block ? count < expected : count != expected) {
      throw Error(fmt::format("{}: block {} decoded {} elements, output_positions say {}", ctx, b, count, expected));
    }
    if (out) merge_bf16(exps.data(), u.sign_mantissa.data() + base, expected, out + base);
  };

  // Interleaved lanes (LaneDecoder) for a block that ends before the unit's last element and
  // whose chunks' look-ahead stays inside the stream: false when the block is not such a block
  // or a check failed (then the serial path decodes it again and names the error).
  const uint64_t lane_chunks = (tpb + kLanes - 1) / kLanes;
  const uint64_t lane_cap = lane_chunks * chunk_bits + kMaxPerEntry + 8;
  auto lane_block = [&](uint64_t b, std::vector<uint8_t>& exps, std::vector<Crossing>& log) -> bool {
    if (chunk_bits <= kMaxLookupBits || b + 1 >= n_blocks || (b + 1) * tpb > safe_chunks) return false;
    const uint64_t base = first_index(b);
    const uint64_t expected = first_index(b + 1) - base;
    if (base + expected >= n) return false;
    const uint8_t* p = stream + b * tpb * chunk_bytes;
    uint64_t counts[kLanes];
    bool ok = false;
    switch (L.positions) {
      case PositionScheme::block:
        ok = LaneDecoder<PositionScheme::block>{dc, p, chunk_bits}.run(b * tpb, tpb, exps.data(), lane_cap, log.data(),
                                                                       counts);
        break;
      case PositionScheme::thread:
        ok = LaneDecoder<PositionScheme::thread>{dc, p, chunk_bits}.run(b * tpb, tpb, exps.data(), lane_cap, log.data(),
                                                                       counts);
        break;
      case PositionScheme::count:
        ok = LaneDecoder<PositionScheme::count>{dc, p, chunk_bits}.run(b * tpb, tpb, exps.data(), lane_cap, log.data(),
                                                                       counts);
        break;
    }
    if (!ok) return false;
    uint64_t sum = 0;
    for (uint64_t k : counts) sum += k;
    if (sum != expected) return false;
    uint64_t at = base;
    for (int j = 0; j < kLanes && out; ++j) {
      merge_bf16(exps.data() + j * lane_cap, u.sign_mantissa.data() + at, counts[j], out + at);
      at += counts[j];
    }
    return true;
  };

  // Blocks are grouped into tasks so each task amortizes its buffer.
  const uint64_t blocks_per_task = std::max<uint64_t>(1, (uint64_t{1} << 16) / (tpb * chunk_bytes));
  const uint64_t n_tasks = (n_blocks + blocks_per_task - 1) / blocks_per_task;
  parallel_for(n_tasks, n_threads, [&](std::size_t task) {
    std::vector<uint8_t> exps(std::max(tpb * chunk_bits + kMaxPerEntry + 8, kLanes * lane_cap));
    std::vector<uint8_t> padded(chunk_bytes + 16);
    std::vector<Crossing> log(kLanes * lane_chunks);
    const uint64_t b_end = std::min(n_blocks, (task + 1) * blocks_per_task);
    uint64_t n_lane = 0;
    for (uint64_t b = task * blocks_per_task; b < b_end; ++b) {
      if (path == CpuDecodePath::lanes && lane_block(b, exps, log)) {
        ++n_lane;
        continue;
      }
      serial_block(b, exps, padded);
    }
    if (stats) {
      stats->lane_blocks += n_lane;
      stats->serial_blocks += b_end - task * blocks_per_task - n_lane;
    }
  });
}

}  // namespace

void decode_cpu(const EncodedUnit& u, std::span<uint16_t> out, int n_threads, CpuDecodePath path,
                CpuDecodeStats* stats) {
  if (out.size() != u.n_elements) {
    throw Error(fmt::format("unit {}: output holds {} elements, the unit has {}", u.name, out.size(), u.n_elements));
  }
  decode_or_check(u, out.data(), n_threads, path, stats);
}

void check_stream(const EncodedUnit& u, int n_threads, CpuDecodePath path, CpuDecodeStats* stats) {
  decode_or_check(u, nullptr, n_threads, path, stats);
}

std::vector<uint16_t> decode_cpu(const EncodedUnit& u, int n_threads, CpuDecodePath path) {
  std::vector<uint16_t> out;
  reserve_prefaulted(out, u.n_elements, n_threads);
  out.resize(u.n_elements);
  decode_cpu(u, out, n_threads, path);
  return out;
}

std::vector<uint16_t> decode_reference(const EncodedUnit& u) {
  validate_encoded(u);
  const std::string ctx = fmt::format("unit {}", u.name);
  const SymbolLookup lk(u, ctx);
  std::vector<uint16_t> out(u.n_elements);
  const auto& s = u.encoded_exponent;
  auto bit = [&](uint64_t i) -> uint32_t { return i / 8 < s.size() ? (s[i / 8] >> (7 - i % 8)) & 1u : 0u; };
  uint64_t pos = 0;
  for (uint64_t i = 0; i < u.n_elements; ++i) {
    uint32_t window = 0;
    for (int k = 0; k < 32; ++k) window = (window << 1) | bit(pos + k);
    uint8_t sym;
    unsigned len;
    if (!lk.lookup(window, sym, len) || len == 0) {
      throw Error(fmt::format("{}: invalid code at bit {} (element {})", ctx, pos, i));
    }
    pos += len;
    if (pos > s.size() * 8) throw Error(fmt::format("{}: stream ends inside element {}", ctx, i));
    out[i] = merge_bf16(sym, u.sign_mantissa[i]);
  }
  return out;
}

}  // namespace df11
