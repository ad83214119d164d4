// datasets/regex.hpp: pattern_dict regexes matched whole, as Python's re.fullmatch matches them
// (every expectation below is Python 3's), in time linear in the name, and everything outside
// the syntax refused with what and where.
#include <catch2/catch.hpp>

#include <string>

#include "codec/common.hpp"
#include "datasets/regex.hpp"

using df11::LinearRegex;

TEST_CASE("regex: matches as Python's re.fullmatch", "[regex]") {
  struct Case {
    const char* pattern;
    const char* text;
    bool match;
  };
  // Generated with re.compile(pattern).fullmatch(text) is not None (Python 3.11).
  const Case cases[] = {
      {"lm_head", "lm_head", true},
      {"lm_head", "lm_heads", false},
      {"lm_head", "xlm_head", false},
      {"lm_head", "", false},
      {"model\\.embed_tokens", "model.embed_tokens", true},
      {"model\\.embed_tokens", "modelXembed_tokens", false},
      {"model\\.embed_tokens", "model.embed_tokens.weight", false},
      {"model\\.layers\\.\\d+", "model.layers.0", true},
      {"model\\.layers\\.\\d+", "model.layers.39", true},
      {"model\\.layers\\.\\d+", "model.layers.", false},
      {"model\\.layers\\.\\d+", "model.layers.1a", false},
      {"model\\.layers\\.\\d+", "model.layers.12.mlp", false},
      {"model.layers.\\d+", "modelXlayersY7", true},
      {"model.layers.\\d+", "model.layers.7", true},
      {"transformer_blocks\\.\\d+|single_transformer_blocks\\.\\d+", "transformer_blocks.3", true},
      {"transformer_blocks\\.\\d+|single_transformer_blocks\\.\\d+", "single_transformer_blocks.10", true},
      {"transformer_blocks\\.\\d+|single_transformer_blocks\\.\\d+", "single_transformer_blocks.", false},
      {"transformer_blocks\\.\\d+|single_transformer_blocks\\.\\d+", "xtransformer_blocks.3", false},
      {"(?:model\\.)?layers\\.(\\d+)\\.(mlp|self_attn)", "layers.1.mlp", true},
      {"(?:model\\.)?layers\\.(\\d+)\\.(mlp|self_attn)", "model.layers.22.self_attn", true},
      {"(?:model\\.)?layers\\.(\\d+)\\.(mlp|self_attn)", "model.layers.2.attn", false},
      {"(?:model\\.)?layers\\.(\\d+)\\.(mlp|self_attn)", "model.layers.2.mlp.", false},
      {"(?P<part>enc|dec)oder\\.block\\.[0-9]{1,3}", "encoder.block.7", true},
      {"(?P<part>enc|dec)oder\\.block\\.[0-9]{1,3}", "decoder.block.123", true},
      {"(?P<part>enc|dec)oder\\.block\\.[0-9]{1,3}", "decoder.block.1234", false},
      {"(?P<part>enc|dec)oder\\.block\\.[0-9]{1,3}", "coder.block.1", false},
      {"a{2,3}", "a", false},
      {"a{2,3}", "aa", true},
      {"a{2,3}", "aaa", true},
      {"a{2,3}", "aaaa", false},
      {"a{2}", "a", false},
      {"a{2}", "aa", true},
      {"a{2}", "aaa", false},
      {"a{2,}", "a", false},
      {"a{2,}", "aa", true},
      {"a{2,}", "aaaaaaa", true},
      {"a{,2}", "", true},
      {"a{,2}", "a", true},
      {"a{,2}", "aa", true},
      {"a{,2}", "aaa", false},
      {"a{,}", "", true},
      {"a{,}", "aaaa", true},
      {"x{", "x{", true},
      {"x{", "x", false},
      {"x{a}", "x{a}", true},
      {"x{1,a}", "x{1,a}", true},
      {"x{1,a}", "x", false},
      {"[a-c]+[^0-9_]*", "abc", true},
      {"[a-c]+[^0-9_]*", "abcXYZ", true},
      {"[a-c]+[^0-9_]*", "abc1", false},
      {"[a-c]+[^0-9_]*", "d", false},
      {"[a-c]+[^0-9_]*", "cab..--", true},
      {"[]a]+", "]a]", true},
      {"[]a]+", "a", true},
      {"[]a]+", "]", true},
      {"[]a]+", "b", false},
      {"[^]a]", "b", true},
      {"[^]a]", "]", false},
      {"[^]a]", "a", false},
      {"[\\d.]+", "1.2.3", true},
      {"[\\d.]+", "1.a", false},
      {"[a\\-z]+", "a-z", true},
      {"[a\\-z]+", "b", false},
      {"[-a]+", "-a-", true},
      {"[-a]+", "b", false},
      {"[a-]+", "a-", true},
      {"[a-]+", "b", false},
      {"\\w+\\.\\W", "abc_1.!", true},
      {"\\w+\\.\\W", "abc.a", false},
      {"\\s*\\S+", "  x", true},
      {"\\s*\\S+", "x", true},
      {"\\s*\\S+", "  ", false},
      {"(ab|a)(bc|c)", "abc", true},
      {"(ab|a)(bc|c)", "abbc", true},
      {"(ab|a)(bc|c)", "ac", true},
      {"(a*)*b", "aaab", true},
      {"(a*)*b", "b", true},
      {"(a*)*b", "aaaa", false},
      {"(a|)+b", "aab", true},
      {"(a|)+b", "b", true},
      {"(x+x+)+y", "xxxy", true},
      {"(x+x+)+y", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", false},
      {"(x+x+)+y", "xxxxxxxxy", true},
      {"^abc$", "abc", true},
      {"^abc$", "abcd", false},
      {"a^b", "ab", false},
      {"a$b", "ab", false},
      {"a*?b+?c??", "aabbc", true},
      {"a*?b+?c??", "b", true},
      {"a*?b+?c??", "bc", true},
      {"a*?b+?c??", "c", false},
      {"", "", true},
      {"", "a", false},
      {"()", "", true},
      {"()", "a", false},
      {"a|", "a", true},
      {"a|", "", true},
      {"a|", "b", false},
      {"|a", "a", true},
      {"|a", "", true},
      {"\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\\\\\^\\$", ".*+?()[]{}|\\^$", true},
      {"a.c", "abc", true},
      {"a.c", "a.c", true},
      {"a.c", "a\nc", false},
      {"a.c", "ac", false},
      {"\\t\\n", "\t\n", true},
      {"[\\t ]+", "\t \t", true},
      {"[\\t ]+", "x", false},
      {"(?:ab){2}c?", "abab", true},
      {"(?:ab){2}c?", "ababc", true},
      {"(?:ab){2}c?", "abc", false},
      {"((a|b){2}|c)+", "abba", true},
      {"((a|b){2}|c)+", "cab", true},
      {"((a|b){2}|c)+", "a", false},
      {"((a|b){2}|c)+", "ccc", true},
      {"[A-Z][a-z]*", "Model", true},
      {"[A-Z][a-z]*", "model", false},
      {"[A-Z][a-z]*", "M", true},
  };
  int n = 0;
  for (const Case& c : cases) {
    INFO("pattern '" << c.pattern << "', text '" << c.text << "'");
    CHECK(LinearRegex(c.pattern).full_match(c.text) == c.match);
    ++n;
  }
  CHECK(n > 100);
  // Bytes, not characters: a non-ASCII byte is a word byte, so \w+ takes a UTF-8 name whole.
  CHECK(LinearRegex("\\w+").full_match("caf\xc3\xa9"));
  CHECK(LinearRegex("a\\Wb").full_match("a b"));
}

TEST_CASE("regex: patterns that backtrack exponentially match in linear time", "[regex]") {
  // (x+x+)+y against 5000 x's: std::regex took 7.5 s at 28 characters, doubling with each one.
  const std::string xs(5000, 'x');
  CHECK_FALSE(LinearRegex("(x+x+)+y").full_match(xs));
  CHECK(LinearRegex("(x+x+)+y").full_match(xs + "y"));
  CHECK_FALSE(LinearRegex("(?:(?:x?){100})x{100}").full_match(std::string(99, 'x')));
  CHECK(LinearRegex("(?:(?:x?){100})x{100}").full_match(std::string(150, 'x')));
  CHECK_FALSE(LinearRegex("(a|aa)*b").full_match(std::string(1000, 'a')));
}

TEST_CASE("regex: what the syntax does not hold is refused with what and where", "[regex]") {
  struct Bad {
    const char* pattern;
    const char* says;
  };
  const Bad bad[] = {
      {"\\1", "back-references are not supported at position 1"},
      {"(a)\\1", "back-references"},
      {"(?=a)", "'(?' groups"},
      {"(?i)a", "'(?' groups"},
      {"(?P=n)", "'(?' groups"},
      {"\\bfoo", "the escape \\b is not supported at position 1"},
      {"\\Afoo", "the escape \\A"},
      {"\\q", "the escape \\q"},
      {"a**", "multiple repeat at position 3"},
      {"a{2}{3}", "multiple repeat"},
      {"a+*", "multiple repeat"},
      {"a*+", "possessive"},
      {"*a", "nothing to repeat at position 0"},
      {"^*", "nothing to repeat"},
      {"(a", "missing ), unterminated subpattern at position 2"},
      {"a)", "unbalanced parenthesis ')' at position 1"},
      {"[a", "an unterminated character set"},
      {"x{5,2}", "min repeat greater than max repeat"},
      {"a{1001}", "a repeat count over 1000"},
      {"[z-a]", "a bad character range"},
      {"[\\d-z]", "a bad character range"},
      {"a\\", "a pattern ending in '\\'"},
      {"(?P<n", "an unterminated group name"},
      {"(x{1000}){1000}", "more than 20000 automaton states"},
  };
  for (const Bad& b : bad) {
    INFO("pattern '" << b.pattern << "'");
    CHECK_THROWS_WITH(LinearRegex(b.pattern), Catch::Contains(b.says));
  }
  CHECK_THROWS_WITH(LinearRegex(std::string(1025, 'a')), Catch::Contains("1025 characters (at most 1024)"));
  CHECK_THROWS_WITH(LinearRegex(std::string(150, '(') + std::string(150, ')')), Catch::Contains("nested deeper than 100"));
  // A back-reference number too long for an int (std::regex's compiler overflowed on it).
  CHECK_THROWS_WITH(LinearRegex("a\\5555555555555555555"), Catch::Contains("back-references"));
  CHECK_NOTHROW(LinearRegex(std::string(1024, 'a')));
  // Repeats of parts that add no state cost no states but would cost time without bound.
  CHECK_THROWS_WITH(LinearRegex("((((a{0}){1000}){1000}){1000}){1000}"), Catch::Contains("take more than"));
  CHECK_NOTHROW(LinearRegex("((){100}){100}"));
  // As Python: a quantifier with nothing before it, and a group name that is not an identifier.
  CHECK_THROWS_WITH(LinearRegex("{1}a"), Catch::Contains("nothing to repeat at position"));
  CHECK_THROWS_WITH(LinearRegex("a|{2,3}"), Catch::Contains("nothing to repeat"));
  CHECK(LinearRegex("{a}").full_match("{a}"));
  CHECK_THROWS_WITH(LinearRegex("(?P<a)b>x)"), Catch::Contains("bad character in group name 'a)b'"));
  CHECK_THROWS_WITH(LinearRegex("(?P<>x)"), Catch::Contains("bad character in group name"));
  CHECK(LinearRegex("(?P<unit_1>x)y").full_match("xy"));
}
