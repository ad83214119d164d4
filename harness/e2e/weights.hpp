// Where the model's weights come from (synthetic generator, Hugging Face BF16 directory, DF11
// directory) and the form a unit travels in on its way to a weight provider: BF16 or encoded,
// converted on demand (decode_cpu / encode) so every provider gets the form it stores.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codec/layout.hpp"
#include "codec/unit.hpp"
#include "datasets/synthetic.hpp"
#include "e2e/config.hpp"

namespace df11::e2e {

// Units of a model: 0..n_layers-1 are decoder blocks (7 matrices each), then embed_tokens, then
// lm_head (with tied embeddings the lm_head unit holds the embedding matrix again).
[[nodiscard]] inline int n_units(const ModelShape& s) {
  return static_cast<int>(s.n_layers) + 2;
}
[[nodiscard]] inline int embed_unit(const ModelShape& s) {
  return static_cast<int>(s.n_layers);
}
[[nodiscard]] inline int lm_head_unit(const ModelShape& s) {
  return static_cast<int>(s.n_layers) + 1;
}

// The 7 matrices of a block, in the official order.
enum Role : int { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
inline constexpr int kRoles = 7;

// A matrix inside a unit's concatenated BF16 buffer: element offset, PyTorch [rows, cols].
struct Slice {
  uint64_t offset = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Where each matrix of a unit lies in its decoded buffer (the order of the unit's tensors, as
// DF11 concatenates them). A block unit has 7 slices indexed by Role; embed/lm_head have one.
struct UnitMap {
  std::vector<Slice> slices;
  uint64_t n_elements = 0;
  // True when q, k, v are adjacent in that order (one GEMM can produce all three), and the same
  // for gate, up.
  [[nodiscard]] bool qkv_fused() const;
  [[nodiscard]] bool gate_up_fused() const;
  // The most elements one GEMM of the forward pass reads from this unit: a matrix, or q, k, v
  // (gate, up) together where they are adjacent and run as one GEMM (CudaModel::pass).
  [[nodiscard]] uint64_t largest_gemm_elements() const;
};

// One half of a reused buffer of `buffer` elements, in whole multiples of `align`: half the
// buffer, or more where a block's largest GEMM (`largest_gemm`) needs more, so that --overlap's
// two halves each hold any GEMM's weights whole (Nemo's gate+up, 146.8 M elements, is more than
// half its 272.6 M-element block).
[[nodiscard]] inline uint64_t reused_half_elements(uint64_t buffer, uint64_t largest_gemm, uint64_t align) {
  return std::max(buffer / 2 / align * align, (largest_gemm + align - 1) / align * align);
}

// Builds the map from tensor names and shapes, checking them against the model: every role
// exactly once (matched on the name's last component, ".weight" dropped) with the right shape.
[[nodiscard]] UnitMap map_unit(const ModelShape& shape, int unit, const std::string& unit_name,
                               const std::vector<std::string>& names,
                               const std::vector<std::vector<int64_t>>& shapes);

// The RMSNorm weights (BF16 patterns): always resident, they are tiny.
struct Norms {
  std::vector<std::vector<uint16_t>> input;  // per layer: input_layernorm
  std::vector<std::vector<uint16_t>> post;   // per layer: post_attention_layernorm
  std::vector<uint16_t> final_norm;          // model.norm
};

// Wall time this process has spent, in all, making units' host bits (UnitFeed::bf16: synthesis
// on the host or copied back from the GPU, a checkpoint's tensors laid end to end, an arriving
// encoding decoded), encoding units (UnitFeed::encoded), and placing them where a model keeps
// them (upload_s: the providers' add, less the bits and encodings it asked for: a DF11 image
// prepared and copied to the device, fused kernels' images, BF16 made on or copied to the device,
// pinned host copies). `df11 generate` reports what of a run's setup_s went
// to each; the rest is loading, allocation and the models' own buffers.
struct HostPrepTimes {
  double bits_s = 0;
  double encode_s = 0;
  double upload_s = 0;
};
[[nodiscard]] HostPrepTimes& host_prep_times();

// Adds the wall time from its construction to its destruction to `into` (a HostPrepTimes field).
class AddTime {
 public:
  explicit AddTime(double& into) : into_(into), t0_(std::chrono::steady_clock::now()) {}
  AddTime(const AddTime&) = delete;
  AddTime& operator=(const AddTime&) = delete;
  ~AddTime() { into_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

 private:
  double& into_;
  std::chrono::steady_clock::time_point t0_;
};

// One unit on its way from a source to the providers. It arrives BF16, encoded, or as a
// synthetic plan; the other forms are made once, on first request, and kept until the feed is
// dropped.
class UnitFeed {
 public:
  UnitFeed(int unit, UnitMap map, Unit bf16, int threads);
  UnitFeed(int unit, UnitMap map, EncodedUnit encoded, int threads);
  // A synthetic unit whose host bits are made on first request (by `filler`, or on the host's
  // cores when it is empty). With device_fillable, synthetic_plan() offers the plan to providers
  // that can fill their own device copy from it (the recipes' bits, made where they are needed).
  UnitFeed(int unit, UnitMap map, synth::UnitPlan plan, synth::MatrixFiller filler, bool device_fillable,
           int threads);

  [[nodiscard]] int unit() const { return unit_; }
  [[nodiscard]] const UnitMap& map() const { return map_; }
  [[nodiscard]] const std::string& name() const;
  // The unit's matrices concatenated (n_elements BF16 words): what a decoder produces.
  [[nodiscard]] const std::vector<uint16_t>& bf16() { return *shared_bf16(); }
  // The same words, for a holder that keeps them past the feed (a CPU model's resident BF16).
  [[nodiscard]] std::shared_ptr<const std::vector<uint16_t>> shared_bf16();
  // The unit encoded in `layout` (encoded here, or decoded and re-encoded when it arrived in
  // another layout).
  [[nodiscard]] const EncodedUnit& encoded(const Layout& layout) { return *shared_encoded(layout); }
  // The same encoding, for a holder that keeps it past the feed (a CPU model's units): no copy,
  // and the feed's later encodings never move it.
  [[nodiscard]] std::shared_ptr<const EncodedUnit> shared_encoded(const Layout& layout);
  // The plan of a device-fillable synthetic unit (its matrices in the map's order), else null.
  [[nodiscard]] const synth::UnitPlan* synthetic_plan() const {
    return plan_ && device_fillable_ ? &*plan_ : nullptr;
  }
  // A unit that arrived encoded only: its BF16 words (bf16()) by decode_reference, the serial
  // oracle, instead of decode_cpu (~30 against ~900 M words/s on this VM's 2 cores). For a
  // --check on the cpu backend, where the DF11 model under test decodes with decode_cpu itself:
  // a partner made by the same decoder would agree with it whatever it decoded.
  void set_reference_decode(bool on) { reference_decode_ = on; }

 private:
  int unit_;
  UnitMap map_;
  int threads_;
  std::optional<Unit> unit_bf16_;  // as it arrived (tensor list)
  std::optional<synth::UnitPlan> plan_;  // a synthetic unit's plan
  synth::MatrixFiller filler_;
  bool device_fillable_ = false;
  std::shared_ptr<const std::vector<uint16_t>> flat_;
  std::vector<std::shared_ptr<const EncodedUnit>> encoded_;  // one per layout asked for
  bool reference_decode_ = false;
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  [[nodiscard]] const ModelShape& shape() const { return shape_; }
  [[nodiscard]] const Norms& norms() const { return norms_; }
  // "synthetic tiny (seed 0)", "HF checkpoint DIR", "DF11 checkpoint DIR".
  [[nodiscard]] const std::string& description() const { return description_; }
  // Loads one unit (see n_units). Throws df11::Error naming the file and tensor.
  [[nodiscard]] virtual UnitFeed load(int unit) const = 0;
  // Units that arrive encoded (a DF11 directory) make their BF16 words with decode_reference
  // (UnitFeed::set_reference_decode), said in the description. Sources with BF16 words of their
  // own keep this no-op.
  virtual void set_reference_decode(bool /*on*/) {}

 protected:
  ModelShape shape_{};
  Norms norms_;
  std::string description_;
};

// Synthetic weights of df11::synth (calibrated exponent statistics) for any shape, the same
// bits `df11 synth` writes for that shape and seed (matrices from make_layer / make_matrix_unit,
// norms 1 + u/10), so a synthesized directory and --synthetic give identical models.
// Where the matrices are made (SynthesisPlace): on the host's cores by default; or by a filler,
// named in the description, e.g. cuda_synthesis() (factory.hpp), which makes the same bits on
// the GPU.
struct SynthesisPlace {
  synth::MatrixFiller filler;  // empty: the host's cores
  std::string name;            // "cuda": "synthetic tiny (seed 0, generated on cuda)"
  // The units also offer their plans (UnitFeed::synthetic_plan), so that a provider on the
  // filler's device fills its own copy in place.
  bool device_fillable = false;
};
[[nodiscard]] std::unique_ptr<WeightSource> synthetic_source(const ModelShape& shape, uint64_t seed,
                                                             int threads = 0,
                                                             const std::string& name = "",
                                                             SynthesisPlace where = {});
// A Hugging Face BF16 directory or a DF11 directory (official or ours), told apart by
// config.json's dfloat11_config. config: for a DF11 directory whose config.json holds only
// dfloat11_config (the official single-file layout), a config.json (or a directory holding one)
// whose architecture the model takes (Df11Checkpoint::open's `architecture`); refused for a
// BF16 directory, which has its own.
[[nodiscard]] std::unique_ptr<WeightSource> open_checkpoint(const std::filesystem::path& dir,
                                                            int threads = 0,
                                                            const std::optional<std::filesystem::path>& config = {});

// The norm weights `df11 synth` writes for tensor `name` (deterministic in seed and name).
void synthetic_norm(std::vector<uint16_t>& out, uint64_t seed, const std::string& name);

}  // namespace df11::e2e
