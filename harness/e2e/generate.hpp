// Greedy generation over a batch, with timing of prefill and decode, and the side-by-side check:
// two models (BF16 and DF11 weights) fed the same tokens in lockstep, their logits compared bit
// for bit at every step.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "e2e/model.hpp"
#include "lib/kernel_trace.hpp"

namespace df11::e2e {

// Row b of a batch: the prompt with every id shifted by b (mod vocab), so that rows differ; with
// shift = false the prompt itself in every row (text prompts, whose shifted ids mean nothing).
[[nodiscard]] std::vector<std::vector<int32_t>> batch_prompts(const std::vector<int32_t>& prompt,
                                                              int batch, int64_t vocab,
                                                              bool shift = true);
// A deterministic prompt of `length` ids in [0, vocab) for benchmarks.
[[nodiscard]] std::vector<int32_t> random_prompt(int length, int64_t vocab, uint64_t seed);
// "1,2,3" -> {1, 2, 3}; throws df11::Error on anything else.
[[nodiscard]] std::vector<int32_t> parse_ids(const std::string& text);
// Peak resident set size of this process (bytes; getrusage).
[[nodiscard]] uint64_t peak_rss_bytes();

// The first difference between two models' logits.
struct Mismatch {
  int step = 0;       // 0: the prefill's logits; s: after s generated tokens were fed back
  int row = 0;        // batch row
  int64_t index = 0;  // vocabulary index
  float a = 0, b = 0;
  uint32_t bits_a = 0, bits_b = 0;
  [[nodiscard]] std::string describe(const std::string& name_a, const std::string& name_b) const;
};

// Compares float bit patterns of two [rows][vocab] arrays; the first difference in row-major order.
[[nodiscard]] std::optional<Mismatch> compare_logits(std::span<const float> a,
                                                     std::span<const float> b, int rows,
                                                     int64_t vocab, int step);

struct Timing {
  int64_t prefill_tokens = 0;  // batch x prompt length
  // Tokens of the timed decode steps: batch x (new tokens - 1 - setup_steps), the first token
  // coming from the prefill; with stop ids, only the rows not yet stopped count.
  int64_t decode_tokens = 0;
  int decode_steps = 0;  // the timed decode steps
  double prefill_s = 0, decode_s = 0;
  // Decode steps that also built something once (Model::last_forward_was_setup: a --graphs
  // capture), left out of decode_tokens and decode_s, and their time.
  int setup_steps = 0;
  double setup_s = 0;
  [[nodiscard]] double prefill_tokens_per_s() const {
    return prefill_s > 0 ? static_cast<double>(prefill_tokens) / prefill_s : 0;
  }
  [[nodiscard]] double decode_tokens_per_s() const {
    return decode_s > 0 ? static_cast<double>(decode_tokens) / decode_s : 0;
  }
};

struct GenerationResult {
  // [batch][generated]; a row that generated a stop id ends with it.
  std::vector<std::vector<int32_t>> tokens;
  int rows_stopped = 0;  // rows that generated a stop id
  int steps = 0;         // forward passes run: the prefill and the decode steps
  Timing timing;                             // of the model
  std::optional<Timing> reference_timing;    // of the reference, when checking
  bool checked = false;
  int steps_checked = 0;  // steps whose logits matched
  std::optional<Mismatch> mismatch;
};

// Greedy decoding (argmax, ties to the lowest index) of max_new tokens per row after the prompts
// (all of one length). With a reference model, both run the same tokens and every step's logits
// must match bit for bit; generation stops at the first mismatch. Both models are reset first.
// A row that generates one of stop_ids (an EOS) is done: its later tokens are not kept, and
// generation ends when every row is done. The batch still runs whole (a done row is fed its
// last token again and its logits are still checked), so the other rows' bits do not change.
// on_logits (optional) sees every step's logits: the last position of each row, batch x vocab,
// row-major (read back after the step's timing, which is forward + argmax either way).
using LogitsSink = std::function<void(int step, std::span<const float> logits)>;
[[nodiscard]] GenerationResult generate(Model& model,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        int max_new, Model* reference = nullptr,
                                        const std::vector<int32_t>& stop_ids = {},
                                        const LogitsSink& on_logits = nullptr);

// Device time of decode steps (`df11 generate --kernel-times`): what a tracer (CUPTI on CUDA)
// records between begin() and end(), by kind of kernel (trace::Summary).
class StepTracer {
 public:
  virtual ~StepTracer() = default;
  virtual void begin() = 0;
  [[nodiscard]] virtual trace::Summary end() = 0;
};

// What a StepTracer throws when it cannot record after all (CUPTI refused to enable its
// activity kinds): `df11 generate --kernel-times` then says why instead of printing zeros.
class TracerUnavailable : public Error {
 public:
  using Error::Error;
};

struct TracedSteps {
  int steps = 0;
  double wall_s = 0;      // the traced steps, wall clock (tracing adds a little to each kernel)
  trace::Summary device;  // their records, summed
  std::vector<std::vector<int32_t>> tokens;  // [batch][steps + 1]: the prefill's token, then each step's
};

// Greedy decoding again, traced: the model is reset and fed the prompts (not traced), then `steps`
// decode steps, each one forward of one token per row and its argmax (which waits for it), run
// between tracer.begin() and tracer.end(). The tokens are generate()'s first steps + 1 tokens.
// Throws df11::Error when steps < 1 or the model's cache is too short.
[[nodiscard]] TracedSteps trace_decode_steps(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                             int steps, StepTracer& tracer);

}  // namespace df11::e2e
