// The model configurations the end-to-end path runs (Mistral architecture): named synthetic
// configs, the shape of a checkpoint's config.json, and the checks every model relies on.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "datasets/checkpoint.hpp"
#include "datasets/nemo.hpp"

namespace df11::e2e {

using synth::ModelShape;

// "tiny": 2 layers, hidden 256, intermediate 768, 4/2 heads of 64, vocab 1024 (the test model);
// "nemo": Mistral-Nemo-Instruct-2407. Throws df11::Error for other names.
[[nodiscard]] ModelShape named_config(std::string_view name);

// The shape of a checkpoint's architecture (config.json). Throws df11::Error naming `where` when
// the model is not one this forward pass implements.
[[nodiscard]] ModelShape shape_of(const ckpt::Architecture& arch, const std::string& where);

// Throws df11::Error unless the shape is usable: positive sizes, query heads a multiple of KV
// heads (grouped-query attention), an even head_dim (rotate_half), a positive eps and theta.
void validate(const ModelShape& shape, const std::string& where);

// "2 layers, hidden 256, intermediate 768, heads 4/2 x 64, vocab 1024"
[[nodiscard]] std::string describe(const ModelShape& shape);

// Parameters of the whole model (7 matrices per layer, embed_tokens and lm_head; norms excluded).
[[nodiscard]] uint64_t n_matrix_parameters(const ModelShape& shape);

}  // namespace df11::e2e
