// Seeded synthetic generator of Mistral-Nemo-shaped BF16 weights whose exponent statistics are
// calibrated to the official DFloat11 release of Nemo (model and calibration: synthetic.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec/unit.hpp"
#include "datasets/nemo.hpp"
#include "datasets/synth_draw.hpp"

namespace df11::synth {

// Magnitude model of one matrix role, a Gaussian scale mixture:
//   w = sigma_bulk * z * exp(log_scale_sigma * g) * o
// with z, g ~ N(0,1) and o = outlier_scale with probability outlier_fraction, else 1; sigma_bulk
// is chosen so that the standard deviation of w is std_mult / sqrt(fan_in). Sign and the 7
// mantissa bits are uniform.
struct WeightModel {
  double std_mult;
  double log_scale_sigma;
  double outlier_fraction;
  double outlier_scale;
};

// The calibrated model of a role. A role is matched on its last name component, so
// "self_attn.q_proj", "q_proj" and "model.layers.3.self_attn.q_proj.weight" are the same;
// lm_head and embed_tokens have their own models; anything else gets a generic default.
[[nodiscard]] WeightModel weight_model(std::string_view role);

// Exact probabilities of the 256 BF16 exponent values under a model (sum 1; exponent 0 and
// exponents >= 240 are 0), computed by numerical integration over the scale mixture.
[[nodiscard]] std::array<double, 256> exponent_probabilities(const WeightModel& model,
                                                             int64_t fan_in);

// Fills out[] with BF16 bit patterns drawn from the calibrated model of `role` for a matrix with
// the given fan-in. Deterministic in (seed, stream_id), independent of n_threads (0 = all
// cores); the first k elements do not depend on out.size(), so a shorter fill is a prefix.
void fill_weights(std::span<uint16_t> out, std::string_view role, int64_t fan_in, uint64_t seed,
                  uint64_t stream_id, int n_threads = 0);

// The same in two steps: the recipe of that matrix (its role's alias table and its RNG stream),
// then out[i] = draw_element(recipe, i) (synth_draw.hpp) on the host's cores. A CUDA kernel
// calling draw_element fills the same bits on a GPU (harness/e2e: synthetic models on CUDA).
[[nodiscard]] MatrixRecipe matrix_recipe(std::string_view role, int64_t fan_in, uint64_t seed,
                                         uint64_t stream_id);
void fill_recipe(std::span<uint16_t> out, const MatrixRecipe& recipe, int n_threads = 0);

// Who fills a matrix from its recipe; empty = fill_recipe on the host (n_threads cores).
using MatrixFiller = std::function<void(std::span<uint16_t> out, const MatrixRecipe& recipe)>;

// A synthetic unit before its bits exist: its matrices' names, shapes and recipes, in order.
// make_unit fills them (on the host, or through a filler, e.g. a GPU kernel); a device can also
// fill its own copy from the recipes (harness/e2e).
struct MatrixPlan {
  std::string name;
  std::vector<int64_t> shape;  // [rows, cols]
  MatrixRecipe recipe;
};
struct UnitPlan {
  std::string name;
  std::vector<MatrixPlan> matrices;
  [[nodiscard]] uint64_t n_elements() const;
};

// One decoder block named "model.layers.<index>" holding the 7 matrices of layer_specs() in
// official order. row_fraction in (0, 1] keeps ceil(rows * fraction) rows of every matrix (quick
// runs keep the role mix of the full layer); 1.0 = full shapes.
[[nodiscard]] UnitPlan plan_layer(const ModelShape& shape, int layer_index, uint64_t seed,
                                  double row_fraction = 1.0);
// A unit of one [rows, cols] matrix (lm_head or embed_tokens style); fan-in = cols.
[[nodiscard]] UnitPlan plan_matrix_unit(const std::string& unit_name, const std::string& tensor_name,
                                        std::string_view role, int64_t rows, int64_t cols, uint64_t seed);
// The plan's bits as a Unit: fill_recipe on n_threads cores, or `filler` when given.
[[nodiscard]] df11::Unit make_unit(const UnitPlan& plan, int n_threads = 0, const MatrixFiller& filler = {});
// The same bits, the plan's matrices concatenated into out (plan.n_elements() words). Only the
// filler touches out, so with a device's filler out may span that device's memory.
void fill_unit(std::span<uint16_t> out, const UnitPlan& plan, int n_threads = 0, const MatrixFiller& filler = {});

// make_unit of the plans above, on the host.
[[nodiscard]] df11::Unit make_layer(const ModelShape& shape, int layer_index, uint64_t seed,
                                    double row_fraction = 1.0, int n_threads = 0);
[[nodiscard]] df11::Unit make_nemo_layer(int layer_index, uint64_t seed, double row_fraction = 1.0,
                                         int n_threads = 0);
[[nodiscard]] df11::Unit make_matrix_unit(const std::string& unit_name,
                                          const std::string& tensor_name, std::string_view role,
                                          int64_t rows, int64_t cols, uint64_t seed,
                                          int n_threads = 0);

// Deterministic RMSNorm weights near 1.0 (BF16), keyed by seed and tensor name: the one recipe
// that `df11 synth` checkpoints and synthetic e2e models share, so both hold the same values.
void fill_norm(std::span<uint16_t> out, uint64_t seed, std::string_view name);

}  // namespace df11::synth
