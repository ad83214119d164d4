// A decoder variant as data: the point it takes on each axis of the design space. The kernel
// templates and the host emulation are instantiated from it; register_all lists the specs.
#pragma once

#include <string>

#include "codec/common.hpp"
#include "codec/layout.hpp"
#include "decoder.hpp"

namespace df11::dec {

enum class TableKind : uint8_t {
  lut_global,  // DF11 chained tables in global memory, read through the read-only cache (official)
  lut_smem,    // the same tables copied into shared memory
  flat_lut,    // flat 2^12 root (shared) + chained tables (global) for longer codes; any DF11 code
  flat_canon,  // flat 2^12 root (shared) + canonical limits (shared) for longer codes
  canon,       // canonical limits only (shared), no large table
  // Multi-symbol roots: 2^12 uint32 entries of up to 3 codes each (shared), over the flat root.
  // Appended, so the other kinds keep their numbers in kernel names (kernel_resources.json).
  multi_lut,    // multi root + flat_lut (any DF11 code)
  multi_canon,  // multi root + flat_canon
  // multi_lut read by the counted decode loop (decode_counted): runs bounded by the thread's code
  // count rather than its bits, three symbol bytes stored per lookup. Exponent stagings of the
  // partitions whose decode knows each thread's count: all but thread_pos.
  multi_lut_n,
  // multi_lut_n with the single-symbol lookups (codes longer than the root; a thread's last one
  // or two codes) through DF11's chained tables in global memory (read-only cache) instead of a
  // flat root in shared memory: 8 KB less shared memory per CUDA block.
  multi_lut_ng,
  // multi_lut_ng with a wide root: 2^11 entries of 8 bytes (the same 16 KB), up to five codes a
  // lookup (kWideMaxCodes), five symbol bytes stored per lookup. Only where a thread's exponents
  // have 4 bytes of its own past its last code to take the extra stores: the fixed-output
  // partition's lanes (kFixedStride - kFixedCodes = 8).
  multi_lut_w,
};

enum class Partition : uint8_t {
  gap_block,   // gaps + per-block positions, block scan in shared memory, two passes (official)
  gap_warp,    // the same with a warp-shuffle scan
  thread_pos,  // gaps + per-thread positions: one pass, no scan
  // gaps + block positions + each thread's code count (a byte, PositionScheme::count): the
  // warp-shuffle scan runs over the stored counts, so the codes are decoded once.
  thread_count,
  // The count layout again, with no block scan and no block barrier: each warp sums the counts
  // of the block's threads before it (8 bytes per lane, one shuffle reduction), decodes into its
  // own shared-memory buffer and copies its own element range out, so the warps of a block run
  // apart (persistent: each warp loops over (block, warp) units on its own).
  warp_count,
  // Fixed output per thread (ours, derived on upload from DF11's layout): thread g decodes codes
  // [g * kFixedCodes, (g + 1) * kFixedCodes), starting at a bit the upload finds by walking the
  // stream once (a uint32 per warp of threads, a uint16 per thread: 0.27 bits per weight). Every
  // thread's elements are implicit, so no gaps, counts or DF11 block positions are read and no scan
  // runs, and the only block barrier is the table copy's; every
  // lane of a warp decodes the same number of codes (the count partitions' lanes differ by their
  // chunks' code counts, and a warp waits for its slowest lane); each warp decodes into its own
  // shared-memory rows and copies its own 32 * kFixedCodes elements out.
  fixed_out,
};

enum class Staging : uint8_t {
  smem_out,  // outputs through a shared-memory buffer, then coalesced stores (official)
  direct,    // each thread stores its outputs straight to global memory
  keep,      // pass 1 keeps its symbols in shared memory, pass 2 only scatters them
  cp_async,  // the block's encoded bytes staged into shared memory with cp.async; smem-out
  exp_smem,  // pass 2 writes exponent bytes to shared memory; the copy-out merges them with the
             // sign/mantissa bytes 8 at a time (8-byte loads, 16-byte stores)
  keep_vec,  // keep, with exp_smem's vectorized merge on the way out
  exp_smem_pf,  // exp_smem, and the block's sign/mantissa bytes copied into shared memory with
                // cp.async as the block starts, so their DRAM latency passes during the decode
                // instead of stalling the copy-out (last here: the others keep their template ids)
  exp_smem_reg,  // exp_smem, with each thread's chunk (its bytes + 4 of look-ahead) and gap loaded
                 // into registers as the block starts, before the scan: those loads overlap the
                 // position and count loads, and the decode loop never waits on a refill; and
                 // L2 hints for the block's sign/mantissa bytes (persistent: and the next block's
                 // first reads), no extra shared memory
  exp_smem_nh,   // fix64 only: exp_smem without the L2 hints of the next unit's bytes (each read
                 // goes to DRAM when the decode asks): whether hints a unit (~20 us) ahead are
                 // evicted before use and read twice (the H200's DRAM counters, 2026-11-28, put
                 // fix64's traffic ~30% over its bytes, the published kernel's at them)
  exp_smem_reg_nh,  // exp_smem_reg without its L2 hints (the block's sign/mantissa bytes, the next
                    // block's first reads): on the H200 the hinted register decoders read 449-505 MB
                    // of DRAM for a layer's ~370 MB of encoding, the unhinted ones 372 MB
  exp_smem_late,  // fix64 only: exp_smem with the next unit's L2 hints issued after this unit's
                  // decode, not before it: a copy-out ahead of their use instead of a whole unit
                  // (~20 us, ~25 MB of other hints into an L2 of two 30 MB partitions), so that
                  // they may still be there when the decode asks (the fused kernel, which writes
                  // nothing, reads 607 MB for 370 MB with the early hints: not the writes alone)
};

// How CUDA blocks meet DF11 blocks: one each (grid); about as many as fit the GPU at once, each
// looping over DF11 blocks bid, bid + grid, ... (persist); or that many, each taking its first two
// DF11 blocks so and every later one from a counter in global memory (dyn: a CUDA block that
// starts late, behind a GEMM's blocks on another stream, takes fewer instead of delaying the
// kernel's end by its whole share).
enum class Schedule : uint8_t { grid, persist, dyn };

struct VariantSpec {
  TableKind table;
  Partition partition;
  Staging staging;
  int threads_per_block;
  int bytes_per_thread;
  bool per_matrix = false;  // granularity: the harness launches once per matrix
  Schedule schedule = Schedule::grid;

  static constexpr int kFlatBits = 12;
  static constexpr int kWideBits = 11;  // multi_lut_w's root: 2^11 entries of 8 bytes
  // fixed_out: codes per thread, and the bytes of shared memory each lane's exponents take (the
  // codes, padded so that lanes 72 bytes apart start in different banks: 18 words apart, only
  // lanes 16 apart share one; and 8-aligned for the copy-out's 8-byte loads).
  static constexpr int kFixedCodes = 64;
  static constexpr unsigned kFixedStride = 72;

  [[nodiscard]] std::string name() const;
  [[nodiscard]] Traits traits() const;
  [[nodiscard]] Layout layout() const;
  // Canonical-layout variants are exactly those that read a canonical table.
  [[nodiscard]] bool canonical_layout() const { return has_canon_table(); }
  // Whether `o` runs the same kernel instance (.matrix only changes how the harness launches it).
  [[nodiscard]] bool same_kernel(const VariantSpec& o) const {
    return table == o.table && partition == o.partition && staging == o.staging &&
           threads_per_block == o.threads_per_block && bytes_per_thread == o.bytes_per_thread &&
           schedule == o.schedule;
  }
  // Which tables the variant's kernel reads (what prepare_image builds and uploads).
  [[nodiscard]] DF11_HD constexpr bool has_multi_root() const {
    return table == TableKind::multi_lut || table == TableKind::multi_canon || table == TableKind::multi_lut_n ||
           table == TableKind::multi_lut_ng || table == TableKind::multi_lut_w;
  }
  // The multi root is the wide one (wide_root_from_flat; 16 KB either way).
  [[nodiscard]] DF11_HD constexpr bool wide_root() const { return table == TableKind::multi_lut_w; }
  // The tables read by the counted decode loop (decode_counted).
  [[nodiscard]] DF11_HD constexpr bool counted_loop() const {
    return table == TableKind::multi_lut_n || table == TableKind::multi_lut_ng || table == TableKind::multi_lut_w;
  }
  [[nodiscard]] DF11_HD constexpr bool has_flat_root() const {
    return table == TableKind::flat_lut || table == TableKind::flat_canon ||
           (has_multi_root() && table != TableKind::multi_lut_ng && table != TableKind::multi_lut_w);
  }
  [[nodiscard]] DF11_HD constexpr bool has_canon_table() const {
    return table == TableKind::flat_canon || table == TableKind::canon || table == TableKind::multi_canon;
  }
};

// Decode-loop statistics of the host emulation (emulate_variant on this thread, while set with
// set_loop_stats): per pass, the iterations of every thread's decode loop (lane_iterations) and,
// per warp of 32 threads, 32 x its slowest lane's (warp_iterations: the lane slots a GPU warp
// spends, its idle lanes included). Pass 1 is the two-pass partitions' counting pass.
struct LoopStats {
  struct Pass {
    uint64_t lane_iterations = 0, warp_iterations = 0, warps = 0;
  };
  Pass pass1, pass2;
};
void set_loop_stats(LoopStats* stats);
// Counts into `stats` while it lives (set_loop_stats, undone however the scope ends).
class LoopStatsScope {
 public:
  explicit LoopStatsScope(LoopStats& stats) { set_loop_stats(&stats); }
  ~LoopStatsScope() { set_loop_stats(nullptr); }
  LoopStatsScope(const LoopStatsScope&) = delete;
  LoopStatsScope& operator=(const LoopStatsScope&) = delete;
};

// Host runs of a variant (gap_decode_host.cpp): the fast phase-by-phase emulation, and the
// kernel body on the SIMT executor.
void emulate_variant(const VariantSpec& spec, const EncodedUnit& unit, uint16_t* out, uint64_t lo, uint64_t hi);
// Dynamic shared memory of one CUDA block of the variant's kernel on this unit, as a launch
// sizes it (the exponent buffers follow the unit's largest block or warp).
[[nodiscard]] unsigned smem_bytes(const VariantSpec& spec, const EncodedUnit& unit);
void simt_variant(const VariantSpec& spec, const EncodedUnit& unit, uint16_t* out, uint64_t lo, uint64_t hi,
                  Order order = Order::ascending);

}  // namespace df11::dec
