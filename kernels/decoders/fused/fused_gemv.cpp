// Fused decode + GEMV, host side: the plan and the run on the SIMT executor.
#include "fused/fused_gemv.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>

#include <fmt/format.h>

#include "codec/cpu_decoder.hpp"

#include "common/host_image.hpp"
#include "common/smem_guard.hpp"
#include "common/variant_decoder.hpp"
#include "fused/fused_gemv.cuh"

namespace df11::dec {

bool fused_output_close(const uint16_t* w_row, const uint16_t* x_row, int64_t n, uint16_t y, double* reference) {
  double acc = 0, mag = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double p = static_cast<double>(bf16_to_float(w_row[k])) * bf16_to_float(x_row[k]);
    acc += p;
    mag += std::abs(p);
  }
  if (reference) *reference = acc;
  return std::abs(bf16_to_float(y) - acc) <= std::abs(acc) / 256.0 + mag * 1e-5;
}

VariantSpec fused_spec(FusedDecode d) {
  switch (d) {
    case FusedDecode::two_pass:
      return fused::Shape<FusedDecode::two_pass>::spec;
    case FusedDecode::one_pass:
      return fused::Shape<FusedDecode::one_pass>::spec;
    case FusedDecode::fixed:
      break;
    case FusedDecode::fixed_nh:
      return fused::Shape<FusedDecode::fixed_nh>::spec;
    case FusedDecode::fixed_late:
      return fused::Shape<FusedDecode::fixed_late>::spec;
    case FusedDecode::fixed_wide:
      return fused::Shape<FusedDecode::fixed_wide>::spec;
    case FusedDecode::fixed_mma:
      return fused::Shape<FusedDecode::fixed_mma>::spec;
  }
  return fused::Shape<FusedDecode::fixed>::spec;
}

namespace {
constexpr std::pair<FusedDecode, const char*> kDecodeNames[] = {
    {FusedDecode::two_pass, "two_pass"},     {FusedDecode::one_pass, "one_pass"},
    {FusedDecode::fixed, "fixed"},           {FusedDecode::fixed_nh, "fixed_nh"},
    {FusedDecode::fixed_late, "fixed_late"}, {FusedDecode::fixed_wide, "fixed_wide"},
    {FusedDecode::fixed_mma, "fixed_mma"}};
static_assert(std::size(kDecodeNames) == kFusedDecodes, "a name for every FusedDecode; kFusedDecodes counts them");
}  // namespace

std::optional<FusedDecode> fused_decode_named(std::string_view name) {
  for (const auto& [d, n] : kDecodeNames) {
    if (name == n) return d;
  }
  return std::nullopt;
}

const char* fused_decode_name(FusedDecode d) {
  for (const auto& [e, n] : kDecodeNames) {
    if (e == d) return n;
  }
  return "?";
}

std::optional<FusedDecode> fused_decode_for(const Decoder& decoder) {
  const auto* v = dynamic_cast<const VariantDecoder*>(&decoder);
  if (v != nullptr && v->spec().partition == Partition::fixed_out) {
    // The fixed decode with the variant's staging (its L2 hints) and kind of multi root (2^12 or
    // wide) on its layout; none for the others (the wide root's late and nh stagings).
    for (const FusedDecode d : {FusedDecode::fixed, FusedDecode::fixed_nh, FusedDecode::fixed_late,
                                FusedDecode::fixed_wide}) {
      const VariantSpec f = fused_spec(d);
      if (f.staging == v->spec().staging && f.wide_root() == v->spec().wide_root() && f.layout() == v->layout()) {
        return d;
      }
    }
    return std::nullopt;
  }
  return fused_decode_for(decoder.layout());
}

Status fused_can_share_image(const VariantSpec& spec, FusedDecode decode) {
  const Layout want = fused_spec(decode).layout();
  if (is_fixed(decode)) {
    const bool wide = decode == FusedDecode::fixed_wide;
    if (spec.partition != Partition::fixed_out || !spec.has_multi_root() || spec.wide_root() != wide ||
        !(spec.layout() == want)) {
      return Status::no(spec.name() + "'s image: the fixed fused decode needs " +
                        (wide ? "the multi11w" : "a multi12n or multi12ng") + " fix64 variant's image of layout " +
                        want.name());
    }
  } else if (!spec.has_multi_root() || !spec.has_flat_root() || spec.partition == Partition::fixed_out ||
             !(spec.layout() == want)) {
    return Status::no(spec.name() + "'s image: the fused kernels need the multi-symbol and flat tables, gaps and "
                      "positions of layout " + want.name() +
                      " (a multi12 or multi12n variant of the unit's layout; not multi12ng, not fix64)");
  }
  return Status::yes();
}

std::optional<FusedDecode> fused_decode_for(const Layout& layout) {
  for (const FusedDecode d : {FusedDecode::two_pass, FusedDecode::one_pass}) {
    if (layout == fused_spec(d).layout()) return d;
  }
  return std::nullopt;
}

Status fused_can_implement(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats, int batch,
                           std::optional<FusedDecode> decode) {
  if (decode ? !(unit.layout == fused_spec(*decode).layout()) : !fused_decode_for(unit.layout)) {
    return Status::no(fmt::format("unit {} is in layout {}; the fused kernels read {}", unit.name,
                                  unit.layout.name(),
                                  decode ? fused_spec(*decode).layout().name()
                                         : fused_spec(FusedDecode::two_pass).layout().name() + " or " +
                                               fused_spec(FusedDecode::one_pass).layout().name()));
  }
  const int max_batch = fused_max_batch(decode ? *decode : FusedDecode::two_pass);
  if (batch < 1 || batch > max_batch) {
    return Status::no(fmt::format("the fused kernels take batches 1..{}, not {}", max_batch, batch));
  }
  if (mats.empty() || mats.size() > static_cast<std::size_t>(fused::kMaxMatrices)) {
    return Status::no(fmt::format("unit {}: {} matrices (1..{})", unit.name, mats.size(), fused::kMaxMatrices));
  }
  uint64_t at = 0;
  for (const auto& m : mats) {
    if (m.offset != at || m.out <= 0 || m.in <= 0) {
      return Status::no(fmt::format("unit {}: the matrices do not tile the unit at element {}", unit.name, at));
    }
    if (m.in > (int64_t{1} << 30)) {  // the kernels walk a block's rows in 32-bit columns
      return Status::no(fmt::format("unit {}: rows of {} elements (at most 2^30)", unit.name, m.in));
    }
    at += static_cast<uint64_t>(m.out) * static_cast<uint64_t>(m.in);
  }
  if (at != unit.n_elements) {
    return Status::no(fmt::format("unit {}: the matrices hold {} elements, the unit {}", unit.name, at, unit.n_elements));
  }
  if (decode == FusedDecode::fixed_mma) {
    // Tiles of 16 units at the same columns of 16 rows (fused_gemv.cuh, gemv_mma_tiles). Matrices
    // of whole groups hold whole tiles, so the next matrix starts at a unit too.
    for (std::size_t i = 0; i < mats.size(); ++i) {
      const GemvMatrix& m = mats[i];
      if (m.in % 128 != 0 || m.in < static_cast<int64_t>(kFixedUnit)) {
        return Status::no(fmt::format("unit {}: matrix {} has rows of {} elements (the tensor-core kernel needs a "
                                      "multiple of 128, at least {})", unit.name, i, m.in, kFixedUnit));
      }
      // The units' columns repeat every kFixedUnit du / in rows (du: mma_unit_step).
      const int64_t group =
          static_cast<int64_t>(fused::kMmaRows) * static_cast<int64_t>(kFixedUnit) * fused::mma_unit_step(m.in) / m.in;
      if (m.out % group != 0) {
        return Status::no(fmt::format("unit {}: matrix {} has {} rows (the tensor-core kernel takes rows in groups of "
                                      "{}: 16 units at the same columns)", unit.name, i, m.out, group));
      }
    }
  }
  return Status::yes();
}

FusedPlan plan_fused(const EncodedUnit& unit, const std::vector<GemvMatrix>& mats, std::optional<FusedDecode> decode) {
  if (const Status st = fused_can_implement(unit, mats, 1, decode); !st.ok) throw Error(st.reason);
  validate_encoded(unit);
  FusedPlan plan;
  plan.decode = decode ? *decode : *fused_decode_for(unit.layout);
  plan.mats = mats;
  // Global row index of element e: rows of earlier matrices + e's row in its matrix.
  std::vector<uint64_t> row_base(mats.size());
  for (std::size_t i = 0; i < mats.size(); ++i) {
    row_base[i] = plan.n_rows;
    plan.n_rows += static_cast<uint64_t>(mats[i].out);
  }
  auto row_of = [&](uint64_t e, std::size_t& m) {
    while (e >= mats[m].offset + static_cast<uint64_t>(mats[m].out * mats[m].in)) ++m;
    return row_base[m] + (e - mats[m].offset) / static_cast<uint64_t>(mats[m].in);
  };
  // The blocks of work: DF11 blocks, or for the fixed decode its units of kFixedUnit elements.
  const bool fixed = is_fixed(plan.decode);
  const uint64_t n_blocks = fixed ? (unit.n_elements + kFixedUnit - 1) / kFixedUnit : unit.n_blocks();
  std::vector<uint64_t>& pos = plan.block_pos;
  pos.resize(n_blocks + 1);
  for (uint64_t b = 0; b <= n_blocks; ++b) {
    pos[b] = fixed ? std::min<uint64_t>(b * kFixedUnit, unit.n_elements) : unit.position(b);
  }
  std::vector<std::vector<uint32_t>> pairs_of_row(plan.n_rows);
  plan.pair_base.assign(n_blocks + 1, 0);
  plan.block_k0.assign(n_blocks, 0);
  uint64_t pair = 0;
  std::size_t m = 0;
  for (uint64_t b = 0; b < n_blocks; ++b) {
    plan.pair_base[b] = static_cast<uint32_t>(pair);
    const uint64_t first = pos[b], end = pos[b + 1];
    if (first < end) {
      const uint64_t r0 = row_of(first, m);
      plan.block_k0[b] = static_cast<uint32_t>((first - mats[m].offset) % static_cast<uint64_t>(mats[m].in));
      std::size_t m_end = m;
      const uint64_t r1 = row_of(end - 1, m_end);
      for (uint64_t r = r0; r <= r1; ++r) pairs_of_row[r].push_back(static_cast<uint32_t>(pair++));
    }
    if (pair > UINT32_MAX) throw Error(fmt::format("unit {}: too many (block, row) pairs", unit.name));
  }
  plan.pair_base[n_blocks] = static_cast<uint32_t>(pair);
  plan.row_ptr.assign(plan.n_rows + 1, 0);
  for (uint64_t r = 0; r < plan.n_rows; ++r) {
    plan.row_ptr[r + 1] = plan.row_ptr[r] + static_cast<uint32_t>(pairs_of_row[r].size());
    plan.row_pairs.insert(plan.row_pairs.end(), pairs_of_row[r].begin(), pairs_of_row[r].end());
  }
  return plan;
}

std::pair<uint64_t, uint64_t> FusedPlan::blocks(uint64_t lo, uint64_t hi) const {
  const uint64_t n = n_blocks();
  if (lo >= hi || n == 0) return {0, 0};
  // First block whose end passes lo; first block that starts at or after hi.
  const auto first = std::upper_bound(block_pos.begin() + 1, block_pos.end(), lo) - (block_pos.begin() + 1);
  const auto last = std::lower_bound(block_pos.begin(), block_pos.end() - 1, hi) - block_pos.begin();
  return {static_cast<uint64_t>(first), std::max(static_cast<uint64_t>(first), static_cast<uint64_t>(last))};
}

GemvRun plain_run(const FusedPlan& plan, const uint16_t* weights, const std::vector<const uint16_t*>& x,
                  const std::vector<uint16_t*>& y, int batch) {
  if (x.size() != plan.mats.size() || y.size() != plan.mats.size()) {
    throw Error(fmt::format("fused gemv: {} matrices, {} inputs and {} outputs given", plan.mats.size(), x.size(),
                            y.size()));
  }
  GemvRun run;
  run.x = x;
  for (std::size_t m = 0; m < x.size(); ++m) {
    if (x[m] == nullptr || y[m] == nullptr) {
      throw Error(fmt::format("fused gemv: matrix {} has no {} (a run of every matrix; a GemvRun takes subsets)", m,
                              x[m] == nullptr ? "input" : "output"));
    }
  }
  for (uint16_t* out : y) run.y.push_back(GemvOut{out, nullptr, 0, false});
  run.batch = batch;
  run.weights = weights;
  return run;
}

void fused_gemv_simt(const EncodedUnit& unit, const FusedPlan& plan, const uint16_t* weights,
                     const std::vector<const uint16_t*>& x, const std::vector<uint16_t*>& y, int batch) {
  fused_gemv_simt(unit, plan, plain_run(plan, weights, x, y, batch));
}

namespace {

template <FusedDecode D>
void fused_gemv_simt_as(const EncodedUnit& unit, const FusedPlan& plan, const GemvRun& run) {
  constexpr VariantSpec kSpec = fused::Shape<D>::spec;
  const HostImage img = prepare_image(kSpec, unit);
  // (A fix64 image's n_blocks counts its units, as the fixed decode's plan does.)
  if (img.n_blocks != plan.n_blocks() || img.n_elements != unit.n_elements) {
    throw Error(fmt::format("fused gemv: unit {} is not the plan's", unit.name));
  }
  fused::GemvParams g = fused::gemv_params(plan, run);
  LaunchParams p = host_launch_params(img, nullptr, 0, img.n_elements);
  // Not a structured binding: lambdas below capture them (clang 14, the fuzz preset's, cannot).
  const std::pair<uint64_t, uint64_t> blocks = fused::run_blocks(plan, g);
  const uint64_t b0 = blocks.first, b1 = blocks.second;
  p.block_begin = static_cast<uint32_t>(b0);
  p.block_count = static_cast<uint32_t>(b1 - b0);
  // Guard bands around every region, the block reduction's included (common/smem_guard.hpp).
  const SmemLayout sl = fused::fused_smem_layout(D, img.n_rows, img.max_block_elements, kHostSmemGuard);
  g.pair_base = plan.pair_base.data();
  g.block_k0 = plan.block_k0.data();
  g.row_ptr = plan.row_ptr.data();
  g.row_pairs = plan.row_pairs.data();
  // Poisoned: a partial kernel 2 reads that kernel 1 did not write shows in the outputs.
  std::vector<float> partials(std::max<uint64_t>(plan.n_pairs(), 1) * static_cast<uint64_t>(run.batch), -1e30f);
  g.partials = run.partials != nullptr ? run.partials : partials.data();
  fused::choose_vector_paths(g, p.sign_mantissa);
  if constexpr (D == FusedDecode::fixed_mma) fused::check_mma_inputs(g);
  if (b1 > b0) {
    // fixed_mma: one kernel for every batch (16 rows of X an instruction, a loop over them).
    fused::with_batch_size(D == FusedDecode::fixed_mma ? fused::kMaxBatch : run.batch, [&](auto b) {
      constexpr int kB = decltype(b)::value;
      const unsigned bytes = fused::smem_bytes<D, kB>(sl);
      const std::size_t smem_size = bytes + kHostSmemGuard;
      const ByteRanges outside =
          smem_outside_regions(sl, smem_size, {{fused::reduce_offset(sl), bytes - fused::reduce_offset(sl)}});
      simt::LaunchOptions opt;
      opt.after_block = [&](const uint8_t* smem, uint64_t blk) {
        check_smem_guards("fused gemv (SIMT)", smem, outside, blk, opt.smem_poison);
      };
      // (fixed_mma's blocks of work are its tiles)
      const uint64_t work = D == FusedDecode::fixed_mma ? fused::mma_tiles(g) : b1 - b0;
      const unsigned grid = static_cast<unsigned>(std::min<uint64_t>(work, kSimtPersistentGrid));
      const bool ref = fused::ref_kernel<D>(g);  // as the device launch: the fixed decode's reference apart
      simt::launch({grid}, {static_cast<unsigned>(kSpec.threads_per_block)}, smem_size,
                   [&](uint8_t* smem) {
                     if (ref) {
                       fused::gemv_blocks<D, kB, true>(p, sl, smem, g);
                     } else {
                       fused::gemv_blocks<D, kB, false>(p, sl, smem, g);
                     }
                   },
                   opt);
    });
  }
  const uint64_t n_out = g.row_count * static_cast<uint64_t>(run.batch);
  for (uint64_t i = 0; i < n_out; ++i) fused::gemv_finish(g, i);
}

}  // namespace

void fused_gemv_simt(const EncodedUnit& unit, const FusedPlan& plan, const GemvRun& run) {
  if (!(unit.layout == fused_spec(plan.decode).layout())) {
    throw Error(fmt::format("fused gemv: unit {} (layout {}) is not the plan's", unit.name, unit.layout.name()));
  }
  fused::with_decode(plan.decode, [&](auto d) { fused_gemv_simt_as<decltype(d)::value>(unit, plan, run); });
}

}  // namespace df11::dec
