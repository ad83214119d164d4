// Synthetic Nemo-shaped BF16 weights: a calibrated Gaussian-scale-mixture magnitude model turned
// into exact exponent probabilities, sampled with an alias table and a counter-based RNG.
//
// MODEL (per matrix role; see WeightModel in synthetic.hpp)
//   w = sigma_bulk * z * exp(tau * g) * (K with probability eps, else 1),   z, g ~ N(0,1)
//   std(w) = std_mult / sqrt(fan_in)                      (sigma_bulk is derived from this)
// exp(tau * g) is a log-normal scale (rows/columns of trained matrices differ in scale), the rare
// K-times-wider component stands for outlier weights; together they give heavier tails than a
// Gaussian (kurtosis 9.5 for the layer roles). Near zero the density of |w| is flat, so exponent
// probabilities fall by 2x per binade below the mode: ~27 binades are populated below it over a
// layer (rare long Huffman codes), ~6 above it; 33..36 distinct exponents in a full layer, 37 in
// a 131072 x 5120 matrix.
// Sign and mantissa are drawn uniform: DF11 stores the sign-mantissa byte raw, so its fine
// structure changes neither the compressed size nor the decoder's work (and real mantissas are
// close to uniform anyway).
//
// Fixed by hand (plausible for trained LLM weights, std 0.010..0.028):
//   eps = 1e-4, K = 12 (max |w| of a layer ~1..2, as in real checkpoints)
//   std_mult: q 1.40, k 2.00, v 0.85, o 0.90, gate 1.20, up 1.00, down 1.45, lm_head 0.85,
//             embed_tokens 0.70, anything else 1.00
//   -> std: q 0.0196, k 0.0280, v 0.0119, o 0.0141, gate 0.0168, up 0.0140, down 0.0121,
//           lm_head 0.0119, embed_tokens 0.0098 (fan-in: 5120, o_proj 4096, down_proj 14336)
// Calibrated: tau, per group, so that the optimal (Huffman) average code length of the exponent
// matches the official DF11 release of Mistral-Nemo (nemo_df11_release_units.tsv):
//   decoder layer (the 7 matrices' exponents in one histogram, 272,629,760 elements): target
//     2.63 (layers 1..39 span 2.607..2.635; layer 0, 2.81, is not modelled) -> tau = 0.126
//   lm_head     [131072 x 5120]: target 2.6253 -> tau = 0.181
//   embed_tokens [131072 x 5120]: target 2.6703 -> tau = 0.294
// Procedure (redo it after changing any fixed parameter): compute exponent_probabilities() of
// every role, mix the 7 layer roles weighted by their element counts, build a Huffman code of
// the 256 probabilities and take sum(p * length); bisect tau on [0, 0.5] (14 steps) until the
// length hits the target. The length is not exactly monotone in tau (Huffman lengths are
// integers) but is near-monotone in this range. Then check on sampled data: generate a full layer
// (and the two vocab matrices), histogram the exponents, build a Huffman code from the counts.
// Measured:
//   model (exponent_probabilities, exact):
//     layer        Huffman 2.6301 bits, entropy 2.5989 bits
//     lm_head      Huffman 2.6248,      entropy 2.5820
//     embed_tokens Huffman 2.6700,      entropy 2.6360
//   sampled (make_nemo_layer(0, seed 1) and layer 5, full size; vocab matrices seed 1):
//     layer        Huffman 2.6301, entropy 2.5990, 36 (layer 5: 33) distinct exponents 2^-35..2^0
//     lm_head      Huffman 2.6249, entropy 2.5820, 37 distinct
//     embed_tokens Huffman 2.6700, entropy 2.6359, 37 distinct
//     per matrix: Huffman 2.593..2.606; sign fraction 0.5000 +- 2e-4; mantissa chi2 ~ its 127 dof
//   a row_fraction 0.05 layer: entropy 2.5988..2.5993, Huffman 2.6299..2.6305 (3 seeds x 2 layers)
//
// SAMPLING
// Elements are generated in blocks of 65536; each block's RNG key is a hash of (seed, stream_id,
// block index), so any thread count produces the same bits and a shorter fill is a prefix of a
// longer one. Per element one 64-bit wyrand output: 8 bits pick an alias-table column, 32 bits
// are compared with the column's threshold, 8 bits are the sign-mantissa byte. The alias table
// holds the exponent probabilities quantized to 2^-40 exactly (probabilities below ~1e-12 drop
// out: less than 0.001 expected occurrences in a 671M-element matrix).
#include "datasets/synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "codec/bf16.hpp"
#include "codec/common.hpp"

namespace df11::synth {
namespace {

constexpr double kOutlierFraction = 1e-4;
constexpr double kOutlierScale = 12.0;
constexpr double kTauLayer = 0.126;
constexpr double kTauLmHead = 0.181;
constexpr double kTauEmbed = 0.294;

constexpr int kFirstForbiddenExponent = 240;  // keep values far below the top of the BF16 range

// ---- exponent probabilities ---------------------------------------------------------------

// Trapezoid nodes of E_g[f(g)], g ~ N(0,1), on [-9, 9]: spectrally accurate for the smooth
// integrands here, and weights renormalized so that tau = 0 is exact.
constexpr int kScaleNodes = 161;

std::array<double, 256> compute_exponent_probabilities(const WeightModel& m, int64_t fan_in) {
  if (fan_in <= 0) throw Error("synthetic: fan_in must be positive, got " + std::to_string(fan_in));
  if (!(m.std_mult > 0.0) || !(m.log_scale_sigma >= 0.0) || !(m.outlier_fraction >= 0.0) ||
      !(m.outlier_fraction < 1.0) || !(m.outlier_scale > 0.0)) {
    throw Error(
        "synthetic: weight model needs std_mult > 0, log_scale_sigma >= 0, "
        "0 <= outlier_fraction < 1, outlier_scale > 0");
  }
  const double tau = m.log_scale_sigma;
  const double eps = m.outlier_fraction;
  const double k = m.outlier_scale;
  const double target_std = m.std_mult / std::sqrt(static_cast<double>(fan_in));
  // E[s^2] of the scale: exp(2 tau^2) from the log-normal, (1 - eps + eps K^2) from the outliers.
  const double sigma_bulk = target_std / (std::exp(tau * tau) * std::sqrt(1.0 - eps + eps * k * k));

  std::vector<double> node_scale;
  std::vector<double> node_weight;
  double weight_sum = 0.0;
  for (int j = 0; j < kScaleNodes; ++j) {
    const double g = -9.0 + 18.0 * j / (kScaleNodes - 1);
    const double w = std::exp(-0.5 * g * g);
    weight_sum += w;
    for (int c = 0; c < 2; ++c) {
      const double comp_weight = c == 0 ? 1.0 - eps : eps;
      if (comp_weight == 0.0) continue;
      node_scale.push_back(sigma_bulk * (c == 0 ? 1.0 : k) * std::exp(tau * g));
      node_weight.push_back(comp_weight * w);
    }
  }
  for (double& w : node_weight) w /= weight_sum;

  // Exponent e holds |w| in [2^(e-127) r, 2^(e-126) r): r = 1 - 2^-9 because values within half
  // an ulp below a power of two round up to it when stored as BF16.
  constexpr double r = 1.0 - 1.0 / 512.0;
  std::array<double, 256> p{};
  for (int e = 1; e < kFirstForbiddenExponent; ++e) {
    const double lo = std::ldexp(r, e - 127) / std::sqrt(2.0);
    const double hi = std::ldexp(r, e - 126) / std::sqrt(2.0);
    double acc = 0.0;
    for (std::size_t j = 0; j < node_scale.size(); ++j) {
      const double a = lo / node_scale[j];
      const double b = hi / node_scale[j];
      // P(a <= |z|/sqrt2 < b) from whichever side keeps relative precision.
      const double mass = a < 0.7 ? std::erf(b) - std::erf(a) : std::erfc(a) - std::erfc(b);
      acc += node_weight[j] * mass;
    }
    p[e] = acc;
  }
  double total = 0.0;
  for (double x : p) total += x;
  if (!(total > 0.0))
    throw Error("synthetic: weight model puts no mass on representable exponents");
  for (double& x : p) x /= total;
  return p;
}

// ---- alias table ----------------------------------------------------------------------------

struct AliasTable {
  std::array<AliasColumn, 256> columns;
};

// Walker/Vose construction in exact integer arithmetic: each symbol gets an integer weight out of
// 2^40 = 256 columns x 2^32, so the sampled distribution is exactly the quantized one.
AliasTable build_alias_table(const std::array<double, 256>& p) {
  constexpr uint64_t column_mass = uint64_t{1} << 32;
  constexpr uint64_t total_mass = column_mass * 256;
  std::array<uint64_t, 256> q{};
  uint64_t sum = 0;
  int largest = 0;
  for (int s = 0; s < 256; ++s) {
    q[s] = static_cast<uint64_t>(std::llround(p[s] * static_cast<double>(total_mass)));
    sum += q[s];
    if (q[s] > q[largest]) largest = s;
  }
  // Rounding leaves the sum a few units off 2^40; the mode absorbs it (relative change < 1e-10).
  q[largest] = q[largest] + total_mass - sum;

  AliasTable t{};
  std::vector<int> small;
  std::vector<int> large;
  for (int s = 0; s < 256; ++s) (q[s] < column_mass ? small : large).push_back(s);
  int column = 0;
  while (!small.empty() && !large.empty()) {
    const int s = small.back();
    small.pop_back();
    const int l = large.back();
    t.columns[column++] = {static_cast<uint32_t>(q[s]), static_cast<uint8_t>(s),
                           static_cast<uint8_t>(l)};
    q[l] -= column_mass - q[s];
    if (q[l] < column_mass) {
      large.pop_back();
      small.push_back(l);
    }
  }
  // With exact integers every leftover symbol has exactly one column's mass.
  for (const auto* rest : {&small, &large}) {
    for (int s : *rest) {
      if (q[s] != column_mass) throw Error("synthetic: internal error building the alias table");
      t.columns[column++] = {std::numeric_limits<uint32_t>::max(), static_cast<uint8_t>(s),
                             static_cast<uint8_t>(s)};
    }
  }
  if (column != 256) throw Error("synthetic: internal error building the alias table");
  return t;
}

// Building a table costs ~80k erf calls; tests and benchmarks fill the same roles many times.
const AliasTable& cached_alias_table(const WeightModel& m, int64_t fan_in) {
  using Key = std::tuple<double, double, double, double, int64_t>;
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<AliasTable>> cache;
  const Key key{m.std_mult, m.log_scale_sigma, m.outlier_fraction, m.outlier_scale, fan_in};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto table =
        std::make_unique<AliasTable>(build_alias_table(compute_exponent_probabilities(m, fan_in)));
    it = cache.emplace(key, std::move(table)).first;
  }
  return *it->second;
}

// ---- random numbers -------------------------------------------------------------------------

void fill_block(uint16_t* out, std::size_t n, const AliasColumn* columns, uint64_t key) {
  for (std::size_t j = 0; j < n; ++j) out[j] = bf16_from_bits(wyrand_at(key, j), columns);
}

// The last dotted component of a role or tensor name, without a trailing ".weight".
std::string_view role_key(std::string_view role) {
  constexpr std::string_view suffix = ".weight";
  if (role.size() >= suffix.size() && role.substr(role.size() - suffix.size()) == suffix) {
    role.remove_suffix(suffix.size());
  }
  const auto dot = role.rfind('.');
  return dot == std::string_view::npos ? role : role.substr(dot + 1);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001B3ULL;
  }
  return h;
}

// Layer streams use ids below 2^40; single-matrix units set the top bit so they never collide.
uint64_t layer_stream_id(int layer_index, std::size_t matrix_index) {
  return (static_cast<uint64_t>(layer_index) << 8) | matrix_index;
}

}  // namespace

WeightModel weight_model(std::string_view role) {
  struct Entry {
    std::string_view key;
    double std_mult;
    double tau;
  };
  static constexpr Entry entries[] = {
      {"q_proj", 1.40, kTauLayer},       {"k_proj", 2.00, kTauLayer},
      {"v_proj", 0.85, kTauLayer},       {"o_proj", 0.90, kTauLayer},
      {"gate_proj", 1.20, kTauLayer},    {"up_proj", 1.00, kTauLayer},
      {"down_proj", 1.45, kTauLayer},    {"lm_head", 0.85, kTauLmHead},
      {"embed_tokens", 0.70, kTauEmbed},
  };
  const std::string_view key = role_key(role);
  for (const Entry& e : entries) {
    if (e.key == key) return {e.std_mult, e.tau, kOutlierFraction, kOutlierScale};
  }
  return {1.0, kTauLayer, kOutlierFraction, kOutlierScale};
}

std::array<double, 256> exponent_probabilities(const WeightModel& model, int64_t fan_in) {
  return compute_exponent_probabilities(model, fan_in);
}

MatrixRecipe matrix_recipe(std::string_view role, int64_t fan_in, uint64_t seed, uint64_t stream_id) {
  if (fan_in <= 0) {
    throw Error("fill_weights: fan_in must be positive, got " + std::to_string(fan_in) +
                " for role '" + std::string(role) + "'");
  }
  const AliasTable& table = cached_alias_table(weight_model(role), fan_in);
  MatrixRecipe r;
  std::copy(table.columns.begin(), table.columns.end(), r.columns);
  r.seed = seed;
  r.stream_id = stream_id;
  return r;
}

void fill_recipe(std::span<uint16_t> out, const MatrixRecipe& recipe, int n_threads) {
  if (n_threads < 0) throw Error("fill_weights: n_threads must be >= 0 (0 = all cores)");
  const std::size_t n_blocks = (out.size() + kBlockElements - 1) / kBlockElements;
  parallel_for(n_blocks, n_threads, [&](std::size_t b) {
    const std::size_t begin = b * kBlockElements;
    const std::size_t n = std::min<std::size_t>(kBlockElements, out.size() - begin);
    fill_block(out.data() + begin, n, recipe.columns, block_key(recipe.seed, recipe.stream_id, b));
  });
}

void fill_weights(std::span<uint16_t> out, std::string_view role, int64_t fan_in, uint64_t seed,
                  uint64_t stream_id, int n_threads) {
  fill_recipe(out, matrix_recipe(role, fan_in, seed, stream_id), n_threads);
}

uint64_t UnitPlan::n_elements() const {
  uint64_t n = 0;
  for (const MatrixPlan& m : matrices) n += static_cast<uint64_t>(m.shape[0] * m.shape[1]);
  return n;
}

UnitPlan plan_layer(const ModelShape& shape, int layer_index, uint64_t seed, double row_fraction) {
  if (layer_index < 0)
    throw Error("make_layer: layer_index must be >= 0, got " + std::to_string(layer_index));
  if (!(row_fraction > 0.0 && row_fraction <= 1.0)) {
    throw Error("make_layer: row_fraction must be in (0, 1], got " + std::to_string(row_fraction));
  }
  const std::vector<MatrixSpec> specs = layer_specs(shape);
  UnitPlan plan;
  plan.name = "model.layers." + std::to_string(layer_index);
  plan.matrices.reserve(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const MatrixSpec& spec = specs[i];
    const auto rows = std::clamp<int64_t>(
        static_cast<int64_t>(std::ceil(static_cast<double>(spec.rows) * row_fraction)), 1,
        spec.rows);
    plan.matrices.push_back(MatrixPlan{spec.name, {rows, spec.cols},
                                       matrix_recipe(spec.name, spec.cols, seed, layer_stream_id(layer_index, i))});
  }
  return plan;
}

UnitPlan plan_matrix_unit(const std::string& unit_name, const std::string& tensor_name, std::string_view role,
                          int64_t rows, int64_t cols, uint64_t seed) {
  if (rows <= 0 || cols <= 0) {
    throw Error("make_matrix_unit: '" + unit_name + "/" + tensor_name +
                "' needs positive rows and cols, got " + std::to_string(rows) + " x " +
                std::to_string(cols));
  }
  const uint64_t stream_id = fnv1a(unit_name + "/" + tensor_name) | (uint64_t{1} << 63);
  UnitPlan plan;
  plan.name = unit_name;
  plan.matrices.push_back(MatrixPlan{tensor_name, {rows, cols}, matrix_recipe(role, cols, seed, stream_id)});
  return plan;
}

namespace {

void fill_matrix(std::span<uint16_t> out, const MatrixRecipe& recipe, int n_threads, const MatrixFiller& filler) {
  if (filler) {
    filler(out, recipe);
  } else {
    fill_recipe(out, recipe, n_threads);
  }
}

}  // namespace

df11::Unit make_unit(const UnitPlan& plan, int n_threads, const MatrixFiller& filler) {
  df11::Unit unit;
  unit.name = plan.name;
  unit.tensors.reserve(plan.matrices.size());
  for (const MatrixPlan& m : plan.matrices) {
    df11::Bf16Tensor t;
    t.name = m.name;
    t.shape = m.shape;
    t.data.resize(static_cast<std::size_t>(m.shape[0] * m.shape[1]));
    fill_matrix(t.data, m.recipe, n_threads, filler);
    unit.tensors.push_back(std::move(t));
  }
  return unit;
}

void fill_unit(std::span<uint16_t> out, const UnitPlan& plan, int n_threads, const MatrixFiller& filler) {
  if (out.size() != plan.n_elements()) {
    throw Error("fill_unit: " + plan.name + " holds " + std::to_string(plan.n_elements()) + " elements, out " +
                std::to_string(out.size()));
  }
  std::size_t at = 0;
  for (const MatrixPlan& m : plan.matrices) {
    const auto n = static_cast<std::size_t>(m.shape[0] * m.shape[1]);
    fill_matrix(out.subspan(at, n), m.recipe, n_threads, filler);
    at += n;
  }
}

df11::Unit make_layer(const ModelShape& shape, int layer_index, uint64_t seed, double row_fraction,
                      int n_threads) {
  return make_unit(plan_layer(shape, layer_index, seed, row_fraction), n_threads);
}

df11::Unit make_nemo_layer(int layer_index, uint64_t seed, double row_fraction, int n_threads) {
  return make_layer(nemo_shape(), layer_index, seed, row_fraction, n_threads);
}

df11::Unit make_matrix_unit(const std::string& unit_name, const std::string& tensor_name,
                            std::string_view role, int64_t rows, int64_t cols, uint64_t seed,
                            int n_threads) {
  return make_unit(plan_matrix_unit(unit_name, tensor_name, role, rows, cols, seed), n_threads);
}

// Deterministic norm weights near 1.0 (BF16): 1 + u/10, u uniform in [-1, 1), from splitmix64.
void fill_norm(std::span<uint16_t> out, uint64_t seed, std::string_view name) {
  uint64_t state = seed ^ 0x9E3779B97F4A7C15ull;
  for (const char c : name) state = (state ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  for (uint16_t& w : out) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const double u = static_cast<double>(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    w = float_to_bf16(static_cast<float>(1.0 + 0.1 * u));
  }
}

}  // namespace df11::synth
