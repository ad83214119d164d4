// Corrupted EncodedUnits: every damaged gap, truncated stream, bad position or table is an
// error (df11::Error with the unit's name), never a crash or silently wrong output. Run under
// AddressSanitizer and UBSan by scripts/test.
#include <catch2/catch.hpp>

#include <limits>

#include <random>

#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "helpers.hpp"

using namespace df11;
using df11::test::fibonacci_words;
using df11::test::random_weights;
using df11::test::unit_of;

namespace {

void set_position(EncodedUnit& e, uint64_t i, uint32_t v) {
  for (int k = 0; k < 4; ++k) e.output_positions[4 * i + k] = static_cast<uint8_t>(v >> (8 * k));
}

// check_stream's verdict on e: its error message, or empty when it passed.
std::string check_error(const EncodedUnit& e, CpuDecodePath path = CpuDecodePath::lanes) {
  try {
    check_stream(e, 1, path);
  } catch (const Error& err) {
    return err.what();
  }
  return {};
}

// Decodes into out; the error message, or empty when the decode succeeded. check_stream (the
// same walk without output) must say exactly the same.
std::string decode_error(const EncodedUnit& e, std::vector<uint16_t>& out) {
  std::string error;
  try {
    out = decode_cpu(e, 1);
  } catch (const Error& err) {
    error = err.what();
  }
  REQUIRE(check_error(e) == error);
  return error;
}

// Either an error naming the unit, or (only where the damage is provably harmless) the exact
// original: never anything else. check_stream gives the same error.
void require_error(const EncodedUnit& e) {
  std::vector<uint16_t> out;
  REQUIRE_THAT(decode_error(e, out), Catch::Contains("unit " + e.name));
}

}  // namespace

TEST_CASE("every flipped gap bit of a real chunk is caught", "[codec][corrupt]") {
  for (const Layout& l : {Layout::df11(), Layout::canonical(16, 256, 16, PositionScheme::thread)}) {
    const auto data = random_weights(16000, 21, 120, 0.4);
    const EncodedUnit good = encode(unit_of(data, "g").view(), l);
    REQUIRE(decode_cpu(good, 1) == data);
    const uint64_t n_chunks = good.n_chunks();
    REQUIRE(n_chunks > 100);
    for (uint64_t c = 0; c < n_chunks; ++c) {
      for (int b = 0; b < l.gap_bits; ++b) {
        EncodedUnit bad = good;
        const uint64_t bit = c * l.gap_bits + b;
        bad.gaps[bit / 8] ^= static_cast<uint8_t>(0x80u >> (bit % 8));
        INFO(l.name() << " chunk " << c << " bit " << b);
        if (c + 1 == n_chunks) {
          // The final chunk's gap may legitimately be 0 or the offset where the codes end (the
          // official EOF), and decoding from it only yields padding: the promise there is an
          // error or the exact data, never anything else.
          std::vector<uint16_t> out;
          const std::string error = decode_error(bad, out);
          if (error.empty()) {
            REQUIRE(df11::test::word_diff(out, data) == "");
          } else {
            REQUIRE(error.find("unit g") != std::string::npos);
          }
        } else {
          require_error(bad);
        }
      }
    }
  }
}

TEST_CASE("tensor shapes whose counts overflow 64 bits together are caught", "[codec][corrupt]") {
  // Each shape is under 2^63 elements; the two together wrap to 0, what an empty unit holds.
  EncodedUnit empty = encode(unit_of({}, "e").view(), Layout::df11());
  REQUIRE_NOTHROW(validate_encoded(empty));
  empty.tensor_names = {"a", "b"};
  empty.tensor_shapes = {{int64_t{1} << 62, 2}, {int64_t{1} << 62, 2}};
  empty.split_positions = {std::numeric_limits<int64_t>::min()};
  REQUIRE_THROWS_WITH(validate_encoded(empty), Catch::Contains("more than the unit's 0 elements"));
  // And a unit of 5 elements with a third tensor that makes the sum wrap back to 5.
  EncodedUnit five = encode(unit_of({1, 2, 3, 4, 5}, "f").view(), Layout::df11());
  five.tensor_names = {"a", "b", "c"};
  five.tensor_shapes = {{int64_t{1} << 62, 2}, {int64_t{1} << 62, 2}, {5}};
  five.split_positions = {std::numeric_limits<int64_t>::min(), 0};
  REQUIRE_THROWS_WITH(validate_encoded(five), Catch::Contains("more than the unit's 5 elements") &&
                                                  Catch::Contains("tensor a"));
}

TEST_CASE("truncated or padded streams are caught", "[codec][corrupt]") {
  const auto data = random_weights(50000, 5, 121, 0.5);
  const EncodedUnit good = encode(unit_of(data, "t").view(), Layout::df11());
  for (std::size_t cut : {1, 2, 7, 100, 4096, 5000}) {
    EncodedUnit bad = good;
    bad.encoded_exponent.resize(bad.encoded_exponent.size() - cut);
    INFO("cut " << cut);
    require_error(bad);
  }
  EncodedUnit longer = good;
  longer.encoded_exponent.push_back(0);
  require_error(longer);
  EncodedUnit empty = good;
  empty.encoded_exponent.clear();
  require_error(empty);
}

TEST_CASE("bad positions are caught", "[codec][corrupt]") {
  const auto data = random_weights(80000, 6, 119, 0.5);
  const EncodedUnit good = encode(unit_of(data, "p").view(), Layout::df11());
  const uint64_t nb = good.n_blocks();
  REQUIRE(nb >= 3);
  SECTION("non-monotone") {
    EncodedUnit bad = good;
    set_position(bad, 1, good.position(2) + 1);
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("decrease"));
  }
  SECTION("shifted by one") {
    for (uint64_t b = 1; b < nb; ++b) {
      for (int d : {-1, 1}) {
        EncodedUnit bad = good;
        set_position(bad, b, good.position(b) + d);
        require_error(bad);
      }
    }
  }
  SECTION("not ending at n_elements") {
    EncodedUnit bad = good;
    set_position(bad, nb, good.position(nb) - 1);
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("n_elements"));
  }
  SECTION("not starting at 0") {
    EncodedUnit bad = good;
    set_position(bad, 0, 1);
    require_error(bad);
  }
  SECTION("wrong size") {
    EncodedUnit bad = good;
    bad.output_positions.resize(bad.output_positions.size() - 4);
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("output_positions"));
  }
  SECTION("gaps of the wrong size") {
    EncodedUnit bad = good;
    bad.gaps.pop_back();
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("gaps"));
  }
  SECTION("sign_mantissa of the wrong size") {
    EncodedUnit bad = good;
    bad.sign_mantissa.pop_back();
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("sign_mantissa"));
  }
}

TEST_CASE("per-thread positions: a chunk that overruns to the last element is caught", "[codec][corrupt]") {
  // Found by fuzz_unit: a flipped stream bit made chunk 0 of 2 decode 54 codes where its
  // positions say 53, reaching n_elements. The decoder used to stop there and accept, while
  // the kernels write chunk 0's extra code over chunk 1's element (a race).
  const auto data = fibonacci_words(8, 1, 0x28000003u);
  REQUIRE(data.size() == 54);
  EncodedUnit bad = encode(unit_of(data, "t").view(), Layout::canonical(16, 256, 16, PositionScheme::thread), 1);
  REQUIRE(bad.n_chunks() == 2);
  REQUIRE(bad.position(1) == 53);
  bad.encoded_exponent[5] ^= 0x40;
  REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("chunk 0 decoded 54 elements, output_positions say 53"));
}

TEST_CASE("bad tables are caught", "[codec][corrupt]") {
  // Long codes so there are sub-tables to point at.
  std::vector<uint16_t> data = random_weights(40000, 8, 120, 1.5);
  EncodedUnit good = encode(unit_of(data, "lut").view(), Layout::df11());
  const int n_rows = static_cast<int>(good.luts.size() / 256);
  REQUIRE(n_rows >= 3);
  SECTION("pointer past the decode tables") {
    EncodedUnit bad = good;
    bool changed = false;
    for (int i = 0; i < 256 && !changed; ++i) {
      if (bad.luts[i] >= 240) {
        bad.luts[i] = static_cast<uint8_t>(256 - (n_rows - 1));  // the length row is no table
        changed = true;
      }
    }
    REQUIRE(changed);
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("points to table"));
  }
  SECTION("a row missing") {
    EncodedUnit bad = good;
    bad.luts.resize(bad.luts.size() - 256);
    require_error(bad);
  }
  SECTION("canonical code lengths that are no prefix code") {
    EncodedUnit canon = encode(unit_of(data, "c").view(), Layout::canonical(16));
    for (auto& l : canon.luts)
      if (l) l = 1;
    REQUIRE_THROWS_WITH(decode_cpu(canon, 1), Catch::Contains("Kraft"));
  }
}

TEST_CASE("random byte damage anywhere never crashes", "[codec][corrupt]") {
  // Damage to the stream itself can be undetectable (one codeword becomes another of the same
  // length); the promise there is memory safety and a result of the right size.
  const auto data = random_weights(30000, 13, 120, 0.8);
  for (const Layout& l : {Layout::df11(), Layout::canonical(12, 128, 8, PositionScheme::thread),
                          Layout::canonical(12, 128, 8, PositionScheme::count)}) {
    const EncodedUnit good = encode(unit_of(data, "r").view(), l);
    std::mt19937_64 rng(99);
    for (int trial = 0; trial < 300; ++trial) {
      EncodedUnit bad = good;
      std::vector<uint8_t>* fields[] = {&bad.encoded_exponent, &bad.gaps, &bad.output_positions, &bad.luts,
                                        &bad.thread_counts};
      auto& f = *fields[rng() % 5];
      if (f.empty()) continue;
      f[rng() % f.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
      std::vector<uint16_t> out;
      const std::string error = decode_error(bad, out);
      if (error.empty()) {
        REQUIRE(out.size() == data.size());
      } else {
        REQUIRE(error.find("unit r") != std::string::npos);
      }
    }
  }
}

TEST_CASE("bad thread counts are caught", "[codec][corrupt]") {
  const auto data = random_weights(80000, 7, 119, 0.5);
  const EncodedUnit good = encode(unit_of(data, "k").view(), Layout::canonical(16, 128, 8, PositionScheme::count));
  REQUIRE(good.n_blocks() >= 3);
  SECTION("a count changed: its block no longer sums to its positions") {
    EncodedUnit bad = good;
    bad.thread_counts[130] += 1;
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("thread_counts of block 1 sum to"));
  }
  SECTION("two counts swapped: the sums hold, the chunks do not decode to them") {
    EncodedUnit bad = good;
    uint64_t c = 0;
    while (bad.thread_counts[c] == bad.thread_counts[c + 1]) ++c;
    std::swap(bad.thread_counts[c], bad.thread_counts[c + 1]);
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("thread_counts say"));
  }
  SECTION("a count for a thread past the stream") {
    EncodedUnit bad = good;
    REQUIRE(bad.thread_counts.size() > bad.n_chunks());
    bad.thread_counts.back() = 1;
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("past the stream"));
  }
  SECTION("the wrong size, or counts in a layout without them") {
    EncodedUnit bad = good;
    bad.thread_counts.pop_back();
    REQUIRE_THROWS_WITH(decode_cpu(bad, 1), Catch::Contains("thread_counts has"));
    EncodedUnit plain = encode(unit_of(data, "k").view(), Layout::canonical(16, 128, 8, PositionScheme::block));
    plain.thread_counts = good.thread_counts;
    REQUIRE_THROWS_WITH(decode_cpu(plain, 1), Catch::Contains("thread_counts has"));
  }
}

TEST_CASE("check_stream passes every intact unit, at edge sizes, on both paths", "[codec][corrupt]") {
  for (const Layout& l : {Layout::df11(), Layout::canonical(16, 256, 16, PositionScheme::thread),
                          Layout::canonical(12, 128, 8, PositionScheme::count)}) {
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{31}, std::size_t{4097},
                                std::size_t{100000}}) {
      const auto data = random_weights(n, 17, 120, 0.6);
      const EncodedUnit good = encode(unit_of(data, "ok").view(), l);
      INFO(l.name() << " n " << n);
      REQUIRE(check_error(good, CpuDecodePath::lanes).empty());
      REQUIRE(check_error(good, CpuDecodePath::serial).empty());
      REQUIRE(decode_cpu(good, 1) == data);
    }
  }
}
