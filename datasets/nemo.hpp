// Mistral-Nemo-Instruct-2407 architecture constants (docs: shared/reference/ANCHORS.md) and the
// shapes of one decoder layer's 7 matrices, in the order the official checkpoint lists them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/common.hpp"

namespace df11::synth {

// One Linear weight, PyTorch layout [out, in]: rows = out features, cols = in features (fan-in).
struct MatrixSpec {
  std::string name;
  int64_t rows;
  int64_t cols;
};

struct ModelShape {
  int64_t hidden;
  int64_t intermediate;
  int64_t n_layers;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t vocab;
  double rope_theta;
  double rms_norm_eps;
  // The attention window of config.json's sliding_window (a query sees the last W positions);
  // 0: none. The forward pass attends to every earlier position, which equals the window only
  // while a row's positions stay within it (e2e's models refuse longer runs).
  int64_t sliding_window = 0;
};

[[nodiscard]] constexpr ModelShape nemo_shape() {
  return ModelShape{5120, 14336, 40, 32, 8, 128, 131072, 1.0e6, 1.0e-5};
}

// Element counts the rest of the project checks itself against.
inline constexpr int64_t nemo_layer_elements = 272'629'760;  // one decoder layer, 7 matrices
inline constexpr int64_t nemo_vocab_elements = 671'088'640;  // embed_tokens or lm_head

// Average Huffman code length of the exponent (bits per weight) in the official DF11 release of
// Nemo (nemo_df11_release_units.tsv): the targets the synthetic model is calibrated to.
inline constexpr double release_exponent_bits_layer = 2.63;  // layers 1..39 span 2.607..2.635
inline constexpr double release_exponent_bits_layer0 = 2.8075;
inline constexpr double release_exponent_bits_lm_head = 2.6253;
inline constexpr double release_exponent_bits_embed = 2.6703;

// The 7 matrices of a decoder layer. Attention widths come from the head counts, not from
// hidden: Nemo's q_proj is 4096 x 5120 because 32 heads x 128 != 5120.
[[nodiscard]] inline std::vector<MatrixSpec> layer_specs(const ModelShape& s) {
  if (s.hidden <= 0 || s.intermediate <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 ||
      s.head_dim <= 0) {
    throw Error(
        "layer_specs: hidden, intermediate, n_heads, n_kv_heads and head_dim must be positive");
  }
  const int64_t q_width = s.n_heads * s.head_dim;
  const int64_t kv_width = s.n_kv_heads * s.head_dim;
  return {
      {"self_attn.q_proj", q_width, s.hidden},     {"self_attn.k_proj", kv_width, s.hidden},
      {"self_attn.v_proj", kv_width, s.hidden},    {"self_attn.o_proj", s.hidden, q_width},
      {"mlp.gate_proj", s.intermediate, s.hidden}, {"mlp.up_proj", s.intermediate, s.hidden},
      {"mlp.down_proj", s.hidden, s.intermediate},
  };
}

}  // namespace df11::synth
