// Named configs and shape checks of the end-to-end model.
#include "e2e/config.hpp"

#include <fmt/format.h>

namespace df11::e2e {

ModelShape named_config(std::string_view name) {
  if (name == "tiny") return ckpt::tiny_shape();
  if (name == "nemo" || name == "mistral-nemo") return synth::nemo_shape();
  throw Error(fmt::format("unknown synthetic config '{}' (tiny or nemo)", name));
}

ModelShape shape_of(const ckpt::Architecture& a, const std::string& where) {
  ModelShape s{a.hidden_size,         a.intermediate_size,   a.num_hidden_layers,
               a.num_attention_heads, a.num_key_value_heads, a.head_dim,
               a.vocab_size,          a.rope_theta,          a.rms_norm_eps};
  validate(s, where);
  return s;
}

void validate(const ModelShape& s, const std::string& where) {
  if (s.hidden <= 0 || s.intermediate <= 0 || s.n_layers <= 0 || s.n_heads <= 0 ||
      s.n_kv_heads <= 0 || s.head_dim <= 0 || s.vocab <= 0) {
    throw Error(
        fmt::format("{}: every size of the model must be positive ({})", where, describe(s)));
  }
  if (s.n_heads % s.n_kv_heads != 0) {
    throw Error(fmt::format("{}: {} query heads are not a multiple of {} KV heads", where,
                            s.n_heads, s.n_kv_heads));
  }
  if (s.head_dim % 2 != 0) {
    throw Error(fmt::format("{}: head_dim {} is odd; rotary embeddings rotate two halves", where,
                            s.head_dim));
  }
  if (!(s.rms_norm_eps > 0) || !(s.rope_theta > 1)) {
    throw Error(fmt::format("{}: rms_norm_eps {} must be > 0 and rope_theta {} > 1", where,
                            s.rms_norm_eps, s.rope_theta));
  }
  // Token ids travel as int32 and element offsets of a unit as uint32 positions in DF11.
  if (s.vocab > (int64_t{1} << 31) - 1)
    throw Error(fmt::format("{}: vocabulary {} is too large", where, s.vocab));
}

std::string describe(const ModelShape& s) {
  return fmt::format(
      "{} layer{}, hidden {}, intermediate {}, heads {}/{} x {}, vocab {}, rope_theta {:g}, eps "
      "{:g}{}",
      s.n_layers, s.n_layers == 1 ? "" : "s", s.hidden, s.intermediate, s.n_heads, s.n_kv_heads,
      s.head_dim, s.vocab, s.rope_theta, s.rms_norm_eps,
      s.sliding_window > 0 ? fmt::format(", sliding window {}", s.sliding_window) : "");
}

uint64_t n_matrix_parameters(const ModelShape& s) {
  uint64_t layer = 0;
  for (const auto& m : synth::layer_specs(s)) layer += static_cast<uint64_t>(m.rows * m.cols);
  return layer * static_cast<uint64_t>(s.n_layers) + 2 * static_cast<uint64_t>(s.vocab * s.hidden);
}

}  // namespace df11::e2e
