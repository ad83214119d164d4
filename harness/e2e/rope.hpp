// Rotary embedding tables shared by the CPU and CUDA paths, so both rotate by the same floats.
#pragma once

#include <vector>

#include "e2e/config.hpp"

namespace df11::e2e {

// [position][head_dim / 2] pairs (cos, sin) of the HF Mistral rotation: pair i of a head
// rotates elements i and i + head_dim/2 by position * rope_theta^(-2i / head_dim).
[[nodiscard]] std::vector<float> rope_table(const ModelShape& shape, int max_positions);

}  // namespace df11::e2e
