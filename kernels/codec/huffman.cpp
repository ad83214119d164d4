// Package-merge for length-limited Huffman codes, and canonical code assignment.
#include "codec/huffman.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "codec/common.hpp"

namespace df11 {

int HuffmanCode::max_length() const {
  return *std::max_element(length.begin(), length.end());
}

int HuffmanCode::n_symbols() const {
  return static_cast<int>(std::count_if(length.begin(), length.end(), [](uint8_t l) { return l > 0; }));
}

uint64_t HuffmanCode::total_bits(const Histogram& hist) const {
  uint64_t bits = 0;
  for (int s = 0; s < 256; ++s) bits += hist[s] * length[s];
  return bits;
}

CodeLengths limited_code_lengths(const Histogram& hist, int max_length) {
  if (max_length < 1 || max_length > 32) {
    throw Error(fmt::format("Huffman: maximum code length {} is outside 1..32", max_length));
  }
  // Leaves sorted by (weight, symbol): the fixed order makes the result deterministic.
  std::vector<int> symbols;
  for (int s = 0; s < 256; ++s)
    if (hist[s] > 0) symbols.push_back(s);
  std::stable_sort(symbols.begin(), symbols.end(), [&](int a, int b) { return hist[a] < hist[b]; });
  const std::size_t n = symbols.size();

  CodeLengths lengths{};
  if (n == 0) return lengths;
  if (n == 1) {
    lengths[symbols[0]] = 1;  // a one-symbol alphabet still needs one bit per symbol
    return lengths;
  }
  if (max_length < 32 && (std::size_t{1} << max_length) < n) {
    throw Error(fmt::format("Huffman: {} symbols cannot be coded with codes of at most {} bits", n,
                            max_length));
  }

  // Package-merge. Level 1 holds the leaves; level j+1 merges the leaves with the packages
  // formed by pairing adjacent items of level j. Selecting the first 2n-2 items of the last
  // level and expanding packages back down gives each symbol's length as the number of levels
  // in which its leaf is selected. An item is a leaf (symbol index) or a package (-1).
  struct Item {
    uint64_t weight;
    int leaf;  // index into symbols, or -1 for a package
  };
  const int levels = std::min<int>(max_length, static_cast<int>(n) - 1);  // deeper never helps
  std::vector<std::vector<Item>> lists(levels);
  lists[0].reserve(n);
  for (std::size_t i = 0; i < n; ++i) lists[0].push_back({hist[symbols[i]], static_cast<int>(i)});
  for (int j = 1; j < levels; ++j) {
    const auto& prev = lists[j - 1];
    std::vector<Item> packages;
    packages.reserve(prev.size() / 2);
    for (std::size_t k = 0; k + 1 < prev.size(); k += 2) packages.push_back({prev[k].weight + prev[k + 1].weight, -1});
    auto& cur = lists[j];
    cur.reserve(n + packages.size());
    std::size_t a = 0, b = 0;
    while (a < n || b < packages.size()) {
      // Leaves win ties, so the merge order is fixed.
      if (b == packages.size() || (a < n && hist[symbols[a]] <= packages[b].weight)) {
        cur.push_back({hist[symbols[a]], static_cast<int>(a)});
        ++a;
      } else {
        cur.push_back(packages[b++]);
      }
    }
  }
  std::size_t take = 2 * n - 2;
  for (int j = levels - 1; j >= 0; --j) {
    std::size_t packages_taken = 0;
    for (std::size_t k = 0; k < take; ++k) {
      const Item& it = lists[j][k];
      if (it.leaf >= 0) {
        ++lengths[symbols[it.leaf]];
      } else {
        ++packages_taken;
      }
    }
    take = 2 * packages_taken;
  }
  return lengths;
}

uint64_t kraft_sum_scaled(const CodeLengths& lengths) {
  uint64_t sum = 0;
  for (uint8_t l : lengths)
    if (l > 0 && l <= 32) sum += uint64_t{1} << (32 - l);
  return sum;
}

HuffmanCode canonical_code(const CodeLengths& lengths) {
  for (int s = 0; s < 256; ++s) {
    if (lengths[s] > 32) throw Error(fmt::format("Huffman: symbol {} has code length {} > 32", s, lengths[s]));
  }
  if (kraft_sum_scaled(lengths) > (uint64_t{1} << 32)) {
    throw Error("Huffman: code lengths violate Kraft's inequality (not a prefix code)");
  }
  HuffmanCode hc;
  hc.length = lengths;
  // Codewords in order of (length, symbol); each length level continues from the previous.
  uint64_t next = 0;
  int prev_len = 0;
  for (int len = 1; len <= 32; ++len) {
    for (int s = 0; s < 256; ++s) {
      if (lengths[s] != len) continue;
      next <<= (len - prev_len);
      prev_len = len;
      hc.code[s] = static_cast<uint32_t>(next);
      ++next;
    }
  }
  return hc;
}

HuffmanCode build_code(const Histogram& hist, int max_length) {
  return canonical_code(limited_code_lengths(hist, max_length));
}

double entropy_bits(const Histogram& hist) {
  double total = 0;
  for (uint64_t c : hist) total += static_cast<double>(c);
  if (total == 0) return 0.0;
  double h = 0;
  for (uint64_t c : hist) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / total;
    h -= p * std::log2(p);
  }
  return h;
}

}  // namespace df11
