// Decode tables: the DF11 chained tables decode every codeword (up to 32 bits) exactly as the
// official kernel reads them; validation refuses tables that would make a kernel misbehave.
#include <catch2/catch.hpp>

#include <random>

#include "codec/huffman.hpp"
#include "codec/tables.hpp"

using namespace df11;

namespace {

Histogram fibonacci_histogram(int n, int first_symbol) {
  Histogram h{};
  uint64_t a = 1, b = 1;
  for (int i = 0; i < n; ++i) {
    h[first_symbol + i] = a;
    const uint64_t c = a + b;
    a = b;
    b = c;
  }
  return h;
}

}  // namespace

TEST_CASE("DF11 chained tables decode every codeword with any following bits", "[codec][tables]") {
  std::mt19937_64 rng(3);
  for (int limit : {8, 12, 16, 24, 32}) {
    const HuffmanCode code = build_code(fibonacci_histogram(45, 60), limit);
    REQUIRE(code.max_length() == limit);
    const std::vector<uint8_t> luts = build_df11_luts(code);
    REQUIRE(luts.size() % 256 == 0);
    const int n_rows = static_cast<int>(luts.size() / 256);
    INFO("limit " << limit << " rows " << n_rows);
    REQUIRE_NOTHROW(validate_df11_luts(luts, "test"));
    // The last row is the code-length row.
    for (int s = 0; s < 256; ++s) REQUIRE(luts[(n_rows - 1) * 256 + s] == code.length[s]);
    for (int s = 0; s < 256; ++s) {
      if (!code.length[s]) continue;
      for (int trial = 0; trial < 20; ++trial) {
        const int len = code.length[s];
        const uint32_t tail = static_cast<uint32_t>(rng());
        const uint32_t window =
            (static_cast<uint32_t>(uint64_t{code.code[s]} << (32 - len))) | (len == 32 ? 0u : tail >> len);
        const Df11Lookup r = df11_lookup(luts.data(), n_rows, window);
        REQUIRE(r.symbol == s);
        REQUIRE(r.length == len);
      }
    }
  }
}

TEST_CASE("DF11 tables: root-only code has one table and a length row", "[codec][tables]") {
  Histogram h{};
  h[120] = 10;
  h[121] = 5;
  h[119] = 5;
  const std::vector<uint8_t> luts = build_df11_luts(build_code(h, 32));
  REQUIRE(luts.size() == 2 * 256);
  // A single-symbol code covers half the root; the rest repeats it so any bits decode.
  Histogram one{};
  one[7] = 3;
  const std::vector<uint8_t> l1 = build_df11_luts(build_code(one, 32));
  REQUIRE(l1.size() == 512);
  for (int i = 0; i < 256; ++i) REQUIRE(l1[i] == 7);
  REQUIRE_NOTHROW(validate_df11_luts(l1, "one"));
}

TEST_CASE("DF11 tables refuse exponents >= 240", "[codec][tables]") {
  Histogram h{};
  h[120] = 10;
  h[240] = 1;
  REQUIRE_THROWS_WITH(build_df11_luts(build_code(h, 32)), Catch::Contains("240"));
}

TEST_CASE("DF11 table validation catches unsafe tables", "[codec][tables]") {
  const std::vector<uint8_t> good = build_df11_luts(build_code(fibonacci_histogram(30, 90), 32));
  const int n_rows = static_cast<int>(good.size() / 256);
  REQUIRE(n_rows >= 4);
  REQUIRE_NOTHROW(validate_df11_luts(good, "good"));
  SECTION("size not a whole number of rows") {
    std::vector<uint8_t> bad(good.begin(), good.end() - 1);
    REQUIRE_THROWS_WITH(validate_df11_luts(bad, "unit x"), Catch::Contains("unit x") && Catch::Contains("rows"));
  }
  SECTION("pointer to a table that does not exist") {
    std::vector<uint8_t> bad = good;
    for (int i = 0; i < 256; ++i) {
      if (bad[i] >= 240) {
        bad[i] = static_cast<uint8_t>(256 - n_rows);  // row n_rows-1 is the length row, not a table
        break;
      }
    }
    REQUIRE_THROWS_WITH(validate_df11_luts(bad, "unit x"), Catch::Contains("points to table"));
  }
  SECTION("symbol with code length 0") {
    std::vector<uint8_t> bad = good;
    bad[0] = 5;  // exponent 5 has no code
    REQUIRE_THROWS_WITH(validate_df11_luts(bad, "unit x"), Catch::Contains("code length is 0"));
  }
  SECTION("a pointer cycle is safe: the walk stops after four lookups") {
    std::vector<uint8_t> cyc = good;
    // Entry 255 of every table points to table 1: a cycle, as official files carry in the
    // EOF code's range. Validation accepts it; the lookup ends on a pointer of length 0.
    for (int r = 0; r < n_rows - 1; ++r) cyc[r * 256 + 255] = 255;
    REQUIRE_NOTHROW(validate_df11_luts(cyc, "unit x"));
    const Df11Lookup hit = df11_lookup(cyc.data(), n_rows, 0xFFFFFFFFu);
    REQUIRE(hit.symbol >= 240);
    REQUIRE(hit.length == 0);
  }
  SECTION("a pointer out of range in a row the walk follows") {
    std::vector<uint8_t> bad = good;
    for (int r = 0; r < n_rows - 1; ++r) bad[r * 256 + 255] = 255;
    bad[1 * 256 + 255] = static_cast<uint8_t>(256 - (n_rows + 3));  // followed at depth 1..2
    REQUIRE_THROWS_WITH(validate_df11_luts(bad, "unit x"), Catch::Contains("points to table"));
  }
}

TEST_CASE("flat tables map every index to the codeword that prefixes it", "[codec][tables]") {
  for (int limit : {8, 12, 16}) {
    const HuffmanCode code = build_code(fibonacci_histogram(40, 100), limit);
    const std::vector<uint16_t> t = build_flat_table(code, limit);
    REQUIRE(t.size() == (std::size_t{1} << limit));
    for (uint32_t i = 0; i < t.size(); ++i) {
      const int s = t[i] & 0xFF;
      const int len = t[i] >> 8;
      REQUIRE(len == code.length[s]);
      REQUIRE((i >> (limit - len)) == code.code[s]);
    }
  }
  REQUIRE_THROWS_AS(build_flat_table(build_code(fibonacci_histogram(40, 100), 20), 16), Error);
}

TEST_CASE("canonical luts validation", "[codec][tables]") {
  std::vector<uint8_t> row(256, 0);
  row[1] = 1;
  row[2] = 2;
  row[3] = 2;
  REQUIRE_NOTHROW(canonical_code_from_luts(row, 16, "c"));
  row[4] = 2;  // Kraft sum 1.25
  REQUIRE_THROWS_WITH(canonical_code_from_luts(row, 16, "unit c"), Catch::Contains("unit c") && Catch::Contains("Kraft"));
  row[4] = 17;
  REQUIRE_THROWS_WITH(canonical_code_from_luts(row, 16, "unit c"), Catch::Contains("limit"));
  REQUIRE_THROWS_AS(canonical_code_from_luts(std::vector<uint8_t>(255), 16, "c"), Error);
}
