// Host runs of the gap-decode family. emulate(): the fast emulation, the kernel's per-thread
// phases called for every thread of every block in turn (a sequential prefix sum in place of
// the block scan), with a host buffer laid out like shared memory and poisoned before each
// block so a read of anything a phase did not write shows up. simt(): the kernel body itself,
// gap_decode_block, on the SIMT executor (kernels/simt).
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/host_image.hpp"
#include "common/variants.inc"
#include "gap_decode/gap_decode.cuh"

namespace df11::dec {
namespace {

template <TableKind TK, Partition P, Staging S>
void emulate(const VariantSpec& spec, const HostImage& img, uint16_t* out, uint64_t lo, uint64_t hi) {
  const LaunchParams p = host_launch_params(img, out, lo, hi);
  const SmemLayout sl = smem_layout(spec, img.n_rows, img.max_block_elements);
  const unsigned tpb = static_cast<unsigned>(spec.threads_per_block);
  const unsigned bpt = static_cast<unsigned>(spec.bytes_per_thread);
  constexpr bool kStaged = S == Staging::cp_async;
  std::vector<uint8_t> smem(std::max(sl.total, 16u));
  std::vector<unsigned> counts(tpb);
  const auto [b0, b1] = block_range(spec, img, lo, hi);
  for (uint64_t b = b0; b < b1; ++b) {
    std::fill(smem.begin(), smem.end(), 0xCD);
    for (unsigned t = 0; t < tpb; ++t) load_tables(spec, p, smem.data(), sl, t, tpb);
    if constexpr (kStaged) {
      // The kernel's cp.async copies exactly these bytes (the stream is padded past them).
      std::memcpy(smem.data() + sl.input, p.stream + b * tpb * bpt, tpb * bpt + 16);
    }
    BlockCtx<decltype(make_table<TK>(p, smem.data(), sl))> c{&p,   make_table<TK>(p, smem.data(), sl),
                                                             b,    0,
                                                             0,    kStaged ? smem.data() + sl.input : p.stream + b * tpb * bpt,
                                                             tpb,  bpt,
                                                             smem.data(), sl};
    if constexpr (P == Partition::thread_pos) {
      c.block_first = p.positions[b * tpb];
      c.block_end = p.positions[std::min<uint64_t>((b + 1) * tpb, p.n_chunks)];
      for (unsigned t = 0; t < tpb; ++t) {
        if (chunk_exists(p, b, tpb, t)) pass2<S, !kStaged>(c, t, p.positions[b * tpb + t], 0);
      }
    } else {
      c.block_first = p.positions[b];
      c.block_end = p.positions[b + 1];
      for (unsigned t = 0; t < tpb; ++t) counts[t] = pass1<S, !kStaged>(c, t);
      // The kernel's block or warp scan: an exclusive prefix sum of the counts.
      uint64_t run = 0;
      for (unsigned t = 0; t < tpb; ++t) {
        pass2<S, !kStaged>(c, t, c.block_first + run, counts[t]);
        run += counts[t];
      }
    }
    for (unsigned t = 0; t < tpb; ++t) copy_out<S>(c, t);
  }
}

template <TableKind TK, Partition P, Staging S, int TPB, int BPT>
void simt(const VariantSpec& spec, const HostImage& img, uint16_t* out, uint64_t lo, uint64_t hi) {
  LaunchParams p = host_launch_params(img, out, lo, hi);
  const SmemLayout sl = smem_layout(spec, img.n_rows, img.max_block_elements);
  const auto [b0, b1] = block_range(spec, img, lo, hi);
  if (b1 <= b0) return;
  p.block_begin = static_cast<uint32_t>(b0);
  simt::launch({static_cast<unsigned>(b1 - b0)}, {static_cast<unsigned>(TPB)}, sl.total,
               [&](uint8_t* smem) { gap_decode_block<TK, P, S, TPB, BPT>(p, sl, smem); });
}

}  // namespace

void simt_variant(const VariantSpec& spec, const EncodedUnit& unit, uint16_t* out, uint64_t lo, uint64_t hi) {
  const HostImage img = prepare_image(spec, unit);
#define DF11_SIMT(T, P, S, TPB, BPT, M)                                                                          \
  if (spec.table == TableKind::T && spec.partition == Partition::P && spec.staging == Staging::S &&              \
      spec.threads_per_block == TPB && spec.bytes_per_thread == BPT) {                                           \
    simt<TableKind::T, Partition::P, Staging::S, TPB, BPT>(spec, img, out, lo, hi);                              \
    return;                                                                                                      \
  }
  DF11_GAP_VARIANTS(DF11_SIMT)
#undef DF11_SIMT
  throw Error("simt_variant: " + spec.name() + " is not in the variant list");
}

void emulate_variant(const VariantSpec& spec, const EncodedUnit& unit, uint16_t* out, uint64_t lo, uint64_t hi) {
  const HostImage img = prepare_image(spec, unit);
#define DF11_EMULATE(T, P, S, TPB, BPT, M)                                                                       \
  if (spec.table == TableKind::T && spec.partition == Partition::P && spec.staging == Staging::S) {               \
    emulate<TableKind::T, Partition::P, Staging::S>(spec, img, out, lo, hi);                                       \
    return;                                                                                                        \
  }
  DF11_GAP_VARIANTS(DF11_EMULATE)
#undef DF11_EMULATE
  throw Error("emulate_variant: " + spec.name() + " is not in the variant list");
}

}  // namespace df11::dec
