// The fused decode + GEMV kernels (kernels/decoders/fused) on the host SIMT executor: decoding
// the DF11 unit gives bit-for-bit the outputs of the same kernels reading the BF16 weights (the
// reference a fused method is verified against), both within float rounding of a double
// reference; matrices whose rows straddle blocks, several matrices per block, batches 1..16.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <optional>
#include <random>

#include "codec/bf16.hpp"
#include "codec/encoder.hpp"
#include "fused/fused_gemv.cuh"
#include "common/variant_decoder.hpp"
#include "decoder.hpp"
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
    std::string name = "m";  // (not "m" + to_string: GCC 12's -Wrestrict false positive)
    name += std::to_string(i);
    c.unit.tensors.push_back({std::move(name), {out, in}, std::move(w)});
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

void check_case(const Case& c, int batch, const Layout& layout = Layout::df11(),
                std::optional<dec::FusedDecode> decode = std::nullopt) {
  const EncodedUnit enc = encode(c.unit.view(), layout, 2);
  REQUIRE(enc.n_blocks() >= 3);  // rows straddle blocks
  REQUIRE(dec::fused_can_implement(enc, c.mats, batch, decode).ok);
  const dec::FusedPlan plan = dec::plan_fused(enc, c.mats, decode);
  REQUIRE(plan.decode == (decode ? *decode : *dec::fused_decode_for(layout)));
  // Decoding: BF16 outputs and float outputs (kernel 2's two ways out); the BF16 weights through
  // the same kernels (the reference): float outputs. Compared as floats, before rounding to BF16
  // hides most differences of summation order (a change of order moves the float's last bits in
  // many rows, the BF16 output's in few: two swapped FMAs passed a BF16-only check).
  std::vector<std::vector<uint16_t>> xs, ys_dec;
  std::vector<const uint16_t*> xp;
  std::vector<uint16_t*> yd;
  for (std::size_t i = 0; i < c.mats.size(); ++i) {
    xs.push_back(activations(static_cast<std::size_t>(batch * c.mats[i].in), 100 + i));
    ys_dec.emplace_back(static_cast<std::size_t>(batch * c.mats[i].out), 0xFFFF);
  }
  for (std::size_t i = 0; i < c.mats.size(); ++i) {
    xp.push_back(xs[i].data());
    yd.push_back(ys_dec[i].data());
  }
  dec::fused_gemv_simt(enc, plan, nullptr, xp, yd, batch);
  std::vector<std::vector<float>> fd(c.mats.size()), fr(c.mats.size());
  auto float_run = [&](const uint16_t* w, std::vector<std::vector<float>>& out) {
    dec::GemvRun run;
    run.batch = batch;
    run.weights = w;
    for (std::size_t i = 0; i < c.mats.size(); ++i) {
      out[i].assign(static_cast<std::size_t>(batch * c.mats[i].out), std::nanf(""));
      run.x.push_back(xs[i].data());
      run.y.push_back(dec::GemvOut{nullptr, out[i].data(), c.mats[i].out, false});
    }
    dec::fused_gemv_simt(enc, plan, run);
  };
  float_run(nullptr, fd);
  float_run(c.flat.data(), fr);
  for (std::size_t i = 0; i < c.mats.size(); ++i) {
    INFO("matrix " << i << " batch " << batch);
    for (std::size_t k = 0; k < fd[i].size(); ++k) {
      INFO("output " << k);
      // bit for bit: decoded == BF16 through the same arithmetic
      REQUIRE(std::bit_cast<uint32_t>(fd[i][k]) == std::bit_cast<uint32_t>(fr[i][k]));
      REQUIRE(float_to_bf16(fd[i][k]) == ys_dec[i][k]);  // the BF16 output is that float sum rounded
    }
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

// Named outside "simt: " so that the ThreadSanitizer pass (ci-tsan: tests named "simt: ...")
// skips it: its barriers and reduction are the two-pass test's, its decode phases those of the
// count-layout variants' kernel bodies, both of which that pass runs.
TEST_CASE("simt (one-pass fused): the count-layout decode (t256.b16) equals its BF16 reference too", "[decoders][simt][fused]") {
  const Layout count = dec::fused_spec(dec::FusedDecode::one_pass).layout();
  CHECK(count.name() == dec::VariantSpec{dec::TableKind::multi_lut, dec::Partition::thread_count,
                                         dec::Staging::exp_smem, 256, 16}.layout().name());
  const Case c = make_case({{10, 2048}, {12, 1536}, {6, 3004}}, 4);
  for (int batch : {1, 3, 16}) check_case(c, batch, count);  // the three compiled batch sizes
}

// The fixed decode: fix64's lanes, the plan's blocks its 2048-element units (a warp each, no
// block reduction). Units that span row ends and matrix ends, rows shorter than a unit (many
// segments a unit), the last unit partial (56936 and 41400 elements), batches 1, 3 and 16.
TEST_CASE("simt: fused decode+GEMV on fix64 units equals its BF16 reference", "[decoders][simt][fused]") {
  const Layout df11 = Layout::df11();
  const dec::FusedPlan plan =
      dec::plan_fused(encode(make_case({{10, 2048}}, 1).unit.view(), df11, 1), make_case({{10, 2048}}, 1).mats,
                      dec::FusedDecode::fixed);
  CHECK(plan.n_blocks() == 10);  // units, not DF11 blocks
  CHECK(plan.block_pos[1] == dec::kFixedUnit);
  const Case c = make_case({{10, 2048}, {12, 1536}, {6, 3004}}, 8);
  for (int batch : {1, 3, 16}) check_case(c, batch, df11, dec::FusedDecode::fixed);
  const Case shortrows = make_case({{60, 300}, {70, 256}, {20, 1000}}, 9);
  check_case(shortrows, 2, df11, dec::FusedDecode::fixed);
  // Batch 1: units that lie whole in one row (every unit of the 4096- and 2048-element rows, four
  // of every five of the 5120-element ones) take warp_unit_sum_b1, the others the loop; both
  // must give the BF16 reference's sums (the reference kernel runs the loop only). (The hint
  // twins: the next test.)
  const Case whole = make_case({{8, 4096}, {4, 2048}, {5, 5120}}, 10);
  for (const auto d : {dec::FusedDecode::fixed, dec::FusedDecode::fixed_wide}) check_case(whole, 1, df11, d);
  // The wide root's decode (five bytes stored a lookup, past a lane's codes into its row's
  // padding): the same sums, at each compiled batch size.
  for (int batch : {1, 4, 16}) check_case(c, batch, df11, dec::FusedDecode::fixed_wide);
  check_case(shortrows, 3, df11, dec::FusedDecode::fixed_wide);
}

// The fixed decode's hint twins: the same kernel body as fixed's but for where it hints the next
// unit into L2 (not at all, or after the decode), which is no synchronization: named outside
// "simt: " so that the ThreadSanitizer pass skips them (the test above runs that body).
TEST_CASE("simt (fused hint twins): fix64 units without hints or with late hints equal the BF16 reference",
          "[decoders][simt][fused]") {
  const Layout df11 = Layout::df11();
  const Case c = make_case({{10, 2048}, {12, 1536}, {6, 3004}}, 8);
  const Case shortrows = make_case({{60, 300}, {70, 256}, {20, 1000}}, 9);
  const Case whole = make_case({{8, 4096}, {4, 2048}, {5, 5120}}, 10);
  for (const auto d : {dec::FusedDecode::fixed_nh, dec::FusedDecode::fixed_late}) check_case(whole, 1, df11, d);
  // Without the next unit's hints: the same sums (the hints read nothing the kernel uses).
  check_case(c, 3, df11, dec::FusedDecode::fixed_nh);
  check_case(shortrows, 1, df11, dec::FusedDecode::fixed_nh);
  // The hints after each unit's decode: the same sums again.
  check_case(c, 16, df11, dec::FusedDecode::fixed_late);
  check_case(shortrows, 1, df11, dec::FusedDecode::fixed_late);
}

// The tensor-core MMA as the kernels call it (simt::mma_bf16_16816), on the host executor: the
// fragments laid out as the PTX ISA documents them for mma.m16n8k16 (.bf16, row.col), D = A B + C
// exactly (small integers: every order of the sums gives the same floats). A lane that read its
// operands from the wrong places gives the wrong D.
TEST_CASE("simt: the 16x8x16 BF16 tensor-core step (mma), fragments as PTX lays them out", "[decoders][simt][fused]") {
  float A[16][16], B[16][8], C[16][8];
  for (int i = 0; i < 16; ++i) {
    for (int k = 0; k < 16; ++k) A[i][k] = static_cast<float>((i * 7 + k * 3) % 11 - 5);
  }
  for (int k = 0; k < 16; ++k) {
    for (int n = 0; n < 8; ++n) B[k][n] = static_cast<float>((k * 5 + n * 13) % 9 - 4);
  }
  for (int i = 0; i < 16; ++i) {
    for (int n = 0; n < 8; ++n) C[i][n] = static_cast<float>(i * 8 + n);
  }
  auto pack = [](float lo, float hi) {
    return static_cast<uint32_t>(float_to_bf16(lo)) | (static_cast<uint32_t>(float_to_bf16(hi)) << 16);
  };
  float D[16][8] = {};
  simt::launch({1}, {32}, 0, [&](uint8_t*) {
    const unsigned lane = simt::tid_x(), g = lane / 4, t = lane % 4;
    uint32_t a[4], b[2];
    for (unsigned r = 0; r < 4; ++r) {
      const unsigned row = g + 8 * (r % 2), k = 2 * t + 8 * (r / 2);
      a[r] = pack(A[row][k], A[row][k + 1]);
    }
    for (unsigned r = 0; r < 2; ++r) b[r] = pack(B[2 * t + 8 * r][g], B[2 * t + 8 * r + 1][g]);
    float d[4];
    for (unsigned r = 0; r < 4; ++r) d[r] = C[g + 8 * (r / 2)][2 * t + r % 2];
    simt::mma_bf16_16816(d, a, b);
    for (unsigned r = 0; r < 4; ++r) D[g + 8 * (r / 2)][2 * t + r % 2] = d[r];
  });
  for (int i = 0; i < 16; ++i) {
    for (int n = 0; n < 8; ++n) {
      float want = C[i][n];
      for (int k = 0; k < 16; ++k) want += A[i][k] * B[k][n];
      INFO("D[" << i << "][" << n << "]");
      CHECK(D[i][n] == want);
    }
  }
}

// fixed_mma: fix64's units decoded by 16 warps, the products on the tensor cores (the host
// executor's MMA). Rows of 2048 (a unit a row), 2560 (units cross row ends: 16 units at the same
// columns every 4 rows) and 6144 (three units a row); batches 1, 5, 16 (one MMA's rows), 17 and 64
// (several). Named "simt: ..." so that the ThreadSanitizer pass runs it too (the kernel's barrier
// and its cross-warp sums are its own, and it has not run on a GPU yet), there at batches 1 and
// 17 only (one MMA's rows, and two passes).
TEST_CASE("simt: fused mma: tensor-core products of fix64 units equal their BF16 reference", "[decoders][simt][fused]") {
  const Layout df11 = Layout::df11();
  const Case c = make_case({{32, 2048}, {64, 2560}, {16, 6144}}, 12);
  const EncodedUnit enc = encode(c.unit.view(), df11, 1);
  REQUIRE(dec::fused_can_implement(enc, c.mats, 64, dec::FusedDecode::fixed_mma).ok);
  CHECK_FALSE(dec::fused_can_implement(enc, c.mats, 65, dec::FusedDecode::fixed_mma).ok);
  CHECK_FALSE(dec::fused_can_implement(enc, c.mats, 17, dec::FusedDecode::fixed).ok);  // the GEMV kernels: 16
#if defined(__SANITIZE_THREAD__)
  for (int batch : {1, 17}) check_case(c, batch, df11, dec::FusedDecode::fixed_mma);
#else
  for (int batch : {1, 5, 16, 17, 64}) check_case(c, batch, df11, dec::FusedDecode::fixed_mma);
#endif
}

TEST_CASE("fused mma: the shapes the tensor-core kernel tiles, and the rest refused with the reason",
          "[decoders][fused]") {
  const Layout df11 = Layout::df11();
  auto reason = [&](const std::vector<std::pair<int64_t, int64_t>>& shapes) {
    const Case c = make_case(shapes, 13);
    return dec::fused_can_implement(encode(c.unit.view(), df11, 1), c.mats, 1, dec::FusedDecode::fixed_mma);
  };
  CHECK(reason({{16, 2048}, {32, 5120}, {16, 4096}, {16, 14336}}).ok);  // Nemo's row lengths
  CHECK_THAT(reason({{16, 1024}}).reason, Catch::Contains("rows of 1024 elements") && Catch::Contains("at least 2048"));
  CHECK_THAT(reason({{16, 2100}}).reason, Catch::Contains("multiple of 128"));
  CHECK_THAT(reason({{16, 5120}}).reason, Catch::Contains("16 rows") && Catch::Contains("groups of 32"));
  CHECK_THAT(reason({{8, 2048}}).reason, Catch::Contains("groups of 16"));
  CHECK_THAT(reason({{16, 2048}, {16, 2176}}).reason, Catch::Contains("matrix 1 has 16 rows") &&
                                                         Catch::Contains("groups of 256"));
  for (const auto d : {dec::FusedDecode::two_pass, dec::FusedDecode::one_pass, dec::FusedDecode::fixed,
                       dec::FusedDecode::fixed_nh, dec::FusedDecode::fixed_late, dec::FusedDecode::fixed_wide,
                       dec::FusedDecode::fixed_mma}) {
    CHECK(dec::fused_decode_named(dec::fused_decode_name(d)) == d);
  }
  CHECK_FALSE(dec::fused_decode_named("mma").has_value());
  // Its warps' rows 32 bytes further apart than fixed's (bank conflicts), the rows last, nothing else moved.
  const dec::SmemLayout fl = dec::fused::fused_smem_layout(dec::FusedDecode::fixed, 2, 2048, 16);
  const dec::SmemLayout ml = dec::fused::fused_smem_layout(dec::FusedDecode::fixed_mma, 2, 2048, 16);
  CHECK(fl.exps_stride == 2304);
  CHECK(ml.exps_stride == 2304 + dec::fused::kMmaRowPad);
  CHECK(ml.exps == fl.exps);
  CHECK(ml.table == fl.table);
  CHECK(ml.total == fl.total + 16 * dec::fused::kMmaRowPad);
  CHECK(ml.exps_stride % 8 == 0);  // the MMA step's 8-byte exponent loads
  // Never picked by a decoder's name: fixed's variant stays fixed.
  dec::Registry reg;
  dec::register_all(reg);
  const dec::Decoder* fix = reg.find("multi12ng.gap5-fix64.exp-smem-v16.t512.b8.persist");
  REQUIRE(fix != nullptr);
  CHECK(dec::fused_decode_for(*fix) == dec::FusedDecode::fixed);
}

TEST_CASE("fused: which decoders' device images the fused kernels can read (e2e's DF11 models share them)",
          "[decoders][fused]") {
  dec::Registry reg;
  dec::register_all(reg);
  const auto shares = [&](const char* name) {
    const auto* v = dynamic_cast<const dec::VariantDecoder*>(reg.find(name));
    REQUIRE(v != nullptr);
    const std::optional<dec::FusedDecode> d = dec::fused_decode_for(*v);
    REQUIRE(d.has_value());
    return dec::fused_can_share_image(v->spec(), *d);
  };
  // Multi and flat roots, gaps and positions (two-pass, one-pass), or a fix64 image (fixed).
  CHECK(shares("multi12.gap5-cnt.exp-smem-v16.t256.b16.persist").ok);
  CHECK(shares("multi12n.gap5-warp.exp-smem-v16.t512.b8").ok);
  CHECK(shares("multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist").ok);
  CHECK(shares("multi12ng.gap5-fix64.exp-smem-v16.t512.b8.persist").ok);
  CHECK(shares("multi11w.gap5-fix64.exp-smem-v16.t512.b8.persist").ok);
  // Layouts the fused decodes read, images they cannot: no multi root, no flat root.
  const dec::Status lut = shares("lut8x4.gap5-block.smem-out.t512.b8");
  CHECK_FALSE(lut.ok);
  CHECK_THAT(lut.reason, Catch::Contains("lut8x4.gap5-block.smem-out.t512.b8") && Catch::Contains("multi-symbol and flat"));
  CHECK_FALSE(shares("multi12ng.gap5-cnt.exp-smem-reg-v16.t256.b16.persist").ok);
  // Every registered decoder with a fused decode is one or the other, and the kernels' own fused
  // specs can share their images.
  int can = 0, cannot = 0;
  for (const auto& d : reg.all()) {
    const auto* v = dynamic_cast<const dec::VariantDecoder*>(d.get());
    if (v == nullptr) continue;
    const std::optional<dec::FusedDecode> f = dec::fused_decode_for(*v);
    if (!f) continue;
    (dec::fused_can_share_image(v->spec(), *f).ok ? can : cannot) += 1;
  }
  CHECK(can >= 5);
  CHECK(cannot >= 2);
  for (const dec::FusedDecode f : {dec::FusedDecode::two_pass, dec::FusedDecode::one_pass, dec::FusedDecode::fixed,
                                   dec::FusedDecode::fixed_nh, dec::FusedDecode::fixed_late, dec::FusedDecode::fixed_wide}) {
    CHECK(dec::fused_can_share_image(dec::fused_spec(f), f).ok);
  }
}

TEST_CASE("fused: the layouts the kernels read, and the rest refused by name", "[decoders][fused]") {
  {
    dec::Registry reg;
    dec::register_all(reg);
    const dec::Decoder* fix = reg.find("multi12ng.gap5-fix64.exp-smem-v16.t512.b8.persist");
    const dec::Decoder* warp = reg.find("multi12n.gap5-warp.exp-smem-v16.t512.b8");
    REQUIRE(fix != nullptr);
    REQUIRE(warp != nullptr);
    CHECK(dec::fused_decode_for(*fix) == dec::FusedDecode::fixed);
    const dec::Decoder* nh = reg.find("multi12n.gap5-fix64.exp-smem-nh-v16.t512.b8.persist");
    REQUIRE(nh != nullptr);
    CHECK(dec::fused_decode_for(*nh) == dec::FusedDecode::fixed_nh);
    CHECK(dec::fused_spec(dec::FusedDecode::fixed_nh).layout() == Layout::df11());
    const dec::Decoder* late = reg.find("multi12n.gap5-fix64.exp-smem-late-v16.t512.b8.persist");
    REQUIRE(late != nullptr);
    CHECK(dec::fused_decode_for(*late) == dec::FusedDecode::fixed_late);
    CHECK(dec::fused_spec(dec::FusedDecode::fixed_late).layout() == Layout::df11());
    for (const char* name : {"multi11w.gap5-fix64.exp-smem-v16.t512.b8.persist", "multi11w.gap5-fix64.exp-smem-v16.t512.b8.dyn"}) {
      const dec::Decoder* wide = reg.find(name);
      REQUIRE(wide != nullptr);
      CHECK(dec::fused_decode_for(*wide) == dec::FusedDecode::fixed_wide);
    }
    CHECK(dec::fused_spec(dec::FusedDecode::fixed_wide).layout() == Layout::df11());
    // The wide root's other stagings have no fused decode of their own: refused, not run as another.
    for (const char* name : {"multi11w.gap5-fix64.exp-smem-late-v16.t512.b8.persist",
                             "multi11w.gap5-fix64.exp-smem-nh-v16.t512.b8.persist"}) {
      const dec::Decoder* other = reg.find(name);
      REQUIRE(other != nullptr);
      CHECK_FALSE(dec::fused_decode_for(*other).has_value());
    }
    CHECK(dec::fused_spec(dec::FusedDecode::fixed_wide).wide_root());
    CHECK(dec::fused_decode_for(*warp) == dec::FusedDecode::two_pass);
    const Case c = make_case({{8, 512}}, 5);
    const EncodedUnit count = encode(c.unit.view(), dec::fused_spec(dec::FusedDecode::one_pass).layout(), 1);
    const dec::Status st = dec::fused_can_implement(count, c.mats, 1, dec::FusedDecode::fixed);
    CHECK_FALSE(st.ok);  // the fixed decode reads DF11's layout only
    CHECK_THAT(st.reason, Catch::Contains(Layout::df11().name()));
  }
  CHECK(dec::fused_decode_for(Layout::df11()) == dec::FusedDecode::two_pass);
  CHECK(dec::fused_decode_for(dec::fused_spec(dec::FusedDecode::one_pass).layout()) == dec::FusedDecode::one_pass);
  CHECK_FALSE(dec::fused_decode_for(Layout::canonical(16, 512, 8, PositionScheme::block)).has_value());
  const Case c = make_case({{8, 512}}, 5);
  const EncodedUnit canon = encode(c.unit.view(), Layout::canonical(16, 512, 8, PositionScheme::block), 1);
  const dec::Status st = dec::fused_can_implement(canon, c.mats, 1);
  CHECK_FALSE(st.ok);
  CHECK_THAT(st.reason, Catch::Contains(Layout::df11().name()) &&
                            Catch::Contains(dec::fused_spec(dec::FusedDecode::one_pass).layout().name()));
  // A plan of one layout with a unit of the other: refused before any launch.
  const EncodedUnit two = encode(c.unit.view(), Layout::df11(), 1);
  const EncodedUnit one = encode(c.unit.view(), dec::fused_spec(dec::FusedDecode::one_pass).layout(), 1);
  const dec::FusedPlan plan = dec::plan_fused(two, c.mats);
  const auto x = activations(512, 1);
  std::vector<uint16_t> y(8);
  CHECK_THROWS_WITH(dec::fused_gemv_simt(one, plan, nullptr, {x.data()}, {y.data()}, 1),
                    Catch::Contains("is not the plan's"));
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

TEST_CASE("fused plan: the blocks of an element range are exactly those that meet it", "[decoders][fused]") {
  const Case c = make_case({{60, 300}, {70, 256}, {20, 1000}}, 5);
  const EncodedUnit enc = encode(c.unit.view(), Layout::df11(), 2);
  const dec::FusedPlan plan = dec::plan_fused(enc, c.mats);
  REQUIRE(plan.n_blocks() == enc.n_blocks());
  const uint64_t n = enc.n_elements;
  std::mt19937_64 rng(11);
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, n}, {0, 1}, {n - 1, n}, {5, 5}};
  for (const auto& m : c.mats) ranges.emplace_back(m.offset, m.offset + static_cast<uint64_t>(m.out * m.in));
  for (int i = 0; i < 200; ++i) {
    const uint64_t a = rng() % (n + 1), b = rng() % (n + 1);
    ranges.emplace_back(std::min(a, b), std::max(a, b));
  }
  for (const auto& [lo, hi] : ranges) {
    uint64_t first = plan.n_blocks(), last = 0;
    for (uint64_t b = 0; b < plan.n_blocks(); ++b) {
      if (plan.block_pos[b] < hi && plan.block_pos[b + 1] > lo) {
        first = std::min(first, b);
        last = b + 1;
      }
    }
    const auto [b0, b1] = plan.blocks(lo, hi);
    INFO("range [" << lo << ", " << hi << ")");
    if (lo == hi || last == 0) {
      REQUIRE(b0 == b1);
    } else {
      REQUIRE(b0 == first);
      REQUIRE(b1 == last);
    }
  }
}

TEST_CASE("fused decode+GEMV runs: matrix subsets, float outputs with strides, accumulation", "[decoders][fused]") {
  // Four matrices whose boundaries fall inside DF11 blocks, so a run of some of them decodes
  // blocks that also hold rows of the others.
  // Twice: the two-pass decode over DF11 blocks, and the fixed decode over fix64's units.
  const Case c = make_case({{6, 2048}, {8, 1536}, {5, 3004}, {4, 1000}}, 7);
  const int batch = 3;
  const EncodedUnit enc = encode(c.unit.view(), Layout::df11(), 2);
  const bool fixed = GENERATE(false, true);
  const std::optional<dec::FusedDecode> decode =
      fixed ? std::optional<dec::FusedDecode>(dec::FusedDecode::fixed) : std::nullopt;
  const dec::FusedPlan plan = dec::plan_fused(enc, c.mats, decode);
  INFO((fixed ? "fix64 units" : "DF11 blocks"));
  int inside = 0;  // matrix boundaries strictly inside a block (a unit)
  for (const auto& m : c.mats) {
    const auto [b0, b1] = plan.blocks(m.offset, m.offset + 1);
    inside += b1 == b0 + 1 && plan.block_pos[b0] < m.offset;
  }
  REQUIRE(inside >= (fixed ? 1 : 2));  // units: 12288 and 24576 fall on unit ends, 39596 inside
  const std::size_t n = c.mats.size();
  std::vector<std::vector<uint16_t>> xs, full(n);
  std::vector<const uint16_t*> xp;
  std::vector<uint16_t*> yp;
  for (std::size_t i = 0; i < n; ++i) {
    xs.push_back(activations(static_cast<std::size_t>(batch * c.mats[i].in), 200 + i));
    full[i].assign(static_cast<std::size_t>(batch * c.mats[i].out), 0xFFFF);
    xp.push_back(xs[i].data());
    yp.push_back(full[i].data());
  }
  dec::fused_gemv_simt(enc, plan, nullptr, xp, yp, batch);  // every matrix, BF16 outputs

  constexpr uint32_t kPoison = 0x7FC0DEADu;  // a NaN no sum produces
  auto bits = [](float f) { return std::bit_cast<uint32_t>(f); };
  auto ld = [&](std::size_t m) { return c.mats[m].out + 3; };  // padded rows: must stay untouched
  std::vector<std::vector<float>> f(n), fref(n);
  for (std::size_t m = 0; m < n; ++m) {
    f[m].assign(static_cast<std::size_t>(batch * ld(m)), std::bit_cast<float>(kPoison));
    fref[m] = f[m];
  }
  std::vector<float> scratch;
  auto subset_run = [&](const std::vector<std::size_t>& ms, std::vector<std::vector<float>>& out, const uint16_t* w,
                        bool accumulate, float* partials = nullptr) {
    dec::GemvRun run;
    run.partials = partials;
    run.x.assign(n, nullptr);
    run.y.assign(n, {});
    run.batch = batch;
    run.weights = w;
    for (const std::size_t m : ms) {
      run.x[m] = xs[m].data();
      run.y[m] = dec::GemvOut{nullptr, out[m].data(), ld(m), accumulate};
    }
    dec::fused_gemv_simt(enc, plan, run);
  };

  // Matrices 0 and 3 first (2 lies between them and must not be computed), then 1, then 2; the
  // last in a caller's partials buffer (poisoned: a partial read before written shows).
  subset_run({0, 3}, f, nullptr, false);
  for (std::size_t m : {std::size_t{1}, std::size_t{2}}) {
    for (float v : f[m]) REQUIRE(bits(v) == kPoison);
  }
  subset_run({1}, f, nullptr, false);
  scratch.assign(std::max<uint64_t>(plan.n_pairs(), 1) * batch, std::nanf(""));
  subset_run({2}, f, nullptr, false, scratch.data());
  for (std::size_t m = 0; m < n; ++m) {
    const auto& mt = c.mats[m];
    for (int b = 0; b < batch; ++b) {
      for (int64_t r = 0; r < ld(m); ++r) {
        const float v = f[m][static_cast<std::size_t>(b * ld(m) + r)];
        INFO("matrix " << m << " batch row " << b << " row " << r);
        if (r >= mt.out) {
          REQUIRE(bits(v) == kPoison);  // the stride's padding
        } else {
          // The float sum, rounded, is the BF16 output of the run over every matrix.
          REQUIRE(float_to_bf16(v) == full[m][static_cast<std::size_t>(b * mt.out + r)]);
        }
      }
    }
  }
  // The same runs reading BF16 weights: the same floats, bit for bit.
  subset_run({0, 1}, fref, c.flat.data(), false);
  subset_run({2, 3}, fref, c.flat.data(), false);
  for (std::size_t m = 0; m < n; ++m) {
    INFO("matrix " << m);
    REQUIRE(fref[m].size() == f[m].size());
    for (std::size_t i = 0; i < f[m].size(); ++i) REQUIRE(bits(fref[m][i]) == bits(f[m][i]));
  }
  // Accumulation: y += sum, onto a residual.
  std::vector<std::vector<float>> acc(n);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  for (std::size_t m = 0; m < n; ++m) {
    acc[m].resize(f[m].size());
    for (auto& v : acc[m]) v = nd(rng);
  }
  const auto before = acc;
  subset_run({0, 1, 2, 3}, acc, nullptr, true);
  for (std::size_t m = 0; m < n; ++m) {
    for (int b = 0; b < batch; ++b) {
      for (int64_t r = 0; r < ld(m); ++r) {
        const auto i = static_cast<std::size_t>(b * ld(m) + r);
        const float want = r < c.mats[m].out ? before[m][i] + f[m][i] : before[m][i];
        INFO("matrix " << m << " batch row " << b << " row " << r);
        REQUIRE(bits(acc[m][i]) == bits(want));
      }
    }
  }
  // Refusals: no matrix, two outputs, a stride shorter than the rows, accumulating BF16.
  dec::GemvRun bad;
  bad.x.assign(n, nullptr);
  bad.y.assign(n, {});
  REQUIRE_THROWS_AS(dec::fused_gemv_simt(enc, plan, bad), Error);
  bad.x[0] = xs[0].data();
  uint16_t y16[64];
  bad.y[0] = dec::GemvOut{y16, f[0].data(), 0, false};
  REQUIRE_THROWS_AS(dec::fused_gemv_simt(enc, plan, bad), Error);
  bad.y[0] = dec::GemvOut{nullptr, f[0].data(), c.mats[0].out - 1, false};
  REQUIRE_THROWS_AS(dec::fused_gemv_simt(enc, plan, bad), Error);
  bad.y[0] = dec::GemvOut{y16, nullptr, 0, true};
  REQUIRE_THROWS_AS(dec::fused_gemv_simt(enc, plan, bad), Error);
  // BF16 weights off 16-byte alignment would take the scalar path and sum in another order
  // than the decoding run: refused, not silently different.
  bad.y[0] = dec::GemvOut{nullptr, f[0].data(), 0, false};
  std::vector<uint16_t> shifted(c.flat.size() + 8);
  std::copy(c.flat.begin(), c.flat.end(), shifted.begin() + 1);
  bad.weights = shifted.data() + 1;
  REQUIRE_THROWS_WITH(dec::fused_gemv_simt(enc, plan, bad), Catch::Contains("16-byte aligned"));
  // The every-matrix entry point refuses a missing input instead of skipping the matrix.
  auto xp_missing = xp;
  xp_missing[2] = nullptr;
  REQUIRE_THROWS_WITH(dec::fused_gemv_simt(enc, plan, nullptr, xp_missing, yp, batch), Catch::Contains("matrix 2"));
}
