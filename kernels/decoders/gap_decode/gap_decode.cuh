// The gap-partitioned decoder family: every variant of table scheme x partition x staging as
// one template. The per-thread phases are __host__ __device__: the kernel (gap_decode.cu) calls
// them with threadIdx and __syncthreads between phases; the host emulation
// (gap_decode_host.cpp) calls them for every thread of a block in turn, with the same shared
// memory layout in a host buffer.
#pragma once

#include <cstdint>

#include "common/core.cuh"
#include "common/variant.hpp"

namespace df11::dec {

inline constexpr unsigned kAlign = 16;
DF11_HD unsigned align_up(unsigned x) { return (x + kAlign - 1) & ~(kAlign - 1); }

// Shared-memory layout of one block (byte offsets), the same on the device and in emulation.
struct SmemLayout {
  unsigned scan = 0, scan_bytes = 0;    // block scan (2 x TPB uint32) or warp totals
  unsigned table = 0, table_bytes = 0;  // luts copy, flat root, canonical table
  unsigned canon = 0;                   // canonical table inside the table region
  unsigned out = 0, out_bytes = 0;      // smem-out: BF16 outputs of the block
  unsigned slots = 0, slot_bytes = 0;   // keep: symbols of pass 1, chunk_bits per thread
  unsigned exps = 0, exps_bytes = 0;    // keep: exponents in block order
  unsigned input = 0, input_bytes = 0;  // cp.async: the block's encoded bytes + look-ahead
  unsigned total = 0;
};

DF11_HD SmemLayout smem_layout(const VariantSpec& s, int n_rows, unsigned max_block_elements) {
  SmemLayout l;
  unsigned off = 0;
  auto take = [&](unsigned bytes, unsigned& at, unsigned& size) {
    at = off;
    size = bytes;
    off = align_up(off + bytes);
  };
  const unsigned tpb = static_cast<unsigned>(s.threads_per_block);
  const unsigned bpt = static_cast<unsigned>(s.bytes_per_thread);
  if (s.partition == Partition::gap_block) take(2 * tpb * 4, l.scan, l.scan_bytes);
  if (s.partition == Partition::gap_warp) take((tpb / 32 + 1) * 4, l.scan, l.scan_bytes);
  unsigned table_bytes = 0;
  switch (s.table) {
    case TableKind::lut_global: break;
    case TableKind::lut_smem: table_bytes = static_cast<unsigned>(n_rows) * 256; break;
    case TableKind::flat_lut: table_bytes = (1u << VariantSpec::kFlatBits) * 2; break;
    case TableKind::flat_canon: table_bytes = align_up((1u << VariantSpec::kFlatBits) * 2) + sizeof(CanonicalTable); break;
    case TableKind::canon: table_bytes = sizeof(CanonicalTable); break;
  }
  if (table_bytes) take(table_bytes, l.table, l.table_bytes);
  l.canon = s.table == TableKind::flat_canon ? l.table + align_up((1u << VariantSpec::kFlatBits) * 2) : l.table;
  if (s.staging == Staging::smem_out || s.staging == Staging::cp_async) take(max_block_elements * 2, l.out, l.out_bytes);
  if (s.staging == Staging::keep) {
    take(tpb * bpt * 8, l.slots, l.slot_bytes);
    take(max_block_elements, l.exps, l.exps_bytes);
  }
  if (s.staging == Staging::cp_async) take(tpb * bpt + 16, l.input, l.input_bytes);
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

template <bool ReadOnlyInput, class Table>
DF11_HD ChunkSpan chunk_span(const BlockCtx<Table>& c, unsigned t) {
  const uint64_t chunk = c.block * c.tpb + t;
  const unsigned chunk_bits = c.bpt * 8;
  return {c.input + static_cast<uint64_t>(t) * c.bpt, read_gap<true>(c.p->gaps, chunk, c.p->gap_bits),
          chunk_end_bit(chunk, chunk_bits, c.p->n_bytes)};
}

DF11_HD bool chunk_exists(const LaunchParams& p, uint64_t block, unsigned tpb, unsigned t) {
  return block * tpb + t < p.n_chunks;
}

// Writes element idx (exponent e) the way the staging says; drops what lies outside the block's
// elements (the final chunk's padding decodes to garbage past n_elements) or outside [lo, hi).
template <Staging S, class Table>
DF11_HD void emit_element(const BlockCtx<Table>& c, uint64_t idx, unsigned e) {
  if (idx >= c.block_end) return;
  const LaunchParams& p = *c.p;
  if constexpr (S == Staging::direct) {
    if (idx >= p.lo && idx < p.hi) p.out[idx - p.lo] = merge_bf16(static_cast<uint8_t>(e), p.sign_mantissa[idx]);
  } else {
    uint16_t* o = reinterpret_cast<uint16_t*>(c.smem + c.sl.out);
    o[idx - c.block_first] = merge_bf16(static_cast<uint8_t>(e), p.sign_mantissa[idx]);
  }
}

// Pass 1 (two-pass partitions): count the thread's codes; the keep staging also stores them.
template <Staging S, bool ReadOnlyInput, class Table>
DF11_HD unsigned pass1(const BlockCtx<Table>& c, unsigned t) {
  if (!chunk_exists(*c.p, c.block, c.tpb, t)) return 0;
  const ChunkSpan span = chunk_span<ReadOnlyInput>(c, t);
  if constexpr (S == Staging::keep) {
    uint8_t* slot = c.smem + c.sl.slots + static_cast<uint64_t>(t) * c.bpt * 8;
    const unsigned cap = c.bpt * 8;
    return decode_chunk<ReadOnlyInput>(c.table, span, [&](unsigned k, unsigned e) {
      if (k < cap) slot[k] = static_cast<uint8_t>(e);
    });
  } else {
    return count_chunk<ReadOnlyInput>(c.table, span);
  }
}

// Pass 2: the thread knows the index of its first element (`first`) and writes its outputs.
template <Staging S, bool ReadOnlyInput, class Table>
DF11_HD void pass2(const BlockCtx<Table>& c, unsigned t, uint64_t first, unsigned count) {
  if (!chunk_exists(*c.p, c.block, c.tpb, t)) return;
  if constexpr (S == Staging::keep) {
    const uint8_t* slot = c.smem + c.sl.slots + static_cast<uint64_t>(t) * c.bpt * 8;
    uint8_t* exps = c.smem + c.sl.exps;
    const unsigned cap = c.bpt * 8;
    for (unsigned k = 0; k < count && k < cap; ++k) {
      const uint64_t idx = first + k;
      if (idx < c.block_end) exps[idx - c.block_first] = slot[k];
    }
  } else {
    const ChunkSpan span = chunk_span<ReadOnlyInput>(c, t);
    decode_chunk<ReadOnlyInput>(c.table, span, [&](unsigned k, unsigned e) { emit_element<S>(c, first + k, e); });
  }
}

// After the block's barrier: coalesced copy of the block's outputs to global memory, thread t
// taking every tpb-th element.
template <Staging S, class Table>
DF11_HD void copy_out(const BlockCtx<Table>& c, unsigned t) {
  if constexpr (S == Staging::direct) {
    return;
  } else {
    const LaunchParams& p = *c.p;
    const uint64_t from = c.block_first > p.lo ? c.block_first : p.lo;
    const uint64_t to = c.block_end < p.hi ? c.block_end : p.hi;
    if constexpr (S == Staging::keep) {
      const uint8_t* exps = c.smem + c.sl.exps;
      for (uint64_t j = from + t; j < to; j += c.tpb) {
        p.out[j - p.lo] = merge_bf16(exps[j - c.block_first], p.sign_mantissa[j]);
      }
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
  if (s.table == TableKind::flat_lut || s.table == TableKind::flat_canon) {
    uint16_t* root = reinterpret_cast<uint16_t*>(smem + sl.table);
    for (unsigned i = t; i < (1u << VariantSpec::kFlatBits); i += tpb) root[i] = p.flat_root[i];
  }
  if (s.table == TableKind::flat_canon || s.table == TableKind::canon) {
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
    return FlatTables<VariantSpec::kFlatBits, LutTables<true>>{reinterpret_cast<const uint16_t*>(smem + sl.table),
                                                               {p.luts, p.n_rows}};
  } else if constexpr (TK == TableKind::flat_canon) {
    return FlatTables<VariantSpec::kFlatBits, CanonTables>{
        reinterpret_cast<const uint16_t*>(smem + sl.table), {reinterpret_cast<const CanonicalTable*>(smem + sl.canon)}};
  } else {
    return CanonTables{reinterpret_cast<const CanonicalTable*>(smem + sl.canon)};
  }
}

}  // namespace df11::dec
