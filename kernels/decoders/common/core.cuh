// The per-thread logic of every decoder variant, as __host__ __device__ functions: the bit
// reader, the table lookups, counting and decoding one thread chunk. Kernels (*.cu) wrap them
// with thread and block indexing; host emulations (*_host.cpp) call them block by block,
// thread by thread, so CI checks the real decode logic without a GPU.
#pragma once

#include <cstdint>
#include <cstring>

#include "codec/bf16.hpp"
#include "codec/canonical.hpp"
#include "codec/common.hpp"

namespace df11::dec {

// Reads 4 bytes big-endian. ReadOnly: global memory through the read-only (texture) cache on
// the device; otherwise a plain load (shared memory, or the host).
template <bool ReadOnly>
DF11_HD uint32_t load_be32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  const uint32_t v = ReadOnly ? __ldg(reinterpret_cast<const unsigned int*>(p)) : *reinterpret_cast<const uint32_t*>(p);
  return __byte_perm(v, 0, 0x0123);
#else
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
#endif
}

template <bool ReadOnly>
DF11_HD unsigned load_byte(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return ReadOnly ? static_cast<unsigned>(__ldg(p)) : static_cast<unsigned>(*p);
#else
  return *p;
#endif
}

// MSB-first bit reader over a 4-byte-aligned buffer that has at least 8 readable bytes past
// the last bit it is asked for (uploads pad the stream). Holds the next two stream words and how
// many bits of the first are consumed (off < 32), so peek() (the next 32 bits) is one funnel
// shift and skip() an add, a word moved in when off passes 32.
template <bool ReadOnly>
struct BitReader {
  uint32_t hi, lo;
  unsigned off;
  const uint8_t* next;

  DF11_HD void init(const uint8_t* p) {
    hi = load_be32<ReadOnly>(p);
    lo = load_be32<ReadOnly>(p + 4);
    off = 0;
    next = p + 8;
  }
  [[nodiscard]] DF11_HD uint32_t peek() const {
#if defined(__CUDA_ARCH__)
    return __funnelshift_l(lo, hi, off);
#else
    return static_cast<uint32_t>(((static_cast<uint64_t>(hi) << 32 | lo) << off) >> 32);
#endif
  }
  DF11_HD void skip(unsigned n) {  // n <= 32
    off += n;
    if (off >= 32) {
      hi = lo;
      lo = load_be32<ReadOnly>(next);
      next += 4;
      off -= 32;
    }
  }
};

// A thread chunk held in registers (the exp-smem-reg staging): its BPT bytes and the 4 after
// them, loaded together as the block starts (one vector load and one word), so neither the
// first load nor a refill waits inside the decode loop; and the bits [gap, end_bit) of the chunk
// where its codes start. A code starting at bit pos < 8 * BPT reads words pos / 32 and
// pos / 32 + 1 <= BPT / 4, so one word of look-ahead is all the decode ever reads. The words
// stay as loaded (memory order) until chunk_reader swaps them: nothing uses a loaded value
// before the decode, so no instruction waits on the loads before the block's other first loads
// are issued too.
template <int BPT>
struct RegChunk {
  static_assert(BPT == 8 || BPT == 16, "one 8- or 16-byte vector load");
  static constexpr int kWords = BPT / 4 + 1;
  uint32_t raw[kWords];
  unsigned gap, end_bit;
};

// Loads the chunk at p (BPT-aligned: chunk t of a block starts at t * BPT of a 256-aligned
// stream; the stream's padding covers the look-ahead word of the last chunk).
template <int BPT>
DF11_HD void load_reg_chunk(RegChunk<BPT>& r, const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  if constexpr (BPT == 16) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    r.raw[0] = v.x, r.raw[1] = v.y, r.raw[2] = v.z, r.raw[3] = v.w;
  } else {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    r.raw[0] = v.x, r.raw[1] = v.y;
  }
  r.raw[BPT / 4] = __ldg(reinterpret_cast<const unsigned int*>(p + BPT));
#else
  std::memcpy(r.raw, p, sizeof(r.raw));
#endif
}

// A word of RegChunk::raw (memory order) as load_be32 would have read it: big-endian.
DF11_HD uint32_t raw_to_be32(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(v, 0, 0x0123);
#else
  return __builtin_bswap32(v);
#endif
}

// The bit reader over a RegChunk: the window is w[0]:w[1] shifted by off; passing a word moves
// every word down one register (constant indices, so they stay registers: on sm_90 one compare,
// four selects and an add per loop iteration, where the memory reader's refill, which some lane
// of a warp needs in almost every iteration, is a branch around a load). The top word stays as
// it was: after k moves words N-k.. are stale, and only windows past the chunk's last bit (no
// code starts there) would read them.
template <int N>
struct RegReader {
  uint32_t w[N];
  unsigned off;

  [[nodiscard]] DF11_HD uint32_t peek() const {
#if defined(__CUDA_ARCH__)
    return __funnelshift_l(w[1], w[0], off);
#else
    return static_cast<uint32_t>(((static_cast<uint64_t>(w[0]) << 32 | w[1]) << off) >> 32);
#endif
  }
  DF11_HD void skip(unsigned n) {  // n <= 32
    off += n;
    if (off >= 32) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (int i = 0; i + 1 < N; ++i) w[i] = w[i + 1];
      off -= 32;
    }
  }
};

#if !defined(__CUDA_ARCH__)
// Host runs only: where the host emulation counts decode-loop iterations (LoopStats, `df11
// variants --lanes`), or null. Every iteration of decode_chunk's and decode_counted's loops adds one.
inline thread_local uint64_t* host_loop_iterations = nullptr;
#endif
DF11_HD void count_iteration() {
#if !defined(__CUDA_ARCH__)
  if (host_loop_iterations != nullptr) ++*host_loop_iterations;
#endif
}

// ---- Table policies: decode one symbol from the next 32 bits. ----

// DF11's chained 8-bit tables (the official luts), read from global memory through the
// read-only cache (ReadOnly) or from a shared-memory copy.
template <bool ReadOnly>
struct LutTables {
  const uint8_t* luts;
  int n_rows;
  DF11_HD void lookup(uint32_t w, unsigned& sym, unsigned& len) const {
    unsigned v = load_byte<ReadOnly>(luts + (w >> 24));
    if (v >= 240u) {
      v = load_byte<ReadOnly>(luts + (256u - v) * 256u + ((w >> 16) & 0xFFu));
      if (v >= 240u) {
        v = load_byte<ReadOnly>(luts + (256u - v) * 256u + ((w >> 8) & 0xFFu));
        if (v >= 240u) v = load_byte<ReadOnly>(luts + (256u - v) * 256u + (w & 0xFFu));
      }
    }
    sym = v;
    len = load_byte<ReadOnly>(luts + static_cast<unsigned>(n_rows - 1) * 256u + v);
  }
};

// Canonical code by per-length limits (CanonicalTable, ~1 KB, in shared memory on the GPU).
// A window no codeword matches (only for corrupt streams of incomplete codes) advances by one
// bit, so a thread always finishes.
struct CanonTables {
  const CanonicalTable* t;
  DF11_HD void lookup(uint32_t w, unsigned& sym, unsigned& len) const {
    uint8_t s;
    t->lookup(w, s, len);
    sym = s;
    len += (len == 0);
  }
};

// Flat root of 2^K (symbol | length << 8) entries (shared memory), with a second level for
// codes the root cannot resolve (entry 0): the chained tables or the canonical limits.
template <int K, class Second>
struct FlatTables {
  const uint16_t* root;
  Second second;
  DF11_HD void lookup(uint32_t w, unsigned& sym, unsigned& len) const {
    const unsigned e = root[w >> (32 - K)];
    if (e >> 8) {
      sym = e & 0xFFu;
      len = e >> 8;
    } else {
      second.lookup(w, sym, len);
    }
  }
};

// Multi-symbol root of 2^K uint32 entries (shared memory; multi_root_from_flat): the codes
// that lie whole in the next K bits, up to three per lookup, with their total length; Single
// (the flat root and its second level) decodes one code where an entry has none, and the
// chunk's last codes, whose run may cross the chunk's end. Whether an entry or Single is used,
// the symbols and lengths are those Single gives code by code.
// Counted: the counted decode loop reads it (decode_counted; the multi12n variants).
template <int K, class Single, bool Counted = false>
struct MultiTables {
  static_assert(K >= 1 && K <= 15, "total length must fit 4 bits");
  static constexpr bool kMulti = true;
  static constexpr bool kCounted = Counted;
  const uint32_t* multi;
  Single single;
  [[nodiscard]] DF11_HD uint32_t entry(uint32_t w) const { return multi[w >> (32 - K)]; }
  DF11_HD void lookup(uint32_t w, unsigned& sym, unsigned& len) const { single.lookup(w, sym, len); }
};

// Wide multi-symbol root (multi_lut_w; wide_root_from_flat): 2^K entries of two uint32 words in
// shared memory, up to five codes each: symbols 0..3 in the first word, symbol 4 in the second's
// low byte, the total length in its bits 24..27 and the count in 28..31. Single as MultiTables'.
// Read only by decode_counted, whose wide loop stores five bytes a lookup (see there).
template <int K, class Single>
struct WideTables {
  static_assert(K >= 1 && K <= 15, "total length must fit 4 bits");
  static constexpr bool kMulti = false;  // decode_chunk's multi path reads 32-bit entries: singles there
  static constexpr bool kCounted = true;
  static constexpr bool kWide = true;
  const uint32_t* wide;  // 2 << K words, 8-byte aligned
  Single single;
  struct Entry {
    uint32_t lo, hi;
  };
  [[nodiscard]] DF11_HD Entry entry(uint32_t w) const {
    const uint32_t* e = wide + 2 * (w >> (32 - K));
#if defined(__CUDA_ARCH__)
    const uint2 v = *reinterpret_cast<const uint2*>(e);  // one 8-byte shared-memory load
    return {v.x, v.y};
#else
    return {e[0], e[1]};
#endif
  }
  DF11_HD void lookup(uint32_t w, unsigned& sym, unsigned& len) const { single.lookup(w, sym, len); }
};

// How many bytes past a thread's codes the wide root's loop may store (decode_counted).
inline constexpr unsigned kWideOverrun = 4;

template <class Table>
DF11_HD constexpr bool is_wide_table() {
  if constexpr (requires { Table::kWide; }) {
    return Table::kWide;
  } else {
    return false;
  }
}

template <class Table>
DF11_HD constexpr bool is_multi_table() {
  if constexpr (requires { Table::kMulti; }) {
    return Table::kMulti;
  } else {
    return false;
  }
}

template <class Table>
DF11_HD constexpr bool is_counted_table() {
  if constexpr (requires { Table::kCounted; }) {
    return Table::kCounted;
  } else {
    return false;
  }
}

// ---- Gaps and positions. ----

// Unpacks the gap of thread chunk c from the packed MSB-first array (gap_bits <= 8).
template <bool ReadOnly>
DF11_HD unsigned read_gap(const uint8_t* gaps, uint64_t c, int gap_bits) {
  const uint64_t bit = c * static_cast<uint64_t>(gap_bits);
  const uint8_t* p = gaps + (bit >> 3);
  // Gap arrays are padded by one byte on upload, so reading p[1] is always in bounds.
  const unsigned two = (load_byte<ReadOnly>(p) << 8) | load_byte<ReadOnly>(p + 1);
  return (two >> (16 - gap_bits - static_cast<unsigned>(bit & 7))) & ((1u << gap_bits) - 1u);
}

// ---- One thread chunk. ----

// Codes that start in bits [gap, end_bit) of the chunk at `chunk` (4-byte aligned).
struct ChunkSpan {
  const uint8_t* chunk;
  unsigned gap;
  unsigned end_bit;
};

// The reader of a chunk, positioned at its gap: from memory, or over the words in registers.
template <bool ReadOnly>
DF11_HD BitReader<ReadOnly> chunk_reader(const ChunkSpan& s) {
  BitReader<ReadOnly> br;
  br.init(s.chunk);
  br.skip(s.gap);
  return br;
}
template <bool ReadOnly, int BPT>
DF11_HD RegReader<RegChunk<BPT>::kWords> chunk_reader(const RegChunk<BPT>& s) {
  RegReader<RegChunk<BPT>::kWords> br;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < RegChunk<BPT>::kWords; ++i) br.w[i] = raw_to_be32(s.raw[i]);
  br.off = 0;
  br.skip(s.gap);
  return br;
}

// Decodes the chunk's codes (a ChunkSpan in memory or a RegChunk); calls emit(k, exponent) for
// the k-th code of the chunk.
template <bool ReadOnly, class Table, class Chunk, class Emit>
DF11_HD unsigned decode_chunk(const Table& table, const Chunk& s, Emit&& emit) {
  auto br = chunk_reader<ReadOnly>(s);
  unsigned pos = s.gap, n = 0;
  while (pos < s.end_bit) {
    count_iteration();
    if constexpr (is_multi_table<Table>()) {
      // Up to three codes at once while all of them start inside the chunk (they do when the
      // last one ends by end_bit); else one code through the single-symbol tables.
      const uint32_t e = table.entry(br.peek());
      const unsigned count = e >> 28, total = (e >> 24) & 0xFu;
      if (count != 0 && pos + total <= s.end_bit) {
        emit(n, e & 0xFFu);
        if (count > 1) emit(n + 1, (e >> 8) & 0xFFu);
        if (count > 2) emit(n + 2, (e >> 16) & 0xFFu);
        n += count;
        pos += total;
        br.skip(total);
        continue;
      }
    }
    unsigned sym, len;
    table.lookup(br.peek(), sym, len);
    br.skip(len);
    pos += len;
    emit(n, sym);
    ++n;
  }
  return n;
}

// The memory reader of the counted loop: BitReader's window, with the words it moves in taken at
// byte offsets of the chunk that stop at `last` (the look-ahead word); so a chunk whose stored
// count promises more codes than its bits hold (a corrupt stream) decodes garbage from in-bounds
// words instead of reading on past the stream. 32-bit offsets: a refill is a min, an add and the
// load.
template <bool ReadOnly>
struct BoundedBitReader {
  uint32_t hi, lo;
  unsigned off;
  const uint8_t* chunk;
  unsigned next, last;  // byte offsets in the chunk

  [[nodiscard]] DF11_HD uint32_t peek() const {
#if defined(__CUDA_ARCH__)
    return __funnelshift_l(lo, hi, off);
#else
    return static_cast<uint32_t>(((static_cast<uint64_t>(hi) << 32 | lo) << off) >> 32);
#endif
  }
  DF11_HD void skip(unsigned n) {  // n <= 32
    off += n;
    if (off >= 32) {
      const unsigned q = next < last ? next : last;
      hi = lo;
      lo = load_be32<ReadOnly>(chunk + q);
      next = q + 4;
      off -= 32;
    }
  }
};

// Positioned at the chunk's gap; `bytes` is the chunk's size (bytes per thread). Its words up to
// the look-ahead word at `bytes` may be read: what any code starting in the chunk reads, and inside
// the upload's padding for the last chunk. The bound is the chunk's size, not its last code, so
// that it is a constant in the kernels.
template <bool ReadOnly>
DF11_HD BoundedBitReader<ReadOnly> counted_reader(const ChunkSpan& s, unsigned bytes) {
  BoundedBitReader<ReadOnly> br{load_be32<ReadOnly>(s.chunk), load_be32<ReadOnly>(s.chunk + 4), 0u, s.chunk, 8u, bytes};
  br.skip(s.gap);
  return br;
}
// The fixed-output partition's reader: a thread's codes from an absolute bit of the stream, whose
// upload (derive_fixed_index) stores the words in native order (word k: stream bytes 4k..4k+3 as
// one big-endian value) and pads them by kFixedReadPad bytes, more than 64 codes read past any
// start, corrupt ones included (a skip moves in one word at most, and a thread skips once per
// lookup). So a refill is a load and a pointer step: no byte swap, no bound.
inline constexpr unsigned kFixedReadPad = 64 * 4 + 16;
struct WordStreamAt {
  const uint32_t* words;
  uint32_t start_bit;
};
DF11_HD uint32_t load_word(const uint32_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned int*>(p));
#else
  uint32_t v;  // the words are a byte array's on the host
  std::memcpy(&v, p, 4);
  return v;
#endif
}
// (BitReader, BoundedBitReader and WordReader repeat one window: a shared base whose skip took the
// refill as a lambda cost the counted loops 2 to 11 instructions an iteration on sm_90.)
struct WordReader {
  uint32_t hi, lo;
  unsigned off;
  const uint32_t* next;
  [[nodiscard]] DF11_HD uint32_t peek() const {
#if defined(__CUDA_ARCH__)
    return __funnelshift_l(lo, hi, off);
#else
    return static_cast<uint32_t>(((static_cast<uint64_t>(hi) << 32 | lo) << off) >> 32);
#endif
  }
  DF11_HD void skip(unsigned n) {  // n <= 32
    off += n;
    if (off >= 32) {
      hi = lo;
      lo = load_word(next++);
      off -= 32;
    }
  }
};
template <bool ReadOnly>
DF11_HD WordReader counted_reader(const WordStreamAt& s, unsigned) {
  const uint32_t* w = s.words + (s.start_bit >> 5);
  return WordReader{load_word(w), load_word(w + 1), s.start_bit & 31u, w + 2};
}
// Register chunks: the register reader never reads past its words.
template <bool ReadOnly, int BPT>
DF11_HD auto counted_reader(const RegChunk<BPT>& s, unsigned) {
  return chunk_reader<ReadOnly>(s);
}

// The counted decode loop (multi12n): the chunk's first `cnt` codes, exponent k to at[k]; `bytes`,
// the chunk's size, bounds its reads. A thread that knows how many codes it owns (the count
// partitions' stored byte, or pass 1's count) needs neither its bit position nor the chunk's end:
// while three or more codes remain, each multi entry stores all three of its symbol bytes, whatever
// its count, and the loop moves on by the count. A byte stored past the entry's count is a later
// code of the same thread (at + 3 <= end), and the thread's own later stores overwrite it: the last
// store to position j is by the iteration whose codes include j. So an iteration is a lookup, three
// stores, two adds and the refill test, with no test of the entry against the chunk's end (sm_90:
// 26 instructions over register chunks, 29 from memory with the refill predicated, against 38 and
// 28 plus a refill branch for decode_chunk's multi path); the last one or two codes go one by one.
// Every store lies in [at, end), every load in the chunk's words (counted_reader), corrupt streams
// included. (Host emulations run pass 2 threads last to first, so a store past a thread's codes
// would overwrite its neighbour's and show.)
// The wide root's loop (WideTables) stores five bytes a lookup and runs until the thread's count
// is reached, the last lookup included: a lookup near the end decodes codes past the thread's
// last (the next thread's, or the stream's padding) and stores up to 4 bytes past at + cnt. So
// it is only for callers that own those 4 bytes (the fixed-output rows: kFixedStride -
// kFixedCodes = 8 bytes of padding a lane) and read codes from a padded word stream (the fixed
// partition's, kFixedReadPad); no tail of single lookups, no test of the entry against the end.
template <bool ReadOnly, class Table, class Chunk>
DF11_HD void decode_counted(const Table& table, const Chunk& s, unsigned bytes, uint8_t* at, unsigned cnt) {
  static_assert(is_counted_table<Table>(), "the counted loop reads a multi root");
  auto br = counted_reader<ReadOnly>(s, bytes);
  uint8_t* const end = at + cnt;
  if constexpr (is_wide_table<Table>()) {
    while (at < end) {
      uint32_t w;
      for (;;) {
        count_iteration();
        w = br.peek();
        const auto e = table.entry(w);
        const unsigned n = e.hi >> 28;
        if (n == 0) break;
        at[0] = static_cast<uint8_t>(e.lo);
        at[1] = static_cast<uint8_t>(e.lo >> 8);
        at[2] = static_cast<uint8_t>(e.lo >> 16);
        at[3] = static_cast<uint8_t>(e.lo >> 24);
        at[4] = static_cast<uint8_t>(e.hi);
        at += n;
        br.skip((e.hi >> 24) & 0xFu);
        if (at >= end) return;
      }
      count_iteration();  // the single-symbol lookup (a code longer than the root)
      unsigned sym, len;
      table.lookup(w, sym, len);
      *at++ = static_cast<uint8_t>(sym);
      br.skip(len);
    }
  } else {
    if (cnt >= 3) {
      uint8_t* const lim = end - 3;
      // The inner loop is the multi path alone: an entry without codes (a code longer than the root)
      // leaves it for one single-symbol lookup, so the common iteration has no branch to reconverge.
      for (;;) {
        uint32_t w;
        for (;;) {
          count_iteration();
          w = br.peek();
          const uint32_t e = table.entry(w);
          const unsigned n = e >> 28;
          if (n == 0) break;
          at[0] = static_cast<uint8_t>(e);
          at[1] = static_cast<uint8_t>(e >> 8);
          at[2] = static_cast<uint8_t>(e >> 16);
          at += n;
          br.skip((e >> 24) & 0xFu);
          if (at > lim) break;
        }
        if (at > lim) break;
        count_iteration();  // the single-symbol lookup (the re-entry's peek is the next one's)
        unsigned sym, len;
        table.lookup(w, sym, len);
        *at++ = static_cast<uint8_t>(sym);
        br.skip(len);
        if (at > lim) break;
      }
    }
    while (at < end) {
      count_iteration();
      unsigned sym, len;
      table.lookup(br.peek(), sym, len);
      *at++ = static_cast<uint8_t>(sym);
      br.skip(len);
    }
  }
}

// Pass 1 of the two-pass scheme: how many codes start in the chunk (the decode loop with
// nothing emitted; the compiler drops the unused symbols).
template <bool ReadOnly, class Table, class Chunk>
DF11_HD unsigned count_chunk(const Table& table, const Chunk& s) {
  return decode_chunk<ReadOnly>(table, s, [](unsigned, unsigned) {});
}

// The bits of chunk c that belong to the stream (the final chunk may be shorter).
DF11_HD unsigned chunk_end_bit(uint64_t c, unsigned chunk_bits, uint64_t n_bytes) {
  const uint64_t start = c * chunk_bits;
  const uint64_t total = n_bytes * 8;
  return static_cast<unsigned>(total - start < chunk_bits ? total - start : chunk_bits);
}

// What a launch decodes: elements [lo, hi) of the unit into out[0 .. hi-lo), from the blocks
// [block_begin, block_begin + grid).
struct LaunchParams {
  const uint8_t* stream;  // encoded_exponent, padded
  uint64_t n_bytes;
  const uint8_t* sign_mantissa;
  const uint32_t* positions;  // per block or per thread chunk, + n_elements
  const uint8_t* gaps;        // padded by one byte
  const uint8_t* counts;      // codes starting in each thread chunk (count partition), or null
  const uint8_t* luts;        // DF11 luts (global) or null
  int n_rows;
  const uint16_t* flat_root;               // global copy of the flat root, or null
  const uint32_t* multi_root;              // global copy of the multi-symbol root, or null
  const CanonicalTable* canon;             // global copy, or null
  uint16_t* out;
  uint64_t n_elements;
  uint64_t n_chunks;
  uint64_t lo, hi;
  uint32_t block_begin;
  uint32_t block_count;         // persistent kernels: DF11 blocks of the launch, from block_begin
  uint32_t max_block_elements;  // largest element count of one block (sizes shared memory)
  int gap_bits;
  const uint16_t* lane_off;  // fixed_out: each thread's start bit from its warp's (positions), or null
  uint32_t* work;  // dyn schedule: the launch's counter of DF11 blocks (wcnt, fix64: units) taken
                   // past the first two per CUDA block (warp); 0 at the start, left at 0; else null
  uint32_t descending;  // 1: the launch's units in descending order (Order::descending), else 0
};

// The i-th unit a launch decodes of its units [base, base + count), in the launch's order:
// ascending, or descending (the units nearest lo decoded last, so that a reader starting at lo
// right after the decode finds them in L2). i >= count: none, base + count.
DF11_HD uint64_t unit_in_order(uint32_t descending, uint64_t base, uint64_t count, uint64_t i) {
  if (i >= count) return base + count;
  return base + (descending ? count - 1 - i : i);
}

}  // namespace df11::dec
