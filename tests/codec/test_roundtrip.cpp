// Round trips, bit for bit: all 65536 BF16 patterns, exact thread/block boundary sizes, random
// weights, long codes, multi-tensor units, every partition parameter; encoder determinism.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "codec/bf16.hpp"
#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "codec/huffman.hpp"
#include "codec/tables.hpp"
#include "helpers.hpp"

using namespace df11;
using df11::test::random_weights;
using df11::test::unit_of;
using df11::test::words_with_exponents;

namespace {

// Encodes, checks the metadata invariants, decodes with the CPU decoder (several thread counts)
// and the serial reference, and requires bit equality with the input.
EncodedUnit check_roundtrip(const Unit& u, const Layout& layout) {
  const EncodedUnit enc = encode(u.view(), layout, 2);
  REQUIRE_NOTHROW(validate_encoded(enc));
  std::vector<uint16_t> expect;
  for (const auto& t : u.tensors) expect.insert(expect.end(), t.data.begin(), t.data.end());
  REQUIRE(enc.n_elements == expect.size());
  for (int threads : {1, 3}) {
    std::vector<uint16_t> out(expect.size(), 0xBEEF);  // poisoned: unwritten elements show
    decode_cpu(enc, out, threads);
    REQUIRE(df11::test::word_diff(out, expect) == "");
  }
  REQUIRE(decode_reference(enc) == expect);
  return enc;
}

std::vector<Layout> all_layouts() {
  return {
      Layout::df11(),
      Layout::canonical(16),
      Layout::canonical(12, 256, 16, PositionScheme::thread),
      Layout::canonical(32, 128, 8, PositionScheme::block),
      Layout::canonical(8, 32, 4, PositionScheme::thread),
      Layout::canonical(16, 256, 16, PositionScheme::count),
      Layout::canonical(8, 32, 4, PositionScheme::count),
      [] {
        Layout l = Layout::df11();
        l.threads_per_block = 256;
        l.bytes_per_thread = 16;
        return l;
      }(),
      [] {
        Layout l = Layout::df11();
        l.positions = PositionScheme::count;
        return l;
      }(),
      // Blocks of threads that are not a power of two (block positions, so the encoder divides).
      [] {
        Layout l = Layout::df11();
        l.threads_per_block = 24;
        return l;
      }(),
      [] {
        Layout l = Layout::canonical(16, 6, 8, PositionScheme::count);
        l.gap_bits = 8;
        return l;
      }(),
  };
}

}  // namespace

TEST_CASE("all 65536 BF16 patterns round-trip through our canonical layouts", "[codec][roundtrip]") {
  std::vector<uint16_t> all(65536);
  std::iota(all.begin(), all.end(), uint16_t{0});
  for (const Layout& l : {Layout::canonical(16), Layout::canonical(8, 256, 16, PositionScheme::thread)}) {
    INFO(l.name());
    const EncodedUnit enc = check_roundtrip(unit_of(all), l);
    // 256 equally frequent exponents: every code is 8 bits.
    REQUIRE(enc.encoded_exponent.size() == 65536);
  }
}

TEST_CASE("the DF11 layout round-trips every pattern it can hold and names what it cannot", "[codec][roundtrip]") {
  std::vector<uint16_t> holdable;
  for (uint32_t w = 0; w < 65536; ++w)
    if (exponent_of(static_cast<uint16_t>(w)) < 240) holdable.push_back(static_cast<uint16_t>(w));
  REQUIRE(holdable.size() == 61440);
  check_roundtrip(unit_of(holdable), Layout::df11());

  // Inf (exponent 255) at element 5 of tensor "b".
  Unit u;
  u.name = "model.layers.3";
  u.tensors.push_back({"a", {2, 2}, {0x3F80, 0x3F80, 0x3F80, 0x3F80}});
  std::vector<uint16_t> b(8, 0x4000);
  b[5] = 0x7F80;
  b[7] = 0x7FC0;  // NaN
  u.tensors.push_back({"b", {8}, b});
  REQUIRE_THROWS_WITH(encode(u.view(), Layout::df11()),
                      Catch::Contains("model.layers.3") && Catch::Contains("tensor b") &&
                          Catch::Contains("element 5") && Catch::Contains("exponent 255") &&
                          Catch::Contains("2 such elements"));
  // Our layout takes it.
  check_roundtrip(u, Layout::canonical(16));
}

TEST_CASE("sizes ending just before, on and after thread and block boundaries", "[codec][roundtrip]") {
  // Two equally frequent exponents: every code is one bit, so n elements are n stream bits and
  // the boundaries fall exactly where we put them.
  for (const Layout& l : all_layouts()) {
    const uint64_t chunk = static_cast<uint64_t>(l.chunk_bits());
    const uint64_t block = l.block_bytes() * 8;
    std::vector<uint64_t> sizes{0, 1, 7, 8, 9};
    for (uint64_t b : {chunk, 2 * chunk, block, 2 * block, 3 * block + chunk}) {
      for (int64_t d : {-1, 0, 1}) sizes.push_back(b + d);
    }
    for (uint64_t n : sizes) {
      INFO(l.name() << " n=" << n);
      auto data = words_with_exponents(n, n + 1, {120, 121});
      if (n >= 2) {
        // Guarantee both symbols occur so the code really is 1 bit per element.
        data[0] = merge_bf16(120, 1);
        data[1] = merge_bf16(121, 2);
      }
      const EncodedUnit enc = check_roundtrip(unit_of(data), l);
      if (n >= 2) REQUIRE(enc.encoded_exponent.size() == (n + 7) / 8);
    }
  }
}

TEST_CASE("random weights at 0, 1, 7 and many sizes, every layout", "[codec][roundtrip]") {
  std::vector<std::size_t> sizes{0, 1, 7, 33, 100, 1000, 4095, 12345, 70001, 200003};
  for (const Layout& l : all_layouts()) {
    for (std::size_t n : sizes) {
      INFO(l.name() << " n=" << n);
      check_roundtrip(unit_of(random_weights(n, 1000 + n, 120, 0.6)), l);
    }
  }
}

TEST_CASE("long codes: Fibonacci exponent counts drive codes to the length limit", "[codec][roundtrip]") {
  // Exponent 90+i appears fib(i) times: the unlimited code would be a chain 30 deep.
  const std::vector<uint16_t> data = df11::test::fibonacci_words(30, 90, 4);
  for (const Layout& l : {Layout::df11(), Layout::canonical(16), Layout::canonical(12, 64, 4, PositionScheme::thread),
                          Layout::canonical(24)}) {
    INFO(l.name());
    const EncodedUnit enc = check_roundtrip(unit_of(data), l);
    if (l.is_df11()) REQUIRE(enc.luts.size() > 2 * 256);  // sub-tables in use
  }
}

TEST_CASE("multi-tensor units keep split positions and tensor order", "[codec][roundtrip]") {
  Unit u;
  u.name = "model.layers.0";
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{
      {"self_attn.q_proj", {64, 40}}, {"self_attn.k_proj", {16, 40}}, {"empty", {0, 40}}, {"mlp.down_proj", {40, 33}}};
  uint64_t seed = 1;
  for (const auto& [name, shape] : shapes) {
    u.tensors.push_back({name, shape, random_weights(element_count(shape), seed++)});
  }
  const EncodedUnit enc = check_roundtrip(u, Layout::df11());
  REQUIRE(enc.split_positions == std::vector<int64_t>{64 * 40, 80 * 40, 80 * 40});
  REQUIRE(enc.tensor_names.size() == 4);
}

TEST_CASE("encoder output does not depend on the thread count", "[codec][roundtrip]") {
  // More than three encoder tasks (1 Mi elements each), with a task boundary inside a tensor
  // and tensor boundaries inside tasks.
  Unit u;
  u.name = "det";
  u.tensors.push_back({"a", {1500000}, random_weights(1500000, 1, 118, 0.5)});
  u.tensors.push_back({"b", {3}, random_weights(3, 2)});
  u.tensors.push_back({"c", {2200001}, random_weights(2200001, 3, 121, 0.2)});
  Layout df11_counts = Layout::df11();
  df11_counts.positions = PositionScheme::count;
  for (const Layout& l : {Layout::df11(), Layout::canonical(16, 256, 16, PositionScheme::thread), df11_counts}) {
    const EncodedUnit ref = encode(u.view(), l, 1);
    for (int threads : {2, 3, 8}) {
      INFO(l.name() << " threads " << threads);
      const EncodedUnit e = encode(u.view(), l, threads);
      REQUIRE(e.luts == ref.luts);
      REQUIRE(e.encoded_exponent == ref.encoded_exponent);
      REQUIRE(e.sign_mantissa == ref.sign_mantissa);
      REQUIRE(e.output_positions == ref.output_positions);
      REQUIRE(e.gaps == ref.gaps);
      REQUIRE(e.thread_counts == ref.thread_counts);
      REQUIRE(e.split_positions == ref.split_positions);
    }
    std::vector<uint16_t> expect;
    for (const auto& t : u.tensors) expect.insert(expect.end(), t.data.begin(), t.data.end());
    REQUIRE(decode_cpu(ref, 2) == expect);
  }
}

TEST_CASE("DF11 layout metadata has the official sizes", "[codec][roundtrip]") {
  const auto data = random_weights(300000, 77);
  const EncodedUnit enc = encode(unit_of(data).view(), Layout::df11());
  const uint64_t n_blocks = (enc.encoded_exponent.size() + 4095) / 4096;
  REQUIRE(enc.gaps.size() == 320 * n_blocks);
  REQUIRE(enc.output_positions.size() == 4 * (n_blocks + 1));
  REQUIRE(enc.sign_mantissa.size() == data.size());
  REQUIRE(enc.luts.size() % 256 == 0);
  // output_positions[b] is the index of the first element whose code starts in block b: check
  // against code lengths summed independently.
  const Histogram h = exponent_histogram(unit_of(data).view());
  const HuffmanCode code = build_code(h, 32);
  uint64_t bit = 0;
  uint64_t block = 0;
  for (uint64_t i = 0; i < data.size(); ++i) {
    while (bit >= block * 4096 * 8) {
      REQUIRE(enc.position(block) == i);
      ++block;
    }
    bit += code.length[exponent_of(data[i])];
  }
}

TEST_CASE("count layouts: DF11's arrays plus a count byte per thread that the per-thread positions imply",
          "[codec][roundtrip]") {
  const auto data = random_weights(300000, 78, 119, 0.6);
  Layout counted = Layout::df11();
  counted.positions = PositionScheme::count;
  REQUIRE(counted.name() == "chain32.t512.b8.g5.pcount");
  const EncodedUnit plain = encode(unit_of(data).view(), Layout::df11());
  const EncodedUnit enc = check_roundtrip(unit_of(data), counted);
  // The same stream, gaps, tables and block positions as the official layout...
  REQUIRE(enc.encoded_exponent == plain.encoded_exponent);
  REQUIRE(enc.gaps == plain.gaps);
  REQUIRE(enc.luts == plain.luts);
  REQUIRE(enc.output_positions == plain.output_positions);
  REQUIRE(plain.thread_counts.empty());
  // ...plus one byte per thread of every block: chunk c's count is the difference of the
  // per-thread positions of the same stream.
  Layout per_thread = counted;
  per_thread.positions = PositionScheme::thread;
  const EncodedUnit pt = encode(unit_of(data).view(), per_thread);
  REQUIRE(enc.thread_counts.size() == enc.n_blocks() * 512);
  for (uint64_t c = 0; c < enc.thread_counts.size(); ++c) {
    const uint32_t want = c < pt.n_chunks() ? pt.position(c + 1) - pt.position(c) : 0;
    REQUIRE(enc.thread_counts[c] == want);
  }
  REQUIRE(enc.stored_bytes() == plain.stored_bytes() + enc.thread_counts.size());
  // Chunks of up to 16 bytes only (a count byte holds at most 255 codes).
  Layout wide = Layout::canonical(16, 64, 32, PositionScheme::count);
  REQUIRE_THROWS_WITH(wide.validate(), Catch::Contains("bytes_per_thread <= 16"));
}

// The encoder and the fix64 upload run tasks on all cores and report a bad unit by the first
// failing block: that must be the lowest-numbered failing task, as a serial loop would name,
// whichever thread threw first (a test that corrupts block 1 expects the error of block 0).
TEST_CASE("parallel_for rethrows the lowest-numbered failing task's exception, whatever the timing",
          "[codec][roundtrip]") {
  for (int round = 0; round < 3; ++round) {
    // Task 3 throws late (after the other workers have run on past it and task 50 has thrown).
    std::atomic<bool> late_thrown{false};
    try {
      df11::parallel_for(200, 4, [&](std::size_t t) {
        if (t == 3) {
          std::this_thread::sleep_for(std::chrono::milliseconds(30));
          late_thrown = true;
          throw df11::Error("task 3");
        }
        if (t == 50) throw df11::Error("task 50");
      });
      FAIL("no exception");
    } catch (const df11::Error& e) {
      CHECK(late_thrown.load());
      CHECK(std::string(e.what()) == "task 3");
    }
  }
  // One failure among many: it is the one reported, and the tasks below it all ran.
  std::vector<std::atomic<int>> ran(100);
  CHECK_THROWS_WITH(df11::parallel_for(100, 3,
                                       [&](std::size_t t) {
                                         ran[t] = 1;
                                         if (t == 60) throw df11::Error("task 60");
                                       }),
                    "task 60");
  for (std::size_t t = 0; t < 60; ++t) CHECK(ran[t].load() == 1);
}

TEST_CASE("element_count multiplies a shape, refusing negative dimensions and overflow", "[codec]") {
  CHECK(df11::element_count({}) == 1);
  CHECK(df11::element_count({0, 7}) == 0);
  CHECK(df11::element_count({5120, 14336}) == uint64_t{73400320});
  CHECK(df11::element_count({int64_t{1} << 31, int64_t{1} << 32}) == uint64_t{1} << 63);
  CHECK_THROWS_WITH(df11::element_count({3, -1}), Catch::Contains("shape [3,-1]"));
  // 2^32 x 2^32 wraps to 0 in 64 bits; 1310720 x 14073748835533 wrapped to 262144 once.
  CHECK_THROWS_AS(df11::element_count({int64_t{1} << 32, int64_t{1} << 32}), df11::Error);
  CHECK_THROWS_AS(df11::element_count({int64_t{1} << 32, int64_t{1} << 31, 2}), df11::Error);
  CHECK_THROWS_AS(df11::element_count({1310720, 14073748835533}), df11::Error);
  // A zero dimension empties any shape, as in a safetensors header ([2^32, 2^32, 0] is valid there).
  CHECK(df11::element_count({int64_t{1} << 32, int64_t{1} << 32, 0}) == 0);
  CHECK_THROWS_WITH(df11::element_count({0, -2}), Catch::Contains("shape [0,-2]"));
}

TEST_CASE("DF11: a code that would need more than 16 sub-tables is rebuilt under a shorter limit", "[codec]") {
  // Every BF16 pattern with an exponent below 240 once (a flat tail over 239 exponents), and as
  // many zeros: the optimal code gives zero 1-2 bits and the rest 8-9, whose leading bytes need
  // ~111 sub-tables. Under a length limit of 8 the root table alone holds the code.
  std::vector<uint16_t> words;
  for (uint32_t w = 0; w < 65536; ++w) {
    if (((w >> 7) & 0xFF) < 240) words.push_back(static_cast<uint16_t>(w));
  }
  words.resize(2 * words.size(), 0);
  const Unit u = unit_of(words, "flat_tail");
  const Histogram hist = exponent_histogram(u.view());
  REQUIRE(df11_subtables(build_code(hist, 32)) > 16);
  const EncodedUnit e = encode(u.view(), Layout::df11());
  REQUIRE(e.luts.size() <= std::size_t{kDf11MaxRows} * 256);
  REQUIRE_NOTHROW(validate_encoded(e));
  std::vector<uint16_t> back(words.size(), 0xFFFF);
  decode_cpu(e, back, 2);
  REQUIRE(back == words);
  // The cheapest limit that fits: one more bit would need too many sub-tables.
  const CodeLengths got = df11_length_row(e.luts);
  const int limit = *std::max_element(got.begin(), got.end());
  CHECK(limit < 32);
  CHECK(df11_subtables(build_code(hist, limit + 1)) > 16);

  // A unit of trained-like weights keeps its optimal code (limit 32).
  const auto normal = random_weights(200000, 3, 120, 0.7);
  const EncodedUnit n = encode(unit_of(normal, "normal").view(), Layout::df11());
  const Unit nu = unit_of(normal, "normal");
  const HuffmanCode best = build_code(exponent_histogram(nu.view()), 32);
  const CodeLengths kept = df11_length_row(n.luts);
  CHECK(std::equal(kept.begin(), kept.end(), best.length.begin()));
}
