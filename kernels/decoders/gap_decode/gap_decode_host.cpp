// Host runs of the gap-decode family. emulate(): the fast emulation, the kernel's per-thread
// phases called for every thread of every block in turn (a sequential prefix sum in place of
// the block scan), with a host buffer laid out like shared memory and poisoned before each
// block so a read of anything a phase did not write shows up. simt(): the kernel body itself,
// gap_decode_block, on the SIMT executor (kernels/simt).
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "common/host_image.hpp"
#include "common/smem_guard.hpp"
#include "common/variants.inc"
#include "gap_decode/gap_decode.cuh"

namespace df11::dec {

ByteRanges smem_outside_regions(const SmemLayout& sl, std::size_t size, const ByteRanges& extra) {
  ByteRanges regions = {{sl.scan, sl.scan_bytes}, {sl.table, sl.table_bytes}, {sl.out, sl.out_bytes},
                        {sl.slots, sl.slot_bytes}, {sl.exps, sl.exps_bytes}, {sl.input, sl.input_bytes}};
  regions.insert(regions.end(), extra.begin(), extra.end());
  std::sort(regions.begin(), regions.end());
  ByteRanges gaps;
  std::size_t at = 0;
  for (const auto& [start, bytes] : regions) {
    if (bytes == 0) continue;
    if (start > at) gaps.emplace_back(at, std::min(start, size));
    at = std::max(at, start + bytes);
  }
  if (size > at) gaps.emplace_back(at, size);
  return gaps;
}

void check_smem_guards(const std::string& who, const uint8_t* smem, const ByteRanges& outside, uint64_t block,
                       uint8_t poison) {
  for (const auto& [a, z] : outside) {
    const uint8_t* bad = std::find_if(smem + a, smem + z, [&](uint8_t v) { return v != poison; });
    if (bad != smem + z) {
      throw Error(fmt::format("{}: block {} wrote shared memory byte {}, outside every region of its layout", who,
                              block, bad - smem));
    }
  }
}

namespace {

thread_local LoopStats* loop_stats = nullptr;  // set_loop_stats

// Decode-loop iterations of one pass over a block's (or a warp unit's) threads, folded into a
// LoopStats pass warp by warp (32 consecutive threads). Without a LoopStats set it counts nothing.
class Tally {
 public:
  explicit Tally(unsigned threads) : it_(loop_stats != nullptr ? threads : 0u, 0) {}
  // While a Scope lives, decode loops on this thread count into thread t's slot (or nowhere).
  class Scope {
   public:
    explicit Scope(uint64_t* slot) { host_loop_iterations = slot; }
    ~Scope() { host_loop_iterations = nullptr; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
  };
  [[nodiscard]] uint64_t* slot(unsigned t) { return it_.empty() ? nullptr : &it_[t]; }
  void fold(LoopStats::Pass LoopStats::*pass) {
    if (it_.empty()) return;
    LoopStats::Pass& ps = loop_stats->*pass;
    for (std::size_t w = 0; w < it_.size(); w += 32) {
      uint64_t slowest = 0;
      for (std::size_t i = w; i < std::min(w + 32, it_.size()); ++i) {
        ps.lane_iterations += it_[i];
        slowest = std::max(slowest, it_[i]);
      }
      ps.warp_iterations += 32 * slowest;
      ++ps.warps;
    }
    std::fill(it_.begin(), it_.end(), 0);
  }

 private:
  std::vector<uint64_t> it_;
};

// The warp-count partition's block b (gap_decode_warps), warp by warp and lane by lane: the
// warp's sums and scan of the counts sequentially where the kernel shuffles, then every lane's
// decode, the hints, every lane's part of the copy-out. The warps' buffers lie next to each
// other in one region: after each warp the later warps' buffers must still hold the poison, so
// a store past a warp's buffer shows up. (The next-unit hints of persistent warps depend on the
// grid: the SIMT runs check them.)
template <TableKind TK, Staging S, int BPT>
void emulate_warps(const LaunchParams& p, const SmemLayout& sl, uint8_t* smem, uint64_t b, unsigned tpb,
                   uint8_t poison, const std::string& who) {
  const auto table = make_table<TK>(p, smem, sl);
  for (unsigned w = 0; w < tpb / 32; ++w) {
    uint8_t* exps = smem + sl.exps + w * sl.exps_stride;
    LaneCounts lc[32];
    unsigned before = 0, total = 0;
    for (unsigned l = 0; l < 32; ++l) {
      lc[l] = lane_counts(p, b, tpb, w, l);
      before += lc[l].before;
      total += lc[l].count;
    }
    const uint64_t first = p.positions[b] + before, end = first + total, base = warp_base(first);
    if constexpr (hints_l2(Partition::warp_count, S)) {
      for (unsigned l = 0; l < 32; ++l) hint_sign_mantissa(p, first, end, l, 32);
    }
    // Lanes last to first (as pass 2 in emulate): a lane storing past its codes overwrites the next's.
    uint64_t at = end;
    Tally tally(32);
    for (unsigned l = 32; l-- > 0;) {
      at -= lc[l].count;
      const unsigned tb = w * 32 + l;
      // Every lane loads its registers, as in the kernel (unconditional loads).
      const auto regs = chunk_regs<S, BPT>(p, b, tpb, tb);
      if (b * tpb + tb < p.n_chunks) {
        const Tally::Scope counting(tally.slot(l));
        warp_lane_decode<BPT>(table, block_thread_chunk<BPT>(p, b, tpb, tb, regs), exps, sl.exps_stride, base, at,
                              lc[l].count);
      }
    }
    tally.fold(&LoopStats::pass2);
    const uint8_t* later = exps + sl.exps_stride;
    const uint8_t* region_end = smem + sl.exps + static_cast<std::size_t>(tpb / 32) * sl.exps_stride;
    if (std::find_if(later, region_end, [poison](uint8_t v) { return v != poison; }) != region_end) {
      throw Error(fmt::format("{}: warp {} of block {} wrote past its exponent buffer", who, w, b));
    }
    const uint64_t from = first > p.lo ? first : p.lo, to = end < p.hi ? end : p.hi;
    for (unsigned l = 0; l < 32; ++l) copy_out_exps<S>(p, exps, base, p.sign_mantissa, 0, from, to, l, 32);
  }
}

// The fixed-output partition, unit by unit (a warp's 32 threads): the rows poisoned, every lane's
// decode last lane first (a lane storing past its row's codes would overwrite the next row's,
// already written, or the padding, which must keep the poison), then every lane's part of the
// copy-out. The rows of the block's other warps must keep the poison too.
template <TableKind TK, Staging S, int BPT>
void emulate_fixed(const VariantSpec& spec, const HostImage& img, const LaunchParams& p, const SmemLayout& sl,
                   uint8_t* smem, std::size_t smem_size, uint64_t u0, uint64_t u1) {
  const std::string who = spec.name() + " (host emulation)";
  constexpr uint8_t kPoison = 0xCD;
  std::fill(smem, smem + smem_size, kPoison);
  const unsigned tpb = static_cast<unsigned>(spec.threads_per_block);
  for (unsigned t = 0; t < tpb; ++t) load_tables(spec, p, smem, sl, t, tpb);
  const auto table = make_table<TK>(p, smem, sl);
  const ByteRanges outside = smem_outside_regions(sl, smem_size);
  uint8_t* rows = smem + sl.exps;
  constexpr unsigned kN = VariantSpec::kFixedCodes;
  Tally tally(32);
  for (uint64_t u = u0; u < u1; ++u) {
    std::fill(rows, rows + sl.exps_bytes, kPoison);
    // The kernel's hints for a warp's next unit (there u + the grid's warps; here u + 1, so every
    // unit's hinted addresses are read once, in bounds or a sanitizer error).
    if (u + 1 < img.n_blocks) {
      for (unsigned l = 0; l < 32; ++l) {
        hint_next_fixed_unit(p, u + 1, l);
        hint_next_fixed_stream(p, p.positions[u + 1], l);
      }
    }
    for (unsigned l = 32; l-- > 0;) {
      const Tally::Scope counting(tally.slot(l));
      fixed_lane_decode(p, table, rows, u, l);
    }
    tally.fold(&LoopStats::pass2);
    // The wide root's loop may store kWideOverrun bytes past a lane's codes (decode_counted);
    // every other byte of the row's padding must stay poisoned.
    constexpr unsigned kMayStore = kN + (TK == TableKind::multi_lut_w ? kWideOverrun : 0u);
    for (unsigned l = 0; l < 32; ++l) {
      const uint8_t* pad = rows + l * VariantSpec::kFixedStride + kMayStore;
      const uint8_t* row_end = rows + (l + 1) * VariantSpec::kFixedStride;
      if (std::find_if(pad, row_end, [](uint8_t v) { return v != kPoison; }) != row_end) {
        throw Error(fmt::format("{}: lane {} of unit {} wrote past its {} codes", who, l, u, kN));
      }
    }
    const uint8_t* others = rows + sl.exps_stride;
    const uint8_t* rows_end = rows + sl.exps_bytes;
    if (std::find_if(others, rows_end, [](uint8_t v) { return v != kPoison; }) != rows_end) {
      throw Error(fmt::format("{}: unit {} wrote past its warp's rows", who, u));
    }
    const uint64_t first = u * kFixedUnit;
    const uint64_t last = std::min(first + kFixedUnit, img.n_elements);
    const uint64_t from = std::max(first, p.lo), to = std::min(last, p.hi);
    if (from < to) {
      for (unsigned l = 0; l < 32; ++l) copy_out_fixed(p, rows, first, from, to, l);
    }
    check_smem_guards(who, smem, outside, u);
  }
}

// Persist: a persistent kernel's CUDA block keeps its tables from one DF11 block to the next, and
// whatever else the previous block left in shared memory; the emulation loads the tables once
// and poisons the rest before every block, so a read of a stale value shows up.
template <TableKind TK, Partition P, Staging S, int BPT, bool Persist>
void emulate(const VariantSpec& spec, const HostImage& img, uint16_t* out, uint64_t lo, uint64_t hi) {
  const LaunchParams p = host_launch_params(img, out, lo, hi);
  check_arrays_aligned(spec, p);
  const SmemLayout sl = smem_layout(spec, img.n_rows, img.max_block_elements, kHostSmemGuard, img.max_warp_elements);
  const unsigned tpb = static_cast<unsigned>(spec.threads_per_block);
  const unsigned bpt = static_cast<unsigned>(spec.bytes_per_thread);
  constexpr bool kStaged = S == Staging::cp_async;
  std::vector<uint8_t> smem(std::max(sl.total, 16u));
  if constexpr (P == Partition::fixed_out) {
    const auto [u0, u1] = block_range(spec, img, lo, hi);
    emulate_fixed<TK, S, BPT>(spec, img, p, sl, smem.data(), smem.size(), u0, u1);
    return;
  }
  const ByteRanges outside = smem_outside_regions(sl, smem.size());
  std::vector<unsigned> counts(tpb);
  std::vector<uint64_t> first(tpb);  // pass 2: each thread's first element
  // chunk_in_registers stagings: every thread's chunk, loaded as its block starts.
  std::vector<decltype(chunk_regs<S, BPT>(LaunchParams{}, 0, 0, 0))> regs(tpb);
  const auto [b0, b1] = block_range(spec, img, lo, hi);
  for (uint64_t b = b0; b < b1; ++b) {
    if (Persist && b > b0) {
      std::fill(smem.begin(), smem.begin() + sl.table, 0xCD);
      std::fill(smem.begin() + sl.table + sl.table_bytes, smem.end(), 0xCD);
    } else {
      std::fill(smem.begin(), smem.end(), 0xCD);
      for (unsigned t = 0; t < tpb; ++t) load_tables(spec, p, smem.data(), sl, t, tpb);
    }
    if constexpr (P == Partition::warp_count) {
      emulate_warps<TK, S, BPT>(p, sl, smem.data(), b, tpb, 0xCD, spec.name() + " (host emulation)");
    } else {
      if constexpr (kStaged) {
        // The kernel's cp.async copies exactly these bytes (the stream is padded past them).
        std::memcpy(smem.data() + sl.input, p.stream + b * tpb * bpt, tpb * bpt + 16);
      }
      BlockCtx<decltype(make_table<TK>(p, smem.data(), sl))> c{&p,   make_table<TK>(p, smem.data(), sl),
                                                               b,    0,
                                                               0,    kStaged ? smem.data() + sl.input : p.stream + b * tpb * bpt,
                                                               tpb,  bpt,
                                                               smem.data(), sl};
      for (unsigned t = 0; t < tpb; ++t) regs[t] = chunk_regs<S, BPT>(p, b, tpb, t);
      if constexpr (P == Partition::thread_pos) {
        c.block_first = p.positions[b * tpb];
        c.block_end = p.positions[std::min<uint64_t>((b + 1) * tpb, p.n_chunks)];
        for (unsigned t = 0; t < tpb; ++t) prefetch_sign_mantissa<P, S>(c, t);
        Tally tally(tpb);
        for (unsigned t = 0; t < tpb; ++t) {
          const Tally::Scope counting(tally.slot(t));
          if (chunk_exists(p, b, tpb, t)) pass2<S, !kStaged>(c, t, p.positions[b * tpb + t], 0, regs[t]);
        }
        tally.fold(&LoopStats::pass2);
      } else {
        c.block_first = p.positions[b];
        c.block_end = p.positions[b + 1];
        // In the kernel's order (decode_phases): exp-smem-reg hints after pass 1.
        if constexpr (!chunk_in_registers(S)) {
          for (unsigned t = 0; t < tpb; ++t) prefetch_sign_mantissa<P, S>(c, t);
        }
        Tally tally(tpb);
        for (unsigned t = 0; t < tpb; ++t) {
          const Tally::Scope counting(tally.slot(t));
          counts[t] = pass1<P, S, !kStaged>(c, t, regs[t]);
        }
        tally.fold(&LoopStats::pass1);
        if constexpr (chunk_in_registers(S)) {
          for (unsigned t = 0; t < tpb; ++t) prefetch_sign_mantissa<P, S>(c, t);
        }
        // The kernel's block or warp scan: an exclusive prefix sum of the counts. Pass 2 runs the
        // threads last to first, so that a thread storing past its own codes overwrites what the
        // next one stored already, and the result shows it (on a GPU they race).
        uint64_t run = 0;
        for (unsigned t = 0; t < tpb; ++t) {
          first[t] = c.block_first + run;
          run += counts[t];
        }
        for (unsigned t = tpb; t-- > 0;) {
          const Tally::Scope counting(tally.slot(t));
          pass2<S, !kStaged>(c, t, first[t], counts[t], regs[t]);
        }
        tally.fold(&LoopStats::pass2);
      }
      for (unsigned t = 0; t < tpb; ++t) copy_out<S>(c, t);
    }
    check_smem_guards(spec.name() + " (host emulation)", smem.data(), outside, b);
  }
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT, Schedule Sc>
void simt(const VariantSpec& spec, const HostImage& img, uint16_t* out, uint64_t lo, uint64_t hi, Order order) {
  LaunchParams p = host_launch_params(img, out, lo, hi);
  p.descending = order == Order::descending ? 1u : 0u;
  uint32_t work = 0;  // the dyn schedule's counter, 0 as a launch finds it on the device
  if constexpr (Sc == Schedule::dyn) p.work = &work;
  check_arrays_aligned(spec, p);
  const SmemLayout sl = smem_layout(spec, img.n_rows, img.max_block_elements, kHostSmemGuard, img.max_warp_elements);
  const auto [b0, b1] = block_range(spec, img, lo, hi);
  if (b1 <= b0) return;
  p.block_begin = static_cast<uint32_t>(b0);
  p.block_count = static_cast<uint32_t>(b1 - b0);
  const ByteRanges outside = smem_outside_regions(sl, sl.total);
  simt::LaunchOptions opt;
  opt.after_block = [&](const uint8_t* smem, uint64_t b) {
    check_smem_guards(spec.name() + " (SIMT)", smem, outside, b, opt.smem_poison);
  };
  if constexpr (Sc != Schedule::grid) {
    simt::launch({static_cast<unsigned>(std::min<uint64_t>(b1 - b0, kSimtPersistentGrid))}, {static_cast<unsigned>(TPB)}, sl.total,
                 [&](uint8_t* smem) { gap_decode_persistent<TK, P, S, TPB, BPT, Sc == Schedule::dyn>(p, sl, smem); }, opt);
    // The device launches no memset before a dyn launch: the kernel must leave its counter at 0.
    if (work != 0) throw Error(spec.name() + " (SIMT): the dyn schedule left its counter at " + std::to_string(work));
  } else {
    simt::launch({static_cast<unsigned>(grid_schedule_blocks<P, TPB>(b1 - b0))}, {static_cast<unsigned>(TPB)}, sl.total,
                 [&](uint8_t* smem) { gap_decode_block<TK, P, S, TPB, BPT>(p, sl, smem); }, opt);
  }
}


}  // namespace

void set_loop_stats(LoopStats* stats) { loop_stats = stats; }

unsigned smem_bytes(const VariantSpec& spec, const EncodedUnit& unit) {
  const HostImage img = prepare_image(spec, unit);
  return smem_layout(spec, img.n_rows, img.max_block_elements, 0, img.max_warp_elements).total;
}

void simt_variant(const VariantSpec& spec, const EncodedUnit& unit, uint16_t* out, uint64_t lo, uint64_t hi,
                  Order order) {
  const HostImage img = prepare_image(spec, unit);
#define DF11_SIMT(T, P, S, TPB, BPT, M, PS)                                                     \
  if (spec.same_kernel({TableKind::T, Partition::P, Staging::S, TPB, BPT, M, Schedule::PS})) {   \
    simt<TableKind::T, Partition::P, Staging::S, TPB, BPT, Schedule::PS>(spec, img, out, lo, hi, order); \
    return;                                                                                     \
  }
  DF11_GAP_VARIANTS(DF11_SIMT)
#undef DF11_SIMT
  throw Error("simt_variant: " + spec.name() + " is not in the variant list");
}

void emulate_variant(const VariantSpec& spec, const EncodedUnit& unit, uint16_t* out, uint64_t lo, uint64_t hi) {
  const HostImage img = prepare_image(spec, unit);
#define DF11_EMULATE(T, P, S, TPB, BPT, M, PS)                                                  \
  if (spec.same_kernel({TableKind::T, Partition::P, Staging::S, TPB, BPT, M, Schedule::PS})) {   \
    emulate<TableKind::T, Partition::P, Staging::S, BPT, Schedule::PS != Schedule::grid>(spec, img, out, lo, hi); \
    return;                                                                                     \
  }
  DF11_GAP_VARIANTS(DF11_EMULATE)
#undef DF11_EMULATE
  throw Error("emulate_variant: " + spec.name() + " is not in the variant list");
}

}  // namespace df11::dec
