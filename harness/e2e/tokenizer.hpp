// The Tekken tokenizer of Mistral-Nemo (tekken.json): tiktoken-style byte-level BPE. Text is cut
// into pieces by the file's pre-tokenizer pattern (the Tekken pattern, implemented here by hand
// with Unicode category tables), each piece's UTF-8 bytes are merged pair by pair, lowest rank
// first, and ranks are shifted past the special tokens. Checked against mistral_common.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace df11::e2e {

class TekkenTokenizer {
 public:
  // Reads a tekken.json; throws df11::Error naming the file for anything it cannot use (another
  // pre-tokenizer pattern, ranks that are not 0..n-1, bad base64).
  [[nodiscard]] static TekkenTokenizer load(const std::filesystem::path& file);

  // Token ids of UTF-8 text (df11::Error on invalid UTF-8), with the BOS id first when asked.
  [[nodiscard]] std::vector<int32_t> encode(std::string_view text, bool bos) const;
  // The text of ids; special (control) tokens are left out, invalid UTF-8 becomes U+FFFD.
  [[nodiscard]] std::string decode(std::span<const int32_t> ids) const;
  // The pre-tokenizer's pieces of UTF-8 text (views into it).
  [[nodiscard]] std::vector<std::string_view> split(std::string_view text) const;

  [[nodiscard]] int32_t vocab_size() const {
    return num_special_ + static_cast<int32_t>(tokens_.size());
  }
  [[nodiscard]] int32_t num_special() const { return num_special_; }
  [[nodiscard]] int32_t bos_id() const { return bos_; }
  [[nodiscard]] int32_t eos_id() const { return eos_; }

 private:
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;                 // rank -> bytes
  std::unordered_map<std::string, int32_t> ranks_;  // bytes -> rank
  int32_t num_special_ = 0, bos_ = 1, eos_ = 2;
};

// The Unicode version of the category tables the pre-tokenizer uses.
[[nodiscard]] const char* tokenizer_unicode_version();

}  // namespace df11::e2e
