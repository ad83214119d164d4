// Host emulation of every registered decoder variant, bit for bit against the input and the CPU
// decoder: random data, exact thread/block boundary sizes, long codes, a synthetic Nemo layer
// slice, per-matrix ranges. Runs in CI (no GPU needed).
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "codec/bf16.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "codec/tables.hpp"
#include "datasets/synthetic.hpp"
#include "decoder.hpp"
#include "common/host_image.hpp"
#include "common/variant_decoder.hpp"
#include "gap_decode/gap_decode.cuh"
#include "gpu_ranges.hpp"
#include "helpers.hpp"

using namespace df11;
using df11::test::random_weights;
using df11::test::unit_of;
using df11::test::words_with_exponents;

namespace {

const dec::Registry& registry() { return dec::all_decoders(); }

std::vector<uint16_t> flatten(const Unit& u) {
  std::vector<uint16_t> v;
  for (const auto& t : u.tensors) v.insert(v.end(), t.data.begin(), t.data.end());
  return v;
}

// Every variant on the unit, encoded once per distinct layout; also every tensor's range alone.
void check_all_variants(const Unit& u, bool ranges = true) {
  const std::vector<uint16_t> expect = flatten(u);
  std::map<std::string, EncodedUnit> encoded;
  for (const auto& d : registry().all()) {
    const Layout l = d->layout();
    auto it = encoded.find(l.name());
    if (it == encoded.end()) it = encoded.emplace(l.name(), encode(u.view(), l, 2)).first;
    const EncodedUnit& enc = it->second;
    INFO(d->name() << " on " << u.name << " (" << expect.size() << " elements)");
    // official-ptx needs the PTX file to run on a GPU; its emulation runs regardless.
    if (d->name() != "official-ptx") REQUIRE(d->can_implement(enc).ok);
    std::vector<uint16_t> out(expect.size(), 0xFFFF);  // poisoned
    d->decode_host(enc, out);
    REQUIRE(df11::test::word_diff(out, expect) == "");
    if (ranges && d->name() != "official-ptx") {
      uint64_t lo = 0;
      for (const auto& t : u.tensors) {
        const uint64_t hi = lo + t.data.size();
        std::vector<uint16_t> part(hi - lo, 0xFFFF);
        d->decode_host(enc, part, lo, hi);
        REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + static_cast<std::ptrdiff_t>(lo)));
        lo = hi;
      }
    }
  }
}

}  // namespace

TEST_CASE("the registry holds at least 8 variants covering the design axes", "[decoders]") {
  const auto& all = registry().all();
  REQUIRE(all.size() >= 8);
  std::set<std::string> names, tables, partitions, stagings, granularities;
  std::set<int> tpbs, bpts;
  for (const auto& d : all) {
    REQUIRE(names.insert(d->name()).second);
    const dec::Traits t = d->traits();
    tables.insert(t.table);
    partitions.insert(t.partition);
    stagings.insert(t.staging);
    granularities.insert(t.granularity);
    tpbs.insert(t.threads_per_block);
    bpts.insert(t.bytes_per_thread);
  }
  CHECK(tables.size() >= 5);
  CHECK(partitions.size() >= 3);
  CHECK(stagings.size() >= 4);
  CHECK(granularities == std::set<std::string>{"matrix", "unit", "unit/persist", "unit/dyn"});
  CHECK(tpbs == std::set<int>{256, 512});
  CHECK(bpts == std::set<int>{8, 16});
  REQUIRE(registry().find("lut8x4.gap5-block.smem-out.t512.b8") != nullptr);
  REQUIRE(registry().find("lut8x4.gap5-block.smem-out.t512.b8")->layout().is_df11());
  REQUIRE(registry().find("official-ptx") != nullptr);
}

TEST_CASE("variants are selected by glob", "[decoders]") {
  CHECK(dec::glob_match("*", "anything"));
  CHECK(dec::glob_match("lut8x4.*", "lut8x4.gap5-block.smem-out.t512.b8"));
  CHECK_FALSE(dec::glob_match("lut8x4.*", "flat12.gap5-warp.keep.t512.b8"));
  CHECK(dec::glob_match("*.t256.b16", "canon16.gap4-warp.smem-out.t256.b16"));
  CHECK(dec::glob_match("flat12?.*", "flat12c.gap4-tpos.direct.t256.b16"));
  CHECK(dec::glob_match("*keep*", "flat12.gap5-warp.keep.t512.b8"));
  CHECK_FALSE(dec::glob_match("*keep", "flat12.gap5-warp.keep.t512.b8"));
  CHECK(registry().select("lut8x4*").size() >= 4);
  CHECK(registry().select("*.matrix").size() >= 1);
  CHECK(registry().select("nothing-matches").empty());
  CHECK(registry().layouts().size() >= 3);
}

TEST_CASE("emulation is bit-exact on random weights at edge sizes", "[decoders]") {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{123457}}) {
    check_all_variants(unit_of(random_weights(n, 50 + n, 120, 0.6), "rand" + std::to_string(n)), false);
  }
}

TEST_CASE("emulation decodes every BF16 pattern its variant's layout can hold", "[decoders]") {
  // All 65536 words (Inf, NaN, subnormals, |x| >= 2^113) where the layout holds every exponent,
  // the 61440 with exponent < 240 in DF11's; among trained-like words, so that the rare
  // exponents take the longest codes. Whole unit and a range that cuts blocks at both ends.
  std::map<bool, Unit> units;
  for (const bool all : {false, true}) {
    units[all] = unit_of(df11::test::every_pattern_among_trained(all, 100000, 4242 + all), all ? "every" : "holdable");
  }
  std::map<std::string, EncodedUnit> encoded;
  std::set<bool> seen;
  for (const auto& d : registry().all()) {
    const Layout l = d->layout();
    const Unit& u = units.at(l.all_exponents());
    seen.insert(l.all_exponents());
    auto it = encoded.find(l.name());
    if (it == encoded.end()) it = encoded.emplace(l.name(), encode(u.view(), l, 2)).first;
    const EncodedUnit& enc = it->second;
    const std::vector<uint16_t>& expect = u.tensors[0].data;
    const uint64_t n = expect.size();
    INFO(d->name() << " on " << u.name << " (" << n << " elements)");
    if (d->name() != "official-ptx") REQUIRE(d->can_implement(enc).ok);  // test_gpu decodes these units too
    std::vector<uint16_t> out(n, 0xFFFF);
    d->decode_host(enc, out);
    REQUIRE(df11::test::word_diff(out, expect) == "");
    if (d->name() == "official-ptx") continue;
    const uint64_t lo = n / 7 + 5, hi = n - n / 11;
    std::vector<uint16_t> part(hi - lo, 0xFFFF);
    d->decode_host(enc, part, lo, hi);
    REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + static_cast<std::ptrdiff_t>(lo)));
  }
  REQUIRE(seen.size() == 2);  // variants of both kinds of layout were decoded
}

TEST_CASE("emulation is bit-exact at sizes around thread and block boundaries", "[decoders]") {
  // One-bit codes: n elements are n stream bits, so sizes land on boundaries exactly. 4096 and
  // 32768 bits are the 512 x 8-byte and 256 x 16-byte block sizes; 64 and 128 the chunk sizes.
  for (uint64_t base : {uint64_t{64}, uint64_t{128}, uint64_t{32768}, uint64_t{65536}}) {
    for (int64_t d : {-1, 0, 1}) {
      const uint64_t n = base + d;
      auto data = words_with_exponents(n, n, {100, 101});
      data[0] = merge_bf16(100, 3);
      data[1] = merge_bf16(101, 4);
      check_all_variants(unit_of(data, "edge" + std::to_string(n)), false);
    }
  }
}

TEST_CASE("emulation decodes long codes through the second-level tables", "[decoders]") {
  // Fibonacci counts: codes up to the 16-bit limit of our layouts.
  check_all_variants(unit_of(df11::test::fibonacci_words(26, 80, 12), "fib"), false);
}

TEST_CASE("emulation is bit-exact on a synthetic Nemo layer slice, whole and per matrix", "[decoders]") {
  const Unit layer = synth::make_nemo_layer(2, 7, 0.01, 0);  // 1% of every matrix's rows
  REQUIRE(layer.tensors.size() == 7);
  check_all_variants(layer, true);
}

TEST_CASE("the 8-wide merge of the vector copy-out equals merge_bf16 for every byte pair", "[decoders]") {
  // All 65536 (exponent, sign/mantissa) pairs in each of the 8 byte positions, the other
  // positions filled with a different pair, so that a byte leaking into a neighbour shows.
  for (unsigned pos = 0; pos < 8; ++pos) {
    for (unsigned e = 0; e < 256; ++e) {
      for (unsigned sm = 0; sm < 256; ++sm) {
        uint64_t e8 = 0, sm8 = 0;
        for (unsigned k = 0; k < 8; ++k) {
          const unsigned ek = k == pos ? e : (e + 37 * k + 1) & 0xFF, sk = k == pos ? sm : (sm ^ (0x5A + k)) & 0xFF;
          e8 |= static_cast<uint64_t>(ek) << (8 * k);
          sm8 |= static_cast<uint64_t>(sk) << (8 * k);
        }
        const dec::Words8 w = dec::merge8(e8, sm8);
        const uint64_t half = pos < 4 ? w.lo : w.hi;
        const auto got = static_cast<uint16_t>(half >> (16 * (pos % 4)));
        if (got != merge_bf16(static_cast<uint8_t>(e), static_cast<uint8_t>(sm))) {
          FAIL("position " << pos << " exponent " << e << " sign/mantissa " << sm);
        }
      }
    }
  }
  SUCCEED();
}

TEST_CASE("fill_padded copies the source and zeroes the rest, at any size and thread count", "[decoders]") {
  // Sizes around the 16 MB pieces and the 32 MB threshold for threads; the output poisoned first.
  constexpr std::size_t kMB = std::size_t{1} << 20;
  const std::vector<std::pair<std::size_t, std::size_t>> cases = {
      {0, 0}, {0, 5}, {7, 7}, {7, 23}, {16 * kMB, 16 * kMB + 16}, {16 * kMB + 3, 40 * kMB},
      {40 * kMB, 40 * kMB + 272}, {33 * kMB, 33 * kMB}, {1, 48 * kMB}};
  for (const int threads : {1, 3, 0}) {
    for (const auto& [n_src, n_out] : cases) {
      INFO("src " << n_src << " out " << n_out << " threads " << threads);
      std::vector<uint8_t> src(n_src);
      for (std::size_t i = 0; i < n_src; ++i) src[i] = static_cast<uint8_t>(i * 131 + (i >> 16) + 1);
      std::vector<uint8_t> out(n_out, 0xA5);
      dec::fill_padded(out, src, threads);
      CHECK(std::equal(src.begin(), src.end(), out.begin()));
      CHECK(std::all_of(out.begin() + static_cast<std::ptrdiff_t>(n_src), out.end(), [](uint8_t b) { return b == 0; }));
    }
  }
  const std::vector<uint8_t> src(10, 1);
  CHECK_THROWS_AS(dec::padded_copy(src, 9), Error);
  const dec::PaddedBytes p = dec::padded_copy(src, 12);
  CHECK(p.size() == 12);
  CHECK(p[9] == 1);
  CHECK(p[10] == 0);
}

TEST_CASE("a variant refuses units of another layout and malformed units", "[decoders]") {
  const Unit u = unit_of(random_weights(5000, 3), "x");
  const EncodedUnit df11 = encode(u.view(), Layout::df11());
  const dec::Decoder* canon = registry().find("canon16.gap4-warp.smem-out.t256.b16");
  REQUIRE(canon != nullptr);
  const dec::Status st = canon->can_implement(df11);
  REQUIRE_FALSE(st.ok);
  REQUIRE_THAT(st.reason, Catch::Contains("layout"));
  std::vector<uint16_t> out(5000);
  REQUIRE_THROWS_AS(canon->decode_host(df11, out), Error);

  const dec::Decoder* lut = registry().find("lut8x4.gap5-block.smem-out.t512.b8");
  EncodedUnit bad = df11;
  bad.output_positions[4] ^= 0x01;  // the final position no longer says n_elements
  REQUIRE_THROWS_WITH(lut->decode_host(bad, out), Catch::Contains("unit x"));
  EncodedUnit bad_luts = df11;
  for (auto& v : bad_luts.luts)
    if (v >= 240) v = 241;  // pointers to table 15, which does not exist
  bad_luts.luts[0] = 241;
  REQUIRE_THROWS_WITH(lut->decode_host(bad_luts, out), Catch::Contains("points to table"));
  // Ranges outside the unit.
  std::vector<uint16_t> small(10);
  REQUIRE_THROWS_AS(lut->decode_host(df11, small, 4995, 5005), Error);
}

TEST_CASE("the fixed-output partition's upload finds every thread's start bit, and refuses a stream its gaps "
          "disagree with", "[decoders]") {
  const uint64_t n = 70001;  // several DF11 blocks (~12 K codes each), a last thread of 17 codes
  const Unit u = unit_of(random_weights(n, 11), "w");
  const EncodedUnit enc = encode(u.view(), Layout::df11());
  REQUIRE(enc.n_blocks() >= 4);
  const dec::Decoder* fix = registry().find("multi12n.gap5-fix64.exp-smem-v16.t256.b8.persist");
  REQUIRE(fix != nullptr);
  const dec::VariantSpec spec{dec::TableKind::multi_lut_n, dec::Partition::fixed_out, dec::Staging::exp_smem, 256, 8,
                              false, dec::Schedule::persist};
  REQUIRE(spec.name() == fix->name());
  const dec::HostImage img = dec::prepare_image(spec, enc);
  const std::vector<uint16_t> words = flatten(u);
  const uint64_t threads = (n + 63) / 64;
  REQUIRE(img.positions.size() == (threads + 31) / 32);
  REQUIRE(img.lane_off.size() == img.positions.size() * 32);
  // Thread g starts where the codes of elements 0 .. 64g - 1 end: their lengths summed.
  const auto lengths = df11_length_row(enc.luts);
  uint64_t bit = 0;
  for (uint64_t i = 0; i < n; ++i) {
    if (i % 64 == 0) {
      const uint64_t g = i / 64;
      INFO("thread " << g);
      REQUIRE(img.positions[g / 32] + img.lane_off[g] == bit);
    }
    bit += lengths[exponent_of(words[i])];
  }
  REQUIRE(bit <= enc.encoded_exponent.size() * 8);
  std::vector<uint16_t> out(n);
  fix->decode_host(enc, out);
  REQUIRE(out == words);
  // Block 1's first gap one bit off: block 0's codes no longer end where block 1's begin.
  EncodedUnit bad = enc;
  const uint64_t c = static_cast<uint64_t>(enc.layout.threads_per_block);  // block 1's first chunk
  const unsigned gap = enc.gap(c), moved = gap + 1 < 32 ? gap + 1 : gap - 1;
  const uint64_t gbit = c * 5;
  REQUIRE(gbit % 8 == 0);  // its 5 bits lead a byte
  bad.gaps[gbit / 8] = static_cast<uint8_t>((bad.gaps[gbit / 8] & 0x07) | (moved << 3));
  REQUIRE(bad.gap(c) == moved);
  REQUIRE_THROWS_WITH(fix->decode_host(bad, out), Catch::Contains("unit w: block 0") && Catch::Contains("disagree"));
}

TEST_CASE("fix64 takes a unit whose last DF11 block holds only the end of the last code", "[decoders]") {
  // The stream ends 8 bits past a block boundary, inside a long last code: no code starts in the
  // last block (its gap means nothing), and the block before must end at the stream's end.
  // Fibonacci counts (a deep code) under a dominant exponent of 1-bit code, whose count sets the
  // length to the bit; the rarest exponent last.
  const Layout df11 = Layout::df11();
  const uint64_t block_bits = df11.block_bytes() * 8, target = 2 * block_bits + 8;
  std::vector<uint16_t> base = df11::test::fibonacci_words(18, 100, 3);
  std::vector<uint16_t> words;
  EncodedUnit enc;
  uint64_t pad = target - base.size() * 4;  // a first guess; refined from the code's lengths
  for (int attempt = 0; attempt < 4; ++attempt) {
    words = base;
    words.insert(words.end(), pad, merge_bf16(127, 5));
    words.push_back(merge_bf16(100, 9));  // exponent 100 appears once in the Fibonacci part: the rarest
    enc = encode(unit_of(words, "tail").view(), df11);
    const auto len = df11_length_row(enc.luts);
    REQUIRE(len[127] == 1);
    uint64_t other = 0;
    for (const uint16_t w : words)
      if (exponent_of(w) != 127) other += len[exponent_of(w)];
    if (enc.encoded_exponent.size() * 8 == target && pad + other == target) break;
    REQUIRE(other < target);
    pad = target - other;
  }
  REQUIRE(enc.encoded_exponent.size() * 8 == target);
  REQUIRE(df11_length_row(enc.luts)[100] > 8);  // the last code starts in the block before
  REQUIRE(enc.n_blocks() == 3);
  REQUIRE(enc.position(2) == enc.position(3));  // no code starts in the last block
  std::vector<uint16_t> out(words.size());
  registry().find("multi12n.gap5-fix64.exp-smem-v16.t256.b8.persist")->decode_host(enc, out);
  REQUIRE(out == words);
}

// Not "simt: ..." (the ThreadSanitizer pass runs those; this one is long for it, and its races
// would be the other SIMT tests' too).
TEST_CASE("fix64 kernel bodies loop over many units a warp, also from the dyn counter", "[decoders][simt]") {
  // The SIMT runs give persistent kernels 3 CUDA blocks: 24 or 48 warps, so 150 K elements (74
  // units) give every warp two to four units (the other SIMT tests' units give most warps one).
  const uint64_t n = 150001;
  const Unit u = unit_of(random_weights(n, 21), "c");
  const EncodedUnit enc = encode(u.view(), Layout::df11());
  const std::vector<uint16_t> expect = flatten(u);
  for (const char* name : {"multi12n.gap5-fix64.exp-smem-v16.t256.b8.persist",
                           "multi12ng.gap5-fix64.exp-smem-v16.t512.b8.dyn"}) {
    INFO(name);
    const dec::Decoder* d = registry().find(name);
    REQUIRE(d != nullptr);
    for (const dec::Order order : {dec::Order::ascending, dec::Order::descending}) {
      INFO((order == dec::Order::descending ? "descending" : "ascending"));
      std::vector<uint16_t> out(n, 0xDEAD);
      d->decode_simt(enc, out, 0, n, order);
      REQUIRE(out == expect);
      // A range from mid-unit to mid-unit, not 8-aligned.
      std::vector<uint16_t> part(90001 - 3001, 0xDEAD);
      d->decode_simt(enc, part, 3001, 90001, order);
      REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + 3001));
    }
  }
}

TEST_CASE("a launch's units in either order: each once, and descending ends on the units nearest lo",
          "[decoders]") {
  // What the warp-unit kernels (warp-count, fix64) walk: warp w of `stride` takes the w-th,
  // (w + stride)-th, ... unit of the launch in its order; u is the unit, nu its next (hints).
  constexpr uint64_t base = 40, count = 101, stride = 16;
  for (const uint32_t desc : {0u, 1u}) {
    INFO((desc ? "descending" : "ascending"));
    std::vector<int> seen(count, 0);
    std::vector<uint64_t> last_of_warp;
    for (uint64_t w = 0; w < stride; ++w) {
      std::vector<std::pair<uint64_t, uint64_t>> walk;
      dec::warp_units<false>(nullptr, desc, base, count, w, stride, 0,
                             [&](uint64_t u, uint64_t nu) { walk.emplace_back(u, nu); });
      REQUIRE_FALSE(walk.empty());
      for (std::size_t i = 0; i < walk.size(); ++i) {
        const auto [u, nu] = walk[i];
        REQUIRE(u >= base);
        REQUIRE(u < base + count);
        ++seen[u - base];
        // The next unit handed to the hints is the one the warp decodes next, or none (base + count).
        CHECK(nu == (i + 1 < walk.size() ? walk[i + 1].first : base + count));
        if (i > 0) CHECK((desc ? u < walk[i - 1].first : u > walk[i - 1].first));
      }
      last_of_warp.push_back(walk.back().first);
    }
    for (uint64_t i = 0; i < count; ++i) CHECK(seen[i] == 1);
    // The units every warp decodes last: the first `stride` of the range when descending (the
    // ones a reader starting at lo wants in L2), the last ones when ascending.
    std::sort(last_of_warp.begin(), last_of_warp.end());
    if (desc) {
      CHECK(last_of_warp.front() == base);
      CHECK(last_of_warp.back() == base + stride - 1);
    } else {
      CHECK(last_of_warp.back() == base + count - 1);
      CHECK(last_of_warp.front() >= base + count - stride);
    }
  }
  CHECK(dec::unit_in_order(1, base, count, count) == base + count);  // none
  CHECK(dec::unit_in_order(0, base, count, 7) == base + 7);
  CHECK(dec::unit_in_order(1, base, count, 7) == base + count - 8);
}

TEST_CASE("loop statistics count every decode-loop iteration, lane by lane and warp by warp", "[decoders]") {
  const uint64_t n = 60000;
  const Unit u = unit_of(random_weights(n, 5), "s");
  const EncodedUnit df11 = encode(u.view(), Layout::df11());
  std::vector<uint16_t> out(n);
  auto stats_of = [&](const std::string& name) {
    const dec::Decoder* d = registry().find(name);
    REQUIRE(d != nullptr);
    dec::LoopStats st;
    {
      const dec::LoopStatsScope counting(st);
      d->decode_host(df11, out);
    }
    REQUIRE(out == flatten(u));
    return st;
  };
  // One code per iteration: both passes of a single-symbol decoder iterate once per element, and
  // once per code that the last byte's padding bits (at most 7) seem to hold.
  const dec::LoopStats flat = stats_of("flat12.gap5-warp.exp-smem-v16.t512.b8");
  CHECK(flat.pass1.lane_iterations >= n);
  CHECK(flat.pass1.lane_iterations <= n + 7);
  CHECK(flat.pass2.lane_iterations == flat.pass1.lane_iterations);
  CHECK(flat.pass2.warp_iterations >= flat.pass2.lane_iterations);
  CHECK(flat.pass2.warps == df11.n_blocks() * 512 / 32);
  // The multi root: the same loop in both passes, a third of the iterations; the counted loop
  // in pass 2 needs fewer (no entry refused at the chunk's end).
  const dec::LoopStats multi = stats_of("multi12.gap5-warp.exp-smem-v16.t512.b8");
  CHECK(multi.pass1.lane_iterations == multi.pass2.lane_iterations);
  CHECK(multi.pass2.lane_iterations < n / 2);
  const dec::LoopStats counted = stats_of("multi12n.gap5-warp.exp-smem-v16.t512.b8");
  CHECK(counted.pass1.lane_iterations == multi.pass1.lane_iterations);
  CHECK(counted.pass2.lane_iterations < multi.pass2.lane_iterations);
  // Fixed output: one pass, warps of 32 threads of 64 codes each.
  const dec::LoopStats fix = stats_of("multi12n.gap5-fix64.exp-smem-v16.t256.b8.persist");
  CHECK(fix.pass1.lane_iterations == 0);
  CHECK(fix.pass2.warps == (n + 2047) / 2048);
  CHECK(fix.pass2.lane_iterations > n / 4);
  CHECK(fix.pass2.warp_iterations >= fix.pass2.lane_iterations);
  // Unset, nothing counts.
  dec::LoopStats none;
  { const dec::LoopStatsScope counting(none); }
  registry().find("flat12.gap5-warp.exp-smem-v16.t512.b8")->decode_host(df11, out);
  CHECK(none.pass2.lane_iterations == 0);
}

TEST_CASE("launches refuse arrays that a staging's vector loads cannot read", "[decoders]") {
  // exp-smem-pf copies 16-byte pieces of sign/mantissa (cp.async); exp-smem-reg loads each
  // thread's chunk with one bytes_per_thread-byte load. Every upload aligns both arrays; the
  // check stands between any other pointer and a misaligned-address fault.
  alignas(16) static uint8_t buf[64] = {};
  dec::LaunchParams p{};
  p.stream = buf;
  p.sign_mantissa = buf;
  using dec::Partition, dec::Staging, dec::TableKind;
  const dec::VariantSpec reg16{TableKind::multi_lut, Partition::thread_count, Staging::exp_smem_reg, 256, 16, false, dec::Schedule::persist};
  const dec::VariantSpec reg8{TableKind::multi_lut, Partition::gap_warp, Staging::exp_smem_reg, 512, 8};
  const dec::VariantSpec pf{TableKind::multi_lut, Partition::gap_warp, Staging::exp_smem_pf, 512, 8};
  const dec::VariantSpec plain{TableKind::multi_lut, Partition::gap_warp, Staging::exp_smem, 512, 8};
  for (const auto* s : {&reg16, &reg8, &pf, &plain}) REQUIRE_NOTHROW(dec::check_arrays_aligned(*s, p));
  p.stream = buf + 8;
  REQUIRE_THROWS_WITH(dec::check_arrays_aligned(reg16, p), Catch::Contains("16-byte aligned"));
  REQUIRE_NOTHROW(dec::check_arrays_aligned(reg8, p));
  p.stream = buf + 4;
  REQUIRE_THROWS_WITH(dec::check_arrays_aligned(reg8, p), Catch::Contains("8-byte aligned"));
  REQUIRE_NOTHROW(dec::check_arrays_aligned(pf, p));
  REQUIRE_NOTHROW(dec::check_arrays_aligned(plain, p));
  p.stream = buf;
  p.sign_mantissa = buf + 1;
  REQUIRE_THROWS_WITH(dec::check_arrays_aligned(pf, p), Catch::Contains("16-byte aligned"));
  REQUIRE_NOTHROW(dec::check_arrays_aligned(reg16, p));
}

TEST_CASE("the warp-count partition's count sums: byte_sum8 and the lanes' shares", "[decoders]") {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t x = i < 2 ? (i == 0 ? 0 : ~uint64_t{0}) : rng();
    unsigned want = 0;
    for (int k = 0; k < 8; ++k) want += static_cast<unsigned>((x >> (8 * k)) & 0xFF);
    REQUIRE(dec::byte_sum8(x) == want);
  }
  // Lane shares of the counts before warp w: together exactly counts[0, 32w) of the block.
  std::vector<uint8_t> counts(2 * 256);
  for (auto& c : counts) c = static_cast<uint8_t>(rng() % 60);
  dec::LaunchParams p{};
  p.counts = counts.data();
  for (uint64_t b = 0; b < 2; ++b) {
    for (unsigned w = 0; w < 8; ++w) {
      unsigned before = 0, want = 0;
      for (unsigned l = 0; l < 32; ++l) {
        const dec::LaneCounts lc = dec::lane_counts(p, b, 256, w, l);
        REQUIRE(lc.count == counts[b * 256 + w * 32 + l]);
        before += lc.before;
      }
      for (unsigned c = 0; c < 32 * w; ++c) want += counts[b * 256 + c];
      REQUIRE(before == want);
    }
  }
}

TEST_CASE("official-ptx is not supported without a PTX file", "[decoders]") {
  const dec::Decoder* off = registry().find("official-ptx");
  const EncodedUnit e = encode(unit_of(random_weights(100, 1)).view(), Layout::df11());
  const dec::Status st = off->can_implement(e);
  REQUIRE_FALSE(st.ok);
  REQUIRE_THAT(st.reason, Catch::Contains("--official-ptx"));
}

TEST_CASE("every variant but official-ptx accepts the units the GPU test decodes", "[emulation]") {
  // test_gpu's check_unit fails a variant that refuses one of these (it cannot run here).
  dec::Registry reg;
  dec::register_all(reg);
  const std::vector<Unit> units = {test::unit_of(test::random_weights(1, 1), "one"),
                                   test::unit_of(test::random_weights(7, 2), "seven"),
                                   test::unit_of(test::random_weights(40001, 3, 120, 0.8), "rand-small"),
                                   test::unit_of(test::random_weights(300001, 3, 120, 0.8), "rand"),
                                   test::unit_of(test::every_pattern_among_trained(false, 100000, 4242), "holdable"),
                                   test::unit_of(test::every_pattern_among_trained(true, 100000, 4243), "every"),
                                   test::unit_of(test::every_pattern_among_trained(true, 0, 4243), "every-small"),
                                   test::unit_of(test::random_weights(600001, 5, 120, 0.8), "rand-dyn"),
                                   test::unit_of(test::random_weights(20001, 5, 120, 0.8), "rand-dyn-small"),
                                   synth::make_nemo_layer(1, 3, 0.02, 0)};
  for (const Unit& u : units) {
    std::map<std::string, EncodedUnit> encoded;
    const bool all_exponents = u.name.rfind("every", 0) == 0;  // test_gpu gives these to such layouts only
    for (const auto& d : reg.all()) {
      if (d->name() == "official-ptx") continue;
      const Layout l = d->layout();
      if (all_exponents && !l.all_exponents()) continue;
      auto it = encoded.find(l.name());
      if (it == encoded.end()) it = encoded.emplace(l.name(), encode(u.view(), l, 0)).first;
      const dec::Status st = d->can_implement(it->second);
      INFO(d->name() << " on " << u.name << ": " << st.reason);
      CHECK(st.ok);
    }
  }
}

TEST_CASE("the ranges the GPU test decodes are valid and decode right on the host, on every unit it uses",
          "[emulation]") {
  // test_gpu's check_variant launches each of gpu_test_ranges; a reversed or out-of-bounds range
  // there would fail every variant on a lent GPU (it did once: [3, 1) on a unit of one element).
  const std::vector<Unit> units = {test::unit_of(test::random_weights(1, 1), "one"),
                                   test::unit_of(test::random_weights(7, 2), "seven"),
                                   test::unit_of(test::random_weights(40001, 3, 120, 0.8), "rand-small"),
                                   test::unit_of(test::random_weights(300001, 3, 120, 0.8), "rand"),
                                   test::unit_of(test::every_pattern_among_trained(false, 100000, 4242), "holdable"),
                                   synth::make_nemo_layer(1, 3, 0.02, 0)};
  const dec::Decoder* d = registry().find("multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist");
  REQUIRE(d != nullptr);
  for (const Unit& u : units) {
    const std::vector<uint16_t> expect = flatten(u);
    std::vector<uint64_t> sizes;
    for (const auto& t : u.tensors) sizes.push_back(t.data.size());
    const auto ranges = test::gpu_test_ranges(expect.size(), sizes);
    REQUIRE(ranges.size() >= 1 + u.tensors.size());  // the whole unit and every tensor at least
    if (expect.size() >= 1000) {
      REQUIRE(ranges.size() == 6 + u.tensors.size());
      // The two ranges from an 8-aligned start start there, past 0 (vector stores mid-unit).
      int aligned = 0;
      for (const auto& r : ranges) aligned += r.what.find("8-aligned start") != std::string::npos && r.lo > 0 && r.lo % 8 == 0;
      REQUIRE(aligned == 2);
    }
    const EncodedUnit enc = encode(u.view(), d->layout(), 0);
    for (const test::DecodeRange& r : ranges) {
      INFO(u.name << ": " << r.what << " [" << r.lo << ", " << r.hi << ")");
      REQUIRE(r.lo < r.hi);
      REQUIRE(r.hi <= expect.size());
      std::vector<uint16_t> part(r.hi - r.lo, 0xFFFF);
      if (r.order == dec::Order::ascending) {
        d->decode_host(enc, part, r.lo, r.hi);
      } else {
        d->decode_simt(enc, part, r.lo, r.hi, r.order);
      }
      REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + static_cast<std::ptrdiff_t>(r.lo)));
    }
  }
}

TEST_CASE("every layout has variants whose image a damaged stream passes (the GPU test launches them)",
          "[emulation]") {
  // test_gpu's check_damaged: the same units (test::damaged_units, the same generator); upload is
  // prepare_image and a copy, and the GPU test requires some launch per layout.
  dec::Registry reg;
  dec::register_all(reg);
  for (const bool small : {true, false}) {
    const auto words = random_weights(small ? 12001 : 40001, 8, 120, 0.8);
    std::mt19937_64 rng(17);
    for (const Layout& l : reg.layouts()) {
      const EncodedUnit good = encode(unit_of(words, "dmg").view(), l, 0);
      int accepted = 0;
      for (const EncodedUnit& bad : df11::test::damaged_units(good, rng)) {
        for (const auto& d : reg.all()) {
          if (!(d->layout() == l) || !d->can_implement(bad).ok || d->name() == "official-ptx") continue;
          const auto* v = dynamic_cast<const dec::VariantDecoder*>(d.get());
          REQUIRE(v != nullptr);
          try {
            (void)dec::prepare_image(v->spec(), bad);
            ++accepted;
          } catch (const Error&) {
          }
        }
      }
      INFO(l.name() << (small ? " (small)" : ""));
      CHECK(accepted > 0);
    }
  }
}
