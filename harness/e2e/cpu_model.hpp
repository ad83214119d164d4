// The CPU forward pass of the Mistral model. Precision policy: weights are BF16 and turned into
// float exactly when used; activations, the KV cache, norms, rotary embeddings, softmax and the
// logits are float32; GEMMs are float32 (Eigen) with float accumulation. Work is split into tiles
// of fixed size, so results do not depend on the thread count, and two models that receive the
// same BF16 words compute bit-identical logits.
#pragma once

#include <memory>

#include "e2e/host_provider.hpp"
#include "e2e/model.hpp"
#include "e2e/pool.hpp"

namespace df11::e2e {

class CpuModel final : public Model {
 public:
  // max_positions: tokens per row the KV cache holds (prompt + generated).
  CpuModel(const ModelShape& shape, const Norms& norms, std::unique_ptr<HostProvider> provider,
           int batch, int max_positions, int threads);

  [[nodiscard]] const ModelShape& shape() const override { return s_; }
  [[nodiscard]] int batch() const override { return batch_; }
  [[nodiscard]] int max_positions() const override { return max_positions_; }
  [[nodiscard]] int position() const override { return position_; }
  [[nodiscard]] Backend backend() const override { return Backend::cpu; }
  [[nodiscard]] WeightsKind weights() const override { return provider_->kind(); }
  [[nodiscard]] std::string describe() const override;
  void reset() override { position_ = 0; }
  void forward(std::span<const int32_t> tokens, int n_new) override;
  void logits(std::vector<float>& out) override { out = logits_; }
  void argmax(std::vector<int32_t>& out) override;
  [[nodiscard]] MemoryStats memory() const override;
  [[nodiscard]] HostProvider& provider() { return *provider_; }

  // Rows of activations one pass holds at most; longer prefills run in chunks of positions.
  static constexpr int kMaxRowsPerPass = 512;

 private:
  void pass(const int32_t* tokens, int t_new);  // tokens [batch][t_new]
  void matmul(const float* x, int64_t m, int64_t k, const uint16_t* w, int64_t n, float* y,
              int64_t ldy, bool accumulate);
  void rmsnorm(const float* x, int64_t rows, int64_t x_stride, const std::vector<float>& w,
               float* out);

  ModelShape s_;
  std::unique_ptr<HostProvider> provider_;
  int batch_, max_positions_, position_ = 0;
  Pool pool_;
  std::vector<std::vector<float>> scratch_;  // per worker
  std::vector<std::vector<float>> norm_in_, norm_post_;
  std::vector<float> norm_final_, rope_;
  std::vector<std::vector<float>> k_cache_,
      v_cache_;  // per layer [batch][kv_heads][max_positions][head_dim]
  std::vector<float> h_, x_, qkv_, att_, gu_, act_, xf_, logits_;
};

}  // namespace df11::e2e
