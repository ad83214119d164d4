// Length-limited Huffman: optimality against brute force and unlimited Huffman, the limit
// respected on Fibonacci histograms, no worse than the official "set rare counts to 1" loop.
#include <catch2/catch.hpp>

#include <algorithm>
#include <queue>
#include <random>

#include "codec/common.hpp"
#include "codec/huffman.hpp"

using namespace df11;

namespace {

// Plain Huffman (no limit) by a priority queue: depths of the leaves.
CodeLengths unlimited_huffman(const Histogram& h) {
  struct Node {
    uint64_t w;
    int id;
  };
  auto cmp = [](const Node& a, const Node& b) { return a.w != b.w ? a.w > b.w : a.id > b.id; };
  std::priority_queue<Node, std::vector<Node>, decltype(cmp)> pq(cmp);
  std::vector<int> parent;
  std::vector<int> leaf_of(256, -1);
  for (int s = 0; s < 256; ++s) {
    if (h[s] == 0) continue;
    leaf_of[s] = static_cast<int>(parent.size());
    pq.push({h[s], static_cast<int>(parent.size())});
    parent.push_back(-1);
  }
  CodeLengths len{};
  if (parent.size() == 1) {
    for (int s = 0; s < 256; ++s)
      if (leaf_of[s] >= 0) len[s] = 1;
    return len;
  }
  while (pq.size() > 1) {
    const Node a = pq.top();
    pq.pop();
    const Node b = pq.top();
    pq.pop();
    const int id = static_cast<int>(parent.size());
    parent.push_back(-1);
    parent[a.id] = id;
    parent[b.id] = id;
    pq.push({a.w + b.w, id});
  }
  for (int s = 0; s < 256; ++s) {
    if (leaf_of[s] < 0) continue;
    int d = 0;
    for (int x = leaf_of[s]; parent[x] >= 0; x = parent[x]) ++d;
    len[s] = static_cast<uint8_t>(d);
  }
  return len;
}

uint64_t cost(const Histogram& h, const CodeLengths& l) {
  uint64_t c = 0;
  for (int s = 0; s < 256; ++s) c += h[s] * l[s];
  return c;
}

int max_len(const CodeLengths& l) { return *std::max_element(l.begin(), l.end()); }

// The official DF11 encoder's way to limit code lengths: while the longest code is too long,
// set the k rarest counts to 1 and rebuild, with k growing.
CodeLengths official_limit(const Histogram& h, int limit) {
  std::vector<int> present;
  for (int s = 0; s < 256; ++s)
    if (h[s]) present.push_back(s);
  std::stable_sort(present.begin(), present.end(), [&](int a, int b) { return h[a] < h[b]; });
  for (std::size_t k = 0; k <= present.size(); ++k) {
    Histogram f = h;
    for (std::size_t i = 0; i < k; ++i) f[present[i]] = 1;
    const CodeLengths l = unlimited_huffman(f);
    if (max_len(l) <= limit) return l;
  }
  FAIL("official loop did not converge");
  return {};
}

// Best possible cost with lengths in [1, limit], by exhaustive search (small alphabets).
uint64_t brute_force_best(const std::vector<uint64_t>& freq, int limit) {
  const std::size_t n = freq.size();
  std::vector<int> l(n, 1);
  uint64_t best = UINT64_MAX;
  for (;;) {
    uint64_t kraft = 0;
    for (int x : l) kraft += uint64_t{1} << (limit - x);
    if (kraft <= (uint64_t{1} << limit)) {
      uint64_t c = 0;
      for (std::size_t i = 0; i < n; ++i) c += freq[i] * static_cast<uint64_t>(l[i]);
      best = std::min(best, c);
    }
    std::size_t i = 0;
    while (i < n && l[i] == limit) l[i++] = 1;
    if (i == n) break;
    ++l[i];
  }
  return best;
}

}  // namespace

TEST_CASE("empty, one- and two-symbol alphabets", "[codec][huffman]") {
  Histogram h{};
  CHECK(max_len(limited_code_lengths(h, 32)) == 0);
  h[77] = 5;
  auto l = limited_code_lengths(h, 32);
  CHECK(l[77] == 1);
  CHECK(std::count(l.begin(), l.end(), 0) == 255);
  const HuffmanCode one = canonical_code(l);
  CHECK(one.code[77] == 0);
  h[3] = 1000000;
  l = limited_code_lengths(h, 8);
  CHECK(l[77] == 1);
  CHECK(l[3] == 1);
  const HuffmanCode two = canonical_code(l);
  CHECK(two.code[3] != two.code[77]);
}

TEST_CASE("package-merge equals exhaustive search on small alphabets", "[codec][huffman]") {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 2 + rng() % 5;  // 2..6 symbols
    const int limit = std::max<int>(3, static_cast<int>(1 + rng() % 5));
    std::vector<uint64_t> f(n);
    Histogram h{};
    for (std::size_t i = 0; i < n; ++i) {
      f[i] = 1 + (rng() % 4 == 0 ? rng() % 1000 : rng() % 10);
      h[10 + 7 * i] = f[i];
    }
    const CodeLengths l = limited_code_lengths(h, limit);
    INFO("trial " << trial << " n " << n << " limit " << limit);
    REQUIRE(max_len(l) <= limit);
    REQUIRE(kraft_sum_scaled(l) <= (uint64_t{1} << 32));
    REQUIRE(cost(h, l) == brute_force_best(f, limit));
  }
}

TEST_CASE("with a loose limit package-merge is as good as plain Huffman", "[codec][huffman]") {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    Histogram h{};
    const int n = 2 + static_cast<int>(rng() % 60);
    for (int i = 0; i < n; ++i) h[rng() % 256] += 1 + rng() % 100000;
    const CodeLengths ref = unlimited_huffman(h);
    if (max_len(ref) > 32) continue;
    const CodeLengths l = limited_code_lengths(h, 32);
    REQUIRE(cost(h, l) == cost(h, ref));
    REQUIRE(kraft_sum_scaled(l) == (uint64_t{1} << 32));  // complete code
  }
}

TEST_CASE("Fibonacci histograms force length limiting, limit respected, never worse than the official loop",
          "[codec][huffman]") {
  // Fibonacci counts make the plain Huffman tree a chain: depth n-1.
  Histogram h{};
  uint64_t a = 1, b = 1;
  const int n = 40;
  for (int i = 0; i < n; ++i) {
    h[100 + i] = a;
    const uint64_t c = a + b;
    a = b;
    b = c;
  }
  REQUIRE(max_len(unlimited_huffman(h)) == n - 1);
  for (int limit : {8, 10, 12, 16, 20, 24, 32}) {
    INFO("limit " << limit);
    const CodeLengths l = limited_code_lengths(h, limit);
    REQUIRE(max_len(l) == limit);  // the limit binds here
    REQUIRE(kraft_sum_scaled(l) == (uint64_t{1} << 32));
    const CodeLengths off = official_limit(h, limit);
    REQUIRE(max_len(off) <= limit);
    REQUIRE(cost(h, l) <= cost(h, off));
    REQUIRE(cost(h, l) >= cost(h, unlimited_huffman(h)));
  }
  // With 255 symbols, 8 bits is the tightest possible limit.
  Histogram wide{};
  for (int s = 0; s < 255; ++s) wide[s] = (s % 7 == 0) ? 1 : uint64_t{1} << (s % 30);
  const CodeLengths l8 = limited_code_lengths(wide, 8);
  REQUIRE(max_len(l8) == 8);
  REQUIRE(cost(wide, l8) <= cost(wide, official_limit(wide, 8)));
}

TEST_CASE("limits below what the alphabet needs are refused", "[codec][huffman]") {
  Histogram h{};
  for (int s = 0; s < 256; ++s) h[s] = 1 + s;
  REQUIRE_THROWS_AS(limited_code_lengths(h, 7), Error);
  REQUIRE_THROWS_AS(limited_code_lengths(h, 33), Error);
  const CodeLengths l = limited_code_lengths(h, 8);
  REQUIRE(std::all_of(l.begin(), l.end(), [](uint8_t x) { return x == 8; }));
}

TEST_CASE("codes are deterministic and canonical", "[codec][huffman]") {
  std::mt19937_64 rng(9);
  Histogram h{};
  for (int i = 0; i < 40; ++i) h[80 + i] = rng() % 1000;  // with ties and zeros
  h[80] = h[81] = h[82] = 17;
  const HuffmanCode c1 = build_code(h, 16);
  const HuffmanCode c2 = build_code(h, 16);
  REQUIRE(c1.length == c2.length);
  REQUIRE(c1.code == c2.code);
  // Canonical: ordered by (length, symbol), codewords strictly increase when left-aligned.
  std::vector<std::pair<int, int>> order;
  for (int s = 0; s < 256; ++s)
    if (c1.length[s]) order.emplace_back(c1.length[s], s);
  std::sort(order.begin(), order.end());
  uint64_t prev = 0;
  bool first = true;
  for (auto [len, s] : order) {
    const uint64_t left = uint64_t{c1.code[s]} << (32 - len);
    if (!first) REQUIRE(left > prev);
    prev = left;
    first = false;
  }
  // Prefix-free.
  for (auto [la, a] : order)
    for (auto [lb, b] : order)
      if (a != b && la <= lb) REQUIRE((c1.code[b] >> (lb - la)) != c1.code[a]);
}

TEST_CASE("canonical_code rejects lengths that are not a prefix code", "[codec][huffman]") {
  CodeLengths l{};
  l[0] = 1;
  l[1] = 1;
  l[2] = 1;
  REQUIRE_THROWS_AS(canonical_code(l), Error);
}
