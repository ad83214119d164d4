// The Tekken tokenizer (see tokenizer.hpp).
#include "e2e/tokenizer.hpp"

#include <algorithm>
#include <climits>
#include <limits>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codec/common.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/json_io.hpp"

namespace df11::e2e {
namespace {

struct Range {
  char32_t first, last;
  uint8_t bits;
};

constexpr Range kRanges[] = {
#include "e2e/unicode_classes.inc"
};

enum : uint8_t { kLu = 1, kLl = 2, kLt = 4, kLm = 8, kLo = 16, kM = 32, kN = 64 };
constexpr uint8_t kL = kLu | kLl | kLt | kLm | kLo;

// The pattern this file implements; another one in a tekken.json is refused, not guessed at.
constexpr std::string_view kTekkenPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?)"
    R"([\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|)"
    R"(\s+(?!\S)|\s+)";

uint8_t category(char32_t c) {
  const auto it = std::upper_bound(std::begin(kRanges), std::end(kRanges), c,
                                   [](char32_t v, const Range& r) { return v < r.first; });
  if (it == std::begin(kRanges)) return 0;
  const Range& r = *(it - 1);
  return c <= r.last ? r.bits : 0;
}

// \s of the Rust regex crate: the White_Space property.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Predicates of the pattern's character classes, on a code point and its category bits.
bool p_prefix(char32_t c, uint8_t b) {
  return c != '\r' && c != '\n' && !(b & (kL | kN));
}  // [^\r\n\p{L}\p{N}]
bool p_upper(char32_t, uint8_t b) {
  return b & (kLu | kLt | kLm | kLo | kM);
}
bool p_lower(char32_t, uint8_t b) {
  return b & (kLl | kLm | kLo | kM);
}
bool p_number(char32_t, uint8_t b) {
  return b & kN;
}
bool p_space_char(char32_t c, uint8_t) {
  return c == ' ';
}
bool p_other(char32_t c, uint8_t b) {
  return !is_space(c) && !(b & (kL | kN));
}  // [^\s\p{L}\p{N}]
bool p_tail(char32_t c, uint8_t) {
  return c == '\r' || c == '\n' || c == '/';
}
bool p_newline(char32_t c, uint8_t) {
  return c == '\r' || c == '\n';
}
bool p_space(char32_t c, uint8_t) {
  return is_space(c);
}

struct Item {
  bool (*pred)(char32_t, uint8_t);
  int min, max;
};
struct Alternative {
  std::vector<Item> items;
  bool not_before_nonspace = false;  // (?!\S) after the items
};

const std::vector<Alternative>& alternatives() {
  static const std::vector<Alternative> alts = {
      {{{p_prefix, 0, 1}, {p_upper, 0, INT_MAX}, {p_lower, 1, INT_MAX}}},
      {{{p_prefix, 0, 1}, {p_upper, 1, INT_MAX}, {p_lower, 0, INT_MAX}}},
      {{{p_number, 1, 1}}},
      {{{p_space_char, 0, 1}, {p_other, 1, INT_MAX}, {p_tail, 0, INT_MAX}}},
      {{{p_space, 0, INT_MAX}, {p_newline, 1, INT_MAX}}},
      {{{p_space, 1, INT_MAX}}, true},
      {{{p_space, 1, INT_MAX}}},
  };
  return alts;
}

struct Text {
  std::vector<char32_t> cps;
  std::vector<uint8_t> cats;
  std::vector<std::size_t> offsets;  // byte offset of each code point, + the end
};

// Backtracking match of items[i..] at code point pos, greedy quantifiers as in the regex
// engine: the first success in greedy order is the regex's match.
bool match(const Text& t, const Alternative& alt, std::size_t i, std::size_t pos,
           std::size_t& end) {
  if (i == alt.items.size()) {
    if (alt.not_before_nonspace && pos < t.cps.size() && !is_space(t.cps[pos])) return false;
    end = pos;
    return true;
  }
  const Item& it = alt.items[i];
  std::size_t n = 0;
  while (static_cast<int>(n) < it.max && pos + n < t.cps.size() &&
         it.pred(t.cps[pos + n], t.cats[pos + n]))
    ++n;
  for (std::size_t c = n + 1; c-- > static_cast<std::size_t>(it.min);) {
    if (match(t, alt, i + 1, pos + c, end)) return true;
  }
  return false;
}

Text decode_utf8(std::string_view s) {
  Text t;
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    char32_t c = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    bool ok = len > 0 && i + static_cast<std::size_t>(len) <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      ok = (b & 0xC0) == 0x80;
      c = (c << 6) | (b & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8 either.
    ok = ok && !(len == 2 && c < 0x80) && !(len == 3 && c < 0x800) && !(len == 4 && c < 0x10000) &&
         !(c >= 0xD800 && c <= 0xDFFF) && c <= 0x10FFFF;
    if (!ok) throw Error(fmt::format("tokenizer: the text is not valid UTF-8 at byte {}", i));
    t.cps.push_back(c);
    t.cats.push_back(category(c));
    t.offsets.push_back(i);
    i += static_cast<std::size_t>(len);
  }
  t.offsets.push_back(s.size());
  return t;
}

std::string base64_decode(std::string_view in, const std::string& where) {
  auto value = [&](char ch) -> int {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    throw Error(fmt::format("{}: bad base64 character '{}'", where, ch));
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (const char ch : in) {
    if (ch == '=') break;
    acc = (acc << 6) | static_cast<uint32_t>(value(ch));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

// Appends s with each maximal subpart of an ill-formed UTF-8 sequence replaced by one U+FFFD (the
// Unicode standard's recommended practice, which Python's errors="replace" follows, and so
// mistral-common's decode): "\x80\x80" gives two, "\xE0\x80\x80" three (E0 takes only A0..BF
// next), a truncated "\xE2\x82" one.
void append_sanitized(std::string& out, std::string_view s) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned b = byte(i);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    // The sequence's length and the range its second byte must fall in (Unicode Table 3-7).
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    }
    std::size_t k = 1;  // bytes of the sequence that are well formed so far
    if (len != 0) {
      while (k < len && i + k < s.size()) {
        const unsigned c = byte(i + k);
        if (k == 1 ? (c < lo || c > hi) : (c & 0xC0) != 0x80) break;
        ++k;
      }
    }
    if (len != 0 && k == len) {
      out.append(s.substr(i, len));
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += k;
  }
}

}  // namespace

const char* tokenizer_unicode_version() {
  return DF11_UNICODE_VERSION;
}

TekkenTokenizer TekkenTokenizer::load(const std::filesystem::path& file) {
  const std::string where = file.string();
  const nlohmann::json j = read_json_file(file);
  if (!j.is_object() || !j.contains("config") || !j.contains("vocab") || !j["vocab"].is_array()) {
    throw Error(
        fmt::format("{}: not a Tekken tokenizer (needs \"config\" and a \"vocab\" list)", where));
  }
  const auto& cfg = j["config"];
  // An integer field in [lo, hi] (get<int32_t>() would wrap a larger one and truncate a fraction).
  const auto int_in = [&](const nlohmann::json& v, const std::string& what, int64_t lo, int64_t hi) {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
      throw Error(fmt::format("{}: {} must be an integer in [{}, {}], got {}", where, what, lo, hi, brief(v)));
    }
    return v.get<int64_t>();
  };
  try {
    const std::string pattern = cfg.at("pattern").get<std::string>();
    if (pattern != kTekkenPattern) {
      throw Error(fmt::format(
          "{}: the pre-tokenizer pattern is not the Tekken pattern this tool implements", where));
    }
    TekkenTokenizer t;
    t.num_special_ = static_cast<int32_t>(int_in(cfg.at("default_num_special_tokens"), "default_num_special_tokens", 0,
                                                 int64_t{1} << 20));
    const int64_t vocab_size = int_in(cfg.at("default_vocab_size"), "default_vocab_size", 1, ckpt::kMaxVocab);
    const int64_t n_inner = vocab_size - t.num_special_;
    const auto& vocab = j["vocab"];
    if (t.num_special_ < 0 || n_inner <= 0 || n_inner > static_cast<int64_t>(vocab.size())) {
      throw Error(fmt::format(
          "{}: default_vocab_size {} and default_num_special_tokens {} do not fit {} tokens", where,
          vocab_size, t.num_special_, vocab.size()));
    }
    // mistral_common keeps the ranks below default_vocab_size - default_num_special_tokens.
    t.tokens_.resize(static_cast<std::size_t>(n_inner));
    std::vector<bool> seen(t.tokens_.size(), false);
    for (const auto& e : vocab) {
      const int64_t rank = int_in(e.at("rank"), "a vocab entry's rank", 0, std::numeric_limits<int32_t>::max());
      if (rank >= n_inner) continue;
      auto& slot = t.tokens_[static_cast<std::size_t>(rank)];
      if (seen[static_cast<std::size_t>(rank)])
        throw Error(fmt::format("{}: rank {} appears twice", where, rank));
      seen[static_cast<std::size_t>(rank)] = true;
      slot = base64_decode(e.at("token_bytes").get<std::string>(),
                           fmt::format("{}: rank {}", where, rank));
    }
    for (std::size_t r = 0; r < seen.size(); ++r)
      if (!seen[r]) throw Error(fmt::format("{}: no token of rank {}", where, r));
    for (int b = 0; b < 256; ++b) {
      // Byte-level BPE needs every byte as a token of its own.
      bool found = false;
      for (std::size_t r = 0; r < std::min<std::size_t>(t.tokens_.size(), 1024) && !found; ++r)
        found = t.tokens_[r].size() == 1 && static_cast<unsigned char>(t.tokens_[r][0]) == b;
      if (!found) throw Error(fmt::format("{}: byte {} has no token of its own", where, b));
    }
    t.ranks_.reserve(t.tokens_.size());
    for (std::size_t r = 0; r < t.tokens_.size(); ++r)
      t.ranks_.emplace(t.tokens_[r], static_cast<int32_t>(r));
    if (j.contains("special_tokens") && j["special_tokens"].is_array()) {
      for (const auto& s : j["special_tokens"]) {
        const auto name = s.at("token_str").get<std::string>();
        // Special tokens take the ranks below default_num_special_tokens.
        if (name == "<s>" || name == "</s>") {
          const auto rank = static_cast<int32_t>(
              int_in(s.at("rank"), fmt::format("the rank of {}", name), 0, std::max(0, t.num_special_ - 1)));
          (name == "<s>" ? t.bos_ : t.eos_) = rank;
        }
      }
    }
    return t;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
}

std::vector<std::string_view> TekkenTokenizer::split(std::string_view text) const {
  const Text t = decode_utf8(text);
  std::vector<std::string_view> pieces;
  std::size_t pos = 0;
  while (pos < t.cps.size()) {
    std::size_t end = pos;
    for (const Alternative& alt : alternatives())
      if (match(t, alt, 0, pos, end) && end > pos) break;
    if (end == pos) end = pos + 1;  // cannot happen: every code point matches some alternative
    pieces.push_back(text.substr(t.offsets[pos], t.offsets[end] - t.offsets[pos]));
    pos = end;
  }
  return pieces;
}

void TekkenTokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (const auto it = ranks_.find(std::string(piece)); it != ranks_.end()) {
    out.push_back(it->second);
    return;
  }
  // Part boundaries; repeatedly merge the adjacent pair whose bytes have the lowest rank (the
  // leftmost of equals), as tiktoken does.
  std::vector<std::size_t> b(piece.size() + 1);
  for (std::size_t i = 0; i <= piece.size(); ++i) b[i] = i;
  std::string key;
  while (b.size() > 2) {
    int32_t best = INT32_MAX;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 2 < b.size(); ++i) {
      key.assign(piece.substr(b[i], b[i + 2] - b[i]));
      const auto it = ranks_.find(key);
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == INT32_MAX) break;
    b.erase(b.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  for (std::size_t i = 0; i + 1 < b.size(); ++i) {
    out.push_back(ranks_.at(std::string(piece.substr(b[i], b[i + 1] - b[i]))));
  }
}

std::vector<int32_t> TekkenTokenizer::encode(std::string_view text, bool bos) const {
  std::vector<int32_t> ranks;
  for (const std::string_view piece : split(text)) bpe(piece, ranks);
  std::vector<int32_t> ids;
  if (bos) ids.push_back(bos_);
  for (const int32_t r : ranks) ids.push_back(r + num_special_);
  return ids;
}

std::string TekkenTokenizer::decode(std::span<const int32_t> ids) const {
  // Control tokens carry no text, and they end a run of text tokens: each run's bytes are made
  // valid UTF-8 on their own (as mistral_common decodes a group of non-special tokens at a
  // time), so bytes of one character split by a control token are two invalid pieces, not one
  // character.
  std::string out, run;
  for (const int32_t id : ids) {
    if (id < num_special_) {
      append_sanitized(out, run);
      run.clear();
      continue;
    }
    const auto r = static_cast<std::size_t>(id - num_special_);
    if (r >= tokens_.size())
      throw Error(
          fmt::format("tokenizer: id {} is outside the vocabulary of {}", id, vocab_size()));
    run += tokens_[r];
  }
  append_sanitized(out, run);
  return out;
}

}  // namespace df11::e2e
