// The regular expressions of pattern_dicts (official DF11 config.json files, --pattern), matched
// whole as Python's re.fullmatch matches them, in time linear in the name: a Thompson automaton
// simulated over sets of states. std::regex backtracks (exponential on patterns such as
// "(x+x+)+y") and its compiler overflows a signed integer on a long back-reference number, and
// these patterns come from downloaded files.
//
// The syntax is Python's, the part module names need:
//   literals; '.' (any byte but '\n'); escapes \d \D \w \W \s \S, \t \n \r \f \v, and any escaped
//   punctuation; classes [...] with ranges, negation and those escapes; groups (...), (?:...),
//   (?P<name>...); '|'; quantifiers * + ? {n} {n,} {,m} {n,m} (n, m <= 1000; the lazy forms are
//   accepted: whether the whole name matches does not depend on them); '^' and '$'.
// Names are matched as bytes: a non-ASCII byte counts as \w (so \w+ takes UTF-8 letters whole).
// Anything else (back-references, look-around, inline flags, \b, \A, \Z, possessive
// quantifiers, a repeated quantifier) is refused with what and where, as are patterns over 1024
// characters and automata over 20000 states.
#pragma once

#include <bitset>
#include <cstdint>
#include <string_view>
#include <vector>

namespace df11 {

class LinearRegex {
 public:
  static constexpr std::size_t kMaxPatternChars = 1024;
  static constexpr std::size_t kMaxStates = 20000;
  static constexpr int kMaxRepeat = 1000;

  // Throws df11::Error ("<what> at position N") for what the syntax above does not hold.
  explicit LinearRegex(std::string_view pattern);

  [[nodiscard]] bool full_match(std::string_view text) const;
  [[nodiscard]] std::size_t n_states() const { return states_.size(); }

  struct State {
    enum Kind : uint8_t { kByte, kSplit, kBol, kEol, kMatch };
    Kind kind = kMatch;
    int out = -1;   // the next state (kByte: after consuming a byte of the set)
    int out2 = -1;  // kSplit: the other branch
    int set = -1;   // kByte: index into sets_
  };

 private:
  friend class RegexBuilder;
  std::vector<State> states_;
  std::vector<std::bitset<256>> sets_;
  int start_ = -1;
};

}  // namespace df11
