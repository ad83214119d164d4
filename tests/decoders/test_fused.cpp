// The fused decode + GEMV kernels (kernels/decoders/fused) on the host SIMT executor: decoding
// the DF11 unit gives bit-for-bit the outputs of the same kernels reading the BF16 weights (the
// reference a fused method is verified against), both within float rounding of a double
// reference; matrices whose rows straddle blocks, several matrices per block, batches 1..16.
#include <catch2/catch.hpp>

#include <cmath>

#include "codec/bf16.hpp"
#include "codec/encoder.hpp"
#include "fused/fused_gemv.cuh"
#include "fused/fused_gemv.hpp"
#include "helpers.hpp"

using namespace df11;

namespace {

struct Case {
  Unit unit;
  std::vector<dec::GemvMatrix> mats;
  std::vector<uint16_t> flat;  // the unit's BF16 words
};

Case make_case(const std::vector<std::pair<int64_t, int64_t>>& shapes, uint64_t seed) {
  Case c;
  c.unit.name = "fused";
  uint64_t off = 0;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto [out, in] = shapes[i];
    auto w = test::random_weights(static_cast<std::size_t>(out * in), seed + i, 120, 0.5);
    c.flat.insert(c.flat.end(), w.begin(), w.end());
    c.unit.tensors.push_back({"m" + std::to_string(i), {out, in}, std::move(w)});
    c.mats.push_back({off, out, in});
    off += static_cast<uint64_t>(out * in);
  }
  return c;
}

std::vector<uint16_t> activations(std::size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = float_to_bf16(nd(rng));
  return v;
}

void check_case(const Case& c, int batch) {
  const EncodedUnit enc = encode(c.unit.view(), Layout::df11(), 2);
  REQUIRE(enc.n_blocks() >= 3);  // rows straddle blocks
  REQUIRE(dec::fused_can_implement(enc, c.mats, batch).ok);
  const dec::FusedPlan plan = dec::plan_fused(enc, c.mats);
  std::vector<std::vector<uint16_t>> xs, ys_dec, ys_ref;
  std::vector<const uint16_t*> xp;
  std::vector<uint16_t*> yd, yr;
  for (std::size_t i = 0; i < c.mats.size(); ++i) {
    xs.push_back(activations(static_cast<std::size_t>(batch * c.mats[i].in), 100 + i));
    ys_dec.emplace_back(static_cast<std::size_t>(batch * c.mats[i].out), 0xFFFF);
    ys_ref.emplace_back(static_cast<std::size_t>(batch * c.mats[i].out), 0xFFFF);
  }
  for (std::size_t i = 0; i < c.mats.size(); ++i) {
    xp.push_back(xs[i].data());
    yd.push_back(ys_dec[i].data());
    yr.push_back(ys_ref[i].data());
  }
  dec::fused_gemv_simt(enc, plan, nullptr, xp, yd, batch);
  dec::fused_gemv_simt(enc, plan, c.flat.data(), xp, yr, batch);
  for (std::size_t i = 0; i < c.mats.size(); ++i) {
    INFO("matrix " << i << " batch " << batch);
    REQUIRE(ys_dec[i] == ys_ref[i]);  // bit for bit: decoded == BF16 through the same arithmetic
    const auto& m = c.mats[i];
    for (int b = 0; b < batch; ++b) {
      for (int64_t r = 0; r < m.out; ++r) {
        const uint16_t y = ys_dec[i][static_cast<std::size_t>(b * m.out + r)];
        double ref = 0;
        if (!dec::fused_output_close(c.flat.data() + m.offset + static_cast<uint64_t>(r * m.in),
                                     xs[i].data() + b * m.in, m.in, y, &ref)) {
          FAIL("row " << r << " batch row " << b << ": " << bf16_to_float(y) << " vs " << ref);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("simt: fused decode+GEMV equals the same kernels on BF16 weights, bit for bit", "[decoders][simt][fused]") {
  // ~57k elements in ~4-5 blocks: rows of 2048, 1536 and 3000 elements, so rows straddle blocks
  // and a block holds a matrix boundary. (Few rows per block: the executor pays per barrier.)
  const Case c = make_case({{10, 2048}, {12, 1536}, {6, 3004}}, 3);  // 3004: the scalar path
  for (int batch : {1, 5, 16}) check_case(c, batch);
}

TEST_CASE("fused plan: every row's pairs, in block order, cover the unit", "[decoders][fused]") {
  const Case c = make_case({{60, 300}, {70, 256}, {20, 1000}}, 3);  // many rows per block
  const EncodedUnit enc = encode(c.unit.view(), Layout::df11(), 2);
  const dec::FusedPlan plan = dec::plan_fused(enc, c.mats);
  REQUIRE(plan.n_rows == 150);
  REQUIRE(plan.pair_base.size() == enc.n_blocks() + 1);
  REQUIRE(plan.row_pairs.size() == plan.n_pairs());
  for (uint64_t r = 0; r < plan.n_rows; ++r) {
    REQUIRE(plan.row_ptr[r + 1] > plan.row_ptr[r]);  // every row has a block
    for (uint32_t q = plan.row_ptr[r] + 1; q < plan.row_ptr[r + 1]; ++q) REQUIRE(plan.row_pairs[q] > plan.row_pairs[q - 1]);
  }
  // Refusals: another layout, batch out of range, matrices that do not tile the unit.
  const EncodedUnit canon = encode(c.unit.view(), Layout::canonical(), 2);
  CHECK_FALSE(dec::fused_can_implement(canon, c.mats, 1).ok);
  CHECK_FALSE(dec::fused_can_implement(enc, c.mats, 17).ok);
  auto gap = c.mats;
  gap[1].offset += 1;
  CHECK_FALSE(dec::fused_can_implement(enc, gap, 1).ok);
  REQUIRE_THROWS_AS(dec::plan_fused(enc, gap), Error);
}
