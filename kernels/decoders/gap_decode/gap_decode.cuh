// The gap-partitioned decoder family: every variant of table scheme x partition x staging as
// one template. The per-thread phases are __host__ __device__, and so is the whole block body
// (gap_decode_block, at the end): the kernel (gap_decode.cu) is a one-line wrapper around it,
// and the host runs the same body two ways (gap_decode_host.cpp): on the SIMT executor
// (kernels/simt: a thread per CUDA thread, real barriers and shuffles; exact but slow) and as
// a fast phase-by-phase emulation that calls the per-thread phases for every thread of a block
// in turn, with a sequential scan in place of the block scan.
#pragma once

#include <cstdint>
#include <type_traits>

#include "common/core.cuh"
#include "common/variant.hpp"
#include "simt/simt.cuh"

namespace df11::dec {

inline constexpr unsigned kAlign = 16;

// Stagings that keep pass 1's symbols per thread, and those that gather exponents (not BF16
// words) in shared memory for the copy-out to merge.
DF11_HD constexpr bool keeps_symbols(Staging s) { return s == Staging::keep || s == Staging::keep_vec; }
DF11_HD constexpr bool exps_in_smem(Staging s) {
  return s == Staging::keep || s == Staging::keep_vec || s == Staging::exp_smem || s == Staging::exp_smem_pf ||
         s == Staging::exp_smem_reg || s == Staging::exp_smem_nh || s == Staging::exp_smem_reg_nh ||
         s == Staging::exp_smem_late;
}
// Stagings that load each thread's chunk into registers as the block starts (RegChunk).
DF11_HD constexpr bool chunk_in_registers(Staging s) {
  return s == Staging::exp_smem_reg || s == Staging::exp_smem_reg_nh;
}
// Whether a decoder hints the bytes it reads next into L2: the fixed-output partition (fix64) the
// next unit's bytes unless exp-smem-nh (exp-smem-late: after this unit's decode, hints_late); the
// others, with exp-smem-reg, the block's sign/mantissa bytes as its range is known and
// (persistent) the next block's first reads.
DF11_HD constexpr bool hints_l2(Partition p, Staging s) {
  return p == Partition::fixed_out ? (s == Staging::exp_smem || s == Staging::exp_smem_late)
                                   : s == Staging::exp_smem_reg;
}
// fix64's hints of the next unit's sign/mantissa bytes and index issued after this unit's decode
// rather than before it (the encoded bytes' hint always follows the decode: it needs the next
// unit's first bit, loaded as this unit starts).
DF11_HD constexpr bool hints_late(Staging s) { return s == Staging::exp_smem_late; }
DF11_HD unsigned align_up(unsigned x) { return (x + kAlign - 1) & ~(kAlign - 1); }

// Shared-memory layout of one block (byte offsets), the same on the device and in emulation.
struct SmemLayout {
  unsigned scan = 0, scan_bytes = 0;    // block scan (2 x TPB uint32) or warp totals
  unsigned table = 0, table_bytes = 0;  // luts copy, multi root, flat root, canonical table
  unsigned multi = 0, flat = 0, canon = 0;  // the multi root, flat root, canonical table in it
  unsigned out = 0, out_bytes = 0;      // smem-out: BF16 outputs of the block
  unsigned slots = 0, slot_bytes = 0;   // keep: symbols of pass 1, chunk_bits per thread (slot_byte)
  unsigned exps = 0, exps_bytes = 0;    // keep: exponents in block order
  unsigned exps_stride = 0;             // warp-count: bytes of each warp's exponent buffer in exps
  // cp.async: the block's encoded bytes + look-ahead; exp-smem-pf: its sign/mantissa bytes (from
  // sm_base); the dyn schedule (block level): two words, the DF11 block taken for the iteration
  // after next (see gap_decode_persistent). One pair of fields for all keeps the kernels'
  // parameter block as it was.
  unsigned input = 0, input_bytes = 0;
  unsigned total = 0;
};

// guard: bytes left unused before and after every region (0 on the device; the host emulation
// leaves some and checks after every block that nothing wrote them).
// max_warp_elements: the warp-count partition's largest warp (HostImage::max_warp_elements).
DF11_HD SmemLayout smem_layout(const VariantSpec& s, int n_rows, unsigned max_block_elements, unsigned guard = 0,
                               unsigned max_warp_elements = 0) {
  SmemLayout l;
  unsigned off = align_up(guard);
  auto take = [&](unsigned bytes, unsigned& at, unsigned& size) {
    at = off;
    size = bytes;
    off = align_up(off + bytes + guard);
  };
  const unsigned tpb = static_cast<unsigned>(s.threads_per_block);
  const unsigned bpt = static_cast<unsigned>(s.bytes_per_thread);
  if (s.partition == Partition::gap_block) take(2 * tpb * 4, l.scan, l.scan_bytes);
  if (s.partition == Partition::gap_warp || s.partition == Partition::thread_count) {
    take((tpb / 32 + 1) * 4, l.scan, l.scan_bytes);
  }
  // The table region: [luts copy] or [multi root][flat root][canonical table], each present
  // or not as the table kind says.
  unsigned table_bytes = 0, flat_at = 0, canon_at = 0;
  if (s.table == TableKind::lut_smem) table_bytes = static_cast<unsigned>(n_rows) * 256;
  if (s.has_multi_root()) table_bytes += align_up((1u << VariantSpec::kFlatBits) * 4);
  flat_at = table_bytes;
  if (s.has_flat_root()) table_bytes += align_up((1u << VariantSpec::kFlatBits) * 2);
  canon_at = table_bytes;
  if (s.has_canon_table()) table_bytes += sizeof(CanonicalTable);
  if (table_bytes) take(table_bytes, l.table, l.table_bytes);
  l.multi = l.table;
  l.flat = l.table + flat_at;
  l.canon = l.table + canon_at;
  if (s.staging == Staging::smem_out || s.staging == Staging::cp_async) take(max_block_elements * 2, l.out, l.out_bytes);
  if (keeps_symbols(s.staging)) take(tpb * bpt * 8, l.slots, l.slot_bytes);
  // Exponents in block order, stored from the 8-aligned element below the block's first (see
  // exp_base), so that 8 of them at an 8-aligned element index are one aligned 8-byte word.
  if (s.partition == Partition::fixed_out) {
    // Each warp's rows: kFixedStride bytes per lane (the lane's kFixedCodes exponents, padded).
    l.exps_stride = 32 * VariantSpec::kFixedStride;
    take(tpb / 32 * l.exps_stride, l.exps, l.exps_bytes);
  } else if (exps_in_smem(s.staging) && s.partition == Partition::warp_count) {
    // One buffer per warp, from the 8-aligned element below the warp's first (see warp_base);
    // without the warps' largest count, the block's (a warp never holds more).
    l.exps_stride = align_up((max_warp_elements != 0 ? max_warp_elements : max_block_elements) + 8);
    take(tpb / 32 * l.exps_stride, l.exps, l.exps_bytes);
  } else if (exps_in_smem(s.staging)) {
    take(max_block_elements + 8, l.exps, l.exps_bytes);
  }
  if (s.staging == Staging::cp_async) take(tpb * bpt + 16, l.input, l.input_bytes);
  // Whole 16-byte pieces from the 16-aligned element at or below the block's first to the
  // 16-aligned one at or past its end: at most max_block_elements + 30 bytes.
  if (s.staging == Staging::exp_smem_pf) take(max_block_elements + 32, l.input, l.input_bytes);
  if (s.schedule == Schedule::dyn && s.partition != Partition::warp_count && s.partition != Partition::fixed_out) {
    take(8, l.input, l.input_bytes);
  }
  l.total = off;
  return l;
}

// Everything a thread of block b needs.
template <class Table>
struct BlockCtx {
  const LaunchParams* p;
  Table table;
  uint64_t block;            // absolute block index
  uint64_t block_first;      // index of the block's first element
  uint64_t block_end;        // one past its last element (clamped to n_elements)
  const uint8_t* input;      // where chunk 0 of the block starts (global stream or staged copy)
  unsigned tpb, bpt;
  uint8_t* smem;
  SmemLayout sl;
};

// Thread chunk `chunk` of the unit (global index), its bytes at `bytes`: where its codes start
// (its gap) and stop.
DF11_HD ChunkSpan chunk_at(const LaunchParams& p, const uint8_t* bytes, uint64_t chunk, unsigned bpt) {
  return {bytes, read_gap<true>(p.gaps, chunk, p.gap_bits), chunk_end_bit(chunk, bpt * 8, p.n_bytes)};
}

template <bool ReadOnlyInput, class Table>
DF11_HD ChunkSpan chunk_span(const BlockCtx<Table>& c, unsigned t) {
  return chunk_at(*c.p, c.input + static_cast<uint64_t>(t) * c.bpt, c.block * c.tpb + t, c.bpt);
}

DF11_HD bool chunk_exists(const LaunchParams& p, uint64_t block, unsigned tpb, unsigned t) {
  return block * tpb + t < p.n_chunks;
}

// What the passes get for a thread's chunk where the staging does not load it into registers:
// nothing, and they read it from memory (chunk_span).
struct NoRegs {};

// chunk_in_registers stagings, as the block starts: thread t's chunk into registers, with its gap
// and end bit. The loads depend on nothing and nothing waits on them before the decode, so they
// are in flight with the block's position and count loads (and, in a kernel that loads its
// tables per block, with the table copy). Unconditional, so that no branch makes the compiler
// wait on them: every thread of an existing block may read its chunk's bytes and gap (the
// stream is padded past the last block, the gaps cover whole blocks plus a byte); a thread
// without a chunk never uses them (its passes return first).
template <int BPT>
DF11_HD RegChunk<BPT> load_thread_chunk(const LaunchParams& p, uint64_t block, unsigned tpb, unsigned t) {
  RegChunk<BPT> r;
  const uint64_t chunk = block * tpb + t;
  const ChunkSpan s = chunk_at(p, p.stream + chunk * BPT, chunk, BPT);
  load_reg_chunk(r, s.chunk);
  r.gap = s.gap;
  r.end_bit = s.end_bit;
  return r;
}

// What a staging holds of thread t's chunk as the block starts: its RegChunk, or nothing.
template <Staging S, int BPT>
DF11_HD auto chunk_regs(const LaunchParams& p, uint64_t block, unsigned tpb, unsigned t) {
  if constexpr (chunk_in_registers(S)) {
    return load_thread_chunk<BPT>(p, block, tpb, t);
  } else {
    return NoRegs{};
  }
}

// The chunk the passes of thread t decode: from memory, or the registers loaded at block start.
template <bool ReadOnlyInput, class Table, class Regs>
DF11_HD auto thread_chunk(const BlockCtx<Table>& c, unsigned t, const Regs& regs) {
  if constexpr (std::is_same_v<Regs, NoRegs>) {
    return chunk_span<ReadOnlyInput>(c, t);
  } else {
    return regs;
  }
}

// Element index whose exponent sits at byte 0 of the shared exponent buffer.
template <class Table>
DF11_HD uint64_t exp_base(const BlockCtx<Table>& c) {
  return c.block_first & ~uint64_t{7};
}

// Direct stores: element idx (exponent e) straight to the output; drops what lies outside the
// block's elements (the final chunk's padding decodes to garbage past n_elements) or outside
// [lo, hi). (The shared-memory stagings write in pass2.)
template <class Table>
DF11_HD void emit_direct(const BlockCtx<Table>& c, uint64_t idx, unsigned e) {
  const LaunchParams& p = *c.p;
  if (idx < c.block_end && idx >= p.lo && idx < p.hi) {
    p.out[idx - p.lo] = merge_bf16(static_cast<uint8_t>(e), p.sign_mantissa[idx]);
  }
}

// Where the keep stagings put symbol k of thread t in their slots region (tpb * bpt * 8 bytes):
// word-interleaved, symbols 4k..4k+3 of every thread in one 4-byte word, thread t's words tpb
// apart. A warp's 32 threads then always hit 32 different banks (word t + multiple of tpb),
// whatever symbol each is at; one bpt*8-byte row per thread would put all 32 in two banks
// (a 64-byte stride for b8: 16-way conflicts on every store and load).
DF11_HD unsigned slot_byte(unsigned t, unsigned k, unsigned tpb) { return ((k >> 2) * tpb + t) * 4 + (k & 3); }

// Pass 1 (scanned partitions): how many codes start in the thread's chunk. The count partition
// reads its stored byte (validated on upload to sum to the block's positions); the two-pass ones
// count by decoding, and the keep stagings also store the symbols.
template <Partition P, Staging S, bool ReadOnlyInput, class Table, class Regs = NoRegs>
DF11_HD unsigned pass1(const BlockCtx<Table>& c, unsigned t, const Regs& regs = {}) {
  static_assert(!(P == Partition::thread_count && keeps_symbols(S)), "counts replace the pass a keep staging keeps");
  if (!chunk_exists(*c.p, c.block, c.tpb, t)) return 0;
  if constexpr (P == Partition::thread_count) return c.p->counts[c.block * c.tpb + t];
  const auto span = thread_chunk<ReadOnlyInput>(c, t, regs);
  if constexpr (keeps_symbols(S)) {
    uint8_t* slots = c.smem + c.sl.slots;
    const unsigned cap = c.bpt * 8, tpb = c.tpb;
    return decode_chunk<ReadOnlyInput>(c.table, span, [&](unsigned k, unsigned e) {
      if (k < cap) slots[slot_byte(t, k, tpb)] = static_cast<uint8_t>(e);
    });
  } else {
    return count_chunk<ReadOnlyInput>(c.table, span);
  }
}

// Pass 2: the thread knows the index of its first element (`first`) and writes its outputs.
// Unchecked: shared-memory stores go unchecked where no code can land past the block (below).
template <Staging S, bool ReadOnlyInput, bool Unchecked = true, class Table, class Regs = NoRegs>
DF11_HD void pass2(const BlockCtx<Table>& c, unsigned t, uint64_t first, unsigned count, const Regs& regs = {}) {
  if (!chunk_exists(*c.p, c.block, c.tpb, t)) return;
  if constexpr (keeps_symbols(S)) {
    const uint8_t* slots = c.smem + c.sl.slots;
    uint8_t* exps = c.smem + c.sl.exps;
    const uint64_t base = exp_base(c);
    const unsigned cap = c.bpt * 8;
    for (unsigned k = 0; k < count && k < cap; ++k) {
      const uint64_t idx = first + k;
      if (idx < c.block_end) exps[idx - base] = slots[slot_byte(t, k, c.tpb)];
    }
  } else if constexpr (S == Staging::direct) {
    const ChunkSpan span = chunk_span<ReadOnlyInput>(c, t);
    decode_chunk<ReadOnlyInput>(c.table, span, [&](unsigned k, unsigned e) { emit_direct(c, first + k, e); });
  } else {
    // Shared-memory stagings: element first + k goes to slot k of this thread's run in the
    // block's buffer, kept while k < room (the block's elements from `first` on). 32-bit offsets
    // from pointers set up once: the decode loop does no 64-bit index arithmetic per code.
    const auto span = thread_chunk<ReadOnlyInput>(c, t, regs);
    // Element counts within one block fit 32 bits (positions are uint32, first >= block_first).
    const unsigned in_block = static_cast<unsigned>(c.block_end - c.block_first);
    const unsigned rel = static_cast<unsigned>(first - c.block_first);
    const unsigned room = rel < in_block ? in_block - rel : 0u;  // no store at all when 0
    // A chunk holds at most bpt * 8 codes (every code is at least a bit long and starts in the
    // chunk, corrupt streams included), so where room is that large (every thread of a block
    // but the last few) no code can land past the block: the stores go unchecked, saving a
    // compare per code in the decode loop.
    const bool roomy = Unchecked && room >= c.bpt * 8;
    auto decode_into = [&](auto store) {  // store(k, e): code k of the chunk, exponent e
      if (roomy) {
        decode_chunk<ReadOnlyInput>(c.table, span, store);
      } else {
        decode_chunk<ReadOnlyInput>(c.table, span, [&store, room](unsigned k, unsigned e) {
          if (k < room) store(k, e);
        });
      }
    };
    if constexpr (S == Staging::exp_smem || S == Staging::exp_smem_pf || chunk_in_registers(S)) {
      const unsigned at = c.sl.exps + static_cast<unsigned>(c.block_first - exp_base(c)) + rel;
      if constexpr (is_counted_table<Table>()) {
        // The thread's `count` codes (no more than the block has room for).
        decode_counted<ReadOnlyInput>(c.table, span, c.bpt, c.smem + at, count < room ? count : room);
      } else {
        decode_into([&c, at](unsigned k, unsigned e) { c.smem[at + k] = static_cast<uint8_t>(e); });
      }
    } else {
      uint16_t* dst = reinterpret_cast<uint16_t*>(c.smem + c.sl.out) + (room ? rel : 0u);
      const uint8_t* sm = c.p->sign_mantissa + (room ? first : c.block_first);
      decode_into([dst, sm](unsigned k, unsigned e) { dst[k] = merge_bf16(static_cast<uint8_t>(e), sm[k]); });
    }
  }
}

// 8 BF16 words from 8 exponents and 8 sign/mantissa bytes (byte k of each: element k), as
// two 64-bit halves of a 16-byte store: word k = sign << 15 | exponent << 7 | mantissa.
struct Words8 {
  uint64_t lo, hi;
};
DF11_HD uint32_t interleave_bytes(uint32_t lo_bytes, uint32_t hi_bytes, bool upper) {
  // Two 16-bit words from bytes 0,1 (upper: 2,3) of each: [lo0 hi0 lo1 hi1].
  return simt::byte_perm(lo_bytes, hi_bytes, upper ? 0x7362u : 0x5140u);
}
DF11_HD uint64_t merge4(uint32_t e4, uint32_t sm4) {
  // Per byte: high byte of the word = sign | exponent >> 1, low byte = exponent bit 0 | mantissa.
  const uint32_t h = (sm4 & 0x80808080u) | ((e4 >> 1) & 0x7F7F7F7Fu);
  const uint32_t l = (sm4 & 0x7F7F7F7Fu) | ((e4 << 7) & 0x80808080u);
  return static_cast<uint64_t>(interleave_bytes(l, h, false)) | (static_cast<uint64_t>(interleave_bytes(l, h, true)) << 32);
}
DF11_HD Words8 merge8(uint64_t e8, uint64_t sm8) {
  return {merge4(static_cast<uint32_t>(e8), static_cast<uint32_t>(sm8)),
          merge4(static_cast<uint32_t>(e8 >> 32), static_cast<uint32_t>(sm8 >> 32))};
}

DF11_HD uint64_t load8(const uint8_t* p) {  // 8-aligned
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint64_t*>(p);
#else
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
#endif
}

// Eight BF16 words (merge8) to 16-aligned output: one 16-byte store on the device.
DF11_HD void store8(uint16_t* out, const Words8& w) {
  uint64_t* o = reinterpret_cast<uint64_t*>(out);
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<ulonglong2*>(o) = make_ulonglong2(w.lo, w.hi);
#else
  o[0] = w.lo;
  o[1] = w.hi;
#endif
}

// exp-smem-pf: element index whose sign/mantissa byte sits at byte 0 of the shared copy.
// cp.async moves 16-byte pieces from 16-aligned global addresses, so these variants need a
// 16-aligned sign/mantissa array: every upload makes one, and the launches refuse any other
// (sign_mantissa_aligned), so the copy-out reads shared memory only (shared loads, not generic
// ones through a pointer that might be either).
template <class Table>
DF11_HD uint64_t sm_base(const BlockCtx<Table>& c) {
  return c.block_first & ~uint64_t{15};
}
DF11_HD bool sign_mantissa_aligned(const LaunchParams& p) {
  return (reinterpret_cast<uintptr_t>(p.sign_mantissa) & 15) == 0;
}
// What the kernel launch and both host runs check first: exp-smem-pf's 16-aligned sign/mantissa
// array, and a stream aligned for exp-smem-reg's bytes_per_thread-byte vector loads (every
// upload's arrays are aligned: the launches refuse what would fault).
inline void check_arrays_aligned(const VariantSpec& spec, const LaunchParams& p) {
  if (spec.staging == Staging::exp_smem_pf && !sign_mantissa_aligned(p)) {
    throw Error(spec.name() + ": the sign/mantissa bytes must be 16-byte aligned (cp.async)");
  }
  if (chunk_in_registers(spec.staging) &&
      (reinterpret_cast<uintptr_t>(p.stream) % static_cast<unsigned>(spec.bytes_per_thread)) != 0) {
    throw Error(spec.name() + ": the encoded stream must be " + std::to_string(spec.bytes_per_thread) +
                "-byte aligned (vector loads of thread chunks)");
  }
}

// exp-smem-reg: L2 hints for the sign/mantissa bytes of elements [first, end), one per 128-byte
// line (thread t of nt), so that the copy-out's loads, a decode later, wait on L2 rather than
// DRAM. Every hinted address is a line start inside [first, end) or `first` itself.
DF11_HD void hint_sign_mantissa(const LaunchParams& p, uint64_t first, uint64_t end, unsigned t, unsigned nt) {
  constexpr unsigned kLine = 128;
  for (uint64_t l = first / kLine + t;; l += nt) {
    const uint64_t at = l * kLine > first ? l * kLine : first;
    if (at >= end) break;
    simt::prefetch_l2(p.sign_mantissa + at);
  }
}

// As soon as the block's element range is known. exp-smem-pf: thread t of tpb starts the copies
// of its 16-byte pieces of the block's sign/mantissa bytes into shared memory; they complete
// during the decode, and the copy-out reads them after cp_async_wait_all and the barrier before
// it (the pieces past n_elements read the upload's 16 padding bytes). exp-smem-reg: L2 hints
// for them instead, no shared memory.
template <Partition P, Staging S, class Table>
DF11_HD void prefetch_sign_mantissa(const BlockCtx<Table>& c, unsigned t) {
  if constexpr (hints_l2(P, S)) {
    hint_sign_mantissa(*c.p, c.block_first, c.block_end, t, c.tpb);
  } else if constexpr (S == Staging::exp_smem_pf) {
    const uint64_t base = sm_base(c);
    const unsigned pieces = static_cast<unsigned>(((c.block_end + 15) & ~uint64_t{15}) - base) / 16;
    uint8_t* dst = c.smem + c.sl.input;
    const uint8_t* src = c.p->sign_mantissa + base;
    for (unsigned i = t; i < pieces; i += c.tpb) simt::cp_async<16>(dst + 16 * i, src + 16 * i);
  }
}

// The exponent stagings' copy-out of elements [from, to) (within [lo, hi)) by thread t of nt:
// exponent of element j at exps[j - base], its sign/mantissa byte at sm[j - sm_at].
template <Staging S>
DF11_HD void copy_out_exps(const LaunchParams& p, const uint8_t* exps, uint64_t base, const uint8_t* sm,
                           uint64_t sm_at, uint64_t from, uint64_t to, unsigned t, unsigned nt) {
  uint64_t a = to, z = to;  // the vector range [a, z)
  if constexpr (S != Staging::keep) {
    const bool aligned = (p.lo & 7) == 0 && (reinterpret_cast<uintptr_t>(p.out) & 15) == 0 &&
                         (reinterpret_cast<uintptr_t>(sm) & 7) == 0;
    if (aligned) {
      a = (from + 7) & ~uint64_t{7};
      z = to & ~uint64_t{7};
      if (a > z) a = z = to;
    }
  }
  for (uint64_t j = from + t; j < a; j += nt) p.out[j - p.lo] = merge_bf16(exps[j - base], sm[j - sm_at]);
  for (uint64_t g = a + 8ull * t; g < z; g += 8ull * nt) {
    store8(p.out + (g - p.lo), merge8(load8(exps + (g - base)), load8(sm + (g - sm_at))));
  }
  for (uint64_t j = z + t; j < to; j += nt) p.out[j - p.lo] = merge_bf16(exps[j - base], sm[j - sm_at]);
}

// After the block's barrier: coalesced copy of the block's outputs to global memory. Scalar
// stagings: thread t takes every tpb-th element. Vector stagings (exp_smem, keep_vec): thread
// t takes every tpb-th group of 8 elements at 8-aligned indices (one 8-byte load of sign/
// mantissa, one of exponents, one 16-byte store), the unaligned head and tail one by one; an
// output range or pointer that does not allow aligned stores falls back to scalar.
template <Staging S, class Table>
DF11_HD void copy_out(const BlockCtx<Table>& c, unsigned t) {
  if constexpr (S == Staging::direct) {
    return;
  } else {
    const LaunchParams& p = *c.p;
    const uint64_t from = c.block_first > p.lo ? c.block_first : p.lo;
    const uint64_t to = c.block_end < p.hi ? c.block_end : p.hi;
    if constexpr (exps_in_smem(S)) {
      // Sign/mantissa byte of element j: sm[j - sm_at], from shared memory where prefetched.
      const uint8_t* sm = S == Staging::exp_smem_pf ? c.smem + c.sl.input : p.sign_mantissa;
      const uint64_t sm_at = S == Staging::exp_smem_pf ? sm_base(c) : 0;
      copy_out_exps<S>(p, c.smem + c.sl.exps, exp_base(c), sm, sm_at, from, to, t, c.tpb);
    } else {
      const uint16_t* o = reinterpret_cast<const uint16_t*>(c.smem + c.sl.out);
      for (uint64_t j = from + t; j < to; j += c.tpb) p.out[j - p.lo] = o[j - c.block_first];
    }
  }
}

// Cooperative copy of the tables into shared memory (thread t of tpb), before a barrier.
DF11_HD void load_tables(const VariantSpec& s, const LaunchParams& p, uint8_t* smem, const SmemLayout& sl, unsigned t,
                         unsigned tpb) {
  if (s.table == TableKind::lut_smem) {
    const unsigned n = static_cast<unsigned>(p.n_rows) * 256;
    for (unsigned i = t; i < n; i += tpb) smem[sl.table + i] = load_byte<true>(p.luts + i);
  }
  if (s.has_multi_root()) {
    uint32_t* multi = reinterpret_cast<uint32_t*>(smem + sl.multi);
    for (unsigned i = t; i < (1u << VariantSpec::kFlatBits); i += tpb) multi[i] = p.multi_root[i];
  }
  if (s.has_flat_root()) {
    // Two entries per 32-bit copy.
    const uint32_t* src = reinterpret_cast<const uint32_t*>(p.flat_root);
    uint32_t* dst = reinterpret_cast<uint32_t*>(smem + sl.flat);
    for (unsigned i = t; i < (1u << VariantSpec::kFlatBits) / 2; i += tpb) dst[i] = src[i];
  }
  if (s.has_canon_table()) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(p.canon);
    uint32_t* dst = reinterpret_cast<uint32_t*>(smem + sl.canon);
    for (unsigned i = t; i < sizeof(CanonicalTable) / 4; i += tpb) dst[i] = src[i];
  }
}

// The table policy of a variant, over its shared-memory copies (after load_tables).
template <TableKind TK>
DF11_HD auto make_table(const LaunchParams& p, uint8_t* smem, const SmemLayout& sl) {
  if constexpr (TK == TableKind::lut_global) {
    return LutTables<true>{p.luts, p.n_rows};
  } else if constexpr (TK == TableKind::lut_smem) {
    return LutTables<false>{smem + sl.table, p.n_rows};
  } else if constexpr (TK == TableKind::flat_lut) {
    return FlatTables<VariantSpec::kFlatBits, LutTables<true>>{reinterpret_cast<const uint16_t*>(smem + sl.flat),
                                                               {p.luts, p.n_rows}};
  } else if constexpr (TK == TableKind::flat_canon) {
    return FlatTables<VariantSpec::kFlatBits, CanonTables>{
        reinterpret_cast<const uint16_t*>(smem + sl.flat), {reinterpret_cast<const CanonicalTable*>(smem + sl.canon)}};
  } else if constexpr (TK == TableKind::multi_lut_w) {
    // The wide root over DF11's chained tables in global memory (no flat root), as multi_lut_ng.
    return WideTables<VariantSpec::kWideBits, LutTables<true>>{reinterpret_cast<const uint32_t*>(smem + sl.multi),
                                                                {p.luts, p.n_rows}};
  } else if constexpr (TK == TableKind::multi_lut_ng) {
    // The multi root over DF11's chained tables in global memory (no flat root).
    return MultiTables<VariantSpec::kFlatBits, LutTables<true>, true>{
        reinterpret_cast<const uint32_t*>(smem + sl.multi), {p.luts, p.n_rows}};
  } else if constexpr (TK == TableKind::multi_lut || TK == TableKind::multi_canon || TK == TableKind::multi_lut_n) {
    // The multi root over the flat tables of the same layout.
    const auto single = make_table<TK == TableKind::multi_canon ? TableKind::flat_canon : TableKind::flat_lut>(p, smem, sl);
    return MultiTables<VariantSpec::kFlatBits, decltype(single), TK == TableKind::multi_lut_n>{
        reinterpret_cast<const uint32_t*>(smem + sl.multi), single};
  } else {
    return CanonTables{reinterpret_cast<const CanonicalTable*>(smem + sl.canon)};
  }
}

// Exclusive scan of one value per thread: Hillis-Steele over a double buffer in shared memory
// (2 * TPB words), the official kernel's kind of block scan.
template <int TPB>
DF11_HD unsigned scan_block_smem(unsigned v, uint32_t* buf) {
  const unsigned t = simt::tid_x();
  uint32_t* a = buf;
  uint32_t* b = buf + TPB;
  a[t] = v;
  simt::sync_block();
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int off = 1; off < TPB; off <<= 1) {
    uint32_t x = a[t];
    if (t >= static_cast<unsigned>(off)) x += a[t - off];
    b[t] = x;
    simt::sync_block();
    uint32_t* tmp = a;
    a = b;
    b = tmp;
  }
  return a[t] - v;
}

// Exclusive scan by warp shuffles: scan in each warp, one shared word per warp, scan of the
// warp totals by warp 0.
template <int TPB>
DF11_HD unsigned scan_block_warp(unsigned v, uint32_t* totals) {
  static_assert(TPB % 32 == 0 && TPB / 32 <= 32, "whole warps, at most 32 of them");
  constexpr int kWarps = TPB / 32;
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5;
  unsigned x = v;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int off = 1; off < 32; off <<= 1) {
    const unsigned y = simt::warp_shfl_up(x, static_cast<unsigned>(off));
    if (lane >= static_cast<unsigned>(off)) x += y;
  }
  if (lane == 31) totals[warp] = x;
  simt::sync_block();
  if (warp == 0) {
    unsigned w = lane < kWarps ? totals[lane] : 0u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int off = 1; off < 32; off <<= 1) {
      const unsigned y = simt::warp_shfl_up(w, static_cast<unsigned>(off));
      if (lane >= static_cast<unsigned>(off)) w += y;
    }
    if (lane < kWarps) totals[lane] = w;
  }
  simt::sync_block();
  return x - v + (warp > 0 ? totals[warp - 1] : 0u);
}

// The per-thread phases of DF11 block b, once the tables (and a cp.async staging of b's
// encoded bytes) are in shared memory behind a barrier: pass 1, the block scan, pass 2.
// Returns the block's context; what pass 2 left in shared memory (smem-out, exponents) is
// complete after the next barrier. Unchecked: pass 2's (a second copy of the decode loop,
// which the fused kernels at batch 16 have no registers for).
// pre: the thread's RegChunk where the caller loaded it already (chunk_in_registers stagings).
template <TableKind TK, Partition P, Staging S, int TPB, int BPT, bool Unchecked = true, class Pre = NoRegs>
DF11_HD auto decode_phases(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, uint64_t b,
                           const Pre& pre = {}) {
  constexpr bool kStaged = S == Staging::cp_async;
  static_assert(!VariantSpec{TK, P, S, TPB, BPT}.counted_loop() ||
                    (P != Partition::thread_pos && exps_in_smem(S) && !keeps_symbols(S)),
                "the counted loop: exponent stagings whose pass 2 knows the thread's count");
  static_assert(TK != TableKind::multi_lut_w, "the wide root's loop stores past a thread's codes: fixed-output rows only");
  const unsigned t = simt::tid_x();
  const auto table = make_table<TK>(p, smem, sl);
  BlockCtx<decltype(table)> c{&p, table, b, 0, 0, kStaged ? smem + sl.input : p.stream + b * (TPB * BPT),
                              TPB, BPT, smem, sl};
  // Register-resident chunks are loaded first, before the positions everything else waits on.
  const auto regs = [&] {
    if constexpr (std::is_same_v<Pre, NoRegs>) {
      return chunk_regs<S, BPT>(p, b, TPB, t);
    } else {
      return pre;
    }
  }();
  if constexpr (P == Partition::thread_pos) {
    c.block_first = p.positions[b * TPB];
    const uint64_t last = (b + 1) * TPB < p.n_chunks ? (b + 1) * TPB : p.n_chunks;
    c.block_end = p.positions[last];
    prefetch_sign_mantissa<P, S>(c, t);
    if (chunk_exists(p, b, TPB, t)) pass2<S, !kStaged, Unchecked>(c, t, p.positions[b * TPB + t], 0, regs);
  } else {
    c.block_first = p.positions[b];
    c.block_end = p.positions[b + 1];
    // exp-smem-reg's hints wait on the positions: after pass 1, whose count load (count
    // partition) then goes out with the positions.
    if constexpr (!chunk_in_registers(S)) prefetch_sign_mantissa<P, S>(c, t);
    const unsigned count = pass1<P, S, !kStaged>(c, t, regs);
    if constexpr (chunk_in_registers(S)) prefetch_sign_mantissa<P, S>(c, t);
    uint32_t* scan = reinterpret_cast<uint32_t*>(smem + sl.scan);
    const unsigned excl =
        P == Partition::gap_block ? scan_block_smem<TPB>(count, scan) : scan_block_warp<TPB>(count, scan);
    pass2<S, !kStaged, Unchecked>(c, t, c.block_first + excl, count, regs);
  }
  return c;
}

// The decode of one block (the bid-th of the launch, in its order), up to the copy-out: tables to
// shared memory, optional cp.async staging of the encoded bytes, a barrier, then
// decode_phases. smem: the block's dynamic shared memory (sl.total bytes).
template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
DF11_HD auto gap_decode_phases(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem) {
  constexpr VariantSpec spec{TK, P, S, TPB, BPT};
  const unsigned t = simt::tid_x();
  const uint64_t b = unit_in_order(p.descending, p.block_begin, p.block_count, simt::bid_x());
  // A register-resident chunk is requested before the table copy, whose barrier it then spans.
  const auto pre = chunk_regs<S, BPT>(p, b, TPB, t);
  load_tables(spec, p, smem, sl, t, TPB);
  if constexpr (S == Staging::cp_async) {
    const uint8_t* src = p.stream + b * (TPB * BPT);
    uint8_t* dst = smem + sl.input;
    simt::cp_async<BPT>(dst + t * BPT, src + t * BPT);
    if (t == 0) simt::cp_async<16>(dst + TPB * BPT, src + TPB * BPT);
    simt::cp_async_wait_all();
  }
  simt::sync_block();
  return decode_phases<TK, P, S, TPB, BPT>(p, sl, smem, b, pre);
}

// ---- The warp-count partition: the warps of a DF11 block apart. ----
// Warp w of DF11 block b decodes the block's chunks 32w..32w+31 (in the count layout: block
// positions + a count byte per chunk). Its first element is the block's plus the counts of the
// block's chunks before the warp's (at most 224 bytes: lane l sums counts 8l..8l+7 while they
// lie before the warp, one shuffle reduction adds them up); the lanes' own counts, scanned by
// shuffles, place each lane's codes. The warp's exponents go to its own shared-memory buffer,
// from the 8-aligned element below its first (warp_base), and the warp copies its element range
// out itself: a __syncwarp where the block-wide stagings need __syncthreads, and no block scan.

// The sum of the 8 bytes of x.
DF11_HD unsigned byte_sum8(uint64_t x) {
  x = (x & 0x00FF00FF00FF00FFull) + ((x >> 8) & 0x00FF00FF00FF00FFull);
  x = (x & 0x0000FFFF0000FFFFull) + ((x >> 16) & 0x0000FFFF0000FFFFull);
  return static_cast<unsigned>((x & 0xFFFFFFFFull) + (x >> 32));
}

// Lane `lane` of warp w of block b: its chunk's code count and its share of the counts before
// the warp. The count array covers whole blocks (zero past the stream), so every lane reads.
struct LaneCounts {
  unsigned count, before;
};
DF11_HD LaneCounts lane_counts(const LaunchParams& p, uint64_t b, unsigned tpb, unsigned w, unsigned lane) {
  const uint8_t* cnt = p.counts + b * tpb;  // 8-aligned: tpb is a multiple of 32
  LaneCounts r{cnt[w * 32 + lane], 0u};
  if (8 * lane < 32 * w) r.before = byte_sum8(load8(cnt + 8 * lane));
  return r;
}

DF11_HD uint64_t warp_base(uint64_t warp_first) { return warp_first & ~uint64_t{7}; }

// The chunk of thread tb of block b as the passes read it: registers loaded before, or memory.
template <int BPT, class Regs>
DF11_HD auto block_thread_chunk(const LaunchParams& p, uint64_t b, unsigned tpb, unsigned tb, const Regs& regs) {
  if constexpr (std::is_same_v<Regs, NoRegs>) {
    const uint64_t chunk = b * tpb + tb;
    return chunk_at(p, p.stream + chunk * BPT, chunk, BPT);
  } else {
    return regs;
  }
}

// A lane's decode: the codes of its chunk, element first on, into the warp's buffer `exps`
// (cap bytes, byte 0 = element base). Stores go unchecked where no code of the chunk can pass
// the buffer's end (a chunk holds at most BPT * 8 codes), as in pass2.
// count: the lane's stored code count (the counted loop decodes that many, at most room).
template <int BPT, class Table, class Chunk>
DF11_HD void warp_lane_decode(const Table& table, const Chunk& chunk, uint8_t* exps, unsigned cap, uint64_t base,
                              uint64_t first, unsigned count) {
  const unsigned rel = static_cast<unsigned>(first - base);
  const unsigned room = rel < cap ? cap - rel : 0u;
  uint8_t* at = exps + (room ? rel : 0u);
  if constexpr (is_counted_table<Table>()) {
    decode_counted<true>(table, chunk, BPT, at, count < room ? count : room);
  } else if (room >= BPT * 8) {
    decode_chunk<true>(table, chunk, [at](unsigned k, unsigned e) { at[k] = static_cast<uint8_t>(e); });
  } else {
    decode_chunk<true>(table, chunk, [at, room](unsigned k, unsigned e) {
      if (k < room) at[k] = static_cast<uint8_t>(e);
    });
  }
}

// exp-smem-reg with persistent warps: while unit u decodes, hints bring the first reads of the
// warp's next unit nu into L2 (its 32 chunks, the first and last byte of their gaps, the
// block's counts and position),
// as prefetch_next_block does for a block. Every address lies inside its buffer (the stream,
// gaps and counts cover whole blocks).
template <int TPB, int BPT>
DF11_HD void hint_next_warp_unit(const LaunchParams& p, uint64_t nu, uint64_t units, unsigned lane) {
  if (nu >= units) return;
  constexpr unsigned kWarps = TPB / 32, kLine = 128;
  const uint64_t b = p.block_begin + nu / kWarps;
  const uint64_t first_chunk = b * TPB + (nu % kWarps) * 32;
  if (lane * kLine < 32 * BPT) {
    simt::prefetch_l2(p.stream + first_chunk * BPT + lane * kLine);
  } else if (lane == 27 || lane == 28) {
    // The warp's 32 gaps (20 bytes at 5 bits) may cross a line: their first and last byte.
    const uint64_t g = first_chunk * static_cast<unsigned>(p.gap_bits) / 8;
    simt::prefetch_l2(p.gaps + g + (lane == 28 ? 32u * static_cast<unsigned>(p.gap_bits) / 8 - 1 : 0u));
  } else if (lane == 29 || lane == 30) {
    simt::prefetch_l2(p.counts + b * TPB + (lane - 29) * (TPB / 2));
  } else if (lane == 31) {
    simt::prefetch_l2(p.positions + b);
  }
}

// A warp's walk over the launch's units, the r-th of base + [0, count) in the launch's order
// (unit_in_order: ascending, or descending), r = first, first + stride, ...; Dyn: its first two
// so, every later r from the launch's counter (work), taken by lane 0 as the unit before it
// starts and passed to the warp by a shuffle at that unit's end. Every unit decoded takes once,
// so count takes wrap the counter back to 0 (atomic_inc). unit(u, nu): unit u and the warp's
// next one (base + count: none), whose hints may go out while u decodes.
template <bool Dyn, class Unit>
DF11_HD void warp_units(uint32_t* work, uint32_t descending, uint64_t base, uint64_t count, uint64_t first,
                        uint64_t stride, unsigned lane, Unit&& unit) {
  auto at = [&](uint64_t r) { return unit_in_order(descending, base, count, r); };
  if constexpr (Dyn) {
    for (uint64_t r = first, nr = first + stride; r < count;) {
      uint32_t taken = 0;
      if (lane == 0) taken = simt::atomic_inc(work, static_cast<uint32_t>(count - 1));
      unit(at(r), at(nr));
      r = nr;
      nr = 2 * stride + simt::warp_shfl(taken, 0);
    }
  } else {
    for (uint64_t r = first; r < count; r += stride) unit(at(r), at(r + stride));
  }
}

// The warp-count kernel body: the tables once per CUDA block, then each warp on its own over
// the launch's (DF11 block, warp) units warp_id, + warps in the grid, ..., in its order (a
// launch of block_count CUDA blocks gives every warp one unit; a persistent launch, fewer and
// loops; Dyn: warp_units).
template <TableKind TK, Staging S, int TPB, int BPT, bool Dyn = false>
DF11_HD void gap_decode_warps(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem) {
  static_assert(S == Staging::exp_smem || chunk_in_registers(S), "the warp-count partition stages exponents");
  static_assert(TPB % 32 == 0, "whole warps");
  static_assert(TK != TableKind::multi_lut_w, "the wide root's loop stores past a thread's codes: fixed-output rows only");
  constexpr VariantSpec spec{TK, Partition::warp_count, S, TPB, BPT};
  constexpr unsigned kWarps = TPB / 32;
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5;
  load_tables(spec, p, smem, sl, t, TPB);
  simt::sync_block();  // the only block barrier
  const auto table = make_table<TK>(p, smem, sl);
  uint8_t* exps = smem + sl.exps + warp * sl.exps_stride;
  const uint64_t units = static_cast<uint64_t>(p.block_count) * kWarps;
  const uint64_t stride = static_cast<uint64_t>(simt::gdim_x()) * kWarps;
  // Unit u, and nu the warp's next one (its hints go out while u decodes).
  auto decode_unit = [&](uint64_t u, uint64_t nu) {
    const uint64_t b = p.block_begin + u / kWarps;
    const unsigned w = static_cast<unsigned>(u % kWarps), tb = w * 32 + lane;
    const auto regs = chunk_regs<S, BPT>(p, b, TPB, tb);
    const LaneCounts lc = lane_counts(p, b, TPB, w, lane);
    const uint64_t block_first = p.positions[b];
    // After this unit's first loads are out: the next unit's hints.
    if constexpr (hints_l2(Partition::warp_count, S)) hint_next_warp_unit<TPB, BPT>(p, nu, units, lane);
    unsigned before = lc.before, total = lc.count, incl = lc.count;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (unsigned o = 16; o > 0; o >>= 1) {
      before += simt::warp_shfl_xor(before, o);
      total += simt::warp_shfl_xor(total, o);
    }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (unsigned o = 1; o < 32; o <<= 1) {
      const unsigned y = simt::warp_shfl_up(incl, o);
      if (lane >= o) incl += y;
    }
    const uint64_t first = block_first + before, end = first + total, base = warp_base(first);
    if constexpr (hints_l2(Partition::warp_count, S)) hint_sign_mantissa(p, first, end, lane, 32);
    if (b * TPB + tb < p.n_chunks) {
      warp_lane_decode<BPT>(table, block_thread_chunk<BPT>(p, b, TPB, tb, regs), exps, sl.exps_stride, base,
                            first + incl - lc.count, lc.count);
    }
    simt::sync_warp();  // the warp's exponents are complete
    copy_out_exps<S>(p, exps, base, p.sign_mantissa, 0, first > p.lo ? first : p.lo, end < p.hi ? end : p.hi, lane,
                     32);
    simt::sync_warp();  // the buffer is the next unit's
  };
  warp_units<Dyn>(p.work, p.descending, 0, units, static_cast<uint64_t>(simt::bid_x()) * kWarps + warp, stride, lane,
                  decode_unit);
}

// ---- The fixed-output partition: 64 codes per thread, positions implicit. ----
// Unit u (a warp's work): threads 32u..32u+31, elements [u * kUnit, (u + 1) * kUnit) of the unit.
// Lane l decodes its kFixedCodes codes from the bit positions[u] + lane_off[32u + l] into its row
// of the warp's shared memory (l * kFixedStride), with the counted loop; then the warp copies the
// unit's elements within [lo, hi) out: 8 at a time (group G of the unit: row G / 8, byte 8 * (G %
// 8); a group never straddles two rows), merged with their sign/mantissa bytes into one 16-byte
// store, or one by one where the output range or pointer does not allow aligned stores.
inline constexpr uint64_t kFixedUnit = 32 * static_cast<uint64_t>(VariantSpec::kFixedCodes);

DF11_HD unsigned fixed_exp_at(uint64_t rel) {  // byte of element rel (of its unit) in the warp's rows
  constexpr unsigned kN = VariantSpec::kFixedCodes;
  return static_cast<unsigned>(rel / kN) * VariantSpec::kFixedStride + static_cast<unsigned>(rel % kN);
}

DF11_HD void copy_out_fixed(const LaunchParams& p, const uint8_t* rows, uint64_t unit_first, uint64_t from,
                            uint64_t to, unsigned lane) {
  uint64_t a = to, z = to;  // the vector range [a, z)
  const bool aligned = (p.lo & 7) == 0 && (reinterpret_cast<uintptr_t>(p.out) & 15) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.sign_mantissa) & 7) == 0;
  if (aligned) {
    a = (from + 7) & ~uint64_t{7};
    z = to & ~uint64_t{7};
    if (a > z) a = z = to;
  }
  for (uint64_t j = from + lane; j < a; j += 32) {
    p.out[j - p.lo] = merge_bf16(rows[fixed_exp_at(j - unit_first)], p.sign_mantissa[j]);
  }
  // A step of 32 groups (256 elements) is 256 / kFixedCodes rows further, at the same byte of its row.
  static_assert(256 % VariantSpec::kFixedCodes == 0 && kFixedUnit % (8 * 32 * 4) == 0,
                "a step of the vector loop is whole rows; a unit is whole steps of four groups a lane");
  constexpr unsigned kStep = 256 / VariantSpec::kFixedCodes * VariantSpec::kFixedStride;
  unsigned e_at = fixed_exp_at(a + 8ull * lane - unit_first);
  if (a == unit_first && z == unit_first + kFixedUnit) {
    // A whole unit (the common case): 8 groups a lane, at constant offsets from one address each,
    // the sign/mantissa loads four at a time ahead of their use (a loop with a bound test between
    // groups waits on each load in turn).
    constexpr unsigned kGroups = kFixedUnit / (8 * 32);
    const uint8_t* sm = p.sign_mantissa + a + 8ull * lane;
    uint16_t* o = p.out + (a + 8ull * lane - p.lo);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (unsigned h = 0; h < kGroups; h += 4) {
      uint64_t smv[4];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (unsigned k = 0; k < 4; ++k) smv[k] = load8(sm + 256 * (h + k));
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
      for (unsigned k = 0; k < 4; ++k) {
        store8(o + 256 * (h + k), merge8(load8(rows + e_at + (h + k) * kStep), smv[k]));
      }
    }
    return;
  }
  for (uint64_t g = a + 8ull * lane; g < z; g += 8ull * 32, e_at += kStep) {
    store8(p.out + (g - p.lo), merge8(load8(rows + e_at), load8(p.sign_mantissa + g)));
  }
  for (uint64_t j = z + lane; j < to; j += 32) {
    p.out[j - p.lo] = merge_bf16(rows[fixed_exp_at(j - unit_first)], p.sign_mantissa[j]);
  }
}

// Lane `lane` of unit u: its codes into its row (rows: the warp's).
template <class Table>
DF11_HD void fixed_lane_decode(const LaunchParams& p, const Table& table, uint8_t* rows, uint64_t u, unsigned lane) {
  constexpr uint64_t kN = VariantSpec::kFixedCodes;
  const uint64_t g = 32 * u + lane, first = g * kN;
  if (first >= p.n_elements) return;
  const unsigned cnt = static_cast<unsigned>(p.n_elements - first < kN ? p.n_elements - first : kN);
  // The stream as native-order words (derive_fixed_index), 4-aligned in every image.
  const WordStreamAt at{reinterpret_cast<const uint32_t*>(p.stream), p.positions[u] + p.lane_off[g]};
  decode_counted<true>(table, at, 0u, rows + lane * VariantSpec::kFixedStride, cnt);
}

// While unit u decodes, L2 hints for what the warp's next unit nu reads first: its sign/mantissa
// bytes (16 lines, lanes 0-15), its index (lanes 16, 17), and, once `nu_bit` (its first code's
// bit, loaded as u starts) is in, its encoded bytes (lanes 18-25: ~170 bits a lane, 680 bytes a
// unit on the Nemo layer; a unit of longer codes gets the rest from DRAM). Every address lies
// inside its array (the host runs read each hinted byte, so the sanitizer builds check it).
DF11_HD void hint_next_fixed_unit(const LaunchParams& p, uint64_t nu, unsigned lane) {
  constexpr unsigned kLine = 128;
  if (lane < 16) {
    const uint64_t at = nu * kFixedUnit + static_cast<uint64_t>(lane) * kLine;
    if (at < p.n_elements) simt::prefetch_l2(p.sign_mantissa + at);
  } else if (lane == 16) {
    simt::prefetch_l2(p.positions + nu);
  } else if (lane == 17) {
    simt::prefetch_l2(p.lane_off + 32 * nu);
  }
}
DF11_HD void hint_next_fixed_stream(const LaunchParams& p, uint32_t nu_bit, unsigned lane) {
  constexpr unsigned kLine = 128;
  if (lane >= 18 && lane < 26) {
    const uint64_t at = nu_bit / 8 + static_cast<uint64_t>(lane - 18) * kLine;
    if (at < p.n_bytes) simt::prefetch_l2(p.stream + at);
  }
}

// Unit u's lanes decoded into the warp's rows (fixed_lane_decode) while the warp's next unit nu
// (has_next: there is one) is hinted into L2 as staging S says (hints_l2, hints_late): its first
// bit loaded as u starts (one broadcast load, in flight during the decode), its sign/mantissa
// bytes and index before the decode (or after it, exp-smem-late), its encoded bytes after it.
// The fix64 decoder and the fused kernels over its units alike (Index: their unit numbers' type,
// 64 or 32 bits, which their address arithmetic keeps).
template <Staging S, class Table, class Index>
DF11_HD void fixed_unit_decode_hinted(const LaunchParams& p, const Table& table, uint8_t* rows, Index u, Index nu,
                                      bool has_next, unsigned lane) {
  const bool next = hints_l2(Partition::fixed_out, S) && has_next;
  const uint32_t nu_bit = next ? p.positions[nu] : 0u;
  if (next && !hints_late(S)) hint_next_fixed_unit(p, nu, lane);
  fixed_lane_decode(p, table, rows, u, lane);
  if (next && hints_late(S)) hint_next_fixed_unit(p, nu, lane);
  if (next) hint_next_fixed_stream(p, nu_bit, lane);
}

// The kernel body (grid or persistent alike): the tables once per CUDA block, then each warp on
// its own over the launch's units warp_id, + warps in the grid, ..., in its order (__syncwarp
// only; Dyn: warp_units).
template <TableKind TK, Staging S, int TPB, int BPT, bool Dyn = false>
DF11_HD void gap_decode_fixed(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem) {
  static_assert(VariantSpec{TK, Partition::fixed_out, S, TPB, BPT}.counted_loop() &&
                    (S == Staging::exp_smem || S == Staging::exp_smem_nh || S == Staging::exp_smem_late),
                "the fixed-output partition: the counted loop, exponents in shared memory");
  static_assert(TPB % 32 == 0, "whole warps");
  static_assert(TK != TableKind::multi_lut_w || VariantSpec::kFixedStride >= VariantSpec::kFixedCodes + kWideOverrun,
                "the wide root's loop stores up to 4 bytes past a lane's codes, into its row's padding");
  constexpr VariantSpec spec{TK, Partition::fixed_out, S, TPB, BPT};
  constexpr unsigned kWarps = TPB / 32;
  const unsigned t = simt::tid_x(), lane = t & 31u, warp = t >> 5;
  load_tables(spec, p, smem, sl, t, TPB);
  simt::sync_block();  // the only block barrier
  const auto table = make_table<TK>(p, smem, sl);
  uint8_t* rows = smem + sl.exps + warp * sl.exps_stride;
  const uint64_t end = static_cast<uint64_t>(p.block_begin) + p.block_count;
  const uint64_t stride = static_cast<uint64_t>(simt::gdim_x()) * kWarps;
  // Unit u, then nu the warp's next one (end: none).
  auto unit = [&](uint64_t u, uint64_t nu) {
    fixed_unit_decode_hinted<S>(p, table, rows, u, nu, nu < end, lane);
    simt::sync_warp();  // the warp's exponents are complete
    const uint64_t first = u * kFixedUnit;
    const uint64_t last = first + kFixedUnit < p.n_elements ? first + kFixedUnit : p.n_elements;
    const uint64_t from = first > p.lo ? first : p.lo, to = last < p.hi ? last : p.hi;
    // An early launch (Start::early) decodes up to here beside the kernel before it, which may
    // still read the output buffer: no global store before that kernel is done.
    simt::grid_dependency_wait();
    if (from < to) copy_out_fixed(p, rows, first, from, to, lane);
    simt::sync_warp();  // the rows are the next unit's
  };
  const uint64_t warp_first = static_cast<uint64_t>(simt::bid_x()) * kWarps + warp;
  warp_units<Dyn>(p.work, p.descending, p.block_begin, p.block_count, warp_first, stride, lane, unit);
  simt::grid_dependency_wait();  // a warp without units too: the grid ends after the one before it
}

// After decode_phases, but for direct stores: the block's barrier (exp-smem-pf: once this
// thread's copies have landed; the barrier makes everyone's visible) and the coalesced copy-out.
template <Staging S, class Ctx>
DF11_HD void barrier_and_copy_out(const Ctx& c, unsigned t) {
  if constexpr (S != Staging::direct) {
    if constexpr (S == Staging::exp_smem_pf) simt::cp_async_wait_all();
    simt::sync_block();
    copy_out<S>(c, t);
  }
}

// The whole kernel body for one block: the decode, then the barrier and the copy-out.
template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
DF11_HD void gap_decode_block(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem) {
  if constexpr (P == Partition::warp_count) {
    gap_decode_warps<TK, S, TPB, BPT>(p, sl, smem);
  } else if constexpr (P == Partition::fixed_out) {
    gap_decode_fixed<TK, S, TPB, BPT>(p, sl, smem);
  } else {
    barrier_and_copy_out<S>(gap_decode_phases<TK, P, S, TPB, BPT>(p, sl, smem), simt::tid_x());
  }
}

// exp-smem-pf and -reg in persistent blocks: while DF11 block b decodes, hints bring what the next one
// of this CUDA block (nb) reads first into L2: its encoded bytes, its gaps, its count bytes and
// its positions, so that the first loads of its pass 1 and 2 wait on L2, not DRAM. One hint per
// 128-byte line, every address inside its buffer (the stream is padded past the last block).
template <Partition P, int TPB, int BPT>
DF11_HD void prefetch_next_block(const LaunchParams& p, uint64_t nb, uint64_t end, unsigned t) {
  if (nb >= end) return;
  constexpr unsigned kLine = 128;
  const uint64_t first_chunk = nb * TPB;
  if (t * kLine < static_cast<unsigned>(TPB * BPT)) simt::prefetch_l2(p.stream + first_chunk * BPT + t * kLine);
  const uint64_t gap_byte = first_chunk * static_cast<unsigned>(p.gap_bits) / 8;
  const uint64_t gap_end = (p.n_chunks * static_cast<unsigned>(p.gap_bits) + 7) / 8;
  if (t * kLine < static_cast<unsigned>(TPB * p.gap_bits / 8 + 1) && gap_byte + t * kLine < gap_end) {
    simt::prefetch_l2(p.gaps + gap_byte + t * kLine);
  }
  if constexpr (P == Partition::thread_count) {
    if (t * kLine < static_cast<unsigned>(TPB) && first_chunk + t * kLine < p.n_chunks) {
      simt::prefetch_l2(p.counts + first_chunk + t * kLine);
    }
  }
  if constexpr (P != Partition::thread_pos) {
    if (t == 0) simt::prefetch_l2(p.positions + nb);
  }
}

// Host runs (SIMT executor) of persistent kernels use at most this many CUDA blocks, so that
// they loop over DF11 blocks as on a GPU.
inline constexpr unsigned kSimtPersistentGrid = 3;

// CUDA blocks of a grid-schedule launch over `count` DF11 blocks: one each, or (fixed_out) one
// unit a warp, TPB / 32 units a CUDA block. The device launch and its SIMT run both use it.
template <Partition P, int TPB>
constexpr uint64_t grid_schedule_blocks(uint64_t count) {
  return P == Partition::fixed_out ? (count + TPB / 32 - 1) / (TPB / 32) : count;
}

// The kernel body of persistent blocks: the launch has about as many CUDA blocks as fit on the
// GPU at once, each loads the tables once and decodes the launch's DF11 blocks bid, bid +
// gridDim, ... of block_count, in the launch's order (unit_in_order). Shared memory is reused
// from one DF11 block to the next, so every iteration ends with a barrier (the next pass 2 and
// scan overwrite what this copy-out and scan read). The table load, 8 to 24 KB per DF11 block of 4 KB of stream
// otherwise, is paid once per CUDA block.
// Dyn: the CUDA block's first two DF11 blocks so (bid and bid + grid), every later one from the
// launch's counter (p.work, 0 as the launch starts): thread 0 takes the one after next as an
// iteration starts and leaves it in one of two shared words (input region) before the closing
// barrier; everyone reads it after the barrier, and the next write goes to the other word, so
// no word is written while anyone may still read it. A CUDA block that starts late (another
// stream's GEMM held its SM) then takes fewer DF11 blocks instead of ending a share late. Every
// iteration decodes one DF11 block and takes once, so a launch takes exactly block_count times,
// and atomic_inc with that limit leaves the counter at 0 for the next launch (no memset; the
// SIMT runs check it).
template <TableKind TK, Partition P, Staging S, int TPB, int BPT, bool Dyn = false>
DF11_HD void gap_decode_persistent(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem) {
  static_assert(S != Staging::cp_async, "persistent blocks read the stream in place");
  static_assert(!Dyn || S != Staging::exp_smem_pf, "the dyn schedule keeps its words where exp-smem-pf stages");
  if constexpr (P == Partition::warp_count) {
    gap_decode_warps<TK, S, TPB, BPT, Dyn>(p, sl, smem);  // its units loop already
  } else if constexpr (P == Partition::fixed_out) {
    gap_decode_fixed<TK, S, TPB, BPT, Dyn>(p, sl, smem);  // so does this one's
  } else if constexpr (Dyn) {
    constexpr VariantSpec spec{TK, P, S, TPB, BPT};
    const unsigned t = simt::tid_x();
    load_tables(spec, p, smem, sl, t, TPB);
    simt::sync_block();
    auto* next = reinterpret_cast<uint32_t*>(smem + sl.input);
    const uint64_t count = p.block_count, end = p.block_begin + count, grid = simt::gdim_x();
    auto at = [&](uint64_t r) { return unit_in_order(p.descending, p.block_begin, count, r); };
    uint64_t r = simt::bid_x(), nr = r + grid;
    for (unsigned i = 0; r < count; ++i) {
      uint32_t taken = 0;
      if (t == 0) taken = simt::atomic_inc(p.work, p.block_count - 1u);
      if constexpr (hints_l2(P, S)) prefetch_next_block<P, TPB, BPT>(p, at(nr), end, t);
      barrier_and_copy_out<S>(decode_phases<TK, P, S, TPB, BPT>(p, sl, smem, at(r)), t);
      if (t == 0) next[i & 1u] = taken;
      simt::sync_block();
      r = nr;
      nr = 2 * grid + next[i & 1u];
    }
  } else {
    constexpr VariantSpec spec{TK, P, S, TPB, BPT};
    const unsigned t = simt::tid_x();
    load_tables(spec, p, smem, sl, t, TPB);
    simt::sync_block();
    const uint64_t count = p.block_count, end = p.block_begin + count, grid = simt::gdim_x();
    auto at = [&](uint64_t r) { return unit_in_order(p.descending, p.block_begin, count, r); };
    for (uint64_t r = simt::bid_x(); r < count; r += grid) {
      if constexpr (S == Staging::exp_smem_pf || hints_l2(P, S)) {
        prefetch_next_block<P, TPB, BPT>(p, at(r + grid), end, t);
      }
      barrier_and_copy_out<S>(decode_phases<TK, P, S, TPB, BPT>(p, sl, smem, at(r)), t);
      simt::sync_block();
    }
  }
}

}  // namespace df11::dec
