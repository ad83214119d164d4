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
  SECTION("a pointer value with a length: a fourth lookup's pointer would decode as an exponent >= 240") {
    std::vector<uint8_t> bad = good;
    bad[static_cast<std::size_t>(n_rows - 1) * 256 + 0xF0] = 29;
    REQUIRE_THROWS_WITH(validate_df11_luts(bad, "unit x"),
                        Catch::Contains("unit x") && Catch::Contains("pointer value 240 length 29"));
  }
  SECTION("no length row at all") {
    REQUIRE_THROWS_WITH(df11_length_row(std::vector<uint8_t>(100)), Catch::Contains("no length row"));
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

namespace {

// What a decoder gets from taking a multi-symbol entry: the codes the flat root (2^kf entries)
// decodes one after another from the 32-bit window w, as long as each lies whole in the first k
// bits, at most max_codes of them.
struct Run {
  std::vector<unsigned> symbols, lengths;
};
Run flat_run(const std::vector<uint16_t>& flat, int kf, int k, uint32_t w, unsigned max_codes) {
  Run r;
  unsigned used = 0;
  while (r.symbols.size() < max_codes) {
    const uint16_t e = flat[(static_cast<uint64_t>(w) << used & 0xFFFFFFFFu) >> (32 - kf)];
    const unsigned len = e >> 8;
    if (len == 0 || used + len > static_cast<unsigned>(k)) break;
    r.symbols.push_back(e & 0xFFu);
    r.lengths.push_back(len);
    used += len;
  }
  return r;
}

// Checks every entry of a multi root against the flat root's own decode of its window, with
// several random fills of the bits after the window: an entry may only hold codes every fill
// decodes the same way, and must hold all of them (up to three; the wide root, kw-bit windows
// over a flat root of kf >= kw bits: up to five, entry x in words 2x (symbols 0..3) and 2x + 1).
// exhaustive: every fill of the flat root's bits that can matter (small kf), else a dozen fills,
// enough where the root is a prefix code's (fills 0 and all-ones already tell a code that crosses
// the window's end).
void check_root(const std::vector<uint16_t>& flat, int kf, int kw, bool wide, std::mt19937_64& rng, bool exhaustive) {
  const std::vector<uint32_t> root = wide ? wide_root_from_flat(flat, kw) : multi_root_from_flat(flat, kf);
  const int k = wide ? kw : kf;
  const unsigned max_codes = wide ? kWideMaxCodes : kMultiMaxCodes;
  REQUIRE(root.size() == (std::size_t{wide ? 2u : 1u} << k));
  for (uint32_t x = 0; x < (uint32_t{1} << k); ++x) {
    const uint64_t e = wide ? (uint64_t{root[2 * x + 1]} << 32 | root[2 * x]) : root[x];
    const uint32_t top = wide ? root[2 * x + 1] : root[x];  // count and total length: bits 28.., 24..
    const unsigned count = top >> 28, total = (top >> 24) & 0xFu;
    if (!wide) REQUIRE((top & 0xC0000000u) == 0);
    if (wide) REQUIRE((top & 0x00FFFF00u) == 0);
    std::vector<Run> runs;
    const uint32_t n_fills = exhaustive ? (uint32_t{1} << kf) : 12u;
    for (uint32_t fill = 0; fill < n_fills; ++fill) {
      const uint32_t rest = exhaustive ? fill << (32 - kf)
                            : fill == 0 ? 0u
                            : fill == 1 ? 0xFFFFFFFFu
                                        : static_cast<uint32_t>(rng());
      const uint32_t w = (x << (32 - k)) | (rest >> k);
      runs.push_back(flat_run(flat, kf, k, w, max_codes));
    }
    INFO("k " << k << " window " << x << " entry " << std::hex << e);
    // The longest run all fills agree on.
    std::size_t agree = runs[0].symbols.size();
    for (const Run& r : runs) {
      std::size_t i = 0;
      while (i < agree && i < r.symbols.size() && r.symbols[i] == runs[0].symbols[i] && r.lengths[i] == runs[0].lengths[i]) ++i;
      agree = i;
    }
    REQUIRE(count <= agree);
    REQUIRE(count <= max_codes);
    unsigned sum = 0;
    for (unsigned i = 0; i < count; ++i) {
      REQUIRE(((e >> (8 * i)) & 0xFFu) == runs[0].symbols[i]);
      sum += runs[0].lengths[i];
    }
    REQUIRE(total == sum);
    if (count == 0) REQUIRE(e == 0);
    // Nothing left out that is certain: with a prefix code's root, every code whose bits are
    // all inside the window is taken (up to the root's most).
    if (count < max_codes && count < agree) FAIL("entry stops before a code every fill decodes alike");
  }
}
void check_multi_root(const std::vector<uint16_t>& flat, int k, std::mt19937_64& rng, bool exhaustive) {
  check_root(flat, k, k, false, rng, exhaustive);
}

}  // namespace

TEST_CASE("multi-symbol roots hold exactly the codes the flat root decodes in turn", "[codec][tables]") {
  std::mt19937_64 rng(11);
  for (int k : {4, 8, 12}) {
    for (int limit : {8, 12, 16, 32}) {
      const HuffmanCode code = build_code(fibonacci_histogram(45, 60), limit);
      check_multi_root(flat_root_from_code(code, k), k, rng, false);
      check_multi_root(flat_root_from_df11_luts(build_df11_luts(code), k), k, rng, k <= 8);
    }
  }
  // A skewed code like real exponents': most windows of 12 bits hold three codes.
  Histogram h{};
  for (int s = 0; s < 40; ++s) h[100 + s] = uint64_t{1} << (40 - s);
  const std::vector<uint32_t> multi = multi_root_from_flat(flat_root_from_code(build_code(h, 16), 12), 12);
  std::size_t three = 0;
  for (uint32_t e : multi) three += (e >> 28) == 3;
  CHECK(three > multi.size() / 2);
}

TEST_CASE("wide multi-symbol roots hold exactly the codes the flat root decodes in turn, up to five", "[codec][tables]") {
  std::mt19937_64 rng(13);
  for (int kf : {6, 8, 12}) {
    for (int kw : {kf - 2, kf - 1, kf}) {
      for (int limit : {8, 12, 16, 32}) {
        const HuffmanCode code = build_code(fibonacci_histogram(45, 60), limit);
        check_root(flat_root_from_code(code, kf), kf, kw, true, rng, false);
        check_root(flat_root_from_df11_luts(build_df11_luts(code), kf), kf, kw, true, rng, kf <= 8);
      }
    }
  }
  // The skewed code: most windows of 11 bits hold four or five codes, where the 12-bit multi
  // root's hold three.
  Histogram h{};
  for (int s = 0; s < 40; ++s) h[100 + s] = uint64_t{1} << (40 - s);
  const std::vector<uint32_t> wide = wide_root_from_flat(flat_root_from_code(build_code(h, 16), 12), 11);
  REQUIRE(wide.size() == 2 * 2048);
  std::size_t four_or_more = 0;
  for (std::size_t x = 0; x < 2048; ++x) four_or_more += (wide[2 * x + 1] >> 28) >= 4;
  CHECK(four_or_more > 2048 / 2);
  CHECK_THROWS_AS(wide_root_from_flat(std::vector<uint16_t>(1 << 8), 9), Error);   // wider than the flat root
  CHECK_THROWS_AS(wide_root_from_flat(std::vector<uint16_t>(1000), 8), Error);     // not a power of two
  CHECK_THROWS_AS(wide_root_from_flat(std::vector<uint16_t>(1 << 8), 0), Error);
}

TEST_CASE("multi-symbol roots of arbitrary flat roots take only codes every fill agrees on", "[codec][tables]") {
  // Roots that are no prefix code's (what corrupt DF11 tables can give): the entries must still
  // be exactly what the flat root decodes, whatever bits follow.
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 40; ++trial) {
    const int k = 3 + static_cast<int>(rng() % 6);
    std::vector<uint16_t> flat(std::size_t{1} << k);
    for (auto& e : flat) {
      const unsigned len = rng() % 3 == 0 ? 0u : 1u + static_cast<unsigned>(rng() % k);
      e = static_cast<uint16_t>((rng() % 4) | (len << 8));
    }
    check_multi_root(flat, k, rng, true);
    check_root(flat, k, k - 1 - static_cast<int>(rng() % 2), true, rng, true);
  }
  CHECK_THROWS_AS(multi_root_from_flat(std::vector<uint16_t>(8), 4), Error);
  CHECK_THROWS_AS(multi_root_from_flat(std::vector<uint16_t>(std::size_t{1} << 16), 16), Error);
}
