// Fuzz target: text through the Tekken tokenizer (the small fixture vocabulary of tests/e2e).
// Promises: invalid UTF-8 is refused with df11::Error saying so; valid text splits into
// non-empty pieces that concatenate to the text, encodes to ids inside the vocabulary (BOS
// first when asked), and decodes back to exactly the text (byte-level BPE is lossless). Ids
// that are not text never crash decode().
#include <cstring>
#include <string>
#include <vector>

#include "codec/common.hpp"
#include "fuzz.hpp"
#include "harness/e2e/tokenizer.hpp"

using namespace df11;

namespace {

const e2e::TekkenTokenizer& tokenizer() {
  static const e2e::TekkenTokenizer t = e2e::TekkenTokenizer::load(DF11_TOKENIZER_FIXTURE);
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const e2e::TekkenTokenizer& tok = tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool bos = size % 2 == 1;
  std::vector<int32_t> ids;
  try {
    ids = tok.encode(text, bos);
  } catch (const Error& e) {
    if (std::string(e.what()).find("UTF-8") == std::string::npos)
      fuzz::finding(std::string("encode refused for another reason than UTF-8: ") + e.what());
    fuzz::refused("encode", e.what());
    // The same bytes as ids: whatever they are, decode refuses or returns.
    std::vector<int32_t> raw;
    for (size_t i = 0; i + 4 <= size; i += 4) {
      int32_t v;
      std::memcpy(&v, data + i, 4);
      raw.push_back(v % (tok.vocab_size() + 8));
    }
    try {
      (void)tok.decode(raw);
    } catch (const Error& e2) {
      if (std::string(e2.what()).find("vocabulary") == std::string::npos)
        fuzz::finding(std::string("decode refused ids without saying why: ") + e2.what());
    }
    return 0;
  }
  std::string joined;
  for (std::string_view piece : tok.split(text)) {
    if (piece.empty()) fuzz::finding("split gave an empty piece");
    joined += piece;
  }
  if (joined != text) fuzz::finding("split pieces do not concatenate to the text");
  if (bos && (ids.empty() || ids[0] != tok.bos_id())) fuzz::finding("BOS missing");
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) fuzz::finding("id " + std::to_string(id) + " outside the vocabulary");
  if (tok.decode(ids) != text) fuzz::finding("decode(encode(text)) is not the text");
  fuzz::accepted("encoded");
  return 0;
}

namespace df11::fuzz {

std::vector<Bytes> fuzz_seeds() {
  const char* texts[] = {
      "Hello, world! It's 2026-11-27 and we're testing the tokenizer's pre-tokenizer.",
      "  leading spaces\n\n\ttabs\r\nand   runs of   spaces   ",
      "numbers 1234567890 3.14159 -42 1e10 0x1F",
      "Ünïcödé: naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, العربية, emoji 🙂👍🏽",
      "I'M SHOUTING, you're whispering; they'll DON'T won't",
      "a",
      "",
  };
  std::vector<Bytes> seeds;
  for (const char* t : texts) seeds.emplace_back(t, t + std::strlen(t));
  return seeds;
}

}  // namespace df11::fuzz
