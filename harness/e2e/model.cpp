// Names of the model's options and the helpers both backends share.
#include "e2e/model.hpp"

#include <cmath>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "e2e/rope.hpp"

namespace df11::e2e {

std::string to_string(Backend b) {
  return b == Backend::cpu ? "cpu" : "cuda";
}

std::string to_string(WeightsKind w) {
  switch (w) {
    case WeightsKind::bf16:
      return "bf16";
    case WeightsKind::df11:
      return "df11";
    case WeightsKind::cpu_offload:
      return "cpu-offload";
  }
  return "?";
}

WeightsKind parse_weights(const std::string& s) {
  if (s == "bf16") return WeightsKind::bf16;
  if (s == "df11") return WeightsKind::df11;
  if (s == "cpu-offload") return WeightsKind::cpu_offload;
  throw Error(fmt::format("unknown --weights '{}' (bf16, df11 or cpu-offload)", s));
}

void argmax_rows(std::span<const float> logits, int rows, int64_t vocab,
                 std::vector<int32_t>& out) {
  if (logits.size() != static_cast<std::size_t>(rows) * static_cast<std::size_t>(vocab)) {
    throw Error(fmt::format("argmax: {} logits for {} rows of {}", logits.size(), rows, vocab));
  }
  out.assign(static_cast<std::size_t>(rows), 0);
  for (int r = 0; r < rows; ++r) {
    const float* row =
        logits.data() + static_cast<std::size_t>(r) * static_cast<std::size_t>(vocab);
    int64_t best = -1;
    for (int64_t i = 0; i < vocab; ++i) {
      // Strictly greater: the first of equal maxima wins; NaN never wins.
      if (!std::isnan(row[i]) && (best < 0 || row[i] > row[best])) best = i;
    }
    out[static_cast<std::size_t>(r)] = static_cast<int32_t>(best < 0 ? 0 : best);
  }
}

std::vector<float> rope_table(const ModelShape& s, int max_positions) {
  const int64_t half = s.head_dim / 2;
  std::vector<float> t(static_cast<std::size_t>(max_positions) * static_cast<std::size_t>(half) *
                       2);
  for (int p = 0; p < max_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      // HF: inv_freq_i = theta^(-2i/D); angles in double so long contexts keep their precision.
      const double inv_freq =
          std::pow(s.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(s.head_dim));
      const double a = static_cast<double>(p) * inv_freq;
      const std::size_t at = (static_cast<std::size_t>(p) * static_cast<std::size_t>(half) +
                              static_cast<std::size_t>(i)) *
                             2;
      t[at] = static_cast<float>(std::cos(a));
      t[at + 1] = static_cast<float>(std::sin(a));
    }
  }
  return t;
}

void check_forward_args(const Model& model, std::span<const int32_t> tokens, int n_new) {
  const auto rows = static_cast<std::size_t>(model.batch());
  if (n_new <= 0 || tokens.size() != rows * static_cast<std::size_t>(n_new)) {
    throw Error(fmt::format("forward: {} tokens for a batch of {} x {} new positions", tokens.size(), model.batch(),
                            n_new));
  }
  for (const int32_t t : tokens) {
    if (t < 0 || t >= model.shape().vocab) {
      throw Error(fmt::format("token id {} is outside the vocabulary [0, {})", t, model.shape().vocab));
    }
  }
  if (model.position() + n_new > model.max_positions()) {
    throw Error(fmt::format("forward: {} + {} positions exceed the KV cache of {}", model.position(), n_new,
                            model.max_positions()));
  }
}

}  // namespace df11::e2e
