// Building and validating decode tables (see tables.hpp).
#include "codec/tables.hpp"

#include <algorithm>
#include <map>

#include <fmt/format.h>

namespace df11 {

namespace {

// The decode tables of `code`, keyed by (prefix length in bytes, prefix value): the root and one
// sub-table per distinct whole-byte prefix of a longer code. std::map orders them by depth, then
// value, which fixes the row numbering.
std::map<std::pair<int, uint32_t>, int> df11_rows(const HuffmanCode& code) {
  std::map<std::pair<int, uint32_t>, int> rows;
  rows[{0, 0}] = 0;
  for (int s = 0; s < 256; ++s) {
    const int len = code.length[s];
    if (len == 0) continue;
    if (s >= kDf11PointerBase) {
      throw Error(fmt::format("DF11 tables cannot hold exponent value {} (values >= 240 are pointers)", s));
    }
    const int n_prefix_bytes = (len - 1) / 8;
    for (int d = 1; d <= n_prefix_bytes; ++d) rows.emplace(std::make_pair(d, code.code[s] >> (len - 8 * d)), 0);
  }
  return rows;
}

}  // namespace

int df11_subtables(const HuffmanCode& code) { return static_cast<int>(df11_rows(code).size()) - 1; }

std::vector<uint8_t> build_df11_luts(const HuffmanCode& code) {
  std::map<std::pair<int, uint32_t>, int> rows = df11_rows(code);
  {
    int next = 0;
    for (auto& [key, row] : rows) row = next++;
  }
  const int n_tables = static_cast<int>(rows.size());
  if (n_tables > kDf11MaxRows - 1) {
    throw Error(fmt::format("DF11 tables: this code needs {} sub-tables, the format allows 16", n_tables - 1));
  }
  std::vector<uint8_t> luts(static_cast<std::size_t>(n_tables + 1) * 256, 0);
  std::vector<bool> covered(static_cast<std::size_t>(n_tables) * 256, false);
  auto put = [&](int row, unsigned idx, uint8_t v) {
    luts[static_cast<std::size_t>(row) * 256 + idx] = v;
    covered[static_cast<std::size_t>(row) * 256 + idx] = true;
  };
  // Pointers from each sub-table's parent.
  for (const auto& [key, row] : rows) {
    const auto [depth, prefix] = key;
    if (depth == 0) continue;
    const int parent = rows.at({depth - 1, prefix >> 8});
    put(parent, prefix & 0xFFu, static_cast<uint8_t>(256 - row));
  }
  // Symbols: the last (partial) byte of each code, left-aligned, covering 2^(8-r) entries.
  for (int s = 0; s < 256; ++s) {
    const int len = code.length[s];
    if (len == 0) continue;
    const int depth = (len - 1) / 8;
    const int r = len - 8 * depth;
    const int row = rows.at({depth, depth == 0 ? 0u : code.code[s] >> r});
    const unsigned key = (code.code[s] & ((1u << r) - 1u)) << (8 - r);
    for (unsigned i = 0; i < (1u << (8 - r)); ++i) put(row, key + i, static_cast<uint8_t>(s));
  }
  // Uncovered entries (incomplete codes) repeat a covered neighbour so they stay decodable.
  for (int row = 0; row < n_tables; ++row) {
    int first = -1;
    for (int i = 0; i < 256 && first < 0; ++i)
      if (covered[row * 256 + i]) first = i;
    if (first < 0) continue;  // empty root of an empty code
    uint8_t carry = luts[row * 256 + first];
    for (int i = 0; i < 256; ++i) {
      if (covered[row * 256 + i]) {
        carry = luts[row * 256 + i];
      } else {
        luts[row * 256 + i] = carry;
      }
    }
  }
  for (int s = 0; s < 256; ++s) luts[static_cast<std::size_t>(n_tables) * 256 + s] = code.length[s];
  return luts;
}

void validate_df11_luts(std::span<const uint8_t> luts, std::string_view context) {
  auto bad = [&](const std::string& what) { throw Error(fmt::format("{}: luts: {}", context, what)); };
  if (luts.size() % 256 != 0) bad(fmt::format("{} bytes is not a whole number of 256-entry rows", luts.size()));
  const int n_rows = static_cast<int>(luts.size() / 256);
  if (n_rows < 2 || n_rows > kDf11MaxRows) bad(fmt::format("{} rows; expected 2..{}", n_rows, kDf11MaxRows));
  const int n_tables = n_rows - 1;
  const uint8_t* length_row = luts.data() + static_cast<std::size_t>(n_tables) * 256;
  // Values >= 240 are pointers, never symbols: their lengths are 0, so that a pointer read by the
  // fourth lookup (below) decodes as an invalid code, not as an exponent >= 240.
  for (int v = kDf11PointerBase; v < 256; ++v) {
    if (length_row[v] != 0) bad(fmt::format("the length row gives pointer value {} length {} (must be 0)", v, length_row[v]));
  }
  // Rows reachable at each depth (a row may be reachable at several: a cycle must still end
  // at depth 3, where a pointer would send the kernel past 32 bits).
  std::vector<int> frontier{0};
  for (int depth = 0; depth < 4 && !frontier.empty(); ++depth) {
    std::vector<int> next;
    std::vector<bool> seen(n_tables, false);
    for (int row : frontier) {
      for (int i = 0; i < 256; ++i) {
        const unsigned v = luts[static_cast<std::size_t>(row) * 256 + i];
        if (v >= static_cast<unsigned>(kDf11PointerBase)) {
          const int target = 256 - static_cast<int>(v);
          if (depth < 3 && target >= n_tables) {
            bad(fmt::format("row {} entry {} points to table {}, but there are only {} decode tables", row, i,
                            target, n_tables));
          }
          // A pointer read by the fourth lookup is never followed: the walk ends there (the
          // official files carry such pointers into the EOF code's range, which valid streams
          // never reach). Decoders treat it as an invalid code.
          if (depth == 3) continue;
          if (!seen[target]) {
            seen[target] = true;
            next.push_back(target);
          }
        } else if (length_row[v] == 0 || length_row[v] > 32) {
          bad(fmt::format("row {} entry {} decodes symbol {} whose code length is {} (must be 1..32)", row, i, v,
                          length_row[v]));
        }
      }
    }
    frontier = std::move(next);
  }
}

CodeLengths df11_length_row(std::span<const uint8_t> luts) {
  CodeLengths l{};
  if (luts.size() < 256) throw Error(fmt::format("DF11 luts of {} bytes: no length row", luts.size()));
  const std::size_t base = luts.size() - 256;
  for (int s = 0; s < 256; ++s) l[s] = luts[base + s];
  return l;
}

std::vector<uint16_t> build_flat_table(const HuffmanCode& code, int k) {
  if (k < 1 || k > 16) throw Error(fmt::format("flat table: k = {} is outside 1..16", k));
  if (code.max_length() > k) {
    throw Error(fmt::format("flat table: code has {}-bit codewords, table has {} bits", code.max_length(), k));
  }
  std::vector<uint16_t> table(std::size_t{1} << k, 0);
  for (int s = 0; s < 256; ++s) {
    const int len = code.length[s];
    if (len == 0) continue;
    const uint32_t first = code.code[s] << (k - len);
    const uint32_t count = 1u << (k - len);
    const uint16_t entry = static_cast<uint16_t>(s | (len << 8));
    std::fill_n(table.begin() + first, count, entry);
  }
  return table;
}

bool resolve_df11(const uint8_t* luts, int n_rows, uint32_t window, int known_bits, uint8_t& symbol,
                  unsigned& length) {
  if (known_bits <= 0) return false;
  const uint8_t* length_row = luts + static_cast<std::size_t>(n_rows - 1) * 256;
  int row = 0;
  for (int depth = 0; depth < 4; ++depth) {
    const int avail = std::clamp(known_bits - 8 * depth, 0, 8);
    const unsigned byte = (window >> (24 - 8 * depth)) & 0xFFu;
    const uint8_t* t = luts + static_cast<std::size_t>(row) * 256;
    if (avail == 8) {
      const unsigned v = t[byte];
      if (v < static_cast<unsigned>(kDf11PointerBase)) {
        symbol = static_cast<uint8_t>(v);
        length = length_row[v];
        return true;
      }
      row = 256 - static_cast<int>(v);
      continue;
    }
    // Partly known index: determined only if every entry it may name holds the same symbol.
    const unsigned lo = byte & ~((1u << (8 - avail)) - 1u);
    const unsigned v0 = t[lo];
    if (v0 >= static_cast<unsigned>(kDf11PointerBase)) return false;
    for (unsigned i = lo; i < lo + (1u << (8 - avail)); ++i)
      if (t[i] != v0) return false;
    symbol = static_cast<uint8_t>(v0);
    length = length_row[v0];
    return true;
  }
  return false;
}

std::vector<uint16_t> flat_root_from_df11_luts(std::span<const uint8_t> luts, int k) {
  if (k < 1 || k > 16) throw Error(fmt::format("flat root: k = {} is outside 1..16", k));
  const int n_rows = static_cast<int>(luts.size() / 256);
  std::vector<uint16_t> t(std::size_t{1} << k, 0);
  for (uint32_t i = 0; i < t.size(); ++i) {
    uint8_t sym;
    unsigned len;
    // Only lengths the k bits cover: the decoder advances by the entry's length alone.
    if (resolve_df11(luts.data(), n_rows, i << (32 - k), k, sym, len) && len >= 1 && static_cast<int>(len) <= k) {
      t[i] = static_cast<uint16_t>(sym | (len << 8));
    }
  }
  return t;
}

std::vector<uint16_t> flat_root_from_code(const HuffmanCode& code, int k) {
  if (k < 1 || k > 16) throw Error(fmt::format("flat root: k = {} is outside 1..16", k));
  std::vector<uint16_t> t(std::size_t{1} << k, 0);
  for (int s = 0; s < 256; ++s) {
    const int len = code.length[s];
    if (len == 0 || len > k) continue;
    const uint32_t first = code.code[s] << (k - len);
    std::fill_n(t.begin() + first, std::size_t{1} << (k - len), static_cast<uint16_t>(s | (len << 8)));
  }
  return t;
}

namespace {

// uniform[p][x]: whether the flat root (2^kf entries) holds one value over all indices whose top
// p bits are x. A code read after `used` bits of a window sees only the window's remaining bits;
// its entry is known only if every fill of the bits past them gives the same one (always so for
// the root of a prefix code, whose short codes repeat over every suffix; checked for any table).
std::vector<std::vector<uint8_t>> uniform_prefixes(std::span<const uint16_t> flat_root, int kf) {
  std::vector<std::vector<uint8_t>> uniform(static_cast<std::size_t>(kf) + 1);
  uniform[kf].assign(flat_root.size(), 1);
  for (int p = kf - 1; p >= 0; --p) {
    uniform[p].assign(std::size_t{1} << p, 0);
    const int below = kf - p - 1;  // bits under the child's prefix
    for (uint32_t x = 0; x < (uint32_t{1} << p); ++x) {
      const uint32_t c0 = x << 1, c1 = c0 | 1u;
      uniform[p][x] = uniform[p + 1][c0] && uniform[p + 1][c1] &&
                      flat_root[c0 << below] == flat_root[c1 << below];
    }
  }
  return uniform;
}

// The codes that lie whole in the k-bit window w, as a flat root of kf >= k bits decodes them one
// after another, at most max_codes: their symbols (first in the low byte), total length, count.
struct WindowCodes {
  uint64_t symbols = 0;
  unsigned used = 0, count = 0;
};
WindowCodes window_codes(std::span<const uint16_t> flat_root, int kf, const std::vector<std::vector<uint8_t>>& uniform,
                         uint32_t w, int k, unsigned max_codes) {
  WindowCodes c;
  while (c.count < max_codes && c.used < static_cast<unsigned>(k)) {
    const unsigned real = static_cast<unsigned>(k) - c.used;  // bits of w still unread
    const uint32_t r = w & ((uint32_t{1} << real) - 1);
    const uint16_t e = flat_root[static_cast<std::size_t>(r) << (kf - static_cast<int>(real))];
    const unsigned len = e >> 8;
    if (len == 0 || len > real || !uniform[real][r]) break;
    c.symbols |= static_cast<uint64_t>(e & 0xFFu) << (8 * c.count);
    c.used += len;
    ++c.count;
  }
  return c;
}

int flat_bits(std::span<const uint16_t> flat_root, const char* what) {
  int kf = 0;
  while ((std::size_t{1} << kf) < flat_root.size()) ++kf;
  if (kf < 1 || kf > 16 || (std::size_t{1} << kf) != flat_root.size()) {
    throw Error(fmt::format("{}: a flat root of {} entries is not 2^1..2^16", what, flat_root.size()));
  }
  return kf;
}

}  // namespace

std::vector<uint32_t> multi_root_from_flat(std::span<const uint16_t> flat_root, int k) {
  if (k < 1 || k > 15) throw Error(fmt::format("multi-symbol root: k = {} is outside 1..15", k));
  if (flat_root.size() != (std::size_t{1} << k)) {
    throw Error(fmt::format("multi-symbol root: the flat root has {} entries, not 2^{}", flat_root.size(), k));
  }
  const auto uniform = uniform_prefixes(flat_root, k);
  std::vector<uint32_t> t(flat_root.size(), 0);
  for (uint32_t w = 0; w < t.size(); ++w) {
    const WindowCodes c = window_codes(flat_root, k, uniform, w, k, kMultiMaxCodes);
    t[w] = c.count == 0 ? 0u : static_cast<uint32_t>(c.symbols) | (c.used << 24) | (c.count << 28);
  }
  return t;
}

std::vector<uint32_t> wide_root_from_flat(std::span<const uint16_t> flat_root, int k) {
  const int kf = flat_bits(flat_root, "wide multi-symbol root");
  if (k < 1 || k > 15 || k > kf) {
    throw Error(fmt::format("wide multi-symbol root: k = {} is outside 1..min(15, {})", k, kf));
  }
  const auto uniform = uniform_prefixes(flat_root, kf);
  std::vector<uint32_t> t(std::size_t{2} << k, 0);
  for (uint32_t w = 0; w < (uint32_t{1} << k); ++w) {
    const WindowCodes c = window_codes(flat_root, kf, uniform, w, k, kWideMaxCodes);
    if (c.count == 0) continue;
    t[2 * w] = static_cast<uint32_t>(c.symbols);
    t[2 * w + 1] = static_cast<uint32_t>(c.symbols >> 32) | (c.used << 24) | (c.count << 28);
  }
  return t;
}

HuffmanCode canonical_code_from_luts(std::span<const uint8_t> luts, int max_code_length, std::string_view context) {
  if (luts.size() != 256) {
    throw Error(fmt::format("{}: luts: a canonical layout stores one 256-byte code-length row, got {} bytes",
                            context, luts.size()));
  }
  CodeLengths l{};
  for (int s = 0; s < 256; ++s) {
    if (luts[s] > max_code_length) {
      throw Error(fmt::format("{}: luts: symbol {} has code length {} > the layout's limit {}", context, s,
                              luts[s], max_code_length));
    }
    l[s] = luts[s];
  }
  if (kraft_sum_scaled(l) > (uint64_t{1} << 32)) {
    throw Error(fmt::format("{}: luts: code lengths are not a prefix code (Kraft sum > 1)", context));
  }
  return canonical_code(l);
}

}  // namespace df11
