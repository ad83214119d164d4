// A pattern is parsed into a tree, which is laid out as a Thompson automaton from its end
// backwards (each piece knows where it continues), then matched by advancing the set of live
// states one byte at a time (see regex.hpp).
#include "datasets/regex.hpp"

#include <algorithm>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "codec/common.hpp"

namespace df11 {

namespace {

using ByteSet = std::bitset<256>;

struct Node {
  enum Kind { kEmpty, kSet, kConcat, kAlt, kRepeat, kBol, kEol };
  Kind kind = kEmpty;
  ByteSet set;                                // kSet
  std::vector<std::unique_ptr<Node>> parts;   // kConcat, kAlt; kRepeat: the one repeated
  int min = 0, max = 0;                       // kRepeat; max < 0: unbounded
};

std::unique_ptr<Node> node(Node::Kind kind) {
  auto n = std::make_unique<Node>();
  n->kind = kind;
  return n;
}

ByteSet digits() {
  ByteSet s;
  for (int c = '0'; c <= '9'; ++c) s.set(c);
  return s;
}
ByteSet words() {  // ASCII letters, digits, '_', and every non-ASCII byte (UTF-8 letters whole)
  ByteSet s = digits();
  for (int c = 'a'; c <= 'z'; ++c) s.set(c);
  for (int c = 'A'; c <= 'Z'; ++c) s.set(c);
  s.set('_');
  for (int c = 0x80; c < 256; ++c) s.set(c);
  return s;
}
ByteSet spaces() {
  ByteSet s;
  for (const char c : {' ', '\t', '\n', '\r', '\f', '\v'}) s.set(static_cast<unsigned char>(c));
  return s;
}
ByteSet single(unsigned char c) {
  ByteSet s;
  s.set(c);
  return s;
}

bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

class Parser {
 public:
  explicit Parser(std::string_view p) : p_(p) {}

  std::unique_ptr<Node> parse() {
    auto tree = alternation();
    if (i_ < p_.size()) fail("unbalanced parenthesis ')'");  // alternation stops only at ')'
    return tree;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw Error(fmt::format("{} at position {}", what, i_)); }
  bool more() const { return i_ < p_.size(); }
  char peek() const { return p_[i_]; }

  std::unique_ptr<Node> alternation() {
    if (++depth_ > 100) fail("groups nested deeper than 100");
    auto first = concatenation();
    if (!more() || peek() != '|') {
      --depth_;
      return first;
    }
    auto alt = node(Node::kAlt);
    alt->parts.push_back(std::move(first));
    while (more() && peek() == '|') {
      ++i_;
      alt->parts.push_back(concatenation());
    }
    --depth_;
    return alt;
  }

  std::unique_ptr<Node> concatenation() {
    auto cat = node(Node::kConcat);
    while (more() && peek() != '|' && peek() != ')') cat->parts.push_back(repetition());
    return cat;
  }

  // A quantifier {n}, {n,}, {,m} or {n,m} at i_ (else, as in Python, '{' is a literal): its
  // bounds, and i_ past it.
  bool braces(int& min, int& max) {
    std::size_t j = i_ + 1;
    auto number = [&](int& v) {
      const std::size_t from = j;
      long long x = 0;
      while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') {
        x = std::min<long long>(x * 10 + (p_[j] - '0'), 1'000'000'000);
        ++j;
      }
      v = static_cast<int>(x);  // (clamped as it was read)
      return j > from;
    };
    int lo = 0, hi = -1;
    const bool has_lo = number(lo);
    if (j < p_.size() && p_[j] == '}') {
      if (!has_lo) return false;
      hi = lo;
    } else if (j < p_.size() && p_[j] == ',') {
      ++j;
      if (!number(hi)) hi = -1;
      if (j >= p_.size() || p_[j] != '}') return false;
    } else {
      return false;
    }
    if (lo > LinearRegex::kMaxRepeat || hi > LinearRegex::kMaxRepeat) {
      fail(fmt::format("a repeat count over {}", LinearRegex::kMaxRepeat));
    }
    if (hi >= 0 && hi < lo) fail("min repeat greater than max repeat");
    min = lo;
    max = hi;
    i_ = j + 1;
    return true;
  }

  std::unique_ptr<Node> repetition() {
    auto atom_ = atom();
    bool repeated = false;
    while (more()) {
      int min = 0, max = 0;
      const char c = peek();
      if (c == '*' || c == '+' || c == '?') {
        min = c == '+' ? 1 : 0;
        max = c == '?' ? 1 : -1;
        ++i_;
      } else if (c != '{' || !braces(min, max)) {
        break;
      }
      if (repeated) fail("multiple repeat");
      if (atom_->kind == Node::kBol || atom_->kind == Node::kEol) fail("nothing to repeat");
      repeated = true;
      if (more() && peek() == '?') {
        ++i_;  // lazy: the same whole matches
      } else if (more() && peek() == '+') {
        fail("possessive quantifiers are not supported");
      }
      auto rep = node(Node::kRepeat);
      rep->min = min;
      rep->max = max;
      rep->parts.push_back(std::move(atom_));
      atom_ = std::move(rep);
    }
    return atom_;
  }

  // The set of an escape (i_ at the character after '\'); in_class: inside [...].
  ByteSet escape(bool in_class) {
    if (!more()) fail("a pattern ending in '\\'");
    const char c = p_[i_++];
    switch (c) {
      case 'd': return digits();
      case 'D': return ~digits();
      case 'w': return words();
      case 'W': return ~words();
      case 's': return spaces();
      case 'S': return ~spaces();
      case 't': return single('\t');
      case 'n': return single('\n');
      case 'r': return single('\r');
      case 'f': return single('\f');
      case 'v': return single('\v');
      default: break;
    }
    if (c >= '0' && c <= '9') {
      --i_;
      fail(in_class ? "octal escapes are not supported" : "back-references are not supported");
    }
    if (is_alnum(c)) {
      --i_;
      fail(fmt::format("the escape \\{} is not supported", c));
    }
    return single(static_cast<unsigned char>(c));  // escaped punctuation, '\\' included
  }

  std::unique_ptr<Node> set_node(const ByteSet& s) {
    auto n = node(Node::kSet);
    n->set = s;
    return n;
  }

  std::unique_ptr<Node> atom() {
    const char c = p_[i_];
    switch (c) {
      case '(': {
        ++i_;
        if (more() && peek() == '?') {
          if (p_.substr(i_, 2) == "?:") {
            i_ += 2;
          } else if (p_.substr(i_, 3) == "?P<") {
            const std::size_t end = p_.find('>', i_);
            if (end == std::string_view::npos) fail("an unterminated group name");
            const std::string_view name = p_.substr(i_ + 3, end - i_ - 3);
            const bool ident = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                               std::all_of(name.begin(), name.end(), [](char ch) { return is_alnum(ch) || ch == '_'; });
            if (!ident) fail(fmt::format("bad character in group name '{}'", name));
            i_ = end + 1;
          } else {
            fail("'(?' groups other than (?:...) and (?P<name>...) are not supported");
          }
        }
        auto inner = alternation();
        if (!more() || peek() != ')') fail("missing ), unterminated subpattern");
        ++i_;
        return inner;
      }
      case '[': return set_node(bracket());
      case '.': ++i_; return set_node(~single('\n'));
      case '^': ++i_; return node(Node::kBol);
      case '$': ++i_; return node(Node::kEol);
      case '\\': ++i_; return set_node(escape(false));
      case '*':
      case '+':
      case '?': fail("nothing to repeat");
      case '{': {
        int min = 0, max = 0;
        if (braces(min, max)) fail("nothing to repeat");  // a quantifier with nothing before it
        ++i_;
        return set_node(single('{'));
      }
      default: ++i_; return set_node(single(static_cast<unsigned char>(c)));
    }
  }

  ByteSet bracket() {
    ++i_;  // '['
    bool negate = false;
    if (more() && peek() == '^') {
      negate = true;
      ++i_;
    }
    ByteSet s;
    bool first = true;
    while (true) {
      if (!more()) fail("an unterminated character set");
      char c = p_[i_];
      if (c == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      ++i_;
      ByteSet item;
      bool is_char = true;
      unsigned char lo = static_cast<unsigned char>(c);
      if (c == '\\') {
        item = escape(true);
        is_char = item.count() == 1;
        if (is_char) {
          for (int b = 0; b < 256; ++b) {
            if (item[b]) lo = static_cast<unsigned char>(b);
          }
          // \d and friends are never a single byte; a one-byte set is an escaped character.
        }
      } else {
        item = single(lo);
      }
      if (is_char && i_ + 1 < p_.size() && peek() == '-' && p_[i_ + 1] != ']') {
        ++i_;  // '-'
        unsigned char hi = static_cast<unsigned char>(p_[i_++]);
        if (hi == '\\') {
          const ByteSet e = escape(true);
          if (e.count() != 1) fail("a bad character range");
          for (int b = 0; b < 256; ++b) {
            if (e[b]) hi = static_cast<unsigned char>(b);
          }
        }
        if (hi < lo) fail("a bad character range");
        for (int b = lo; b <= hi; ++b) item.set(static_cast<std::size_t>(b));
      } else if (!is_char && i_ + 1 < p_.size() && peek() == '-' && p_[i_ + 1] != ']') {
        fail("a bad character range");
      }
      s |= item;
    }
    return negate ? ~s : s;
  }

  std::string_view p_;
  std::size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

class RegexBuilder {
 public:
  explicit RegexBuilder(LinearRegex& r) : r_(r) {}

  int add(LinearRegex::State s) {
    if (r_.states_.size() >= LinearRegex::kMaxStates) {
      throw Error(fmt::format("the pattern needs more than {} automaton states (repeats too large)",
                              LinearRegex::kMaxStates));
    }
    r_.states_.push_back(s);
    return static_cast<int>(r_.states_.size()) - 1;
  }

  // Lays `n` out ending in state `next`; returns where it starts. The calls are bounded as well
  // as the states: a repeat of a part that adds no state ("((a{0}){1000}){1000}") adds no state
  // however often it is laid out, and would otherwise take unbounded time.
  int emit(const Node& n, int next) {
    using S = LinearRegex::State;
    if (++calls_ > kMaxCalls) {
      throw Error(fmt::format("the pattern's repeats take more than {} steps to lay out (repeats too large)", kMaxCalls));
    }
    switch (n.kind) {
      case Node::kEmpty: return next;
      case Node::kSet: {
        r_.sets_.push_back(n.set);
        return add({S::kByte, next, -1, static_cast<int>(r_.sets_.size()) - 1});
      }
      case Node::kBol: return add({S::kBol, next, -1, -1});
      case Node::kEol: return add({S::kEol, next, -1, -1});
      case Node::kConcat:
        for (auto it = n.parts.rbegin(); it != n.parts.rend(); ++it) next = emit(**it, next);
        return next;
      case Node::kAlt: {
        int start = emit(*n.parts.back(), next);
        for (std::size_t k = n.parts.size() - 1; k-- > 0;) {
          const int branch = emit(*n.parts[k], next);
          start = add({S::kSplit, branch, start, -1});
        }
        return start;
      }
      case Node::kRepeat: {
        const Node& part = *n.parts[0];
        int tail = next;
        if (n.max < 0) {
          const int loop = add({S::kSplit, -1, next, -1});
          r_.states_[static_cast<std::size_t>(loop)].out = emit(part, loop);
          tail = loop;
        } else {
          for (int k = n.min; k < n.max; ++k) tail = add({S::kSplit, emit(part, tail), next, -1});
        }
        for (int k = 0; k < n.min; ++k) tail = emit(part, tail);
        return tail;
      }
    }
    return next;
  }

 private:
  static constexpr uint64_t kMaxCalls = 1'000'000;
  LinearRegex& r_;
  uint64_t calls_ = 0;
};

LinearRegex::LinearRegex(std::string_view pattern) {
  if (pattern.size() > kMaxPatternChars) {
    throw Error(fmt::format("a pattern of {} characters (at most {})", pattern.size(), kMaxPatternChars));
  }
  const std::unique_ptr<Node> tree = Parser(pattern).parse();
  RegexBuilder b(*this);
  const int match = b.add({State::kMatch, -1, -1, -1});
  start_ = b.emit(*tree, match);
}

bool LinearRegex::full_match(std::string_view text) const {
  std::vector<uint32_t> mark(states_.size(), 0);
  uint32_t generation = 0;
  std::vector<int> now, next, stack;
  // Adds s and the states it reaches without a byte, at position pos, to `list`.
  auto reach = [&](std::vector<int>& list, int s, std::size_t pos) {
    stack.push_back(s);
    while (!stack.empty()) {
      const int t = stack.back();
      stack.pop_back();
      if (t < 0 || mark[static_cast<std::size_t>(t)] == generation) continue;
      mark[static_cast<std::size_t>(t)] = generation;
      const State& st = states_[static_cast<std::size_t>(t)];
      switch (st.kind) {
        case State::kSplit:
          stack.push_back(st.out2);
          stack.push_back(st.out);
          break;
        case State::kBol:
          if (pos == 0) stack.push_back(st.out);
          break;
        case State::kEol:
          if (pos == text.size()) stack.push_back(st.out);
          break;
        case State::kByte:
        case State::kMatch: list.push_back(t); break;
      }
    }
  };
  ++generation;
  reach(now, start_, 0);
  for (std::size_t pos = 0; pos < text.size() && !now.empty(); ++pos) {
    ++generation;
    next.clear();
    const auto byte = static_cast<unsigned char>(text[pos]);
    for (const int s : now) {
      const State& st = states_[static_cast<std::size_t>(s)];
      if (st.kind == State::kByte && sets_[static_cast<std::size_t>(st.set)][byte]) reach(next, st.out, pos + 1);
    }
    now.swap(next);
  }
  for (const int s : now) {
    if (states_[static_cast<std::size_t>(s)].kind == State::kMatch) return true;
  }
  return false;
}

}  // namespace df11
