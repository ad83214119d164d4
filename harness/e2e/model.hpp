// The interface both backends implement: a Mistral forward pass with a KV cache over a batch of
// equally long rows, fed a few new tokens per row at a time, leaving the last position's logits.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "e2e/config.hpp"

namespace df11::e2e {

enum class Backend { cpu, cuda };
// How the matrices are held: all BF16 resident; DF11 units decoded one at a time into one reused
// buffer just before use; BF16 in pinned host memory copied per unit before use (CUDA only).
enum class WeightsKind { bf16, df11, cpu_offload };

[[nodiscard]] std::string to_string(Backend b);
[[nodiscard]] std::string to_string(WeightsKind w);
[[nodiscard]] WeightsKind parse_weights(const std::string& s);  // bf16 | df11 | cpu-offload

struct MemoryStats {
  // matrices as held (BF16, or compressed + the decode buffer; with fused kernels also their
  // plans and partials)
  uint64_t weight_bytes = 0;
  uint64_t decode_buffer_bytes = 0;  // the reused unit buffer (df11, cpu-offload)
  uint64_t kv_cache_bytes = 0;
  uint64_t device_peak_bytes = 0;  // CUDA: peak device memory in use by this process (sampled)
};

class Model {
 public:
  virtual ~Model() = default;
  [[nodiscard]] virtual const ModelShape& shape() const = 0;
  [[nodiscard]] virtual int batch() const = 0;
  [[nodiscard]] virtual int max_positions() const = 0;
  [[nodiscard]] virtual int position() const = 0;  // tokens per row already in the cache
  [[nodiscard]] virtual Backend backend() const = 0;
  [[nodiscard]] virtual WeightsKind weights() const = 0;
  // e.g. "cpu bf16" or "cuda df11 (flat12.gap5-warp.smem-out.t512.b8)"
  [[nodiscard]] virtual std::string describe() const = 0;
  // Whether its weights were already on the device, built for an earlier model
  // of the same FeedCache: its setup uploaded nothing.
  [[nodiscard]] virtual bool weights_reused() const { return false; }
  // The last forward() also built something once that later steps reuse (a --graphs capture, its
  // instantiation and upload): generate() leaves that step out of the decode tokens/s, as it does
  // the model's build (Timing::setup_steps).
  [[nodiscard]] virtual bool last_forward_was_setup() const { return false; }

  // Forgets the cache: the next forward starts at position 0.
  virtual void reset() = 0;
  // Runs n_new tokens of every row (tokens: [batch][n_new], row-major) at the current position
  // and advances it. Throws df11::Error when a token is outside the vocabulary or the cache
  // would overflow. On CUDA the work may still run after the call returns.
  virtual void forward(std::span<const int32_t> tokens, int n_new) = 0;
  // The logits of the last position of every row, [batch][vocab] floats (waits for the forward).
  virtual void logits(std::vector<float>& out) = 0;
  // Greedy choice per row: argmax of the logits, ties to the lowest index (waits).
  virtual void argmax(std::vector<int32_t>& out) = 0;
  [[nodiscard]] virtual MemoryStats memory() const = 0;
};

// The checks every Model::forward makes first: tokens is [batch][n_new], ids inside the
// vocabulary, the cache large enough. Throws df11::Error.
void check_forward_args(const Model& model, std::span<const int32_t> tokens, int n_new);

// Argmax of each row of a [rows][vocab] array; ties and NaN rows resolve to the lowest index.
void argmax_rows(std::span<const float> logits, int rows, int64_t vocab, std::vector<int32_t>& out);

}  // namespace df11::e2e
