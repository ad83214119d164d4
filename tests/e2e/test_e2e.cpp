// End-to-end tests of the Mistral forward pass on the CPU (tiny config): BF16 and DF11 weights give
// bit-identical logits and tokens; the model agrees with an independent double-precision scalar
// forward pass; the KV cache agrees with fresh forwards over the whole prefix; checkpoint
// directories (ours and the official encoder's) load into the same model.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <functional>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <fstream>

#include <nlohmann/json.hpp>

#include "codec/bf16.hpp"
#include "codec/cpu_decoder.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/safetensors.hpp"
#include "datasets/synthetic.hpp"
#include "e2e/cpu_model.hpp"
#include "e2e/factory.hpp"
#include "e2e/generate.hpp"
#include "e2e/tokenizer.hpp"

using namespace df11;
using namespace df11::e2e;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(__FILE__).parent_path() / "../../datasets/fixtures/official";

constexpr int kThreads = 2;

std::vector<std::unique_ptr<Model>> tiny_models(const std::vector<WeightsKind>& kinds, int batch,
                                                int positions, const std::string& variant = "",
                                                uint64_t seed = 0) {
  const auto src = synthetic_source(named_config("tiny"), seed, kThreads, "tiny");
  std::vector<ModelRequest> reqs;
  for (WeightsKind k : kinds)
    reqs.push_back(ModelRequest{Backend::cpu, k, variant, batch, positions, kThreads});
  return build_models(*src, reqs);
}

std::vector<int32_t> prompt_of(int n, int64_t vocab, uint64_t seed = 1) {
  return random_prompt(n, vocab, seed);
}

// ---- an independent reference: naive loops in double, no cache, whole prefix every time -------

struct RefModel {
  ModelShape s;
  Norms norms;
  std::vector<std::vector<uint16_t>> units;
  std::vector<UnitMap> maps;
};

RefModel load_ref(const WeightSource& src) {
  RefModel r{src.shape(), src.norms(), {}, {}};
  for (int u = 0; u < n_units(r.s); ++u) {
    UnitFeed f = src.load(u);
    r.units.push_back(f.bf16());
    r.maps.push_back(f.map());
  }
  return r;
}

double wv(const RefModel& m, int unit, Role role, int64_t row, int64_t col) {
  const Slice& sl = m.maps[static_cast<std::size_t>(unit)].slices[static_cast<std::size_t>(role)];
  return bf16_to_float(m.units[static_cast<std::size_t>(unit)]
                              [sl.offset + static_cast<uint64_t>(row * sl.cols + col)]);
}

// y[n] = sum_k x[k] * W[n][k]
std::vector<double> linear(const RefModel& m, int unit, Role role, const std::vector<double>& x) {
  const Slice& sl = m.maps[static_cast<std::size_t>(unit)].slices[static_cast<std::size_t>(role)];
  std::vector<double> y(static_cast<std::size_t>(sl.rows), 0.0);
  for (int64_t n = 0; n < sl.rows; ++n) {
    double acc = 0;
    for (int64_t k = 0; k < sl.cols; ++k)
      acc += x[static_cast<std::size_t>(k)] * wv(m, unit, role, n, k);
    y[static_cast<std::size_t>(n)] = acc;
  }
  return y;
}

std::vector<double> rms(const std::vector<double>& x, const std::vector<uint16_t>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = bf16_to_float(w[i]) * x[i] * inv;
  return y;
}

void rotate(std::vector<double>& v, std::size_t head_at, int64_t D, int64_t pos, double theta) {
  for (int64_t i = 0; i < D / 2; ++i) {
    const double a = static_cast<double>(pos) *
                     std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
    const double x1 = v[head_at + static_cast<std::size_t>(i)],
                 x2 = v[head_at + static_cast<std::size_t>(i + D / 2)];
    v[head_at + static_cast<std::size_t>(i)] = x1 * std::cos(a) - x2 * std::sin(a);
    v[head_at + static_cast<std::size_t>(i + D / 2)] = x2 * std::cos(a) + x1 * std::sin(a);
  }
}

// Logits of the last position after the whole sequence.
std::vector<double> ref_forward(const RefModel& m, const std::vector<int32_t>& seq) {
  const ModelShape& s = m.s;
  const auto T = static_cast<int64_t>(seq.size());
  const int64_t H = s.hidden, D = s.head_dim, Hq = s.n_heads, Hkv = s.n_kv_heads;
  std::vector<std::vector<double>> h(static_cast<std::size_t>(T),
                                     std::vector<double>(static_cast<std::size_t>(H)));
  const int E = embed_unit(s);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i)
      h[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)] =
          wv(m, E, q_proj, seq[static_cast<std::size_t>(t)], i);
  for (int l = 0; l < s.n_layers; ++l) {
    std::vector<std::vector<double>> q(static_cast<std::size_t>(T)), k(static_cast<std::size_t>(T)),
        v(static_cast<std::size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const auto x = rms(h[static_cast<std::size_t>(t)], m.norms.input[static_cast<std::size_t>(l)],
                         s.rms_norm_eps);
      q[static_cast<std::size_t>(t)] = linear(m, l, q_proj, x);
      k[static_cast<std::size_t>(t)] = linear(m, l, k_proj, x);
      v[static_cast<std::size_t>(t)] = linear(m, l, v_proj, x);
      for (int64_t hd = 0; hd < Hq; ++hd)
        rotate(q[static_cast<std::size_t>(t)], static_cast<std::size_t>(hd * D), D, t,
               s.rope_theta);
      for (int64_t hd = 0; hd < Hkv; ++hd)
        rotate(k[static_cast<std::size_t>(t)], static_cast<std::size_t>(hd * D), D, t,
               s.rope_theta);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> att(static_cast<std::size_t>(Hq * D), 0.0);
      for (int64_t hq = 0; hq < Hq; ++hq) {
        const int64_t kh = hq / (Hq / Hkv);
        std::vector<double> p(static_cast<std::size_t>(t + 1));
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t i = 0; i < D; ++i)
            d += q[static_cast<std::size_t>(t)][static_cast<std::size_t>(hq * D + i)] *
                 k[static_cast<std::size_t>(j)][static_cast<std::size_t>(kh * D + i)];
          p[static_cast<std::size_t>(j)] = d / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, p[static_cast<std::size_t>(j)]);
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < D; ++i)
            att[static_cast<std::size_t>(hq * D + i)] +=
                p[static_cast<std::size_t>(j)] / sum *
                v[static_cast<std::size_t>(j)][static_cast<std::size_t>(kh * D + i)];
      }
      const auto o = linear(m, l, o_proj, att);
      for (int64_t i = 0; i < H; ++i)
        h[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)] +=
            o[static_cast<std::size_t>(i)];
      const auto x = rms(h[static_cast<std::size_t>(t)], m.norms.post[static_cast<std::size_t>(l)],
                         s.rms_norm_eps);
      const auto g = linear(m, l, gate_proj, x);
      const auto u = linear(m, l, up_proj, x);
      std::vector<double> a(g.size());
      for (std::size_t i = 0; i < g.size(); ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const auto d = linear(m, l, down_proj, a);
      for (int64_t i = 0; i < H; ++i)
        h[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)] +=
            d[static_cast<std::size_t>(i)];
    }
  }
  const auto x = rms(h.back(), m.norms.final_norm, s.rms_norm_eps);
  return linear(m, lm_head_unit(s), q_proj, x);
}

// max |a - b| over max |b|
double relative_error(std::span<const float> a, std::span<const double> b) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return err / scale;
}

double relative_error(std::span<const float> a, std::span<const float> b) {
  std::vector<double> bd(b.begin(), b.end());
  return relative_error(a, std::span<const double>(bd));
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("df11_e2e_test_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Logits of every step of a greedy run (model reset first).
std::vector<std::vector<float>> step_logits(Model& m,
                                            const std::vector<std::vector<int32_t>>& prompts,
                                            int steps,
                                            std::vector<std::vector<int32_t>>* tokens = nullptr) {
  m.reset();
  std::vector<int32_t> feed;
  for (const auto& p : prompts) feed.insert(feed.end(), p.begin(), p.end());
  int n = static_cast<int>(prompts[0].size());
  std::vector<std::vector<float>> out;
  std::vector<int32_t> next;
  for (int s = 0; s < steps; ++s) {
    m.forward(feed, n);
    out.emplace_back();
    m.logits(out.back());
    m.argmax(next);
    if (tokens) tokens->push_back(next);
    feed = next;
    n = 1;
  }
  return out;
}

}  // namespace

TEST_CASE("tiny: BF16 and DF11 give bit-identical logits and tokens over 16 steps", "[e2e]") {
  const int batch = GENERATE(1, 4);
  const int steps = 16;
  const auto prompt = prompt_of(7, 1024);
  auto models = tiny_models({WeightsKind::df11, WeightsKind::bf16}, batch, 7 + steps);
  const auto res = generate(*models[0], batch_prompts(prompt, batch, 1024), steps, models[1].get());
  INFO("batch " << batch << (res.mismatch ? res.mismatch->describe("df11", "bf16") : ""));
  REQUIRE(res.checked);
  REQUIRE_FALSE(res.mismatch);
  REQUIRE(res.steps_checked == steps);
  REQUIRE(res.tokens.size() == static_cast<std::size_t>(batch));
  for (const auto& row : res.tokens) REQUIRE(row.size() == static_cast<std::size_t>(steps));
  // The rows differ (shifted prompts), and greedy output is not degenerate.
  if (batch > 1) CHECK(res.tokens[0] != res.tokens[1]);
  std::vector<int32_t> distinct = res.tokens[0];
  std::sort(distinct.begin(), distinct.end());
  CHECK(std::unique(distinct.begin(), distinct.end()) - distinct.begin() > 1);
  // The DF11 model holds compressed units (~70% of BF16) plus one buffer for the largest unit.
  const MemoryStats df = models[0]->memory(), bf = models[1]->memory();
  CHECK(df.weight_bytes - df.decode_buffer_bytes < bf.weight_bytes * 3 / 4);
  CHECK(df.decode_buffer_bytes == 2 * 786'432);  // a tiny block: 7 matrices, 786,432 weights

  // The same run without a reference gives the same tokens (argmax path of the model).
  const auto plain = generate(*models[0], batch_prompts(prompt, batch, 1024), steps);
  CHECK(plain.tokens == res.tokens);
  CHECK_FALSE(plain.checked);
}

TEST_CASE("generate: rows end at a stop id, the others' tokens and bits unchanged, the check still run",
          "[e2e]") {
  const int batch = 4, L = 5, steps = 14;
  const auto prompts = batch_prompts(prompt_of(L, 1024), batch, 1024);
  auto models = tiny_models({WeightsKind::df11, WeightsKind::bf16}, batch, L + steps);
  const GenerationResult full = generate(*models[0], prompts, steps);
  REQUIRE(full.rows_stopped == 0);
  REQUIRE(full.steps == steps);
  // Stop ids: row 0's 3rd token and row 2's 6th (unless an earlier token of a row is one too).
  const std::vector<int32_t> stops{full.tokens[0][2], full.tokens[2][5]};
  const GenerationResult res = generate(*models[0], prompts, steps, models[1].get(), stops);
  INFO((res.mismatch ? res.mismatch->describe("df11", "bf16") : ""));
  REQUIRE_FALSE(res.mismatch);
  int stopped = 0, longest = 0;
  int64_t decode_tokens = 0;
  for (int b = 0; b < batch; ++b) {
    const auto& row = res.tokens[static_cast<std::size_t>(b)];
    const auto& all = full.tokens[static_cast<std::size_t>(b)];
    // The full run's tokens up to and with the first stop id, or all of them.
    const auto first = std::find_first_of(all.begin(), all.end(), stops.begin(), stops.end());
    const std::size_t expect = first == all.end() ? all.size() : static_cast<std::size_t>(first - all.begin()) + 1;
    CHECK(row == std::vector<int32_t>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(expect)));
    stopped += first != all.end();
    longest = std::max(longest, static_cast<int>(row.size()));
    decode_tokens += static_cast<int64_t>(row.size()) - 1;  // the first comes from the prefill
  }
  CHECK(stopped >= 2);
  CHECK(res.rows_stopped == stopped);
  // Generation ends with the last row's stop (or at steps); decode tokens count rows still going.
  CHECK(res.steps == (stopped == batch ? longest : steps));
  CHECK(res.steps_checked == res.steps);
  CHECK(res.timing.decode_tokens == decode_tokens);
  CHECK(res.timing.decode_steps == res.steps - 1);
  CHECK(res.reference_timing->decode_tokens == decode_tokens);

  // Every row stopping ends generation at once: the prefill's own tokens as stop ids.
  std::vector<int32_t> firsts;
  for (const auto& row : full.tokens) firsts.push_back(row[0]);
  const GenerationResult at_once = generate(*models[0], prompts, steps, nullptr, firsts);
  CHECK(at_once.steps == 1);
  CHECK(at_once.rows_stopped == batch);
  CHECK(at_once.timing.decode_tokens == 0);
  for (const auto& row : at_once.tokens) CHECK(row.size() == 1);
}

// A model that says its n-th forward built something once (as a --graphs capture step does).
class SetupAtForward final : public Model {
 public:
  SetupAtForward(Model& inner, int setup_forward) : m_(inner), setup_(setup_forward) {}
  const ModelShape& shape() const override { return m_.shape(); }
  int batch() const override { return m_.batch(); }
  int max_positions() const override { return m_.max_positions(); }
  int position() const override { return m_.position(); }
  Backend backend() const override { return m_.backend(); }
  WeightsKind weights() const override { return m_.weights(); }
  std::string describe() const override { return m_.describe(); }
  bool last_forward_was_setup() const override { return forwards_ == setup_; }
  void reset() override {
    forwards_ = 0;
    m_.reset();
  }
  void forward(std::span<const int32_t> tokens, int n_new) override {
    ++forwards_;
    m_.forward(tokens, n_new);
  }
  void logits(std::vector<float>& out) override { m_.logits(out); }
  void argmax(std::vector<int32_t>& out) override { m_.argmax(out); }
  MemoryStats memory() const override { return m_.memory(); }

 private:
  Model& m_;
  int setup_;
  int forwards_ = 0;
};

TEST_CASE("generate: a decode step that built something once is left out of the decode tokens/s", "[e2e]") {
  const int batch = 2, L = 4, new_tokens = 6;
  const auto prompts = batch_prompts(prompt_of(L, 1024), batch, 1024);
  auto models = tiny_models({WeightsKind::bf16, WeightsKind::df11}, batch, L + new_tokens);
  SetupAtForward model(*models[0], 3);      // the second decode step, as a --graphs capture
  SetupAtForward reference(*models[1], 3);  // --check's partner does the same
  const GenerationResult plain = generate(*models[0], prompts, new_tokens);
  const GenerationResult res = generate(model, prompts, new_tokens, &reference);
  CHECK(res.tokens == plain.tokens);
  CHECK(plain.timing.setup_steps == 0);
  CHECK(plain.timing.decode_tokens == int64_t{batch} * (new_tokens - 1));
  CHECK(res.timing.setup_steps == 1);
  CHECK(res.timing.setup_s > 0);
  CHECK(res.timing.decode_tokens == int64_t{batch} * (new_tokens - 2));
  CHECK(res.timing.prefill_tokens == int64_t{batch} * L);
  REQUIRE(res.reference_timing);
  CHECK(res.reference_timing->setup_steps == 1);
  CHECK(res.reference_timing->decode_tokens == int64_t{batch} * (new_tokens - 2));
}

// A tracer that notes where the model stands when it is started and stopped, and what it returns.
class PositionTracer final : public StepTracer {
 public:
  explicit PositionTracer(const Model& m) : m_(m) {}
  void begin() override {
    ++begins;
    at_begin = m_.position();
  }
  df11::trace::Summary end() override {
    ++ends;
    at_end = m_.position();
    df11::trace::Summary s;
    s.busy_s = 0.25;  // handed back as the steps' device summary
    return s;
  }
  int begins = 0, ends = 0, at_begin = -1, at_end = -1;

 private:
  const Model& m_;
};

TEST_CASE("trace_decode_steps: the prompt untraced, then the decode steps traced, generate's tokens", "[e2e]") {
  const int batch = 2, L = 5, steps = 3;
  const auto prompts = batch_prompts(prompt_of(L, 1024), batch, 1024);
  auto models = tiny_models({WeightsKind::df11}, batch, L + 6);
  const auto gen = generate(*models[0], prompts, 6);
  PositionTracer tracer(*models[0]);
  const TracedSteps t = trace_decode_steps(*models[0], prompts, steps, tracer);
  CHECK(tracer.begins == 1);
  CHECK(tracer.ends == 1);
  CHECK(tracer.at_begin == L);          // after the prompt, before the first decode step
  CHECK(tracer.at_end == L + steps);    // after the last traced step
  CHECK(t.steps == steps);
  CHECK(t.device.busy_s == 0.25);
  CHECK(t.wall_s > 0);
  REQUIRE(t.tokens.size() == static_cast<std::size_t>(batch));
  for (int b = 0; b < batch; ++b) {
    const auto& row = gen.tokens[static_cast<std::size_t>(b)];
    CHECK(t.tokens[static_cast<std::size_t>(b)] == std::vector<int32_t>(row.begin(), row.begin() + steps + 1));
  }
  // Bad requests: no step, more steps than the cache holds, prompts of another batch.
  CHECK_THROWS_WITH(trace_decode_steps(*models[0], prompts, 0, tracer), Catch::Contains("at least one decode step"));
  CHECK_THROWS_WITH(trace_decode_steps(*models[0], prompts, 7, tracer), Catch::Contains("exceeds the model's 11 positions"));
  CHECK_THROWS_WITH(trace_decode_steps(*models[0], batch_prompts(prompt_of(L, 1024), 3, 1024), 1, tracer),
                    Catch::Contains("3 prompts for a batch of 2"));
  CHECK(tracer.begins == 1);  // refused before anything ran

  // A tracer that cannot record (CUPTI refused) throws TracerUnavailable, and it comes through as
  // that type, which `df11 generate --kernel-times` reports as "not measured (why)"; the model can
  // generate again afterwards.
  struct Refusing final : StepTracer {
    void begin() override { throw TracerUnavailable("CUPTI activity could not be enabled"); }
    df11::trace::Summary end() override { return {}; }
  } refusing;
  CHECK_THROWS_AS(trace_decode_steps(*models[0], prompts, steps, refusing), TracerUnavailable);
  CHECK(generate(*models[0], prompts, 6).tokens == gen.tokens);
}

TEST_CASE("tiny: a decoder variant's host emulation gives the same logits as decode_cpu", "[e2e]") {
  auto models = tiny_models({WeightsKind::df11}, 2, 12, kDefaultCudaVariant);
  auto ref = tiny_models({WeightsKind::bf16}, 2, 12);
  const auto res =
      generate(*models[0], batch_prompts(prompt_of(5, 1024), 2, 1024), 6, ref[0].get());
  REQUIRE_FALSE(res.mismatch);
  CHECK(res.steps_checked == 6);
  CHECK(models[0]->describe().find(kDefaultCudaVariant) != std::string::npos);
}

namespace {

// A source that counts its loads (and hands out the synthetic tiny model's units).
class CountingSource final : public WeightSource {
 public:
  explicit CountingSource(std::unique_ptr<WeightSource> inner) : inner_(std::move(inner)) {
    shape_ = inner_->shape();
    norms_ = inner_->norms();
    description_ = inner_->description();
  }
  UnitFeed load(int unit) const override {
    ++loads;
    return inner_->load(unit);
  }
  mutable int loads = 0;

 private:
  std::unique_ptr<WeightSource> inner_;
};

}  // namespace

TEST_CASE("a feed cache loads every unit once for many builds, which match builds from the source", "[e2e]") {
  const CountingSource src(synthetic_source(named_config("tiny"), 0, kThreads, "tiny"));
  const int units = n_units(src.shape());
  FeedCache cache(src);
  const auto prompts = batch_prompts(prompt_of(5, 1024), 2, 1024);
  auto request = [](WeightsKind w, const std::string& variant = "") {
    return ModelRequest{Backend::cpu, w, variant, 2, 12, kThreads};
  };
  std::vector<std::vector<float>> logits;
  for (const auto& reqs : {std::vector{request(WeightsKind::df11), request(WeightsKind::bf16)},
                           std::vector{request(WeightsKind::bf16)},
                           std::vector{request(WeightsKind::df11, "multi12c.gap4-tpos.exp-smem-v16.t256.b16")}}) {
    auto models = build_models(cache, reqs);
    for (auto& m : models) {
      const GenerationResult r = generate(*m, prompts, 4);
      REQUIRE(r.tokens.size() == 2);
      logits.emplace_back();
      m->logits(logits.back());
    }
  }
  CHECK(src.loads == units);  // three builds (another layout among them), one load per unit
  auto fresh = build_models(src, {request(WeightsKind::bf16)});
  (void)generate(*fresh[0], prompts, 4);
  std::vector<float> want;
  fresh[0]->logits(want);
  CHECK(src.loads == 2 * units);
  for (const auto& l : logits) CHECK(l == want);  // the same BF16 words, however they were kept
}

TEST_CASE("feed caches have ids of their own, CPU models never reuse device weights", "[e2e]") {
  const auto src = synthetic_source(named_config("tiny"), 0, kThreads, "tiny");
  FeedCache a(*src), b(*src);
  CHECK(a.id() != 0);  // 0 tells make_cuda_builder the units come from no FeedCache
  CHECK(a.id() != b.id());
  // Built from a FeedCache, as df11 generate --runs builds: reuse is a CUDA matter.
  const ModelRequest r{Backend::cpu, WeightsKind::df11, "", 1, 8, kThreads};
  for (int run = 0; run < 2; ++run) {
    cuda_keep_weights_for(a, {r});  // nothing cached, nothing to drop; no device needed
    auto models = build_models(a, {r});
    CHECK_FALSE(models[0]->weights_reused());
  }
}

TEST_CASE("synthetic units: bits made on request, by the host or a filler, a filler's source offers its plans", "[e2e]") {
  const ModelShape tiny = named_config("tiny");
  const auto host = synthetic_source(tiny, 7, kThreads, "tiny");
  int fills = 0;
  const synth::MatrixFiller counting = [&](std::span<uint16_t> out, const synth::MatrixRecipe& r) {
    ++fills;
    synth::fill_recipe(out, r, 1);
  };
  const auto filled = synthetic_source(tiny, 7, kThreads, "tiny", SynthesisPlace{counting, "test", true});
  CHECK(filled->description() == "synthetic tiny (seed 7, generated on test)");
  // A filler alone makes the host bits; only a device-fillable place offers the plans.
  CHECK(synthetic_source(tiny, 7, kThreads, "tiny", SynthesisPlace{counting, "test", false})->load(0).synthetic_plan() ==
        nullptr);
  for (int u = 0; u < n_units(tiny); ++u) {
    UnitFeed a = host->load(u);
    UnitFeed b = filled->load(u);
    CHECK(a.synthetic_plan() == nullptr);  // host bits only: nothing for a device to fill itself
    const synth::UnitPlan* plan = b.synthetic_plan();
    REQUIRE(plan != nullptr);
    CHECK(fills == 0);  // a plan, no bits yet
    // The plan's matrices in the map's order: what a device fills at running offsets.
    uint64_t at = 0;
    for (const synth::MatrixPlan& m : plan->matrices) {
      bool found = false;
      for (const Slice& sl : b.map().slices) found = found || (sl.offset == at && sl.rows == m.shape[0] && sl.cols == m.shape[1]);
      CHECK(found);
      at += static_cast<uint64_t>(m.shape[0] * m.shape[1]);
    }
    CHECK(at == b.map().n_elements);
    CHECK(b.name() == a.name());
    CHECK(b.bf16() == a.bf16());
    CHECK(fills == static_cast<int>(plan->matrices.size()));
    fills = 0;
    // Encoded from those bits, decoded back.
    const EncodedUnit& df11_enc = b.encoded(Layout::df11());
    CHECK(decode_cpu(df11_enc, 1) == a.bf16());
    // Each layout encoded once, and an encoding stays where it is when the feed encodes another
    // layout (holders keep references and shared pointers to it).
    const std::shared_ptr<const EncodedUnit> held = b.shared_encoded(Layout::df11());
    CHECK(held.get() == &df11_enc);
    Layout other = Layout::df11();
    other.threads_per_block = 128;
    const EncodedUnit& other_enc = b.encoded(other);
    CHECK(other_enc.layout == other);
    CHECK(&b.encoded(Layout::df11()) == &df11_enc);
    CHECK(decode_cpu(df11_enc, 1) == a.bf16());
    CHECK(decode_cpu(other_enc, 1) == a.bf16());
  }
  // A unit of another layer: other bits (the plan follows the unit index).
  CHECK(host->load(0).bf16() != host->load(1).bf16());
  CHECK_THROWS_AS(host->load(n_units(tiny)), Error);
}

TEST_CASE("the check names the first step, row and index that differ", "[e2e]") {
  // One mantissa bit of lm_head row 7 flipped in the DF11 model's weights: logit 7 must differ at
  // step 0 in every row, and nothing before it.
  class Flipped final : public WeightSource {
   public:
    explicit Flipped(std::unique_ptr<WeightSource> inner) : inner_(std::move(inner)) {
      shape_ = inner_->shape();
      norms_ = inner_->norms();
      description_ = "flipped";
    }
    UnitFeed load(int unit) const override {
      UnitFeed f = inner_->load(unit);
      if (unit != lm_head_unit(shape_)) return f;
      std::vector<uint16_t> w = f.bf16();
      w[7 * static_cast<std::size_t>(shape_.hidden) + 3] ^= 1;
      Unit u{"lm_head", {Bf16Tensor{"lm_head", {shape_.vocab, shape_.hidden}, std::move(w)}}};
      return UnitFeed(unit, f.map(), std::move(u), 1);
    }

   private:
    std::unique_ptr<WeightSource> inner_;
  };
  const Flipped flipped(synthetic_source(named_config("tiny"), 0, kThreads));
  auto bad =
      build_models(flipped, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 3, 16, kThreads}});
  auto good = tiny_models({WeightsKind::bf16}, 3, 16);
  const auto res = generate(*bad[0], batch_prompts(prompt_of(4, 1024), 3, 1024), 8, good[0].get());
  REQUIRE(res.mismatch);
  CHECK(res.mismatch->step == 0);
  CHECK(res.mismatch->row == 0);
  CHECK(res.mismatch->index == 7);
  CHECK(res.mismatch->bits_a != res.mismatch->bits_b);
  CHECK(res.steps_checked == 0);
  const std::string text = res.mismatch->describe("df11", "bf16");
  CHECK(text.find("step 0, batch row 0, vocabulary index 7") != std::string::npos);

  // compare_logits alone: a difference in the sign of a zero is a difference.
  std::vector<float> a(6, 0.0f), b(6, 0.0f);
  CHECK_FALSE(compare_logits(a, b, 2, 3, 5));
  b[4] = -0.0f;
  const auto m = compare_logits(a, b, 2, 3, 5);
  REQUIRE(m);
  CHECK((m->step == 5 && m->row == 1 && m->index == 1));
}

TEST_CASE("tiny: the model agrees with a double-precision scalar forward pass", "[e2e]") {
  // Tolerance: float32 GEMMs with K <= 768 have a worst-case relative error of K * 2^-24 ~ 4.6e-5
  // of the sum of |terms|; a block chains 4 dependent products (qkv -> attention -> o, gate/up ->
  // down) and the model 2 blocks + lm_head, ~9 stages, with RMSNorm keeping magnitudes near 1:
  // ~4e-4 in the worst case, typically sqrt(K) times less. So max |logit error| < 1e-3 * max
  // |logit|.
  // Two shapes: tiny, and heads whose head_dim is not hidden / heads (as Mistral-Nemo's 128 is
  // not 5120 / 32): 4 query heads of 48 over a hidden size of 128, so q_proj is 192 x 128.
  ModelShape wide = named_config("tiny");
  wide.hidden = 128, wide.intermediate = 320, wide.n_heads = 4, wide.n_kv_heads = 2, wide.head_dim = 48,
  wide.vocab = 512;
  for (const auto& [name, shape] : {std::pair{"tiny", named_config("tiny")}, std::pair{"head_dim 48", wide}}) {
    INFO(name);
    const auto src = synthetic_source(shape, 0, kThreads, name);
    const RefModel ref = load_ref(*src);
    const int batch = 2, steps = 4;
    const auto V = static_cast<std::size_t>(shape.vocab);
    const auto prompts = batch_prompts(prompt_of(6, shape.vocab), batch, shape.vocab);
    auto models =
        build_models(*src, {ModelRequest{Backend::cpu, WeightsKind::df11, "", batch, 16, kThreads}});
    std::vector<std::vector<int32_t>> tokens;
    const auto logits = step_logits(*models[0], prompts, steps, &tokens);
    double worst = 0;
    for (int s = 0; s < steps; ++s) {
      for (int b = 0; b < batch; ++b) {
        std::vector<int32_t> seq = prompts[static_cast<std::size_t>(b)];
        for (int p = 0; p < s; ++p)
          seq.push_back(tokens[static_cast<std::size_t>(p)][static_cast<std::size_t>(b)]);
        const auto want = ref_forward(ref, seq);
        REQUIRE(want.size() == V);
        const std::span<const float> got(logits[static_cast<std::size_t>(s)].data() + static_cast<std::size_t>(b) * V,
                                         V);
        const double e = relative_error(got, want);
        worst = std::max(worst, e);
        INFO("step " << s << " row " << b << " relative error " << e);
        CHECK(e < 1e-3);
        // Greedy choice agrees unless the reference's top two are closer than the tolerance.
        const auto top = std::max_element(want.begin(), want.end()) - want.begin();
        const double top_v = want[static_cast<std::size_t>(top)];
        double second = -1e300;
        for (std::size_t i = 0; i < want.size(); ++i)
          if (static_cast<int64_t>(i) != top) second = std::max(second, want[i]);
        if (top_v - second > 2e-3 * std::abs(top_v))
          CHECK(tokens[static_cast<std::size_t>(s)][static_cast<std::size_t>(b)] == top);
      }
    }
    WARN(name << " model vs double reference: max relative logit error " << worst);
  }
}

TEST_CASE("tiny: logits with the KV cache equal a fresh forward over the whole prefix", "[e2e]") {
  // Not bit-equal: a fresh pass multiplies matrices of other heights, which may sum in another
  // order; float32 rounding of such reorderings stays ~1e-6 of the logit scale.
  const int batch = 2, steps = 6, L = 5;
  auto models = tiny_models({WeightsKind::bf16}, batch, L + steps);
  const auto prompts = batch_prompts(prompt_of(L, 1024), batch, 1024);
  std::vector<std::vector<int32_t>> tokens;
  const auto cached = step_logits(*models[0], prompts, steps, &tokens);
  for (int s = 0; s < steps; ++s) {
    std::vector<int32_t> feed;
    for (int b = 0; b < batch; ++b) {
      feed.insert(feed.end(), prompts[static_cast<std::size_t>(b)].begin(),
                  prompts[static_cast<std::size_t>(b)].end());
      for (int p = 0; p < s; ++p)
        feed.push_back(tokens[static_cast<std::size_t>(p)][static_cast<std::size_t>(b)]);
    }
    models[0]->reset();
    models[0]->forward(feed, L + s);
    std::vector<float> fresh;
    models[0]->logits(fresh);
    const double e = relative_error(cached[static_cast<std::size_t>(s)], fresh);
    INFO("step " << s << " relative difference " << e);
    CHECK(e < 1e-5);
  }
}

TEST_CASE("tiny: a chunked prefill equals feeding the prompt one token at a time", "[e2e]") {
  const int batch = 3, L = 400;  // 3 x 400 rows: passes of 170 positions (kMaxRowsPerPass 512)
  static_assert(CpuModel::kMaxRowsPerPass < 3 * 400);
  auto models = tiny_models({WeightsKind::bf16}, batch, L);
  const auto prompts = batch_prompts(prompt_of(L, 1024), batch, 1024);
  std::vector<int32_t> feed;
  for (const auto& p : prompts) feed.insert(feed.end(), p.begin(), p.end());
  models[0]->forward(feed, L);
  std::vector<float> chunked, stepped;
  models[0]->logits(chunked);
  models[0]->reset();
  for (int t = 0; t < L; ++t) {
    std::vector<int32_t> col;
    for (int b = 0; b < batch; ++b)
      col.push_back(prompts[static_cast<std::size_t>(b)][static_cast<std::size_t>(t)]);
    models[0]->forward(col, 1);
  }
  models[0]->logits(stepped);
  CHECK(relative_error(chunked, stepped) < 1e-5);
  CHECK(models[0]->position() == L);
  CHECK_THROWS_AS(models[0]->forward(std::vector<int32_t>(batch, 1), 1), Error);  // cache full
  models[0]->reset();
  CHECK_THROWS_AS(models[0]->forward(std::vector<int32_t>(batch, 1024), 1),
                  Error);  // outside the vocabulary
}

TEST_CASE("checkpoint directories: df11 synth, compress, and the official encoder's files",
          "[e2e]") {
  TempDir tmp;
  const fs::path hf = tmp.path / "hf", df = tmp.path / "df11";
  ckpt::SynthOptions so;
  so.shape = named_config("tiny");
  so.seed = 3;
  so.threads = kThreads;
  ckpt::synthesize(hf, so);
  ckpt::CompressOptions co;
  co.threads = kThreads;
  ckpt::compress(hf, df, co);

  const int batch = 2, steps = 5;
  const auto prompts = batch_prompts(prompt_of(4, 1024), batch, 1024);
  auto synthetic = tiny_models({WeightsKind::bf16}, batch, 16, "", 3);
  auto from_hf =
      build_models(*open_checkpoint(hf, kThreads),
                   {ModelRequest{Backend::cpu, WeightsKind::bf16, "", batch, 16, kThreads}});
  auto from_df11 =
      build_models(*open_checkpoint(df, kThreads),
                   {ModelRequest{Backend::cpu, WeightsKind::df11, "", batch, 16, kThreads}});
  // --synthetic and `df11 synth` make the same weights (norms included), so the same model.
  auto r1 = generate(*from_hf[0], prompts, steps, synthetic[0].get());
  CHECK_FALSE(r1.mismatch);
  auto r2 = generate(*from_df11[0], prompts, steps, synthetic[0].get());
  CHECK_FALSE(r2.mismatch);
  CHECK(r2.steps_checked == steps);

  // The official DFloat11 encoder's output of a random MistralForCausalLM, against its BF16 source.
  const fs::path official = kFixtures / "tiny_mistral";
  const auto bsrc = open_checkpoint(official / "bf16", kThreads);
  const auto dsrc = open_checkpoint(official / "df11", kThreads);
  CHECK(bsrc->shape().hidden == 64);
  CHECK(dsrc->description().find("DF11") != std::string::npos);
  const int64_t V = bsrc->shape().vocab;
  auto ob =
      build_models(*bsrc, {ModelRequest{Backend::cpu, WeightsKind::bf16, "", 4, 24, kThreads}});
  auto od =
      build_models(*dsrc, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 4, 24, kThreads}});
  const auto r3 = generate(*od[0], batch_prompts(prompt_of(8, V), 4, V), 16, ob[0].get());
  INFO((r3.mismatch ? r3.mismatch->describe("df11", "bf16") : ""));
  CHECK_FALSE(r3.mismatch);
  CHECK(r3.steps_checked == 16);

  // A Llama checkpoint (DFloat11 0.2.0 files): the same architecture without sliding window.
  const fs::path llama = kFixtures / "tiny_llama_v020";
  const auto lb = open_checkpoint(llama / "bf16", kThreads),
             ld = open_checkpoint(llama / "df11", kThreads);
  const int64_t LV = lb->shape().vocab;
  auto lbm =
      build_models(*lb, {ModelRequest{Backend::cpu, WeightsKind::bf16, "", 2, 12, kThreads}});
  auto ldm =
      build_models(*ld, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 2, 12, kThreads}});
  const auto r4 = generate(*ldm[0], batch_prompts(prompt_of(4, LV), 2, LV), 8, lbm[0].get());
  CHECK_FALSE(r4.mismatch);
  CHECK(r4.steps_checked == 8);

  // Errors name what is wrong.
  CHECK_THROWS_WITH(open_checkpoint(tmp.path / "missing", 1), Catch::Contains("not a directory"));
  {
    const fs::path scaled = tmp.path / "scaled";
    fs::create_directories(scaled);
    fs::copy(official / "bf16", scaled, fs::copy_options::recursive);
    std::ifstream cin(scaled / "config.json");
    auto cfg = nlohmann::json::parse(cin);
    cin.close();
    cfg["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    std::ofstream(scaled / "config.json") << cfg.dump();
    CHECK_THROWS_WITH(open_checkpoint(scaled, 1),
                      Catch::Contains("rope_scaling is not implemented"));
  }
}

namespace {

// A copy of `from` whose config.json `edit` changed.
fs::path edited_copy(const fs::path& from, const fs::path& to, const std::function<void(nlohmann::json&)>& edit) {
  fs::create_directories(to);
  fs::copy(from, to, fs::copy_options::recursive);
  std::ifstream in(to / "config.json");
  auto cfg = nlohmann::json::parse(in);
  in.close();
  edit(cfg);
  std::ofstream(to / "config.json") << cfg.dump();
  return to;
}

// `dir`/model.safetensors rewritten with its tensors, less `drop`, plus `extra` (BF16 zeros).
void rewrite_shard(const fs::path& dir, const std::string& drop, const std::string& extra, int64_t extra_n) {
  std::vector<std::pair<st::TensorInfo, std::vector<std::byte>>> kept;
  {
    const st::File f = st::File::open(dir / "model.safetensors");
    for (const auto& t : f.tensors()) {
      if (t.name == drop) continue;
      const auto b = f.bytes(t);
      kept.emplace_back(t, std::vector<std::byte>(b.begin(), b.end()));
    }
  }
  st::Writer w;
  for (auto& [t, bytes] : kept) w.add_owned(t.name, t.dtype, t.shape, std::move(bytes));
  if (!extra.empty())
    w.add_owned(extra, st::DType::BF16, {extra_n}, std::vector<std::byte>(static_cast<std::size_t>(2 * extra_n)));
  w.write(dir / "model.safetensors");
}

}  // namespace

TEST_CASE("checkpoints: what the forward pass does not implement is refused, windows and ties as HF reads them",
          "[e2e]") {
  TempDir tmp;
  const fs::path hf = kFixtures / "tiny_mistral" / "bf16", df = kFixtures / "tiny_mistral" / "df11";
  int n = 0;
  const auto copy = [&](const fs::path& from, const std::function<void(nlohmann::json&)>& edit) {
    return edited_copy(from, tmp.path / ("c" + std::to_string(n++)), edit);
  };
  // Another architecture, scaled or partial rotary embeddings (transformers 5 spells them
  // rope_parameters), and two rope_thetas that disagree.
  CHECK_THROWS_WITH(open_checkpoint(copy(hf, [](auto& c) { c["model_type"] = "qwen2"; }), 1),
                    Catch::Contains("model_type \"qwen2\" is not implemented"));
  CHECK_THROWS_WITH(open_checkpoint(copy(hf,
                                         [](auto& c) {
                                           c.erase("rope_theta");
                                           c["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0},
                                                                   {"rope_theta", 1e6}};
                                         }),
                                    1),
                    Catch::Contains("rope_parameters.rope_type \"yarn\" is not implemented"));
  CHECK_THROWS_WITH(open_checkpoint(copy(hf, [](auto& c) { c["partial_rotary_factor"] = 0.5; }), 1),
                    Catch::Contains("partial_rotary_factor 0.5 is not implemented"));
  CHECK_THROWS_WITH(
      open_checkpoint(copy(hf, [](auto& c) { c["rope_parameters"] = {{"rope_theta", 5e5}, {"rope_type", "default"}}; }),
                      1),
      Catch::Contains("rope_theta 1e+06 and rope_parameters.rope_theta 500000 disagree"));
  // transformers 5's own spelling of plain rope reads.
  CHECK(open_checkpoint(copy(hf,
                             [](auto& c) {
                               c.erase("rope_theta");
                               c["rope_parameters"] = {{"rope_theta", 5e5}, {"rope_type", "default"}};
                             }),
                        1)
            ->shape()
            .rope_theta == 5e5);

  // A bias (or any tensor the pass does not read) is refused, in HF and DF11 directories alike.
  {
    const fs::path biased = copy(hf, [](auto&) {});
    rewrite_shard(biased, "", "model.layers.0.self_attn.q_proj.bias", 64);
    CHECK_THROWS_WITH(open_checkpoint(biased, 1),
                      Catch::Contains("model.safetensors: tensor 'model.layers.0.self_attn.q_proj.bias' is not one "
                                      "the Mistral forward pass reads"));
    const fs::path dbiased = copy(df, [](auto&) {});
    st::Writer w;
    w.add_owned("model.layers.0.mlp.down_proj.bias", st::DType::BF16, {64}, std::vector<std::byte>(128));
    w.write(dbiased / "extra.safetensors");
    CHECK_THROWS_WITH(open_checkpoint(dbiased, 1),
                      Catch::Contains("extra.safetensors: tensor 'model.layers.0.mlp.down_proj.bias' is not one"));
  }

  // sliding_window: null is none (the fixture's); absent is HF Mistral's default of 4096, and
  // Llama's none; a window refuses rows that run past it.
  CHECK(open_checkpoint(hf, 1)->shape().sliding_window == 0);
  CHECK(open_checkpoint(copy(hf, [](auto& c) { c.erase("sliding_window"); }), 1)->shape().sliding_window == 4096);
  CHECK(open_checkpoint(kFixtures / "tiny_llama_v020" / "bf16", 1)->shape().sliding_window == 0);
  CHECK_THROWS_WITH(open_checkpoint(copy(hf, [](auto& c) { c["sliding_window"] = 0; }), 1),
                    Catch::Contains("sliding_window must be a positive integer or null, got 0"));
  {
    const auto windowed = open_checkpoint(copy(df, [](auto& c) { c["sliding_window"] = 6; }), 1);
    const auto plain = open_checkpoint(df, 1);
    const int64_t V = plain->shape().vocab;
    // 7 positions: rows run positions 0..6, one past the window of 6.
    CHECK_THROWS_WITH(build_models(*windowed, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 1, 8, 1}}),
                      Catch::Contains("config.json's sliding_window is 6") && Catch::Contains("reach 7 positions"));
    // Within it (a prompt of 3 and 4 new tokens: positions 0..5), the window changes nothing.
    auto in = build_models(*windowed, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 1, 7, 1}});
    auto ref = build_models(*plain, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 1, 7, 1}});
    const auto r = generate(*in[0], batch_prompts(prompt_of(3, V), 1, V), 4, ref[0].get());
    CHECK_FALSE(r.mismatch);
    CHECK(r.steps_checked == 4);
  }

  // tie_word_embeddings: the output projection is embed_tokens (a stored lm_head is replaced, as
  // HF's tie does); untied, an lm_head must be there.
  {
    const fs::path tied = copy(hf, [](auto& c) { c["tie_word_embeddings"] = true; });
    const fs::path tied_stored = copy(hf, [](auto& c) { c["tie_word_embeddings"] = true; });
    rewrite_shard(tied, "lm_head.weight", "", 0);
    for (const fs::path& dir : {tied, tied_stored}) {
      const auto src = open_checkpoint(dir, 1);
      const ModelShape& s = src->shape();
      UnitFeed head = src->load(lm_head_unit(s)), embed = src->load(embed_unit(s));
      CHECK(head.name() == "model.embed_tokens");
      CHECK(*head.shared_bf16() == *embed.shared_bf16());
    }
    const auto untied = open_checkpoint(hf, 1);
    CHECK(untied->load(lm_head_unit(untied->shape())).name() == "lm_head");
    const fs::path headless = copy(df, [](auto&) {});
    fs::remove(headless / "lm_head.safetensors");
    // (Df11Checkpoint::open finds it first, before the forward pass's own check of the same)
    CHECK_THROWS_WITH(open_checkpoint(headless, 1),
                      Catch::Contains("tensor 'lm_head.weight', which") && Catch::Contains("config.json requires") &&
                          Catch::Contains("is in no DF11 unit and no safetensors file"));
  }

  // The official single-file layout: config.json holds only dfloat11_config, so the architecture
  // comes from --config (a file or a directory holding one), and runs the same model.
  {
    const fs::path single = copy(df, [](auto& c) { c = nlohmann::json{{"dfloat11_config", c["dfloat11_config"]}}; });
    CHECK_THROWS_WITH(open_checkpoint(single, 1), Catch::Contains("no model architecture"));
    const auto given = open_checkpoint(single, 1, hf / "config.json");
    const auto dir_given = open_checkpoint(single, 1, hf);
    const auto plain = open_checkpoint(df, 1);
    CHECK(given->shape().hidden == plain->shape().hidden);
    CHECK(dir_given->shape().n_layers == plain->shape().n_layers);
    const int64_t V = plain->shape().vocab;
    auto a = build_models(*given, {ModelRequest{Backend::cpu, WeightsKind::df11, "", 2, 10, 1}});
    auto b = build_models(*plain, {ModelRequest{Backend::cpu, WeightsKind::bf16, "", 2, 10, 1}});
    const auto r = generate(*a[0], batch_prompts(prompt_of(4, V), 2, V), 6, b[0].get());
    CHECK_FALSE(r.mismatch);
    CHECK(r.steps_checked == 6);
    // What --config says is checked as config.json would be, naming the file.
    const fs::path qwen = copy(hf, [](auto& c) { c["model_type"] = "qwen2"; });
    CHECK_THROWS_WITH(open_checkpoint(single, 1, qwen), Catch::Contains((qwen / "config.json").string() + ": model_type"));
    CHECK_THROWS_WITH(open_checkpoint(hf, 1, hf / "config.json"), Catch::Contains("a BF16 checkpoint has its own"));
  }
}

TEST_CASE("CUDA DF11 weights are keyed by their decoder: no --variant and the default's name are one", "[e2e]") {
  ModelRequest plain{Backend::cuda, WeightsKind::df11, "", 1, 8, 1};
  ModelRequest fused = plain;
  fused.fused_gemv = true;
  ModelRequest named = plain;
  named.variant = kDefaultCudaVariant;
  // The fused run's weights are the plain run's images plus the fused kernels: the same key but
  // for the kernels (a key of "" against the fused default's name made every fused run upload
  // every unit again).
  CHECK(cuda_df11_decoder_name(plain) == kDefaultCudaVariant);
  CHECK(cuda_df11_decoder_name(fused) == cuda_df11_decoder_name(plain));
  CHECK(cuda_df11_decoder_name(named) == cuda_df11_decoder_name(plain));
  ModelRequest other = plain;
  other.variant = "multi12.gap5-warp.exp-smem-v16.t512.b8";
  CHECK(cuda_df11_decoder_name(other) == other.variant);
  dec::Registry reg;
  dec::register_all(reg);
  CHECK_THROWS_WITH(pick_cuda_decoder(reg, "official-ptx"), Catch::Contains("whole units only") ||
                                                                Catch::Contains("no decoder variant"));
  CHECK_THROWS_WITH(pick_cuda_decoder(reg, "nope"), Catch::Contains("no decoder variant 'nope'"));
}

TEST_CASE("overlapped whole matrices: the reused buffer's halves hold a block's largest GEMM whole", "[e2e]") {
  // Nemo's block in the official order, q..v and gate, up adjacent (one GEMM each).
  const int64_t H = 5120, nq = 4096, nkv = 1024, I = 14336;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{nq, H}, {nkv, H}, {nkv, H}, {H, nq},
                                                           {I, H},  {I, H},   {H, I}};
  UnitMap m;
  for (const auto& [rows, cols] : shapes) {
    m.slices.push_back(Slice{m.n_elements, rows, cols});
    m.n_elements += static_cast<uint64_t>(rows * cols);
  }
  REQUIRE(m.n_elements == 272629760u);
  REQUIRE(m.gate_up_fused());
  CHECK(m.largest_gemm_elements() == static_cast<uint64_t>(2 * I * H));  // gate+up: more than half
  const uint64_t half = reused_half_elements(m.n_elements, m.largest_gemm_elements(), 128);
  CHECK(half == static_cast<uint64_t>(2 * I * H));
  CHECK(half > m.n_elements / 2);
  // Apart (up before gate): each its own GEMM, and half the block holds the largest one.
  std::swap(m.slices[gate_proj].offset, m.slices[up_proj].offset);
  CHECK_FALSE(m.gate_up_fused());
  CHECK(m.largest_gemm_elements() == static_cast<uint64_t>(I * H));
  CHECK(reused_half_elements(m.n_elements, m.largest_gemm_elements(), 128) == m.n_elements / 2 / 128 * 128);
  // q, k, v together where adjacent; a GEMM not a multiple of the alignment rounds up.
  UnitMap small;
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{3, 5}, {1, 5}, {1, 5}, {5, 3}, {2, 5}, {2, 5}, {5, 2}}) {
    small.slices.push_back(Slice{small.n_elements, rows, cols});
    small.n_elements += static_cast<uint64_t>(rows * cols);
  }
  CHECK(small.largest_gemm_elements() == 25u);  // q+k+v (25) > gate+up (20)
  CHECK(reused_half_elements(small.n_elements, 25, 8) == 32u);
  CHECK(reused_half_elements(small.n_elements, 25, 1) == 35u);  // half of 70
  UnitMap table;  // an embedding or lm_head: one matrix
  table.slices.push_back(Slice{0, 7, 3});
  CHECK(table.largest_gemm_elements() == 21u);
}

TEST_CASE("prompt helpers and option parsing", "[e2e]") {
  CHECK(parse_ids("1,2, 3") == std::vector<int32_t>{1, 2, 3});
  CHECK_THROWS_AS(parse_ids("1,,2"), Error);
  CHECK_THROWS_WITH(parse_ids("1,2,"), Catch::Contains("'' is not a non-negative integer"));
  CHECK_THROWS_WITH(parse_ids(" "), Catch::Contains("no token ids"));
  CHECK(parse_ids("7") == std::vector<int32_t>{7});
  CHECK_THROWS_AS(parse_ids("x"), Error);
  CHECK_THROWS_AS(parse_ids("-1"), Error);
  const auto rows = batch_prompts({0, 1023}, 3, 1024);
  CHECK(rows[2] == std::vector<int32_t>{2, 1});
  {
    // A seed's prompt: its length, ids inside the vocabulary, the same again, another seed's differs.
    const auto p = random_prompt(64, 100, 1);
    CHECK(p.size() == 64);
    CHECK(std::all_of(p.begin(), p.end(), [](int32_t id) { return id >= 0 && id < 100; }));
    CHECK(p == random_prompt(64, 100, 1));
    CHECK(p != random_prompt(64, 100, 2));
  }
  CHECK(parse_weights("cpu-offload") == WeightsKind::cpu_offload);
  CHECK_THROWS_AS(parse_weights("fp8"), Error);
  CHECK(resolve_backend("cpu") == Backend::cpu);
  if (!cuda_available()) CHECK(resolve_backend("auto") == Backend::cpu);
  CHECK_THROWS_AS(tiny_models({WeightsKind::cpu_offload}, 1, 4), Error);  // a CUDA method
  {
    const auto src = synthetic_source(named_config("tiny"), 0, kThreads, "tiny");
    ModelRequest fused{Backend::cpu, WeightsKind::df11, "", 1, 4, kThreads};
    fused.fused_gemv = true;  // a CUDA method too
    CHECK_THROWS_WITH(build_models(*src, {fused}), Catch::Contains("--fused-gemv"));
    ModelRequest graphs{Backend::cpu, WeightsKind::df11, "", 1, 4, kThreads};
    graphs.graphs = true;  // and CUDA graphs
    CHECK_THROWS_WITH(build_models(*src, {graphs}), Catch::Contains("CUDA graphs (--graphs) are a CUDA method"));
  }
  std::vector<int32_t> am;
  argmax_rows(std::vector<float>{1, 3, 3, NAN, 0, 0}, 2, 3, am);
  CHECK(am == std::vector<int32_t>{1, 1});
}

namespace {

// Texts and the ids mistral_common's Tekkenizer gives them (harness/e2e/make_tekken_fixture.py).
void check_tekken_cases(const TekkenTokenizer& tok, const fs::path& cases_file) {
  std::ifstream in(cases_file);
  REQUIRE(in);
  const auto cases = nlohmann::json::parse(in);
  REQUIRE(cases.size() > 20);
  int failed = 0;
  for (const auto& c : cases) {
    const auto text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<int32_t>>();
    const auto got = tok.encode(text, false);
    if (got != want && ++failed <= 5) {
      std::string pieces;
      for (auto p : tok.split(text)) {
        pieces += '[';
        pieces += p;
        pieces += ']';
      }
      FAIL_CHECK("encode differs for '" << text << "': pieces " << pieces);
    }
    CHECK(tok.decode(got) == text);
  }
  CHECK(failed == 0);
}

}  // namespace

TEST_CASE("tekken: ids equal mistral_common's on the fixture tokenizer", "[e2e][tokenizer]") {
  const fs::path dir = fs::path(__FILE__).parent_path() / "data";
  const TekkenTokenizer tok = TekkenTokenizer::load(dir / "tekken_small.json");
  CHECK(tok.vocab_size() == 4000);
  CHECK(tok.num_special() == 1000);
  check_tekken_cases(tok, dir / "tekken_small_cases.json");
  const auto ids = tok.encode("Hello", true);
  REQUIRE(ids.size() >= 2);
  CHECK(ids[0] == tok.bos_id());
  CHECK(tok.decode(ids) == "Hello");  // BOS is a control token: no text
  CHECK_THROWS_WITH(tok.encode("bad \xC3(", false), Catch::Contains("not valid UTF-8"));
  CHECK_THROWS_WITH(tok.decode(std::vector<int32_t>{4000}),
                    Catch::Contains("outside the vocabulary"));
  // Bytes that are not UTF-8 decode as Python's errors="replace" does: one U+FFFD per maximal
  // subpart of an ill-formed sequence (ranks 0..255 are the single bytes).
  const auto bytes = [&](std::initializer_list<int> bs) {
    std::vector<int32_t> byte_ids;
    for (const int b : bs) byte_ids.push_back(tok.num_special() + b);
    return tok.decode(byte_ids);
  };
  const std::string R = "\xEF\xBF\xBD";
  REQUIRE(bytes({0x41, 0xC3, 0xA9}) == "A\xC3\xA9");
  CHECK(bytes({0x80, 0x80}) == R + R);
  CHECK(bytes({0xE0, 0x80, 0x80}) == R + R + R);  // E0 takes A0..BF next
  CHECK(bytes({0xED, 0xA0, 0x80}) == R + R + R);  // a surrogate
  CHECK(bytes({0xF4, 0x90, 0x80, 0x80}) == R + R + R + R);  // past U+10FFFF
  CHECK(bytes({0xC0, 0xAF}) == R + R);  // overlong
  CHECK(bytes({0x41, 0xE2, 0x82}) == "A" + R);  // truncated: one
  CHECK(bytes({0x41, 0xF0, 0x9F, 0x98, 0x42}) == "A" + R + "B");
  CHECK(bytes({0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80}) == "\xE2\x82\xAC\xF0\x9F\x98\x80");
  // A control token ends a run of text tokens, each run decoded on its own (mistral_common
  // decodes the groups between special tokens apart): a character split by one is two bad pieces.
  const int32_t s = tok.num_special();
  CHECK(tok.decode(std::vector<int32_t>{s + 0xE2, 2, s + 0x82, s + 0xAC}) == R + R + R);  // E2 | 82 | AC
  CHECK(tok.decode(std::vector<int32_t>{s + 0xE2, s + 0x82, s + 0xAC, 2, s + 0x41}) == "\xE2\x82\xAC" "A");
  // Any bytes decode to valid UTF-8 (encode refuses anything else), which encodes back to itself;
  // bytes that were valid come out unchanged.
  std::mt19937 rng(11);
  const int alphabet[] = {0x41, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  int valid_inputs = 0;
  for (int n = 0; n < 3000; ++n) {
    std::vector<int32_t> byte_ids(rng() % 9);
    std::string raw;
    for (auto& id : byte_ids) {
      const int b = alphabet[rng() % std::size(alphabet)];
      id = tok.num_special() + b;
      raw.push_back(static_cast<char>(b));
    }
    const std::string text = tok.decode(byte_ids);
    INFO("case " << n);
    std::vector<int32_t> again;
    REQUIRE_NOTHROW(again = tok.encode(text, false));
    CHECK(tok.decode(again) == text);
    bool raw_valid = true;
    try {
      (void)tok.encode(raw, false);
    } catch (const Error&) {
      raw_valid = false;
    }
    if (raw_valid) {
      ++valid_inputs;
      CHECK(text == raw);
    }
  }
  CHECK(valid_inputs > 100);
  // Pieces of the pre-tokenizer: words keep their leading space, digits stand alone.
  const auto pieces = tok.split("Hi there 42!\n");
  CHECK(std::vector<std::string>(pieces.begin(), pieces.end()) ==
        std::vector<std::string>{"Hi", " there", " ", "4", "2", "!\n"});
}

TEST_CASE("tekken: integers out of range, fractions and special ranks past the specials are refused", "[e2e][tokenizer]") {
  TempDir tmp;
  const fs::path dir = fs::path(__FILE__).parent_path() / "data";
  std::ifstream in(dir / "tekken_small.json");
  const auto good = nlohmann::json::parse(in);
  const fs::path file = tmp.path / "t.json";
  const auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
    auto j = good;
    edit(j);
    std::ofstream(file) << j.dump();
    INFO(needle);
    CHECK_THROWS_WITH(TekkenTokenizer::load(file), Catch::Contains(file.string()) && Catch::Contains(needle));
  };
  // (get<int32_t>() read 2^32 + 1000 as 1000 and 1000.9 as 1000.)
  refused([](auto& j) { j["config"]["default_num_special_tokens"] = (uint64_t{1} << 32) + 1000; },
          "default_num_special_tokens must be an integer in [0, 1048576], got 4294968296");
  refused([](auto& j) { j["config"]["default_num_special_tokens"] = 1000.9; }, "got 1000.9");
  refused([](auto& j) { j["config"]["default_vocab_size"] = -4; }, "default_vocab_size must be an integer");
  refused([](auto& j) { j["vocab"][5]["rank"] = "5"; }, "a vocab entry's rank must be an integer");
  // (the fixture lists no special tokens; a real file lists them as these)
  const auto bos_at = [](nlohmann::json rank) {
    return [rank](nlohmann::json& j) {
      j["special_tokens"] = nlohmann::json::array({{{"rank", rank}, {"token_str", "<s>"}, {"is_control", true}}});
    };
  };
  refused(bos_at((uint64_t{1} << 32) + 1), "the rank of <s> must be an integer in [0, 999], got 4294967297");
  refused(bos_at(-5), "the rank of <s> must be an integer in [0, 999], got -5");
  refused(bos_at(1000), "the rank of <s> must be an integer in [0, 999], got 1000");
  {
    auto j = good;
    bos_at(7)(j);
    std::ofstream(file) << j.dump();
    CHECK(TekkenTokenizer::load(file).bos_id() == 7);
  }
  std::ofstream(file) << "{\"config\": " << std::string(100000, '[') << std::string(100000, ']') << "}";
  CHECK_THROWS_WITH(TekkenTokenizer::load(file), Catch::Contains("nested deeper than 64"));
}

TEST_CASE("tekken: a file with another pattern is refused", "[e2e][tokenizer]") {
  TempDir tmp;
  const fs::path dir = fs::path(__FILE__).parent_path() / "data";
  std::ifstream in(dir / "tekken_small.json");
  auto j = nlohmann::json::parse(in);
  j["config"]["pattern"] = "\\w+";
  std::ofstream(tmp.path / "t.json") << j.dump();
  CHECK_THROWS_WITH(TekkenTokenizer::load(tmp.path / "t.json"),
                    Catch::Contains("not the Tekken pattern"));
  CHECK_THROWS_WITH(TekkenTokenizer::load(tmp.path / "missing.json"),
                    Catch::Contains("cannot open"));
}

// By hand, with the real file: see harness/e2e/make_tekken_fixture.py (full).
TEST_CASE("tekken: ids equal mistral_common's on the full Mistral-Nemo tokenizer",
          "[.tekken-full]") {
  const char* file = std::getenv("DF11_TEKKEN_FILE");
  const char* cases = std::getenv("DF11_TEKKEN_CASES");
  if (!file || !cases) FAIL("set DF11_TEKKEN_FILE and DF11_TEKKEN_CASES (this test runs only when asked for)");
  const TekkenTokenizer tok = TekkenTokenizer::load(file);
  CHECK(tok.vocab_size() == 131072);
  check_tekken_cases(tok, cases);
}
