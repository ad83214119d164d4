// Greedy generation and the bit-for-bit side-by-side check.
#include "e2e/generate.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <chrono>

#include <fmt/format.h>

#include "codec/common.hpp"

namespace df11::e2e {

std::vector<std::vector<int32_t>> batch_prompts(const std::vector<int32_t>& prompt, int batch,
                                                int64_t vocab, bool shift) {
  if (batch <= 0) throw Error(fmt::format("--batch must be positive, got {}", batch));
  std::vector<std::vector<int32_t>> rows(static_cast<std::size_t>(batch), prompt);
  for (int b = 0; shift && b < batch; ++b)
    for (int32_t& t : rows[static_cast<std::size_t>(b)])
      t = static_cast<int32_t>((t + int64_t{b}) % vocab);
  return rows;
}

std::vector<int32_t> random_prompt(int length, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> p(static_cast<std::size_t>(length));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (int32_t& t : p) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 29;
    x += 0x9E3779B97F4A7C15ull;
    t = static_cast<int32_t>(x % static_cast<uint64_t>(vocab));
  }
  return p;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  if (text.find_first_not_of(' ') == std::string::npos) throw Error("--prompt-ids: no token ids");
  // Every comma separates two ids: "1,2," and "1,,2" are refused by their empty item.
  for (std::size_t i = 0; i <= text.size();) {
    std::size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    std::string_view item(text.data() + i, j - i);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    int32_t v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || v < 0) {
      throw Error(fmt::format(
          "--prompt-ids: '{}' is not a non-negative integer (expected e.g. 1,2,3)", item));
    }
    ids.push_back(v);
    i = j + 1;
  }
  return ids;
}

uint64_t peak_rss_bytes() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<uint64_t>(u.ru_maxrss) * 1024;  // Linux reports kilobytes
}

std::string Mismatch::describe(const std::string& name_a, const std::string& name_b) const {
  return fmt::format(
      "first mismatch at step {}, batch row {}, vocabulary index {}: {} gives {:.9g} (0x{:08x}), "
      "{} "
      "gives {:.9g} (0x{:08x})",
      step, row, index, name_a, a, bits_a, name_b, b, bits_b);
}

std::optional<Mismatch> compare_logits(std::span<const float> a, std::span<const float> b, int rows,
                                       int64_t vocab, int step) {
  const auto n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(vocab);
  if (a.size() != n || b.size() != n) {
    throw Error(fmt::format("compare_logits: {} and {} logits for {} rows of {}", a.size(),
                            b.size(), rows, vocab));
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto ba = std::bit_cast<uint32_t>(a[i]), bb = std::bit_cast<uint32_t>(b[i]);
    if (ba != bb) {
      Mismatch m;
      m.step = step;
      m.row = static_cast<int>(i / static_cast<std::size_t>(vocab));
      m.index = static_cast<int64_t>(i % static_cast<std::size_t>(vocab));
      m.a = a[i];
      m.b = b[i];
      m.bits_a = ba;
      m.bits_b = bb;
      return m;
    }
  }
  return std::nullopt;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One step's time and tokens into t: the prefill, a decode step, or a decode step that also built
// something once (left out of the tokens/s, counted apart).
void account(Timing& t, bool prefill, bool setup, double seconds, int64_t tokens) {
  if (prefill) {
    t.prefill_s += seconds;
    t.prefill_tokens += tokens;
  } else if (setup) {
    t.setup_s += seconds;
    ++t.setup_steps;
  } else {
    t.decode_s += seconds;
    t.decode_tokens += tokens;
    ++t.decode_steps;
  }
}

}  // namespace

GenerationResult generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                          int max_new, Model* reference, const std::vector<int32_t>& stop_ids,
                          const LogitsSink& on_logits) {
  const int B = model.batch();
  if (prompts.size() != static_cast<std::size_t>(B)) {
    throw Error(fmt::format("generate: {} prompts for a batch of {}", prompts.size(), B));
  }
  const std::size_t L = prompts.front().size();
  for (const auto& p : prompts)
    if (p.size() != L || L == 0)
      throw Error("generate: every row needs a prompt of the same, non-zero length");
  if (max_new <= 0) throw Error(fmt::format("--max-new-tokens must be positive, got {}", max_new));
  if (static_cast<int64_t>(L) + max_new - 1 > model.max_positions()) {
    throw Error(
        fmt::format("generate: a prompt of {} plus {} new tokens exceeds the model's {} positions",
                    L, max_new, model.max_positions()));
  }
  if (reference && (reference->batch() != B || reference->shape().vocab != model.shape().vocab)) {
    throw Error("generate: the reference model has another batch or vocabulary");
  }
  const int64_t V = model.shape().vocab;

  GenerationResult res;
  res.tokens.assign(static_cast<std::size_t>(B), {});
  res.checked = reference != nullptr;
  if (reference) res.reference_timing = Timing{};
  model.reset();
  if (reference) reference->reset();

  std::vector<int32_t> feed;
  for (const auto& p : prompts) feed.insert(feed.end(), p.begin(), p.end());
  int n_new = static_cast<int>(L);
  std::vector<float> la, lb;
  std::vector<int32_t> next, next_ref, next_host;
  std::vector<char> done(static_cast<std::size_t>(B), 0);
  for (int step = 0; step < max_new; ++step) {
    const bool prefill = step == 0;
    // Tokens this step makes: the prompts' positions in the prefill, then one a row still going.
    const int64_t made = prefill ? int64_t{B} * n_new : B - res.rows_stopped;
    ++res.steps;
    // Each model is timed alone and the same way with or without a check or a logits dump:
    // forward + its argmax (the next tokens read back). The logits (batch x vocab floats, 4 MB a
    // step for Nemo at batch 8) are read after the timer stops.
    auto t0 = std::chrono::steady_clock::now();
    model.forward(feed, n_new);
    model.argmax(next);
    account(res.timing, prefill, model.last_forward_was_setup(), seconds_since(t0), made);
    if (reference || on_logits) {
      model.logits(la);
      // The model's argmax against the host's rule on the logits it read (ties to the lowest
      // index, NaN never wins): cannot differ; guards the device argmax.
      argmax_rows(la, B, V, next_host);
      if (next_host != next) throw Error(fmt::format("generate: step {}: the argmax disagrees with its logits", step));
    }
    if (on_logits) on_logits(step, la);

    if (reference) {
      t0 = std::chrono::steady_clock::now();
      reference->forward(feed, n_new);
      reference->argmax(next_ref);
      account(*res.reference_timing, prefill, reference->last_forward_was_setup(), seconds_since(t0), made);
      reference->logits(lb);
      res.mismatch = compare_logits(la, lb, B, V, step);
      if (res.mismatch) return res;
      if (next_ref != next) {  // cannot differ when the logits agree; guards the argmax itself
        throw Error(fmt::format("generate: step {}: equal logits but different tokens", step));
      }
      ++res.steps_checked;
    }
    for (std::size_t b = 0; b < static_cast<std::size_t>(B); ++b) {
      if (done[b]) {
        next[b] = res.tokens[b].back();  // a done row is fed its stop id again
        continue;
      }
      res.tokens[b].push_back(next[b]);
      if (std::find(stop_ids.begin(), stop_ids.end(), next[b]) != stop_ids.end()) {
        done[b] = 1;
        ++res.rows_stopped;
      }
    }
    if (res.rows_stopped == B) break;
    feed = next;
    n_new = 1;
    if (step + 1 == max_new) break;  // the last token is not fed back
  }
  return res;
}

TracedSteps trace_decode_steps(Model& model, const std::vector<std::vector<int32_t>>& prompts, int steps,
                               StepTracer& tracer) {
  const int B = model.batch();
  if (steps < 1) throw Error(fmt::format("--kernel-times: at least one decode step to trace, got {}", steps));
  if (prompts.size() != static_cast<std::size_t>(B) || prompts.front().empty()) {
    throw Error(fmt::format("trace_decode_steps: {} prompts for a batch of {}", prompts.size(), B));
  }
  const std::size_t L = prompts.front().size();
  if (static_cast<int64_t>(L) + steps > model.max_positions()) {
    throw Error(fmt::format("--kernel-times: a prompt of {} plus {} traced steps exceeds the model's {} positions", L,
                            steps, model.max_positions()));
  }
  TracedSteps t;
  t.steps = steps;
  t.tokens.assign(static_cast<std::size_t>(B), {});
  model.reset();
  std::vector<int32_t> feed;
  for (const auto& p : prompts) feed.insert(feed.end(), p.begin(), p.end());
  std::vector<int32_t> next;
  model.forward(feed, static_cast<int>(L));
  model.argmax(next);
  auto keep = [&] {
    for (int b = 0; b < B; ++b) t.tokens[static_cast<std::size_t>(b)].push_back(next[static_cast<std::size_t>(b)]);
  };
  keep();
  tracer.begin();
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) {
    feed = next;
    model.forward(feed, 1);
    model.argmax(next);
    keep();
  }
  t.wall_s = seconds_since(t0);
  t.device = tracer.end();
  return t;
}

}  // namespace df11::e2e
