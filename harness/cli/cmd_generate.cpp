// `df11 generate`: greedy generation with the Mistral forward pass on BF16, DF11 or CPU-offloaded
// weights, with timings, peak memory, an optional bit-for-bit BF16-vs-DF11 check, and a JSON
// form for benchmark scripts on the GPU machines.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "codec/common.hpp"
#include "datasets/json_io.hpp"
#include "e2e/factory.hpp"
#include "e2e/generate.hpp"
#include "e2e/tokenizer.hpp"
#include "fused/fused_gemv.hpp"

namespace df11::cli {
namespace {

// Bounds of a run: the CUDA model's grids take at most 65535 rows; a row's positions (prompt and
// new tokens) at most 2^20, the order of Mistral-Nemo's context (the KV cache is sized for them).
constexpr int kMaxBatch = 65535;
constexpr int64_t kMaxPositions = int64_t{1} << 20;

struct GenerateArgs {
  std::string model_dir;
  std::string config;  // --model's architecture, for the official single-file DF11 layout
  std::string synthetic;
  int64_t layers = 0;  // synthetic only: 0 = the config's
  int64_t vocab = 0;
  std::string prompt_ids;
  int prompt_len = 0;
  std::string tokenizer;  // tekken.json
  std::string prompt;     // text, encoded with the tokenizer
  int max_new = 16;
  std::string weights = "df11";
  std::string variant;
  int batch = 1;
  std::string backend = "auto";
  uint64_t seed = 0;
  bool check = false;
  bool json = false;
  int threads = 0;
  uint64_t chunk_bytes = 0;
  bool fused_gemv = false;
  int fused_max_rows = 0;  // with --fused-gemv; 0: the fused decode's default
  bool fused_mma = false;  // with --fused-gemv: the tensor-core kernel
  bool overlap = false;
  std::string slice_l2 = "persisting";  // with --chunk-bytes: persisting | normal
  std::string slice_start = "early";     // with --chunk-bytes: early | serial
  std::string decode_order = "ascending";  // CUDA, DF11 whole blocks: ascending | descending
  int kernel_times = 0;    // CUDA: decode steps traced after the timed generation (0: none)
  bool graphs = false;     // CUDA: decode steps replayed as a CUDA graph
  std::string runs_file;  // --runs: one run's options per line, one model load for all
  bool dry_run = false;   // --dry-run: every run checked, its decoders named; nothing loaded or run
  std::string dump_logits;  // --dump-logits FILE: every step's logits, JSON lines
  std::string synthesize_on = "auto";  // synthetic only: host, cuda, or auto (the backend's)
  bool stop_at_eos = false;  // rows end at an EOS: the tokenizer's, else the config's
  std::string eos_ids;       // --eos-id: the stop ids (implies --stop-at-eos)
  bool eos_ids_given = false;  // --eos-id was on the command line (an empty list is refused)
};

// The ids a config.json's "eos_token_id" names (a number or a list of numbers; absent: none).
std::vector<int32_t> config_eos_ids(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file))
    throw Error(fmt::format("--stop-at-eos: cannot read {} (its eos_token_id); give --eos-id", file.string()));
  const nlohmann::json j = read_json_file(file);
  const auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return {};
  std::vector<int32_t> ids;
  const auto add = [&](const nlohmann::json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      throw Error(fmt::format("{}: eos_token_id: {} is not a token id", file.string(), brief(v)));
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  };
  if (it->is_array()) {
    for (const auto& v : *it) add(v);
  } else {
    add(*it);
  }
  return ids;
}

// The stop ids of --eos-id / --stop-at-eos: the listed ids; else the tokenizer's EOS; else the
// model's config.json (--config's where given: a DF11 directory's own holds only dfloat11_config);
// else, for --synthetic (Mistral's configs), 2, the id `df11 synth` writes. Resolved before the
// weights load, so that a bad id or config fails at once.
std::vector<int32_t> resolve_stop_ids(const GenerateArgs& a, const std::optional<e2e::TekkenTokenizer>& tok) {
  if (a.eos_ids_given) {
    try {
      return e2e::parse_ids(a.eos_ids);
    } catch (const Error&) {
      throw Error(fmt::format("--eos-id: '{}' is not a list of token ids (e.g. 2 or 2,32768)", a.eos_ids));
    }
  }
  if (!a.stop_at_eos) return {};
  if (tok) return {tok->eos_id()};
  if (!a.synthetic.empty()) return {2};
  if (a.config.empty() && !std::filesystem::is_directory(a.model_dir))
    throw Error(fmt::format("{}: not a directory", a.model_dir));
  std::filesystem::path file = a.config.empty() ? std::filesystem::path(a.model_dir) : std::filesystem::path(a.config);
  if (std::filesystem::is_directory(file)) file /= "config.json";
  std::vector<int32_t> ids = config_eos_ids(file);
  if (ids.empty()) {
    throw Error(fmt::format("--stop-at-eos: {} names no eos_token_id; give --eos-id or --tokenizer", file.string()));
  }
  return ids;
}

// The model --check runs beside the selected one: BF16 against DF11 either way round; the
// CPU-offloaded model is BF16 too, so it is checked against DF11.
e2e::WeightsKind check_partner(e2e::WeightsKind w) {
  return w == e2e::WeightsKind::df11 ? e2e::WeightsKind::bf16 : e2e::WeightsKind::df11;
}

std::string mb(uint64_t bytes) {
  return fmt::format("{:.1f} MB", static_cast<double>(bytes) / 1e6);
}

nlohmann::json timing_json(const e2e::Timing& t) {
  return {{"prefill_tokens", t.prefill_tokens},
          {"prefill_s", t.prefill_s},
          {"prefill_tokens_per_s", t.prefill_tokens_per_s()},
          {"decode_tokens", t.decode_tokens},
          {"decode_s", t.decode_s},
          {"decode_tokens_per_s", t.decode_tokens_per_s()},
          {"decode_steps", t.decode_steps},
          // Decode steps left out of the two above: they also captured the --graphs step graph.
          {"setup_steps", t.setup_steps},
          {"setup_steps_s", t.setup_s}};
}

// A row's positions: its prompt's tokens and the new ones, counted in 64 bits.
void check_positions(int64_t prompt_tokens, int max_new) {
  if (prompt_tokens + max_new > kMaxPositions) {
    throw Error(fmt::format("--max-new-tokens {} and a prompt of {} tokens: a row holds at most {} positions",
                            max_new, prompt_tokens, kMaxPositions));
  }
}

// A --backend by name; need_device false (--dry-run): cuda without asking for a device.
e2e::Backend backend_named(const std::string& name, bool need_device) {
  if (!need_device && name == "cuda") return e2e::Backend::cuda;
  return e2e::resolve_backend(name);
}

// The checks of one run's options (the model's are run_generate's).
void check_run_args(const GenerateArgs& a, bool need_device = true) {
  if (a.prompt_len < 0) throw Error(fmt::format("--prompt-len must be 0 or more, got {}", a.prompt_len));
  const int n_prompt_sources = (!a.prompt_ids.empty()) + (a.prompt_len > 0) + (!a.prompt.empty());
  if (n_prompt_sources != 1)
    throw Error("generate: give exactly one of --prompt-ids, --prompt-len (> 0) and --prompt (not empty)");
  if (!a.prompt.empty() && a.tokenizer.empty())
    throw Error("generate: --prompt TEXT needs --tokenizer tekken.json");
  if (a.max_new <= 0)
    throw Error(fmt::format("--max-new-tokens must be positive, got {}", a.max_new));
  if (a.batch <= 0 || a.batch > kMaxBatch)
    throw Error(fmt::format("--batch must be in [1, {}], got {}", kMaxBatch, a.batch));
  // Before the model loads; a --prompt's length is known once tokenized (run_one checks again).
  const int64_t listed_ids =
      a.prompt_ids.empty() ? 0 : std::count(a.prompt_ids.begin(), a.prompt_ids.end(), ',') + 1;
  check_positions(std::max<int64_t>(a.prompt_len, listed_ids), a.max_new);
  // (the GEMV kernels take 16 rows, the tensor-core one 64)
  if (const int most = a.fused_mma ? dec::kFusedMmaMaxBatch : dec::kFusedMaxBatch;
      a.fused_max_rows < 0 || a.fused_max_rows > most) {
    throw Error(fmt::format("--fused-max-rows must be in [0, {}]{}, got {}", most,
                            a.fused_mma ? " with --fused-mma" : " (with --fused-mma: up to 64)", a.fused_max_rows));
  }

  const e2e::Backend backend = backend_named(a.backend, need_device);
  const e2e::WeightsKind weights = e2e::parse_weights(a.weights);
  if (!a.variant.empty() && weights != e2e::WeightsKind::df11 && !a.check && !a.fused_gemv) {
    throw Error("--variant selects the DF11 decoder: it needs --weights df11 (or --check, or --fused-gemv)");
  }
  if (a.fused_gemv && weights == e2e::WeightsKind::cpu_offload) {
    throw Error("--fused-gemv: the fused kernels read bf16 or df11 weights, not cpu-offload");
  }
  if (a.fused_gemv && backend != e2e::Backend::cuda) {
    throw Error("--fused-gemv: the fused decode + GEMV kernels run on the CUDA backend only");
  }
  if (a.slice_l2 == "normal" && a.chunk_bytes == 0) {
    throw Error("--slice-l2 says how --chunk-bytes slices are cached: 'normal' needs --chunk-bytes");
  }
  if (a.slice_start == "serial" && a.chunk_bytes == 0) {
    throw Error("--slice-start says when --chunk-bytes slices' decodes start: 'serial' needs --chunk-bytes");
  }
  if (a.decode_order == "descending" && (backend != e2e::Backend::cuda || a.chunk_bytes != 0 || a.overlap ||
                                         (weights != e2e::WeightsKind::df11 && !a.check))) {
    throw Error("--decode-order orders the units of a DF11 block's decode on the GPU before the block's GEMMs: "
                "it needs --backend cuda, DF11 weights (or --check) and whole blocks (no --chunk-bytes or --overlap)");
  }
  if (a.fused_max_rows != 0 && !a.fused_gemv) {
    throw Error("--fused-max-rows sets the passes that --fused-gemv runs fused: it needs --fused-gemv");
  }
  if (a.fused_mma && !a.fused_gemv) {
    throw Error("--fused-mma says which fused kernels --fused-gemv runs (the tensor-core one): it needs --fused-gemv");
  }
  if (a.overlap && backend != e2e::Backend::cuda) {
    throw Error("--overlap decodes (or copies) weights on a second CUDA stream beside the GEMMs: it needs --backend cuda");
  }
  if (a.graphs && (backend != e2e::Backend::cuda || a.overlap || weights == e2e::WeightsKind::cpu_offload)) {
    throw Error("--graphs replays a decode step's kernels as one CUDA graph: it needs --backend cuda and bf16 or df11 "
                "weights, without --overlap");
  }
  if (a.kernel_times < 0) throw Error(fmt::format("--kernel-times must be 0 or more, got {}", a.kernel_times));
  if (a.kernel_times > a.max_new - 1) {
    throw Error(fmt::format("--kernel-times {}: a generation of --max-new-tokens {} has {} decode steps to trace",
                            a.kernel_times, a.max_new, a.max_new - 1));
  }
  if (a.kernel_times > 0 && backend != e2e::Backend::cuda) {
    throw Error("--kernel-times traces the GPU's kernels (CUPTI): it needs --backend cuda");
  }
}

// Per decode step: what `--kernel-times` traced (see e2e::trace_decode_steps), as JSON.
nlohmann::json kernel_times_json(const e2e::TracedSteps& t, double timed_step_s) {
  const double n = t.steps;
  nlohmann::json kinds = nlohmann::json::object(), counts = nlohmann::json::object();
  for (int k = 0; k < trace::kKinds; ++k) {
    const auto kind = static_cast<trace::Kind>(k);
    kinds[trace::to_string(kind)] = t.device.of(kind) / n;
    counts[trace::to_string(kind)] = static_cast<double>(t.device.records(kind)) / n;
  }
  return {{"steps", t.steps},
          // the untraced generation's decode step (null: it timed none, every row having stopped)
          {"timed_step_s", timed_step_s > 0 ? nlohmann::json(timed_step_s) : nlohmann::json()},
          {"traced_step_s", t.wall_s / n},
          {"busy_s", t.device.busy_s / n},  // the device busy with any kernel or copy
          {"kernel_s", kinds},
          {"records", counts}};
}

// A row's text: ids past the tokenizer's vocabulary (a model whose embedding rows outnumber its
// tokenizer's ids, as padded vocabularies do) read "[id N]", between the decoded runs of the rest.
std::string decode_text(const e2e::TekkenTokenizer& tok, const std::vector<int32_t>& row) {
  std::string text;
  std::size_t from = 0;
  for (std::size_t i = 0; i <= row.size(); ++i) {
    if (i < row.size() && row[i] < tok.vocab_size()) continue;
    text += tok.decode(std::span<const int32_t>(row).subspan(from, i - from));
    if (i < row.size()) text += fmt::format("[id {}]", row[i]);
    from = i + 1;
  }
  return text;
}

// --dump-logits FILE: one JSON line a step, {"step": s, "rows": [[logit, ...], ...]} (each row's
// last position; step 0 is the prefill), floats to 9 significant digits (float32 exactly). Written
// to FILE.tmp-PID and renamed when generation ends, so FILE is never a partial dump.
class LogitsDump {
 public:
  LogitsDump(std::filesystem::path path, int rows, int64_t vocab)
      : path_(std::move(path)), tmp_(path_.string() + fmt::format(".tmp-{}", ::getpid())), rows_(rows), vocab_(vocab) {
    out_.open(tmp_, std::ios::binary | std::ios::trunc);
    if (!out_) throw Error(fmt::format("--dump-logits {}: cannot create {}", path_.string(), tmp_.string()));
  }
  LogitsDump(const LogitsDump&) = delete;
  LogitsDump& operator=(const LogitsDump&) = delete;
  ~LogitsDump() {
    if (!done_) {
      std::error_code ec;
      std::filesystem::remove(tmp_, ec);
    }
  }
  void write(int step, std::span<const float> logits) {
    std::string line = fmt::format("{{\"step\": {}, \"rows\": [", step);
    for (int r = 0; r < rows_; ++r) {
      line += r ? "], [" : "[";
      const auto row = logits.subspan(static_cast<std::size_t>(r * vocab_), static_cast<std::size_t>(vocab_));
      for (std::size_t i = 0; i < row.size(); ++i) {
        if (i) line += ", ";
        // (not finite: the tokens Python's json reads, where JSON has none)
        line += std::isfinite(row[i]) ? fmt::format("{:.9g}", row[i])
                : std::isnan(row[i])  ? std::string("NaN")
                                      : std::string(row[i] > 0 ? "Infinity" : "-Infinity");
      }
    }
    line += "]]}\n";
    out_ << line;
  }
  void finish() {
    out_.close();
    if (!out_) throw Error(fmt::format("--dump-logits {}: writing {} failed", path_.string(), tmp_.string()));
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) throw Error(fmt::format("--dump-logits {}: {}", path_.string(), ec.message()));
    done_ = true;
  }

 private:
  std::filesystem::path path_, tmp_;
  std::ofstream out_;
  int rows_;
  int64_t vocab_;
  bool done_ = false;
};

// The models a run builds: its own, and with --check its partner.
std::vector<e2e::ModelRequest> requests_of(const GenerateArgs& a, e2e::Backend backend, e2e::WeightsKind weights,
                                           int max_positions) {
  e2e::ModelRequest req;
  req.backend = backend;
  req.weights = weights;
  // BF16 with --fused-gemv: the variant's layout gives the fused kernels' partition.
  req.variant = weights == e2e::WeightsKind::df11 || a.fused_gemv ? a.variant : "";
  req.batch = a.batch;
  req.max_positions = max_positions;
  req.threads = a.threads;
  req.chunk_bytes = a.chunk_bytes;  // --check's partner slices the same way (same GEMMs)
  req.fused_gemv = a.fused_gemv;    // and runs the same fused kernels (on BF16 words, or decoding)
  req.fused_max_rows = a.fused_max_rows;  // on passes of the same rows
  req.fused_mma = a.fused_mma;            // with the same kernel
  req.overlap = a.overlap;          // and overlaps its slices the same way
  req.slice_l2 = a.slice_l2 == "persisting";  // (caching only: the partner's slices are resident BF16 or its own)
  req.descending_decode = a.decode_order == "descending";  // (the same bits either way)
  req.early_slices = a.slice_start == "early";             // (the same bits either way)
  req.graphs = a.graphs;                                   // (the same kernels, so the same bits)
  std::vector<e2e::ModelRequest> requests{req};
  if (a.check) {
    e2e::ModelRequest ref = req;
    ref.weights = check_partner(weights);
    ref.variant = ref.weights == e2e::WeightsKind::df11 || a.fused_gemv ? a.variant : "";
    // Whole matrices overlapped (no --chunk-bytes) run the whole-block path's very GEMMs: the
    // partner runs whole blocks on one stream, so every such check tests that claim too.
    if (a.overlap && a.chunk_bytes == 0) ref.overlap = false;
    requests.push_back(ref);
  }
  return requests;
}

// --dry-run: one run's options checked as its backend would check them (cuda without a device)
// and the decoders its models would use named; nothing loaded. Throws what the run would.
std::string dry_run(const GenerateArgs& r) {
  check_run_args(r, /*need_device=*/false);
  const e2e::Backend backend = backend_named(r.backend, false);
  const e2e::WeightsKind weights = e2e::parse_weights(r.weights);
  std::string what = fmt::format("{} {}", r.backend == "auto" ? e2e::to_string(backend) : r.backend, r.weights);
  for (const e2e::ModelRequest& req : requests_of(r, backend, weights, r.prompt_len + r.max_new)) {
    if (const std::string d = e2e::request_decoders(req); !d.empty()) what += "; " + d;
  }
  return what;
}

// One run: builds its models (from `cache` when given, else loading the source unit by unit),
// generates, prints the result (text, or one JSON line). Returns 2 when --check failed.
int generate_once(const GenerateArgs& a, const e2e::WeightSource& source, e2e::FeedCache* cache,
                  const std::optional<e2e::TekkenTokenizer>& tok, const std::vector<int32_t>& stop_ids,
                  std::chrono::steady_clock::time_point t_setup, const std::string& run_spec) {
  const e2e::Backend backend = e2e::resolve_backend(a.backend);
  const e2e::WeightsKind weights = e2e::parse_weights(a.weights);
  const e2e::ModelShape& shape = source.shape();
  std::vector<int32_t> prompt = !a.prompt.empty() ? tok->encode(a.prompt, true)
                                : a.prompt_ids.empty()
                                    ? e2e::random_prompt(a.prompt_len, shape.vocab, a.seed)
                                    : e2e::parse_ids(a.prompt_ids);
  for (const int32_t t : prompt) {
    if (t >= shape.vocab)
      throw Error(
          fmt::format("prompt token {} is outside the model's vocabulary [0, {})", t, shape.vocab));
  }
  if (tok && shape.vocab > tok->vocab_size()) {
    fmt::print(stderr, "note: the model's vocabulary ({}) is larger than the tokenizer's ({}): ids past it print as "
               "[id N]\n", shape.vocab, tok->vocab_size());
  }
  const auto prompts = e2e::batch_prompts(prompt, a.batch, shape.vocab, a.prompt.empty());
  for (const int32_t t : stop_ids) {
    if (t >= shape.vocab)
      throw Error(fmt::format("stop id {} (--eos-id, --stop-at-eos) is outside the model's vocabulary [0, {})", t,
                              shape.vocab));
  }

  check_positions(static_cast<int64_t>(prompt.size()), a.max_new);
  const std::vector<e2e::ModelRequest> requests =
      requests_of(a, backend, weights, static_cast<int>(prompt.size()) + a.max_new);
  const bool tty = !a.json && ::isatty(2) == 1;  // a progress line only for a person watching
  const e2e::BuildProgress progress = [&](int done, int total, const std::string& name) {
    if (tty) fmt::print(stderr, "\rgenerate: loading {}/{} units ({})\033[K", done, total, name);
  };
  if (cache != nullptr && backend == e2e::Backend::cuda) {
    // The earlier run's models are gone (locals of its run_one): the cached device weights that
    // this run will not use go too, then the peak starts again, so that it covers this run's
    // weights (reused or built) and models and nothing an earlier run left.
    e2e::cuda_keep_weights_for(*cache, requests);
    e2e::cuda_reset_peak_memory();
  }
  const e2e::HostPrepTimes prep0 = e2e::host_prep_times();
  auto models = cache != nullptr ? e2e::build_models(*cache, requests, progress)
                                 : e2e::build_models(source, requests, progress);
  if (tty) fmt::print(stderr, "\r\033[K");
  const double setup_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_setup).count();
  // What of the setup went to the units' host bits and to encoding (the rest: loading,
  // allocation, uploads, device synthesis).
  const double bits_s = e2e::host_prep_times().bits_s - prep0.bits_s;
  const double encode_s = e2e::host_prep_times().encode_s - prep0.encode_s;
  const double upload_s = e2e::host_prep_times().upload_s - prep0.upload_s;

  e2e::Model& model = *models[0];
  e2e::Model* reference = a.check ? models[1].get() : nullptr;
  std::optional<LogitsDump> dump;
  if (!a.dump_logits.empty()) dump.emplace(a.dump_logits, static_cast<int>(prompts.size()), shape.vocab);
  const e2e::GenerationResult res =
      e2e::generate(model, prompts, a.max_new, reference, stop_ids,
                    dump ? e2e::LogitsSink([&](int step, std::span<const float> l) { dump->write(step, l); })
                         : e2e::LogitsSink());
  if (dump) dump->finish();
  const e2e::MemoryStats mem = model.memory();
  const uint64_t rss = e2e::peak_rss_bytes();
  const uint64_t device_peak = backend == e2e::Backend::cuda ? e2e::cuda_peak_memory() : 0;
  const std::string check_state = !a.check ? "not_run" : res.mismatch ? "failed" : "passed";
  // The method line as the timed generation left it (the traced steps below would add their
  // graph replays to its count).
  const std::string method = model.describe();
  // Decode steps again, traced (after the timed ones, which tracing would slow): where a step's
  // device time goes. Not after a failed check.
  std::optional<e2e::TracedSteps> traced;
  std::string trace_why_not;
  if (a.kernel_times > 0 && !res.mismatch) {
    if (const auto tracer = e2e::cuda_step_tracer(trace_why_not)) {
      try {
        traced = e2e::trace_decode_steps(model, prompts, a.kernel_times, *tracer);
      } catch (const e2e::TracerUnavailable& e) {
        trace_why_not = e.what();  // reported as not measured, the run's other figures stand
      }
    }
    if (traced) {
      for (std::size_t b = 0; b < res.tokens.size(); ++b) {
        // (a row that stopped at an EOS kept fewer tokens than the traced steps make)
        const auto& got = traced->tokens[b];
        const std::size_t n = std::min(got.size(), res.tokens[b].size());
        if (!std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(n), res.tokens[b].begin())) {
          throw Error(fmt::format("--kernel-times: the traced steps gave other tokens than the generation (row {})", b));
        }
      }
    }
  }
  const double timed_step_s = res.timing.decode_steps > 0 ? res.timing.decode_s / res.timing.decode_steps : 0;

  if (a.json) {
    nlohmann::json j = {
        {"schema", "df11.generate/1"},
        {"model", source.description()},
        {"config",
         {{"layers", shape.n_layers},
          {"hidden", shape.hidden},
          {"intermediate", shape.intermediate},
          {"heads", shape.n_heads},
          {"kv_heads", shape.n_kv_heads},
          {"head_dim", shape.head_dim},
          {"vocab", shape.vocab},
          {"rope_theta", shape.rope_theta},
          {"rms_norm_eps", shape.rms_norm_eps},
          {"sliding_window", shape.sliding_window > 0 ? nlohmann::json(shape.sliding_window) : nlohmann::json()}}},
        {"backend", e2e::to_string(backend)},
        {"device", backend == e2e::Backend::cuda ? e2e::cuda_device_name() : "cpu"},
        {"weights", a.weights},
        {"variant", a.variant},  // as asked ("": the default decoder)
        {"method", method},
        {"batch", a.batch},
        {"chunk_bytes", a.chunk_bytes},
        {"fused_gemv", a.fused_gemv},
        {"fused_max_rows", a.fused_max_rows},  // as asked (0: the fused decode's default; "method" says which)
        {"fused_mma", a.fused_mma},
        {"overlap", a.overlap},
        {"slice_l2", a.slice_l2},  // as asked; "method" says whether a window was set
        {"slice_start", a.slice_start},  // as asked; "method" says how the slices' decodes started
        {"decode_order", a.decode_order},
        {"graphs", a.graphs},  // as asked; "method" says whether the steps were replayed
        {"prompt_len", prompt.size()},
        {"new_tokens", a.max_new},
        {"seed", a.seed},
        {"setup_s", setup_s},
        {"setup_host_bits_s", bits_s},  // of setup_s: the units' host bits (synthesis, ...)
        {"setup_encode_s", encode_s},   // of setup_s: encoding them
        {"setup_upload_s", upload_s},   // of setup_s: placing them (images, device copies, pinned copies)
        // The selected model's device weights came from an earlier run (--runs): setup_s then
        // holds no upload.
        {"weights_reused", model.weights_reused()},
        {"prefill_tokens_per_s", res.timing.prefill_tokens_per_s()},
        {"decode_tokens_per_s", res.timing.decode_tokens_per_s()},
        {"timing", timing_json(res.timing)},
        {"peak_device_bytes", device_peak},
        {"peak_host_rss_bytes", rss},
        {"weight_bytes", mem.weight_bytes},
        {"decode_buffer_bytes", mem.decode_buffer_bytes},
        {"kv_cache_bytes", mem.kv_cache_bytes},
        {"check", check_state},
        {"tokens", res.tokens},
        {"stop_ids", stop_ids},             // --eos-id / --stop-at-eos ([]: none)
        {"rows_stopped", res.rows_stopped},   // rows that generated one (their tokens end with it)
        {"steps", res.steps},                 // forward passes: the prefill and the decode steps
    };
    if (traced) {
      j["kernel_times"] = kernel_times_json(*traced, timed_step_s);
    } else if (a.kernel_times > 0 && !res.mismatch) {
      j["kernel_times"] = {{"steps", 0}, {"why_not", trace_why_not}};
    }
    if (tok) {
      std::vector<std::string> texts;
      for (const auto& row : res.tokens) texts.push_back(decode_text(*tok, row));
      j["text"] = texts;
    }
    if (a.check) {
      j["check_reference"] = reference->describe();
      j["check_steps"] = res.steps_checked;
      j["reference_timing"] = timing_json(*res.reference_timing);
      j["mismatch"] = res.mismatch ? nlohmann::json{{"step", res.mismatch->step},
                                                    {"row", res.mismatch->row},
                                                    {"index", res.mismatch->index},
                                                    {"value", res.mismatch->a},
                                                    {"reference_value", res.mismatch->b}}
                                   : nlohmann::json(nullptr);
    }
    if (!run_spec.empty()) j["run"] = run_spec;
    fmt::print("{}\n", j.dump());
  } else {
    if (!run_spec.empty()) fmt::print("== run: {}\n", run_spec);
    fmt::print("model: {}: {}\n", source.description(), e2e::describe(shape));
    fmt::print("method: {} on {}; batch {}, prompt {} tokens, {} new\n", method,
               backend == e2e::Backend::cuda ? e2e::cuda_device_name() : "the CPU", a.batch,
               prompt.size(), a.max_new);
    if (tok) fmt::print("prompt: {} tokens: {}\n", prompt.size(), fmt::join(prompt, " "));
    if (!stop_ids.empty()) {
      fmt::print("stop ids {}: {} of {} rows stopped; {} forward passes\n", fmt::join(stop_ids, ","),
                 res.rows_stopped, a.batch, res.steps);
    }
    for (std::size_t b = 0; b < res.tokens.size(); ++b) {
      fmt::print("row {}: {}\n", b, fmt::join(res.tokens[b], " "));
      if (tok) fmt::print("row {} text: {}\n", b, decode_text(*tok, res.tokens[b]));
    }
    fmt::print("prefill: {} tokens in {:.4f} s = {:.1f} tokens/s\n", res.timing.prefill_tokens,
               res.timing.prefill_s, res.timing.prefill_tokens_per_s());
    fmt::print("decode: {} tokens in {:.4f} s = {:.1f} tokens/s{}\n", res.timing.decode_tokens,
               res.timing.decode_s, res.timing.decode_tokens_per_s(),
               res.timing.setup_steps > 0
                   ? fmt::format(" (not counted: {} step(s) that captured the graph, {:.4f} s)", res.timing.setup_steps,
                                 res.timing.setup_s)
                   : "");
    fmt::print("memory: weights {} (decode buffer {}), KV cache {}; peak host RSS {}",
               mb(mem.weight_bytes), mb(mem.decode_buffer_bytes), mb(mem.kv_cache_bytes), mb(rss));
    if (backend == e2e::Backend::cuda) fmt::print("; peak device memory {}", mb(device_peak));
    fmt::print("\nsetup: {:.2f} s (host bits {:.2f} s, encoding {:.2f} s, placing {:.2f} s){}\n", setup_s, bits_s,
               encode_s, upload_s,
               model.weights_reused() ? " (device weights of an earlier run reused)" : "");
    if (traced) {
      const trace::Summary& d = traced->device;
      const double n = traced->steps;
      auto ms = [&](double s) { return s / n * 1e3; };
      fmt::print("kernel time per decode step ({} steps traced): device busy {:.3f} ms of {} untraced "
                 "({:.3f} ms traced); ",
                 traced->steps, ms(d.busy_s),
                 timed_step_s > 0 ? fmt::format("{:.3f} ms", timed_step_s * 1e3) : std::string("none timed"),
                 ms(traced->wall_s));
      for (int k = 0; k < trace::kKinds; ++k) {
        const auto kind = static_cast<trace::Kind>(k);
        fmt::print("{} {:.3f} ms{}", trace::to_string(kind), ms(d.of(kind)), k + 1 < trace::kKinds ? ", " : "; ");
      }
      fmt::print("{:.0f} kernels\n", static_cast<double>(d.kernels()) / n);
    } else if (a.kernel_times > 0 && !res.mismatch) {
      fmt::print("kernel times: not measured ({})\n", trace_why_not);
    }
    if (a.check && !res.mismatch) {
      fmt::print(
          "check: passed: {} and {} logits bit-identical at all {} steps ({} rows x {} logits), "
          "same tokens\n",
          model.describe(), reference->describe(), res.steps_checked, a.batch, shape.vocab);
    }
  }
  std::fflush(stdout);  // a run cut short later still leaves this one's line
  if (res.mismatch) {
    fmt::print(stderr, "df11: check FAILED: {}\n",
               res.mismatch->describe(model.describe(), reference->describe()));
    return 2;
  }
  return 0;
}

// One run (generate_once); running out of host memory names the options that sized it instead of
// saying std::bad_alloc.
int run_one(const GenerateArgs& a, const e2e::WeightSource& source, e2e::FeedCache* cache,
            const std::optional<e2e::TekkenTokenizer>& tok, const std::vector<int32_t>& stop_ids,
            std::chrono::steady_clock::time_point t_setup, const std::string& run_spec) {
  try {
    return generate_once(a, source, cache, tok, stop_ids, t_setup, run_spec);
  } catch (const std::bad_alloc&) {
    throw Error(fmt::format("generate: out of host memory for this run (--batch {}, --max-new-tokens {}): the "
                            "weights, KV cache and logits do not fit; a smaller --batch, --max-new-tokens or prompt "
                            "needs less",
                            a.batch, a.max_new));
  }
}

// The options a line of --runs may set (each line starts from the command line's values).
void parse_run_line(const std::string& line, GenerateArgs& r) {
  CLI::App app("a run of df11 generate --runs");
  app.add_option("--weights", r.weights)->check(CLI::IsMember({"bf16", "df11", "cpu-offload"}));
  app.add_option("--variant", r.variant);
  app.add_option("--batch", r.batch);
  app.add_option("--prompt-len", r.prompt_len);
  app.add_option("--prompt-ids", r.prompt_ids);
  app.add_option("--max-new-tokens", r.max_new);
  app.add_flag("--check", r.check);
  app.add_option("--chunk-bytes", r.chunk_bytes)->check(unsigned_64());
  app.add_flag("--fused-gemv", r.fused_gemv);
  app.add_option("--fused-max-rows", r.fused_max_rows);
  app.add_flag("--fused-mma", r.fused_mma);
  app.add_flag("--overlap", r.overlap);
  app.add_option("--slice-l2", r.slice_l2)->check(CLI::IsMember({"persisting", "normal"}));
  app.add_option("--slice-start", r.slice_start)->check(CLI::IsMember({"early", "serial"}));
  app.add_option("--decode-order", r.decode_order)->check(CLI::IsMember({"ascending", "descending"}));
  app.add_option("--kernel-times", r.kernel_times);
  app.add_flag("--graphs", r.graphs);
  try {
    app.parse(line, false);
  } catch (const CLI::ParseError& e) {
    throw Error(fmt::format("--runs: line '{}': {} (a line takes --weights, --variant, --batch, --prompt-len, "
                            "--prompt-ids, --max-new-tokens, --check, --chunk-bytes, --slice-l2, --slice-start, --overlap, "
                            "--fused-gemv, --fused-max-rows, --fused-mma, --decode-order, --kernel-times, --graphs)",
                            line, e.what()));
  }
  // A line's prompt replaces the command line's.
  if (app.count("--prompt-len") > 0) {
    r.prompt_ids.clear();
    r.prompt.clear();
  }
  if (app.count("--prompt-ids") > 0) {
    r.prompt_len = 0;
    r.prompt.clear();
  }
}

int run_generate(const GenerateArgs& a) {
  const auto t_setup = std::chrono::steady_clock::now();
  if (a.model_dir.empty() == a.synthetic.empty())
    throw Error("generate: give exactly one of --model DIR and --synthetic");
  if ((a.layers || a.vocab) && a.synthetic.empty())
    throw Error("generate: --layers and --vocab apply to --synthetic only");
  if (!a.config.empty() && a.model_dir.empty())
    throw Error("generate: --config gives a --model DIR its architecture (a DF11 directory whose config.json holds "
                "only dfloat11_config)");
  if (a.synthesize_on != "auto" && a.synthetic.empty())
    throw Error("generate: --synthesize-on applies to --synthetic only");
  // (--layers and --vocab are range-checked where they are parsed: 1 .. the bounds a config.json's sizes have)
  std::vector<std::pair<std::string, GenerateArgs>> runs;  // a --runs line and its options
  if (!a.runs_file.empty()) {
    std::ifstream in(a.runs_file);
    if (!in) throw Error(fmt::format("--runs: cannot read {}", a.runs_file));
    for (std::string line; std::getline(in, line);) {
      const auto first = line.find_first_not_of(" \t\r");
      if (first == std::string::npos || line[first] == '#') continue;
      line = line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
      GenerateArgs r = a;
      parse_run_line(line, r);  // every line parsed before the model is loaded; checked when it runs
      runs.emplace_back(line, std::move(r));
    }
    if (runs.empty()) throw Error(fmt::format("--runs: {} holds no run", a.runs_file));
    if (!a.dump_logits.empty()) throw Error("--dump-logits writes one run's logits: not with --runs");
  } else if (!a.dry_run) {
    check_run_args(a);
  }
  if (a.dry_run) {
    if (runs.empty()) runs.emplace_back("", a);
    int refused = 0;
    for (const auto& [line, r] : runs) {
      const std::string name = line.empty() ? "(the command line)" : line;
      try {
        const std::string what = dry_run(r);
        if (a.json) {
          fmt::print("{}\n", nlohmann::json{{"schema", "df11.generate/1"}, {"run", line}, {"dry_run", what}}.dump());
        } else {
          fmt::print("ok      {}: {}\n", name, what);
        }
      } catch (const std::exception& e) {
        ++refused;
        if (a.json) {
          fmt::print("{}\n", nlohmann::json{{"schema", "df11.generate/1"}, {"run", line}, {"error", e.what()}}.dump());
        } else {
          fmt::print("REFUSED {}: {}\n", name, e.what());
        }
      }
    }
    if (refused > 0) fmt::print(stderr, "df11: {} of {} runs would be refused\n", refused, runs.size());
    return refused > 0 ? 1 : 0;
  }

  std::optional<e2e::TekkenTokenizer> tok;
  if (!a.tokenizer.empty()) tok = e2e::TekkenTokenizer::load(a.tokenizer);
  const std::vector<int32_t> stop_ids = resolve_stop_ids(a, tok);

  std::unique_ptr<e2e::WeightSource> source;
  if (!a.synthetic.empty()) {
    e2e::ModelShape shape = e2e::named_config(a.synthetic);
    if (a.layers) shape.n_layers = a.layers;
    if (a.vocab) shape.vocab = a.vocab;
    // On CUDA the matrices are generated on the GPU (the same bits the host makes), then
    // encoded or uploaded as every run asks.
    const bool on_gpu = a.synthesize_on == "cuda" ||
                        (a.synthesize_on == "auto" && e2e::resolve_backend(a.backend) == e2e::Backend::cuda);
    if (on_gpu && !e2e::cuda_available()) {
      throw Error(fmt::format("--synthesize-on cuda: {}", e2e::cuda_built() ? "no CUDA device is available (no driver or no GPU)"
                                                                             : "this build has no CUDA"));
    }
    source = e2e::synthetic_source(shape, a.seed, a.threads, a.synthetic,
                                   on_gpu ? e2e::cuda_synthesis() : e2e::SynthesisPlace{});
  } else {
    source = e2e::open_checkpoint(a.model_dir, a.threads,
                                  a.config.empty() ? std::nullopt : std::optional<std::filesystem::path>(a.config));
  }
  // A --check on the cpu backend with DF11's own decoder (no --variant) tests decode_cpu, which
  // also made the BF16 words of a DF11 directory's units: those come from the serial reference
  // decoder instead, or the check would pass whatever decode_cpu gave.
  const auto checks_decode_cpu = [](const GenerateArgs& r) {
    try {
      return r.check && r.variant.empty() && e2e::resolve_backend(r.backend) == e2e::Backend::cpu;
    } catch (const std::exception&) {  // a run whose backend cannot be had fails as that run
      return false;
    }
  };
  if (runs.empty() ? checks_decode_cpu(a)
                   : std::any_of(runs.begin(), runs.end(), [&](const auto& run) { return checks_decode_cpu(run.second); })) {
    source->set_reference_decode(true);
  }
  if (runs.empty()) return run_one(a, *source, nullptr, tok, stop_ids, t_setup, "");

  // Several runs: the units are loaded (synthesized, read) once and kept with every form a run
  // asked for; a failing run is reported and the next one goes on.
  e2e::FeedCache cache(*source);
  // CUPTI, once a run's --kernel-times has registered it, stays attached to the process: register
  // it before the first run when any run traces, so that every run is timed in the same state
  // (not the runs before the first trace without it and those after with it).
  std::unique_ptr<e2e::StepTracer> attached;
  const auto traces_on_cuda = [](const GenerateArgs& r) {
    try {
      return r.kernel_times > 0 && e2e::resolve_backend(r.backend) == e2e::Backend::cuda;
    } catch (const std::exception&) {  // a run whose backend cannot be had fails as that run
      return false;
    }
  };
  if (std::any_of(runs.begin(), runs.end(), [&](const auto& run) { return traces_on_cuda(run.second); })) {
    std::string why_not;
    attached = e2e::cuda_step_tracer(why_not);
  }
  int failed_runs = 0, failed_checks = 0;
  for (const auto& [line, r] : runs) {
    try {
      check_run_args(r);
      const int rc = run_one(r, *source, &cache, tok, stop_ids, std::chrono::steady_clock::now(), line);
      failed_checks += rc == 2;
    } catch (const std::exception& e) {
      ++failed_runs;
      if (a.json) {
        fmt::print("{}\n", nlohmann::json{{"schema", "df11.generate/1"}, {"run", line}, {"error", e.what()}}.dump());
        std::fflush(stdout);
      }
      fmt::print(stderr, "df11: run '{}' failed: {}\n", line, e.what());
    }
  }
  if (failed_runs + failed_checks > 0) {
    fmt::print(stderr, "df11: {} of {} runs failed, {} checks failed\n", failed_runs, runs.size(), failed_checks);
  }
  return failed_checks > 0 ? 2 : failed_runs > 0 ? 1 : 0;
}

}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate",
                                 "Greedy generation with the Mistral forward pass on BF16, DF11 or "
                                 "CPU-offloaded weights (--check: BF16 and DF11 bit for bit)");
  auto* model =
      cmd->add_option("--model", a->model_dir, "Checkpoint directory: Hugging Face BF16 or DF11");
  cmd->add_option("--config", a->config,
                  "With --model: a config.json (or a directory with one) whose architecture the model takes, for a "
                  "DF11 directory whose config.json holds only dfloat11_config (the official single-file layout)");
  auto* synth = cmd->add_option("--synthetic", a->synthetic,
                                "Synthetic weights of a named config: tiny or nemo")
                    ->check(CLI::IsMember({"tiny", "nemo"}));
  model->excludes(synth);
  cmd->add_option("--layers", a->layers,
                  "Synthetic only: number of decoder layers (default: the config's)")
      ->check(CLI::Range(int64_t{1}, int64_t{ckpt::kMaxLayers}));
  cmd->add_option("--vocab", a->vocab, "Synthetic only: vocabulary size (default: the config's)")
      ->check(CLI::Range(int64_t{1}, int64_t{ckpt::kMaxVocab}));
  cmd->add_option("--synthesize-on", a->synthesize_on,
                  "Synthetic only: where the weights are generated, host or cuda (the same bits either way); "
                  "auto: cuda when the backend is cuda")
      ->check(CLI::IsMember({"auto", "host", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--prompt-ids", a->prompt_ids, "Prompt token ids, comma separated (e.g. 1,2,3)");
  cmd->add_option("--prompt-len", a->prompt_len,
                  "A pseudo-random prompt of this many tokens (from --seed)");
  cmd->add_option("--tokenizer", a->tokenizer,
                  "Tekken tokenizer (tekken.json): encodes --prompt, decodes the output");
  cmd->add_option("--prompt", a->prompt, "Prompt text (needs --tokenizer); BOS is prepended");
  cmd->add_option("--max-new-tokens", a->max_new, "Tokens to generate per row")
      ->capture_default_str();
  cmd->add_flag("--stop-at-eos", a->stop_at_eos,
                "A row ends at its first EOS (the --tokenizer's, else the checkpoint's config.json eos_token_id, "
                "else 2 for --synthetic), generation when every row has; the batch still runs whole, so the "
                "other rows' bits do not change; decode tokens/s counts the rows still going");
  cmd->add_option("--eos-id", a->eos_ids, "Stop ids, comma separated (e.g. 2): --stop-at-eos with these ids");
  cmd->add_option("--weights", a->weights,
                  "How the weights are held: bf16, df11 or cpu-offload (CUDA only)")
      ->check(CLI::IsMember({"bf16", "df11", "cpu-offload"}))
      ->capture_default_str();
  cmd->add_option("--variant", a->variant,
                  fmt::format("DF11 decoder variant (default: decode_cpu on the CPU, {} on CUDA, {} "
                              "with --fused-gemv)",
                              e2e::kDefaultCudaVariant, e2e::kDefaultFusedVariant));
  cmd->add_option("--batch", a->batch,
                  "Rows; row b is the prompt with every id shifted by b (a --prompt text: the same "
                  "in every row)")
      ->capture_default_str();
  cmd->add_option("--backend", a->backend, "auto (cuda when a device is available), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the synthetic weights and of --prompt-len")
      ->check(unsigned_64())
      ->capture_default_str();
  cmd->add_flag(
      "--check", a->check,
      "Run BF16 and DF11 side by side; exit 2 at the first step whose logits differ in any bit");
  cmd->add_flag("--json", a->json, "Print one JSON object (for benchmark scripts) instead of text");
  add_threads(*cmd, a->threads, "CPU threads (0 = all cores)");
  cmd->add_option("--chunk-bytes", a->chunk_bytes,
                  "CUDA: run every block GEMM in row slices of about N bytes of weights, each decoded "
                  "(or copied) just before its GEMM while it is in L2 (e.g. 25000000 on an H100); "
                  "--check's partner slices the same way")
      ->check(unsigned_64());
  cmd->add_option("--slice-l2", a->slice_l2,
                  "CUDA, with --chunk-bytes and without --overlap: 'persisting' holds the slices in the persisting "
                  "L2 (an access-policy window over the reused buffer's first --chunk-bytes, where the device has "
                  "one), so that a decoded slice is never written back to DRAM; 'normal' leaves them to the cache")
      ->check(CLI::IsMember({"persisting", "normal"}))
      ->capture_default_str();
  cmd->add_option("--slice-start", a->slice_start,
                  "CUDA, DF11, with --chunk-bytes and without --overlap: 'early' lets each slice's decode start "
                  "before the kernel before it (a GEMM reading the reused buffer) ends, storing nothing before it is "
                  "done (programmatic dependent launch, sm_90 and later); 'serial' after it; the same bits")
      ->check(CLI::IsMember({"early", "serial"}))
      ->capture_default_str();
  cmd->add_option("--decode-order", a->decode_order,
                  "CUDA, DF11, whole blocks: 'descending' decodes a block's units last to first, so that its first "
                  "weights, which its first GEMM reads, are the last written and still in L2; the same bits")
      ->check(CLI::IsMember({"ascending", "descending"}))
      ->capture_default_str();
  cmd->add_flag("--overlap", a->overlap,
                "CUDA: each block matrix (with --chunk-bytes, each slice) is decoded (or copied) on a second, "
                "low-priority stream into one half of the reused buffer while the previous one's GEMM runs (each "
                "half holds a block's largest GEMM: the buffer is twice that where it is more than half a block, "
                "on Nemo 587 MB instead of 545); --check's partner overlaps the same way");
  cmd->add_option("--runs", a->runs_file,
                  "A file of runs, one per line, each the options --weights, --variant, --batch, --prompt-len, "
                  "--prompt-ids, --max-new-tokens, --check, --chunk-bytes, --slice-l2, --slice-start, --overlap, --fused-gemv, "
                  "--fused-max-rows, --fused-mma, --decode-order, --kernel-times, --graphs on top of the "
                  "command "
                  "line's ('#' comments): the model is loaded once and kept in host memory for all of them, and on "
                  "CUDA a run's device weights serve the next runs with the same weights, decoder and fused kernels "
                  "(with --json one line per run, or an error line)");
  cmd->add_option("--dump-logits", a->dump_logits,
                  "Write every step's logits to FILE: one JSON line a step, {\"step\", \"rows\": [[...], ...]} "
                  "(each row's last position; step 0 the prefill; float32 values exactly), for comparing the "
                  "forward pass with another implementation (tests/e2e/reference_mistral.py); not with --runs");
  cmd->add_flag("--dry-run", a->dry_run,
                "Check every run (each --runs line, or the command line) as its --backend would, --backend cuda "
                "without a device, and name the decoders its models would use; nothing is loaded or generated. "
                "Exit 1 when any run would be refused (scripts check a GPU run's lines this way before the GPU)");
  cmd->add_option("--kernel-times", a->kernel_times,
                  "CUDA: after the timed generation, run its first N decode steps again traced (CUPTI activity "
                  "records of every kernel and copy) and print where a step's device time went: decoders, GEMMs, "
                  "fused kernels, attention, the other forward-pass kernels, copies, and how long the device was "
                  "busy at all against the untraced step (the rest: launch gaps and host work); at most "
                  "--max-new-tokens - 1")
      ->capture_default_str();
  cmd->add_flag("--graphs", a->graphs,
                "CUDA, bf16 or df11 weights, without --overlap: a decode step's layers and head (all but the "
                "embedding rows) are captured into a CUDA graph at the second decode step and replayed from then on, "
                "the position read from the device: no launch gaps, the same kernels and bits (a capture that "
                "fails leaves the steps eager; the method line says which); --check's partner does the same");
  cmd->add_flag("--fused-gemv", a->fused_gemv,
                fmt::format("CUDA, bf16 or df11 weights: passes of at most --fused-max-rows rows (decode steps "
                            "at batch <= that) run the block GEMMs and the lm_head through the fused decode + "
                            "GEMV kernels, which read DF11 straight from its encoding (DF11 variant default {}: "
                            "fix64's units; a multi12 variant of DF11's layout: two passes; "
                            "multi12.gap5-cnt.*.t256.b16: the count layout, one pass); --check's partner runs "
                            "the same kernels on BF16 words",
                            e2e::kDefaultFusedVariant));
  cmd->add_option("--fused-max-rows", a->fused_max_rows,
                  fmt::format("With --fused-gemv: the most rows a pass runs fused, 1..{} (with --fused-mma 1..{}); "
                              "0 (default): where the variant's fused decode stopped beating decode-then-GEMM on the "
                              "H200 (4 rows for a fix64 variant, else 1; --fused-mma: 16)",
                              dec::kFusedMaxBatch, dec::kFusedMmaMaxBatch))
      ->check(CLI::Range(0, dec::kFusedMmaMaxBatch));
  cmd->add_flag("--fused-mma", a->fused_mma,
                "With --fused-gemv: the fused passes multiply on the tensor cores (fix64's units decoded as the "
                "fixed fused kernel does, 16 units at the same columns of 16 rows a CUDA block; passes of up "
                "to 16 rows by default, --fused-max-rows up to 64); needs a fix64 decoder whose fused decode is "
                "the fixed one (the default is) and matrices that tile: rows of a multiple of 128 elements, at "
                "least 2048, in groups of 16 units at the same columns (Nemo's do, tiny's do not); --check's "
                "partner runs the same kernel on BF16 words");
  cmd->callback([a, cmd] {
    a->eos_ids_given = cmd->count("--eos-id") > 0;
    exit_code() = run_generate(*a);
  });
}

}  // namespace df11::cli
