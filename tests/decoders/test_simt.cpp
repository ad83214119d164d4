// The host SIMT executor (kernels/simt) and, on it, every decoder variant's own kernel body
// (gap_decode_block: table loads, cp.async staging, block and warp scans, barriers, smem-out
// copies) bit for bit against the input. The executor's tests check the CUDA semantics the
// kernels rely on: coordinates, barriers that publish shared memory, shuffles, exited threads
// leaving barriers, and that a deadlock or a thread's exception ends the launch with an error.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <stdexcept>

#include "codec/encoder.hpp"
#include "decoder.hpp"
#include "helpers.hpp"
#include "common/compare.cuh"
#include "simt/simt.cuh"

using namespace df11;
using df11::test::random_weights;
using df11::test::unit_of;
using df11::test::words_with_exponents;

TEST_CASE("simt: every thread of every block runs once with its coordinates", "[decoders][simt]") {
  const simt::Dim3 grid{3, 2, 1}, block{8, 4, 2};
  // Catch2 is not thread-safe: bodies record, the test thread checks.
  std::vector<std::atomic<int>> seen(grid.count() * block.count());
  std::atomic<int> bad_dims{0};
  simt::launch(grid, block, 0, [&](uint8_t*) {
    const simt::Dim3 t = simt::thread_idx(), b = simt::block_idx();
    if (simt::block_dim().count() != block.count() || simt::grid_dim().count() != grid.count()) bad_dims.fetch_add(1);
    const uint64_t tl = t.x + block.x * (t.y + block.y * t.z), bl = b.x + grid.x * (b.y + grid.y * b.z);
    seen[bl * block.count() + tl].fetch_add(1);
  });
  REQUIRE(bad_dims.load() == 0);
  for (const auto& s : seen) REQUIRE(s.load() == 1);
}

TEST_CASE("simt: barriers publish shared memory, each block starts poisoned", "[decoders][simt]") {
  constexpr unsigned n = 100;
  std::vector<uint32_t> out(4 * n), first(4 * n);
  simt::launch({4}, {n}, n * 4, [&](uint8_t* smem) {
    auto* s = reinterpret_cast<uint32_t*>(smem);
    const unsigned t = simt::tid_x(), b = simt::bid_x();
    first[b * n + t] = s[t];  // before anyone wrote: the poison of this block
    simt::sync_block();
    s[t] = 1000 * b + t;
    simt::sync_block();
    out[b * n + t] = s[n - 1 - t];
  });
  for (unsigned b = 0; b < 4; ++b) {
    for (unsigned t = 0; t < n; ++t) {
      REQUIRE(first[b * n + t] == 0xCDCDCDCDu);
      REQUIRE(out[b * n + t] == 1000 * b + (n - 1 - t));
    }
  }
}

TEST_CASE("simt: warp shuffles, whole and partial last warps", "[decoders][simt]") {
  for (unsigned n : {32u, 96u, 48u}) {
    std::vector<uint32_t> up(n), x(n), idx(n);
    simt::launch({1}, {n}, 0, [&](uint8_t*) {
      const unsigned t = simt::tid_x();
      up[t] = simt::warp_shfl_up(t * 7 + 1, 3);
      x[t] = simt::warp_shfl_xor(t * 5 + 2, 16);
      idx[t] = simt::warp_shfl(t * 3 + 1, (t % 32) < 16 ? 0u : 20u);  // two sources in one warp
    });
    for (unsigned t = 0; t < n; ++t) {
      const unsigned lane = t % 32, warp_base = t - lane, lanes = std::min(32u, n - warp_base);
      INFO("n " << n << " thread " << t);
      REQUIRE(up[t] == (lane >= 3 ? (t - 3) * 7 + 1 : t * 7 + 1));
      const unsigned src = lane ^ 16u;
      REQUIRE(x[t] == (src < lanes ? (warp_base + src) * 5 + 2 : t * 5 + 2));
      const unsigned from = lane < 16 ? 0u : 20u;
      REQUIRE(idx[t] == (from < lanes ? (warp_base + from) * 3 + 1 : t * 3 + 1));
    }
  }
}

TEST_CASE("simt: warp_all_gather gives every lane every lane's words, warp by warp, whole warps only",
          "[decoders][simt]") {
  constexpr unsigned kN = 64;  // two warps, three rounds each: a slot reused before a lane has read it would show
  std::vector<uint64_t> sum(kN * 3, 0);
  simt::launch({1}, {kN}, 0, [&](uint8_t*) {
    const unsigned t = simt::tid_x();
    for (unsigned round = 0; round < 3; ++round) {
      const uint64_t mine[3] = {t * 1000ull + round, t * 7ull + 1, ~static_cast<uint64_t>(t + round)};
      uint64_t all[32 * 3];
      simt::warp_all_gather(mine, 3, all);
      uint64_t s = 0;
      for (unsigned i = 0; i < 32; ++i) {
        const uint64_t lane_t = (t / 32) * 32 + i;
        s += (all[i * 3] == lane_t * 1000 + round) + (all[i * 3 + 1] == lane_t * 7 + 1) +
             (all[i * 3 + 2] == ~(lane_t + round));
      }
      sum[t * 3 + round] = s;
    }
  });
  for (unsigned i = 0; i < sum.size(); ++i) {
    INFO("thread " << i / 3 << " round " << i % 3);
    CHECK(sum[i] == 96);  // all 32 lanes' three words, each right
  }
  CHECK_THROWS_WITH(simt::launch({1}, {48}, 0, [](uint8_t*) {
                      const uint64_t w = 1;
                      uint64_t all[32];
                      simt::warp_all_gather(&w, 1, all);
                    }),
                    Catch::Contains("a partial warp"));
  CHECK_THROWS_WITH(simt::launch({1}, {32}, 0, [](uint8_t*) {
                      const uint64_t w[5] = {};
                      uint64_t all[32 * 5];
                      simt::warp_all_gather(w, 5, all);
                    }),
                    Catch::Contains("at most 4"));
}

TEST_CASE("simt: atomic_add hands each caller its own value, across threads and blocks", "[decoders][simt]") {
  uint32_t counter = 5;
  std::vector<uint32_t> got(3 * 64);
  simt::launch({3}, {64}, 0, [&](uint8_t*) {
    got[simt::bid_x() * 64 + simt::tid_x()] = simt::atomic_add(&counter, 1u);
  });
  REQUIRE(counter == 5 + 3 * 64);
  std::sort(got.begin(), got.end());
  for (uint32_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == 5 + i);
}

TEST_CASE("simt: atomic_inc wraps at its limit: limit + 1 takes from 0 leave 0", "[decoders][simt]") {
  uint32_t counter = 0;
  std::vector<uint32_t> got(3 * 64);
  simt::launch({3}, {64}, 0, [&](uint8_t*) {
    got[simt::bid_x() * 64 + simt::tid_x()] = simt::atomic_inc(&counter, 3 * 64 - 1);
  });
  REQUIRE(counter == 0);
  std::sort(got.begin(), got.end());
  for (uint32_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == i);
  uint32_t c = 7;
  REQUIRE(simt::atomic_inc(&c, 7) == 7);
  REQUIRE(c == 0);
}

TEST_CASE("simt: sync_warp publishes a warp's shared-memory writes to its lanes, warps apart", "[decoders][simt]") {
  // Two warps, each with its own region, never meeting at a block barrier (the warp-count
  // decoders' pattern): each lane writes, the warp syncs, each lane reads its neighbour's.
  std::vector<uint32_t> out(64);
  simt::launch({3}, {64}, 64 * 4, [&](uint8_t* smem) {
    const unsigned t = simt::tid_x(), lane = t % 32, base = t - lane;
    auto* s = reinterpret_cast<uint32_t*>(smem);
    for (unsigned round = 0; round < 3; ++round) {
      s[t] = t * 10 + round + simt::bid_x() * 1000;
      simt::sync_warp();
      out[t] = s[base + (lane + 1) % 32];
      simt::sync_warp();  // nobody overwrites before every lane has read
    }
  });
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned lane = t % 32, base = t - lane;
    REQUIRE(out[t] == (base + (lane + 1) % 32) * 10 + 2 + 2 * 1000);
  }
}

TEST_CASE("simt: lanes of one warp in different warp operations are an error", "[decoders][simt]") {
  // Half the warp in a shuffle, half in sync_warp: divergent warp operations, not a pairing.
  REQUIRE_THROWS_WITH(simt::launch({1}, {32}, 0,
                                   [](uint8_t*) {
                                     if (simt::tid_x() < 16) {
                                       (void)simt::warp_shfl_xor(1u, 1);
                                     } else {
                                       simt::sync_warp();
                                     }
                                   }),
                      Catch::Contains("divergent warp operations"));
}

TEST_CASE("simt: byte_perm follows the PTX prmt selector semantics", "[decoders][simt]") {
  const uint32_t x = 0x33221100u, y = 0x77665544u;  // byte i of y:x is 0x11 * i
  CHECK(simt::byte_perm(x, y, 0x3210u) == x);
  CHECK(simt::byte_perm(x, y, 0x7654u) == y);
  CHECK(simt::byte_perm(x, y, 0x0123u) == 0x00112233u);  // the byte swap core.cuh uses
  CHECK(simt::byte_perm(x, y, 0x5140u) == 0x55114400u);  // interleave: x0 y0 x1 y1
  CHECK(simt::byte_perm(x, y, 0x7362u) == 0x77336622u);  // interleave: x2 y2 x3 y3
}

TEST_CASE("simt: threads that returned do not hold up the others' barriers", "[decoders][simt]") {
  std::vector<uint32_t> out(64);
  simt::launch({2}, {64}, 64 * 4, [&](uint8_t* smem) {
    const unsigned t = simt::tid_x();
    if (t % 2) return;
    auto* s = reinterpret_cast<uint32_t*>(smem);
    s[t] = t;
    simt::sync_block();
    out[t] = s[(t + 2) % 64];
    simt::sync_block();
  });
  for (unsigned t = 0; t < 64; t += 2) REQUIRE(out[t] == (t + 2) % 64);
}

TEST_CASE("simt: a deadlock, an exception or a misuse ends the launch with an error", "[decoders][simt]") {
  simt::LaunchOptions quick;
  quick.deadlock_timeout = std::chrono::milliseconds(200);
  // Only thread 0 reaches the barrier while the others wait in a shuffle: never completes.
  REQUIRE_THROWS_WITH(simt::launch({1}, {64}, 0,
                                   [](uint8_t*) {
                                     if (simt::tid_x() == 0) {
                                       simt::sync_block();
                                     } else {
                                       (void)simt::warp_shfl_up(1, 1);
                                     }
                                   },
                                   quick),
                      Catch::Contains("deadlock"));
  REQUIRE_THROWS_WITH(simt::launch({2}, {32}, 0,
                                   [](uint8_t*) {
                                     if (simt::bid_x() == 1 && simt::tid_x() == 5) throw std::runtime_error("thread 5 failed");
                                     simt::sync_block();
                                   },
                                   quick),
                      Catch::Contains("thread 5 failed"));
  REQUIRE_THROWS_WITH(simt::launch({1}, {32}, 0, [](uint8_t*) { (void)simt::shfl_up(0xFFFFu, 1, 1); }, quick),
                      Catch::Contains("partial-mask"));
  REQUIRE_THROWS_AS(simt::launch({1}, {1025}, 0, [](uint8_t*) {}), Error);
  REQUIRE_THROWS_WITH(simt::sync_threads(), Catch::Contains("outside simt::launch"));
}

namespace {

// Under ThreadSanitizer (the ci-tsan pass, which looks for races between a kernel body's threads)
// each variant decodes the whole unit and the descending range that cuts blocks at both ends; the
// three ascending ranges test range arithmetic, which the release build's run of the same tests
// checks, and would double the pass's longest tests.
#if defined(__SANITIZE_THREAD__)
constexpr bool kAscendingRanges = false;
#else
constexpr bool kAscendingRanges = true;
#endif

// Every variant's kernel body on the SIMT executor: whole unit and ranges that cut blocks.
void check_simt_all_variants(const Unit& u) {
  std::vector<uint16_t> expect;
  for (const auto& t : u.tensors) expect.insert(expect.end(), t.data.begin(), t.data.end());
  const uint64_t n = expect.size();
  std::map<std::string, EncodedUnit> encoded;
  for (const auto& d : dec::all_decoders().all()) {
    if (d->name() == "official-ptx") {
      CHECK_FALSE(d->honors_order());  // the published kernel's own order
      std::vector<uint16_t> out(n);
      REQUIRE_THROWS_AS(d->decode_simt(encode(u.view(), d->layout(), 2), out, 0, n), Error);
      continue;
    }
    const Layout l = d->layout();
    auto it = encoded.find(l.name());
    if (it == encoded.end()) it = encoded.emplace(l.name(), encode(u.view(), l, 2)).first;
    const EncodedUnit& enc = it->second;
    INFO(d->name() << " on " << u.name << " (" << n << " elements)");
    std::vector<uint16_t> out(n, 0xFFFF);
    d->decode_simt(enc, out, 0, n);
    REQUIRE(df11::test::word_diff(out, expect) == "");
    for (const auto& [lo, hi] : {std::pair<uint64_t, uint64_t>{n / 3, n / 3 + n / 4}, {n - n / 5, n}, {7, 8}}) {
      if (!kAscendingRanges || hi > n || lo > hi) continue;
      std::vector<uint16_t> part(hi - lo, 0xFFFF);
      d->decode_simt(enc, part, lo, hi);
      REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + static_cast<std::ptrdiff_t>(lo)));
    }
    // The units in descending order (the last written nearest lo), over a range that cuts
    // blocks at both ends: the same bits. (Ranges in both orders on many units a warp: the
    // fix64 and dyn tests.)
    REQUIRE(d->honors_order());
    const uint64_t lo = n / 7 + 1, hi = n - n / 9;
    std::vector<uint16_t> part(hi - lo, 0xFFFF);
    d->decode_simt(enc, part, lo, hi, dec::Order::descending);
    REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + static_cast<std::ptrdiff_t>(lo)));
  }
}

}  // namespace

TEST_CASE("simt: every variant's kernel body is bit-exact over several blocks", "[decoders][simt]") {
  // ~2.6 bits per code: 60000 elements are ~5 blocks of 4 KiB of stream.
  check_simt_all_variants(unit_of(random_weights(60000, 77, 120, 0.6), "rand60000"));
}

TEST_CASE("every variant's kernel body on the SIMT executor decodes every BF16 pattern its layout can hold",
          "[decoders][simt]") {
  // As the emulation test of that name: all 65536 words (61440 in DF11's layout, exponent < 240)
  // among trained-like words, here through the kernel bodies. (Not named "simt: ...": the
  // ThreadSanitizer pass, which runs those, finds races with the several-block test above; this
  // one is about bits, and would add minutes there.)
  std::map<bool, std::vector<uint16_t>> words;
  for (const bool all : {false, true}) words[all] = df11::test::every_pattern_among_trained(all, 20000, 5151 + all);
  std::map<std::string, EncodedUnit> encoded;
  int decoded = 0;
  for (const auto& d : dec::all_decoders().all()) {
    if (d->name() == "official-ptx") continue;  // no SIMT body (refused: the test above)
    const Layout l = d->layout();
    const std::vector<uint16_t>& expect = words.at(l.all_exponents());
    const Unit u = unit_of(expect, l.all_exponents() ? "every" : "holdable");
    auto it = encoded.find(l.name());
    if (it == encoded.end()) it = encoded.emplace(l.name(), encode(u.view(), l, 2)).first;
    INFO(d->name() << " on " << u.name);
    std::vector<uint16_t> out(expect.size(), 0xFFFF);
    d->decode_simt(it->second, out, 0, expect.size());
    REQUIRE(df11::test::word_diff(out, expect) == "");
    ++decoded;
  }
  REQUIRE(decoded >= 8);
}

TEST_CASE("simt: the dyn schedule hands out every DF11 block past each CUDA block's first two", "[decoders][simt]") {
  // ~40 DF11 blocks of 4 KiB of stream, against 2 x 3 taken without the counter by the 3 CUDA
  // blocks of a host run (2 x 24 units by their warps, the warp-count row: ~320 units): most
  // come from the counter. Whole unit and ranges that start and end inside blocks.
  const Unit u = unit_of(random_weights(500000, 91, 120, 0.6), "rand500000");
  std::vector<uint16_t> expect = u.tensors[0].data;
  const uint64_t n = expect.size();
  const auto dyn = dec::all_decoders().select("*.dyn");
  REQUIRE(dyn.size() >= 2);
  for (const dec::Decoder* d : dyn) {
    INFO(d->name());
    const EncodedUnit enc = encode(u.view(), d->layout(), 2);
    REQUIRE(enc.n_blocks() > 30);
    std::vector<uint16_t> out(n, 0xFFFF);
    d->decode_simt(enc, out, 0, n);
    REQUIRE(df11::test::word_diff(out, expect) == "");
    // Ranges, one in each order (descending: the counter's takes still wrap it back to 0).
    struct Range {
      uint64_t lo, hi;
      dec::Order order;
    };
    for (const Range& r : {Range{12345, 400001, dec::Order::descending}, Range{n - 70000, n, dec::Order::ascending}}) {
      std::vector<uint16_t> part(r.hi - r.lo, 0xFFFF);
      d->decode_simt(enc, part, r.lo, r.hi, r.order);
      REQUIRE(std::equal(part.begin(), part.end(), expect.begin() + static_cast<std::ptrdiff_t>(r.lo)));
    }
  }
}

TEST_CASE("simt: kernel bodies at an exact block boundary and with long codes", "[decoders][simt]") {
  // One-bit codes: 32768 elements fill exactly one 4 KiB block; one more starts a second.
  for (uint64_t n : {uint64_t{32768}, uint64_t{32769}}) {
    auto data = words_with_exponents(n, n, {100, 101});
    check_simt_all_variants(unit_of(data, "edge" + std::to_string(n)));
  }
  // Fibonacci counts: codes up to 18 bits (16 in our layouts).
  check_simt_all_variants(unit_of(df11::test::fibonacci_words(19, 90, 5), "fib"));
}

// ---- the device comparison's body (common/compare.cuh), as the sweep launches it ------------

namespace {

struct HostCompare {
  uint64_t checked, differ, first;
};

// compare_bf16 on the host executor over a grid of `blocks` x `threads`.
HostCompare compare_on_host(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, unsigned blocks,
                            unsigned threads) {
  dec::body::CompareTotals t{0, 0, dec::body::kNoDifference};
  simt::launch({blocks}, {threads}, 0, [&](uint8_t*) { dec::body::compare_bf16(a.data(), b.data(), a.size(), &t); });
  return {t.checked, t.differ, t.first};
}

}  // namespace

TEST_CASE("compare body: counts every element once and finds the first difference, any grid", "[decoders][simt]") {
  for (const std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9}, std::size_t{1000},
                              std::size_t{4099}}) {
    std::vector<uint16_t> a(n);
    for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<uint16_t>(i * 40503u + 7);
    for (const auto& [blocks, threads] : {std::pair{1u, 32u}, std::pair{3u, 64u}, std::pair{2u, 256u}}) {
      INFO("n " << n << ", grid " << blocks << " x " << threads);
      const HostCompare same = compare_on_host(a, a, blocks, threads);
      CHECK(same.checked == n);
      CHECK(same.differ == 0);
      CHECK(same.first == dec::body::kNoDifference);
      // One flipped bit anywhere: the low and high half of a word, a group's last element, the
      // tail after the last whole group, the last element.
      std::vector<std::size_t> spots{0, n - 1, n / 2};
      if (n > 8) spots.insert(spots.end(), {1, 7, 8, (n / 8) * 8 - 1});
      for (const std::size_t at : spots) {
        std::vector<uint16_t> b = a;
        b[at] ^= 0x8000;
        const HostCompare one = compare_on_host(a, b, blocks, threads);
        CHECK(one.checked == n);
        CHECK(one.differ == 1);
        CHECK(one.first == at);
      }
      // Both halves of a word, and elements far apart: all counted, the lowest reported.
      if (n >= 1000) {
        std::vector<uint16_t> b = a;
        for (const std::size_t at : {std::size_t{998}, std::size_t{600}, std::size_t{601}, n - 1, std::size_t{17}})
          b[at] ^= 1;
        const HostCompare many = compare_on_host(a, b, blocks, threads);
        CHECK(many.checked == n);
        CHECK(many.differ == 5);
        CHECK(many.first == 17);
      }
    }
  }
}
