// GPU end-to-end test (ctest label `gpu`): on CUDA, BF16, DF11 (every decoder variant) and
// CPU-offloaded weights give bit-identical logits and tokens; the CUDA model agrees with the CPU
// model within the BF16-activation tolerance; the KV cache agrees with fresh prefix forwards; the
// official encoder's DF11 files run; device weights kept between runs (--runs) serve later runs
// bit for bit; --kernel-times counts the kernels of decode steps by kind; --graphs replays decode
// steps bit for bit. Exits 77 (ctest: skipped) when there is no device.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "codec/encoder.hpp"
#include "common/cuda_util.hpp"
#include "datasets/synthetic.hpp"
#include "decoder.hpp"
#include "fused/fused_gemv.hpp"
#include "e2e/cuda_kernels.cuh"
#include "e2e/factory.hpp"
#include "e2e/generate.hpp"

using namespace df11;
using namespace df11::e2e;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

ModelRequest request(Backend b, WeightsKind w, int batch, int positions,
                     const std::string& variant = "") {
  return ModelRequest{b, w, variant, batch, positions, 0};
}

// max |a - b| / max |b|
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return err / scale;
}

// Relative error of a's logits against ref's after both prefill the same prompts (from position 0).
double prefill_logit_error(Model& a, Model& ref, const std::vector<std::vector<int32_t>>& prompts) {
  std::vector<int32_t> feed;
  for (const auto& p : prompts) feed.insert(feed.end(), p.begin(), p.end());
  const int n = static_cast<int>(prompts.at(0).size());
  std::vector<float> la, lr;
  a.reset();
  ref.reset();
  a.forward(feed, n);
  ref.forward(feed, n);
  a.logits(la);
  ref.logits(lr);
  return relative_error(la, lr);
}

// Relative error of a's logits against ref's over a prefill and `steps` decode steps that feed
// both the same tokens (ref's greedy choices), the largest over all of them.
double forced_logit_error(Model& a, Model& ref, const std::vector<std::vector<int32_t>>& prompts, int steps) {
  double worst = prefill_logit_error(a, ref, prompts);
  std::vector<int32_t> next;
  std::vector<float> la, lr;
  for (int i = 0; i < steps; ++i) {
    ref.argmax(next);
    a.forward(next, 1);
    ref.forward(next, 1);
    a.logits(la);
    ref.logits(lr);
    worst = std::max(worst, relative_error(la, lr));
  }
  return worst;
}

void check_pair(Model& a, Model& b, const std::vector<std::vector<int32_t>>& prompts, int steps,
                const std::string& what) {
  const GenerationResult r = generate(a, prompts, steps, &b);
  expect(!r.mismatch && r.steps_checked == steps,
         fmt::format("{}: {} vs {}, batch {}: {}", what, a.describe(), b.describe(), prompts.size(),
                     r.mismatch ? r.mismatch->describe("a", "b")
                                : fmt::format("{} steps bit-identical", steps)));
}

// A fixture directory of the source tree: $DF11_SOURCE_DIR, else the working directory (the
// device check runs from the repository root of a copy whose path differs from the build's),
// else next to this file as it was compiled.
// Mistral-Nemo's shapes, one layer and a small vocabulary: big matrices, a short run.
ModelShape one_layer_nemo() {
  ModelShape s = named_config("nemo");
  s.n_layers = 1;
  s.vocab = 4096;
  return s;
}

std::filesystem::path fixture_dir(const std::string& rel) {
  if (const char* e = std::getenv("DF11_SOURCE_DIR")) return std::filesystem::path(e) / rel;
  if (std::filesystem::is_directory(std::filesystem::current_path() / rel)) return std::filesystem::current_path() / rel;
  return std::filesystem::path(__FILE__).parent_path() / "../.." / rel;
}

// Synthetic weights generated on the GPU are the host generator's bits: one matrix longer than
// the filler's 64 MB device slice (so a slice starts mid-matrix), every unit of a synthetic
// tiny model made through the filler, and a BF16 model generated in place on the device.
void check_gpu_synthesis() {
  const synth::MatrixFiller gpu = cuda_synth_filler();
  const std::size_t n = (std::size_t{1} << 25) + 70001;
  std::vector<uint16_t> host(n), dev(n, 0xBEEF);
  synth::fill_weights(host, "mlp.down_proj", 14336, 8, 21);
  gpu(dev, synth::matrix_recipe("mlp.down_proj", 14336, 8, 21));
  expect(host == dev, fmt::format("synthesis on the GPU: {} elements of down_proj equal the host's", n));

  const ModelShape tiny = named_config("tiny");
  const auto on_host = synthetic_source(tiny, 5, 0, "tiny");
  const auto on_gpu = synthetic_source(tiny, 5, 0, "tiny", cuda_synthesis());
  bool same = true;
  for (int u = 0; u < n_units(tiny); ++u) same = same && on_host->load(u).bf16() == on_gpu->load(u).bf16();
  expect(same, "synthesis on the GPU: every unit of synthetic tiny equals the host's");
  expect(on_gpu->description().find("generated on cuda") != std::string::npos,
         "synthesis on the GPU: the model's description says so: " + on_gpu->description());

  // A BF16 model whose units the device generates in place (never uploaded) against a DF11 model
  // encoded from the host's bits: bit-identical logits, so both made the same weights.
  const int batch = 2, steps = 6;
  expect(on_gpu->load(0).synthetic_plan() != nullptr, "synthesis on the GPU: the units offer their plans");
  auto in_place = build_models(*on_gpu, {request(Backend::cuda, WeightsKind::bf16, batch, 7 + steps)});
  auto from_host = build_models(*on_host, {request(Backend::cuda, WeightsKind::df11, batch, 7 + steps)});
  check_pair(*from_host[0], *in_place[0], batch_prompts(random_prompt(7, tiny.vocab, 2), batch, tiny.vocab), steps,
             "BF16 generated in place on the GPU vs DF11 of the host's bits");
}

void run() {
  check_gpu_synthesis();
  const ModelShape tiny = named_config("tiny");
  const auto src = synthetic_source(tiny, 0, 0, "tiny");
  const int steps = 16;
  for (const int batch : {1, 4}) {
    const auto prompts = batch_prompts(random_prompt(7, tiny.vocab, 1), batch, tiny.vocab);
    auto m = build_models(*src, {request(Backend::cuda, WeightsKind::df11, batch, 7 + steps),
                                 request(Backend::cuda, WeightsKind::bf16, batch, 7 + steps),
                                 request(Backend::cuda, WeightsKind::cpu_offload, batch, 7 + steps),
                                 request(Backend::cpu, WeightsKind::bf16, batch, 7 + steps)});
    check_pair(*m[0], *m[1], prompts, steps, "tiny");
    check_pair(*m[2], *m[0], prompts, steps, "tiny");

    // CUDA vs CPU: the CUDA path rounds GEMM inputs and the KV cache to BF16 (relative error
    // 2^-9 each); over ~9 dependent stages that stays within a few percent of the logit scale.
    const double e = prefill_logit_error(*m[1], *m[3], prompts);
    expect(
        e < 5e-2,
        fmt::format("tiny batch {}: cuda vs cpu logits, relative error {:.2e} (< 5e-2)", batch, e));

    // KV cache vs a fresh forward over the prefix (prompt + 3 generated tokens).
    const GenerationResult g = generate(*m[1], prompts, 4);
    std::vector<float> cached, fresh;
    m[1]->logits(cached);
    std::vector<int32_t> prefix;
    for (int b = 0; b < batch; ++b) {
      prefix.insert(prefix.end(), prompts[static_cast<std::size_t>(b)].begin(),
                    prompts[static_cast<std::size_t>(b)].end());
      prefix.insert(prefix.end(), g.tokens[static_cast<std::size_t>(b)].begin(),
                    g.tokens[static_cast<std::size_t>(b)].end() - 1);
    }
    m[1]->reset();
    m[1]->forward(prefix, 7 + 3);
    m[1]->logits(fresh);
    const double ek = relative_error(cached, fresh);
    expect(ek < 2e-2,
           fmt::format("tiny batch {}: cached vs fresh prefix, relative difference {:.2e} (< 2e-2)",
                       batch, ek));
  }

  // Every decoder variant that can run without extra files decodes the units the model needs,
  // its units in either order (descending_decode: whole blocks decoded last unit first).
  dec::Registry reg;
  dec::register_all(reg);
  const auto prompts = batch_prompts(random_prompt(5, tiny.vocab, 2), 2, tiny.vocab);
  auto ref = build_models(*src, {request(Backend::cuda, WeightsKind::bf16, 2, 12)});
  for (const auto& d : reg.all()) {
    if (d->name() == "official-ptx") continue;  // needs the official PTX file (tests/decoders)
    try {  // one broken variant must not hide the others
      ModelRequest desc = request(Backend::cuda, WeightsKind::df11, 2, 12, d->name());
      desc.descending_decode = true;
      auto m = build_models(*src, {request(Backend::cuda, WeightsKind::df11, 2, 12, d->name()), desc});
      check_pair(*m[0], *ref[0], prompts, 6, "variant " + d->name());
      expect(m[1]->describe().find("last unit first") != std::string::npos,
             "descending decode says so: " + m[1]->describe());
      check_pair(*m[1], *ref[0], prompts, 6, "variant " + d->name() + ", descending");
    } catch (const std::exception& e) {
      expect(false, "variant " + d->name() + ": " + e.what());
    }
  }

  // Chunked GEMMs (each block GEMM in row slices acquired just before it): DF11 and CPU offload
  // against BF16 sliced the same way, bit for bit, and BF16 sliced against whole-block BF16
  // within rounding (the slices' GEMMs may round differently, never by more). Overlapped
  // (--overlap: slices acquired on a second stream into alternating halves of the buffer):
  // DF11 and CPU offload against chunked BF16 (the same slices: 64 KB fits half the buffer),
  // bit for bit, also with either stream delayed before each of its GEMMs or acquires
  // (DF11_E2E_SKEW), so that a missing wait in either direction gives wrong logits every time.
  try {
    auto chunked = [&](WeightsKind w, bool overlap = false, bool slice_l2 = true, bool early = true) {
      ModelRequest r = request(Backend::cuda, w, 2, 16);
      r.chunk_bytes = 64 * 1024;  // a few 128-row slices per tiny matrix
      r.overlap = overlap;
      r.slice_l2 = slice_l2;
      r.early_slices = early;
      return r;
    };
    auto cm = build_models(*src, {chunked(WeightsKind::df11), chunked(WeightsKind::bf16),
                                  chunked(WeightsKind::cpu_offload), request(Backend::cuda, WeightsKind::bf16, 2, 16),
                                  chunked(WeightsKind::df11, true), chunked(WeightsKind::cpu_offload, true),
                                  chunked(WeightsKind::df11, false, false),
                                  chunked(WeightsKind::df11, false, true, false)});
    expect(cm[0]->describe().find("chunked GEMMs") != std::string::npos, "chunked model says so: " + cm[0]->describe());
    // Slice decodes start early by default (where the device can), serially when asked: the same
    // logits either way (cm[0] early, cm[7] serial, both against chunked BF16 below).
    expect(cm[0]->describe().find("slice decodes started early") != std::string::npos ||
               cm[0]->describe().find("early needs sm_90") != std::string::npos,
           "chunked df11 starts its slice decodes early where it can: " + cm[0]->describe());
    expect(cm[7]->describe().find("slice decodes started after the kernel before them") != std::string::npos,
           "early_slices = false starts them serially: " + cm[7]->describe());
    // The slices' persisting L2 window (slice_l2, the default) where the device has persisting
    // L2; never on resident weights, overlapped slices or when not asked for. Caching only: the
    // same logits either way.
    int persisting = 0;
    if (cudaDeviceGetAttribute(&persisting, cudaDevAttrMaxPersistingL2CacheSize, 0) != cudaSuccess) persisting = 0;
    auto held = [](const e2e::Model& m) { return m.describe().find("persisting L2") != std::string::npos; };
    const bool refused = cm[0]->describe().find("slices not held in L2 (") != std::string::npos;  // and why
    expect(persisting > 0 ? held(*cm[0]) || refused : !held(*cm[0]),
           "chunked df11 holds its slices in L2 where it can, or says why not: " + cm[0]->describe());
    expect(!held(*cm[1]) && !held(*cm[4]) && !held(*cm[6]),
           "no window on resident, overlapped or slice_l2 = false models: " + cm[6]->describe());
    const auto cp = batch_prompts(random_prompt(6, tiny.vocab, 6), 2, tiny.vocab);
    check_pair(*cm[0], *cm[1], cp, 8, "tiny chunked df11 vs chunked bf16");
    check_pair(*cm[6], *cm[1], cp, 8, "tiny chunked df11 (slices not held in L2) vs chunked bf16");
    check_pair(*cm[7], *cm[1], cp, 8, "tiny chunked df11 (slice decodes serial) vs chunked bf16");
    check_pair(*cm[2], *cm[1], cp, 8, "tiny chunked cpu-offload vs chunked bf16");
    expect(cm[4]->describe().find("second stream") != std::string::npos, "overlapped model says so: " + cm[4]->describe());
    check_pair(*cm[4], *cm[1], cp, 8, "tiny overlapped chunked df11 vs chunked bf16");
    check_pair(*cm[5], *cm[1], cp, 8, "tiny overlapped chunked cpu-offload vs chunked bf16");
    for (const char* skew : {"main", "side"}) {
      ::setenv("DF11_E2E_SKEW", skew, 1);
      auto sm = build_models(*src, {chunked(WeightsKind::df11, true)});
      ::unsetenv("DF11_E2E_SKEW");
      check_pair(*sm[0], *cm[1], cp, 8, std::string("tiny overlapped chunked df11, ") + skew + " stream delayed");
    }
    // Overlapped without chunk bytes: each matrix decoded whole on the side stream, so the GEMMs
    // are the whole-block ones and the logits plain BF16's, bit for bit; with either stream late.
    auto whole_overlap = [&](WeightsKind w) {
      ModelRequest r = request(Backend::cuda, w, 2, 16);
      r.overlap = true;
      return r;
    };
    auto om = build_models(*src, {whole_overlap(WeightsKind::df11), whole_overlap(WeightsKind::cpu_offload)});
    expect(om[0]->describe().find("each matrix") != std::string::npos, "whole-matrix overlap says so: " + om[0]->describe());
    check_pair(*om[0], *cm[3], cp, 8, "tiny overlapped whole-matrix df11 vs whole-block bf16");
    check_pair(*om[1], *cm[3], cp, 8, "tiny overlapped whole-matrix cpu-offload vs whole-block bf16");
    for (const char* skew : {"main", "side"}) {
      ::setenv("DF11_E2E_SKEW", skew, 1);
      auto sm = build_models(*src, {whole_overlap(WeightsKind::df11)});
      ::unsetenv("DF11_E2E_SKEW");
      check_pair(*sm[0], *cm[3], cp, 8, std::string("tiny overlapped whole-matrix df11, ") + skew + " stream delayed");
    }
    const double e = prefill_logit_error(*cm[1], *cm[3], cp);
    expect(e < 2e-2, fmt::format("tiny chunked bf16 vs whole-block bf16 logits, relative error {:.2e} (< 2e-2)", e));
  } catch (const std::exception& e) {
    expect(false, std::string("tiny chunked: ") + e.what());
  }

  // Fused decode + GEMV: DF11 decoding in the fused kernels against BF16 read by the same
  // kernels, bit for bit (batch 1: the 7-token prefill is fused too; batch 4: a 28-row prefill
  // through cuBLAS, then fused steps); against plain BF16 (cuBLAS) within rounding over the
  // prefill and 8 decode steps fed the same tokens, which a wrong matrix, stride or accumulation
  // common to both fused models would break. Batch 20: more rows than the kernels take, so the
  // flag changes nothing (bit-identical to plain). A decoder whose image lacks the multi-symbol
  // tables is refused by name.
  try {
    // Every pass of up to 16 rows fused (the kernels' limit), whatever the decode's default.
    auto fused = [&](WeightsKind w, int batch, const std::string& variant = "") {
      ModelRequest r = request(Backend::cuda, w, batch, 7 + steps, variant);
      r.fused_gemv = true;
      r.fused_max_rows = dec::kFusedMaxBatch;
      return r;
    };
    // The default rows follow the variant's fused decode: 4 for fix64's units (the default
    // variant), 1 for the two-pass decode of a multi12 DF11-layout variant.
    auto fuses = [&](int batch, const std::string& variant, int max_rows) {
      ModelRequest r = request(Backend::cuda, WeightsKind::df11, batch, 7 + steps, variant);
      r.fused_gemv = true;
      r.fused_max_rows = max_rows;
      return build_models(*src, {r})[0]->describe();
    };
    for (const auto& [batch, variant, max_rows, want] :
         std::vector<std::tuple<int, std::string, int, std::string>>{
             {4, "", 0, "fused decode+GEMV up to 4 rows"},
             {8, "", 0, "no fused decode+GEMV at batch 8 (> 4)"},
             {1, "multi12.gap5-warp.exp-smem-v16.t512.b8", 0, "fused decode+GEMV up to 1 rows"},
             {2, "multi12.gap5-warp.exp-smem-v16.t512.b8", 0, "no fused decode+GEMV at batch 2 (> 1)"},
             {8, "", 8, "fused decode+GEMV up to 8 rows"}}) {
      const std::string d = fuses(batch, variant, max_rows);
      expect(d.find(want) != std::string::npos,
             fmt::format("fused rows, batch {} variant '{}' max rows {}: {}", batch, variant, max_rows, d));
    }
    try {
      (void)fuses(1, "", dec::kFusedMaxBatch + 1);
      expect(false, "fused rows: 17 is refused");
    } catch (const Error& e) {
      expect(std::string(e.what()).find("--fused-max-rows 17") != std::string::npos,
             std::string("fused rows: 17 is refused: ") + e.what());
    }
    for (const int batch : {1, 4, 20}) {
      const auto fp = batch_prompts(random_prompt(7, tiny.vocab, 1), batch, tiny.vocab);
      auto fm = build_models(*src, {fused(WeightsKind::df11, batch), fused(WeightsKind::bf16, batch),
                                    request(Backend::cuda, WeightsKind::bf16, batch, 7 + steps)});
      const bool on = batch <= 16;
      expect((fm[0]->describe().find("fused decode+GEMV up to") != std::string::npos) == on,
             "fused model says whether it fuses: " + fm[0]->describe());
      check_pair(*fm[0], *fm[1], fp, steps, fmt::format("tiny fused batch {}", batch));
      if (on) {
        const double e = forced_logit_error(*fm[1], *fm[2], fp, 8);
        expect(e < 2e-2, fmt::format("tiny fused batch {}: fused vs cuBLAS bf16 logits over prefill + 8 steps, "
                                     "relative error {:.2e} (< 2e-2)", batch, e));
      } else {
        check_pair(*fm[1], *fm[2], fp, 6, "tiny batch 20: --fused-gemv changes nothing");
      }
    }
    const auto vp = batch_prompts(random_prompt(7, tiny.vocab, 1), 2, tiny.vocab);
    int fused_variants = 0;
    for (const auto& d : reg.all()) {
      // The variants whose image the fused kernels read: multi12 on DF11's layout (two passes) or
      // on the t256.b16 count layout (one pass), and the fix64 ones (their units). The BF16
      // partner follows the same partition.
      // (The wide root's late and nh stagings have no fused decode: refused, below.)
      const bool fix64 = d->name().find(".gap5-fix64.") != std::string::npos && dec::fused_decode_for(*d);
      if (!fix64 && (d->name().rfind("multi12.gap5", 0) != 0 || !dec::fused_decode_for(d->layout()))) continue;
      ++fused_variants;
      auto vm = build_models(*src, {fused(WeightsKind::df11, 2, d->name()), fused(WeightsKind::bf16, 2, d->name())});
      check_pair(*vm[0], *vm[1], vp, 6, "fused with decoder " + d->name());
    }
    expect(fused_variants >= 8, fmt::format("fused: {} decoders of both fused layouts and fix64 checked", fused_variants));
    auto refused = [&](const std::string& variant, const std::string& needle) {
      try {
        (void)build_models(*src, {fused(WeightsKind::df11, 1, variant)});
      } catch (const Error& e) {
        return std::string(e.what()).find(needle) != std::string::npos;
      }
      return false;
    };
    expect(refused("flat12.gap5-warp.smem-out.t512.b8", "multi12"),
           "fused with a flat12 decoder is refused, naming the multi12 variants");
    expect(refused("multi12.gap5-cnt.exp-smem-v16.t512.b8.persist", "chain32.t256.b16.g5.pcount"),
           "fused with a t512.b8 count-layout decoder is refused, naming the layouts the kernels read");
    expect(refused("multi11w.gap5-fix64.exp-smem-late-v16.t512.b8.persist", "--fused-gemv with decoder"),
           "fused with the wide root's late staging (no fused decode) is refused by name");
  } catch (const std::exception& e) {
    expect(false, std::string("tiny fused: ") + e.what());
  }

  // A vocabulary larger than the reused buffer holds: the lm_head in several slices (GEMMs into
  // logits + r0, ldc = vocab) and, with more than 64 distinct tokens, the embedding in slices;
  // for every kind of weights, against each other and against the CPU model.
  try {
    ModelShape wide = tiny;
    wide.vocab = 8192;
    const auto ws = synthetic_source(wide, 0, 0, "tiny-wide");
    auto wm = build_models(*ws, {request(Backend::cuda, WeightsKind::df11, 2, 96),
                                 request(Backend::cuda, WeightsKind::bf16, 2, 96),
                                 request(Backend::cuda, WeightsKind::cpu_offload, 2, 96),
                                 request(Backend::cpu, WeightsKind::bf16, 2, 96)});
    const auto wp = batch_prompts(random_prompt(80, wide.vocab, 5), 2, wide.vocab);  // > 64 distinct tokens
    check_pair(*wm[0], *wm[1], wp, 8, "tiny wide vocabulary df11 vs bf16");
    check_pair(*wm[2], *wm[1], wp, 8, "tiny wide vocabulary cpu-offload vs bf16");
    // Against the CPU model: a wrong slice offset or ldc would agree across CUDA weight kinds.
    const double e = prefill_logit_error(*wm[1], *wm[3], wp);
    expect(e < 5e-2, fmt::format("tiny wide vocabulary: cuda vs cpu logits, relative error {:.2e} (< 5e-2)", e));
  } catch (const std::exception& e) {
    expect(false, std::string("tiny wide vocabulary: ") + e.what());
  }

  // Nemo shapes (one layer, small vocabulary): big matrices through the same paths.
  try {
    const ModelShape nemo1 = one_layer_nemo();
    const auto ns = synthetic_source(nemo1, 0, 0, "nemo");
    ModelRequest sliced = request(Backend::cuda, WeightsKind::bf16, 2, 40);
    sliced.chunk_bytes = 8 << 20;  // Nemo-sized slices: decode and GEMM long enough to overlap
    ModelRequest overlapped = sliced;
    overlapped.weights = WeightsKind::df11;
    overlapped.overlap = true;
    ModelRequest whole_overlapped = request(Backend::cuda, WeightsKind::df11, 2, 40);
    whole_overlapped.overlap = true;  // each Nemo matrix (up to 73 M weights) decoded whole
    auto nm = build_models(*ns, {request(Backend::cuda, WeightsKind::df11, 2, 40),
                                 request(Backend::cuda, WeightsKind::bf16, 2, 40), sliced, overlapped,
                                 whole_overlapped});
    const auto np = batch_prompts(random_prompt(32, nemo1.vocab, 4), 2, nemo1.vocab);
    check_pair(*nm[0], *nm[1], np, 8, "nemo 1 layer");
    check_pair(*nm[3], *nm[2], np, 8, "nemo 1 layer overlapped chunked df11 vs chunked bf16");
    check_pair(*nm[4], *nm[1], np, 8, "nemo 1 layer overlapped whole-matrix df11 vs whole-block bf16");
    // The tensor-core fused kernel (--fused-mma; Nemo's rows tile, tiny's do not): DF11 decoded in
    // it against BF16 read by it, bit for bit; against cuBLAS within rounding over the prefill (64
    // rows: cuBLAS) and 8 fused decode steps fed the same tokens.
    ModelRequest mma = request(Backend::cuda, WeightsKind::df11, 2, 40);
    mma.fused_gemv = true;
    mma.fused_mma = true;
    ModelRequest mma_bf16 = mma;
    mma_bf16.weights = WeightsKind::bf16;
    auto mm = build_models(*ns, {mma, mma_bf16});
    expect(mm[0]->describe().find("fused decode+MMA up to 16 rows") != std::string::npos,
           "nemo 1 layer --fused-mma: the model says so: " + mm[0]->describe());
    check_pair(*mm[0], *mm[1], np, 8, "nemo 1 layer fused MMA df11 vs fused MMA bf16");
    const double e = forced_logit_error(*mm[1], *nm[1], np, 8);
    expect(e < 2e-2, fmt::format("nemo 1 layer fused MMA vs cuBLAS bf16 logits over prefill + 8 steps, relative "
                                 "error {:.2e} (< 2e-2)", e));
    // Passes of 20 rows (past the GEMV kernels' 16: two MMAs of X rows, one of them partial).
    ModelRequest mma20 = request(Backend::cuda, WeightsKind::df11, 20, 40);
    mma20.fused_gemv = true;
    mma20.fused_mma = true;
    mma20.fused_max_rows = dec::kFusedMmaMaxBatch;
    ModelRequest mma20_bf16 = mma20;
    mma20_bf16.weights = WeightsKind::bf16;
    auto m20 = build_models(*ns, {mma20, mma20_bf16});
    expect(m20[0]->describe().find("fused decode+MMA up to 64 rows") != std::string::npos,
           "nemo 1 layer --fused-mma --fused-max-rows 64: the model says so: " + m20[0]->describe());
    check_pair(*m20[0], *m20[1], batch_prompts(random_prompt(32, nemo1.vocab, 5), 20, nemo1.vocab), 4,
               "nemo 1 layer fused MMA df11 vs fused MMA bf16, batch 20");
  } catch (const std::exception& e) {
    expect(false, std::string("nemo 1 layer: ") + e.what());
  }
  // On tiny's rows (256 elements) the tensor-core kernel has no tiles: refused with the shape.
  try {
    ModelRequest r = request(Backend::cuda, WeightsKind::df11, 1, 8);
    r.fused_gemv = true;
    r.fused_mma = true;
    (void)build_models(*src, {r});
    expect(false, "--fused-mma on tiny's 256-element rows is refused");
  } catch (const Error& e) {
    expect(std::string(e.what()).find("multiple of 128, at least 2048") != std::string::npos,
           std::string("--fused-mma on tiny is refused with the shape: ") + e.what());
  }

  // The official encoder's DF11 directory against its BF16 source.
  try {
    const std::filesystem::path fx = fixture_dir("datasets/fixtures/official/tiny_mistral");
    const auto bs = open_checkpoint(fx / "bf16"), ds = open_checkpoint(fx / "df11");
    const int64_t V = bs->shape().vocab;
    auto ob = build_models(*bs, {request(Backend::cuda, WeightsKind::bf16, 4, 24)});
    auto od = build_models(*ds, {request(Backend::cuda, WeightsKind::df11, 4, 24)});
    check_pair(*od[0], *ob[0], batch_prompts(random_prompt(8, V, 3), 4, V), 16,
               "official tiny_mistral");
  } catch (const std::exception& e) {
    expect(false, std::string("official tiny_mistral: ") + e.what());
  }
}

// Device weights kept between the runs of one FeedCache (as
// `df11 generate --runs` builds them): a run whose weights come from the cache gives the same
// tokens and still passes the check, chunked and overlapped models share the whole-block
// models' weights, weights a live model holds are never handed to a second one, another decoder
// gets its own, fused kernels extend the cached weights of their decoder (and a plain run after
// them builds its own), and weights a run does not use are dropped before it builds, so that its
// peak holds the weights it reuses and not those.
void check_weight_reuse() {
  try {
    const ModelShape tiny = named_config("tiny");
    const auto src = synthetic_source(tiny, 3, 0, "tiny");
    FeedCache cache(*src);
    const int batch = 2, steps = 8;
    const auto prompts = batch_prompts(random_prompt(7, tiny.vocab, 3), batch, tiny.vocab);
    auto reusing = [&](WeightsKind w, const std::string& variant = "") {
      return request(Backend::cuda, w, batch, 7 + steps, variant);
    };
    auto chunked = [&](WeightsKind w) {
      ModelRequest r = reusing(w);
      r.chunk_bytes = 64 * 1024;
      r.overlap = true;
      return r;
    };
    auto fused = [&](WeightsKind w) {
      ModelRequest r = reusing(w);
      r.fused_gemv = true;
      return r;
    };
    // One run as run_one does it: the earlier run's models are gone; the weights this one does
    // not use go, then it builds. Checks want[i] == whether model i's weights were reused.
    auto build = [&](const std::vector<ModelRequest>& reqs, const std::vector<bool>& want, const std::string& what) {
      cuda_keep_weights_for(cache, reqs);
      auto m = build_models(cache, reqs);
      for (std::size_t i = 0; i < m.size(); ++i) {
        expect(m[i]->weights_reused() == want[i],
               fmt::format("reuse, {}: model {} ({}) {}", what, i, m[i]->describe(),
                           want[i] ? "has the cached weights" : "built its own weights"));
      }
      return m;
    };
    const std::vector<ModelRequest> whole{reusing(WeightsKind::df11), reusing(WeightsKind::bf16)};
    std::vector<std::vector<int32_t>> first;
    {
      auto m = build(whole, {false, false}, "first run");
      const GenerationResult r = generate(*m[0], prompts, steps, m[1].get());
      expect(!r.mismatch, "reuse, first run: df11 vs bf16 bit-identical");
      first = r.tokens;
    }
    {
      auto m = build(whole, {true, true}, "the same run again");
      const GenerationResult r = generate(*m[0], prompts, steps, m[1].get());
      expect(!r.mismatch && r.tokens == first, "reuse, the same run again: bit-identical, the first run's tokens");
      // The cached df11 weights are m[0]'s while it lives: a second model gets its own.
      auto other = build_models(cache, {reusing(WeightsKind::df11)});
      expect(!other[0]->weights_reused(), "reuse: weights a live model holds are not handed to another");
      expect(generate(*other[0], prompts, steps).tokens == first, "reuse: the second model's tokens are the first run's");
    }
    {
      auto m = build({chunked(WeightsKind::df11), chunked(WeightsKind::bf16)}, {true, true}, "chunked, overlapped");
      expect(m[0]->describe().find("second stream") != std::string::npos, "reuse: the overlapped model says so: " + m[0]->describe());
      const GenerationResult r = generate(*m[0], prompts, steps, m[1].get());
      expect(!r.mismatch, "reuse, chunked overlapped df11 (cached weights) vs chunked bf16: bit-identical");
    }
    {  // another decoder (not the default one, kDefaultCudaVariant): its own weights; the run
       // drops the others (bf16 is built again below)
      const std::string another = "flat12.gap5-warp.smem-out.t512.b8";
      expect(another != kDefaultCudaVariant, "reuse: the other decoder is not the default one");
      auto m = build({reusing(WeightsKind::df11, another)}, {false}, "another decoder");
      expect(generate(*m[0], prompts, steps).tokens == first, "reuse, another decoder: the first run's tokens");
    }
    {
      auto m = build(whole, {false, false}, "after the others were dropped");
      const GenerationResult r = generate(*m[0], prompts, steps, m[1].get());
      expect(!r.mismatch && r.tokens == first, "reuse, weights built again: bit-identical, the first run's tokens");
    }
    // Fused kernels: the df11 weights of the runs before (the same decoder, kDefaultCudaVariant
    // = kDefaultFusedVariant) take them, bf16 builds its own; then both are reused.
    expect(std::string(kDefaultCudaVariant) == kDefaultFusedVariant, "reuse: one default decoder, fused or not");
    std::vector<std::vector<int32_t>> fused_first;
    for (const bool again : {false, true}) {
      auto m = build({fused(WeightsKind::df11), fused(WeightsKind::bf16)}, {true, again},
                     again ? "fused, reused" : "fused, the cached df11 weights extended");
      expect(m[0]->describe().find("fused") != std::string::npos, "reuse: the fused model says so: " + m[0]->describe());
      const GenerationResult r = generate(*m[0], prompts, steps, m[1].get());
      expect(!r.mismatch, fmt::format("reuse, fused df11 vs fused bf16 ({}): bit-identical", again ? "reused" : "extended"));
      if (!again) fused_first = r.tokens;
      expect(r.tokens == fused_first, "reuse, fused: the same tokens extended or reused");
    }
    {  // the extended weights are the fused key's now: a plain run builds its own
      auto m = build({reusing(WeightsKind::df11)}, {false}, "plain after fused");
      expect(generate(*m[0], prompts, steps).tokens == first, "reuse, plain after fused: the first run's tokens");
    }
    {  // weights a live model holds are not extended: the fused model gets weights of its own
      auto held = build_models(cache, {reusing(WeightsKind::df11)});
      expect(held[0]->weights_reused(), "reuse: the plain weights come from the cache");
      auto m = build_models(cache, {fused(WeightsKind::df11)});
      expect(!m[0]->weights_reused(), "reuse: weights a live model holds are not extended with fused kernels");
      expect(generate(*m[0], prompts, steps).tokens == fused_first, "reuse, fused own weights: the fused tokens");
    }
  } catch (const std::exception& e) {
    expect(false, std::string("reuse: ") + e.what());
  }

  // Memory on Nemo's hidden size (one layer, a narrower MLP: ~0.3 GB of BF16, far above the
  // device's allocation granularity): the run that reuses the DF11 weights, with the BF16 weights
  // of the run before dropped, peaks at least at the DF11 weights (reused, they are still this
  // run's) and well below DF11 + BF16. Generated on the GPU, which is faster than the host.
  try {
    ModelShape nemo1 = one_layer_nemo();
    nemo1.intermediate = 4096;
    const auto ns = synthetic_source(nemo1, 0, 0, "nemo", cuda_synthesis());
    FeedCache cache(*ns);
    auto reusing = [&](WeightsKind w) { return request(Backend::cuda, w, 1, 12); };
    const auto np = batch_prompts(random_prompt(8, nemo1.vocab, 4), 1, nemo1.vocab);
    const std::vector<ModelRequest> both{reusing(WeightsKind::df11), reusing(WeightsKind::bf16)};
    uint64_t df11_bytes = 0, bf16_bytes = 0;
    {
      cuda_keep_weights_for(cache, both);
      auto m = build_models(cache, both);
      expect(!generate(*m[0], np, 4, m[1].get()).mismatch, "reuse, nemo 1 layer: df11 vs bf16 bit-identical");
      df11_bytes = m[0]->memory().weight_bytes;
      bf16_bytes = m[1]->memory().weight_bytes;
    }
    cuda_keep_weights_for(cache, {reusing(WeightsKind::df11)});
    cuda_reset_peak_memory();
    auto m = build_models(cache, {reusing(WeightsKind::df11)});
    (void)generate(*m[0], np, 4);
    const uint64_t peak = cuda_peak_memory();
    expect(m[0]->weights_reused(), "reuse, nemo 1 layer: the df11 weights are reused");
    expect(peak >= df11_bytes && peak < df11_bytes + bf16_bytes / 2,
           fmt::format("reuse, nemo 1 layer: the run's peak {:.1f} MB holds the reused df11 weights ({:.1f} MB) "
                       "and not the dropped bf16 ({:.1f} MB)",
                       peak / 1e6, df11_bytes / 1e6, bf16_bytes / 1e6));
  } catch (const std::exception& e) {
    expect(false, std::string("reuse, nemo 1 layer: ") + e.what());
  }
}

// An early decode (dec::Start::early) stores nothing before the kernel before it on its stream is
// done: after a reader of its output buffer that lets it start at once and reads the buffer
// ~200 us later (gpu::late_copy), the reader still sees the poison the buffer held, and the
// decode is exact. Every variant that starts early (fix64's decode a unit before they wait, the
// others wait as they start). Where the device cannot start early (before sm_90) the launches
// are serial and the check holds trivially (said).
void check_early_decode() {
  dec::Registry reg;
  dec::register_all(reg);
  const Unit u = synth::make_nemo_layer(1, 3, 0.002, 0);
  std::vector<uint16_t> flat;
  for (const auto& t : u.tensors) flat.insert(flat.end(), t.data.begin(), t.data.end());
  int major = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  std::fprintf(stderr, "early decode: %s\n", major >= 9 ? "programmatic dependent launch" : "serial (before sm_90)");
  std::map<std::string, EncodedUnit> encoded;  // by layout
  cuda::Stream s;
  cuda::DeviceBuffer<uint16_t> out(flat.size()), seen(flat.size());
  int checked = 0;
  for (const auto& d : reg.all()) {
    if (!d->honors_start()) continue;
    const std::string lname = d->layout().name();
    if (encoded.find(lname) == encoded.end()) encoded.emplace(lname, encode(u.view(), d->layout(), 0));
    const EncodedUnit& e = encoded.at(lname);
    if (!d->can_implement(e).ok) continue;
    try {
      auto img = d->upload(e, s.get());
      CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, out.bytes(), s.get()));  // the poison the reader must see
      CUDA_CHECK(cudaMemsetAsync(seen.get(), 0, seen.bytes(), s.get()));
      gpu::late_copy(out.get(), seen.get(), flat.size(), 200, s.get());
      d->launch(*img, out.get(), 0, flat.size(), s.get(), dec::Order::ascending, dec::Start::early);
      CUDA_CHECK(cudaStreamSynchronize(s.get()));
      std::vector<uint16_t> got(flat.size()), read(flat.size());
      CUDA_CHECK(cudaMemcpy(got.data(), out.get(), out.bytes(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(read.data(), seen.get(), seen.bytes(), cudaMemcpyDeviceToHost));
      const auto stored = std::count_if(read.begin(), read.end(), [](uint16_t v) { return v != 0xFFFF; });
      expect(got == flat && stored == 0,
             fmt::format("early decode {}: {}; the reader before it saw {} element(s) stored early", d->name(),
                         got == flat ? "bit-exact" : "WRONG OUTPUT", stored));
      ++checked;
    } catch (const std::exception& ex) {
      expect(false, fmt::format("early decode {}: {}", d->name(), ex.what()));
    }
  }
  expect(checked > 50, fmt::format("early decode: {} variants checked", checked));
}

// --graphs: decode steps after the first replayed as one CUDA graph, position from the device.
// Each graph model against the same model eager, bit for bit at every step (prefill, the eager
// first step, the capture's step, replays at later positions), for resident BF16, whole-block
// DF11, chunked DF11 (persisting L2 window, early slice decodes) and fused DF11; the method says
// how many steps replayed; with --kernel-times a replayed step launches no fewer attention kernels.
void check_graphs() {
  const ModelShape tiny = named_config("tiny");
  const auto src = synthetic_source(tiny, 0, 0, "tiny");
  const int steps = 9, L = 5;  // 8 decode steps: 1 eager, then the capture's and 6 more replays
  for (const int batch : {1, 3}) {
    const auto prompts = batch_prompts(random_prompt(L, tiny.vocab, 4), batch, tiny.vocab);
    auto req = [&](WeightsKind w, bool graphs) {
      ModelRequest r = request(Backend::cuda, w, batch, L + steps);
      r.graphs = graphs;
      return r;
    };
    ModelRequest chunked_g = req(WeightsKind::df11, true), chunked_e = req(WeightsKind::df11, false);
    chunked_g.chunk_bytes = chunked_e.chunk_bytes = 64 * 1024;
    ModelRequest fused_g = req(WeightsKind::df11, true), fused_e = req(WeightsKind::df11, false);
    fused_g.fused_gemv = fused_e.fused_gemv = true;
    const std::vector<std::tuple<std::string, ModelRequest, ModelRequest>> cases{
        {"bf16", req(WeightsKind::bf16, true), req(WeightsKind::bf16, false)},
        {"df11 whole blocks", req(WeightsKind::df11, true), req(WeightsKind::df11, false)},
        {"df11 chunked", chunked_g, chunked_e},
        {"df11 fused", fused_g, fused_e}};
    for (const auto& [name, g, e] : cases) {
      try {
        auto m = build_models(*src, {g, e});
        const std::string what = fmt::format("graphs {} batch {}", name, batch);
        check_pair(*m[0], *m[1], prompts, steps, what);
        expect(m[0]->describe().find("replayed as a CUDA graph (7 replays)") != std::string::npos,
               what + ": " + m[0]->describe());
        // Again from position 0 (reset): the graph replays at the new positions, same tokens.
        const GenerationResult again = generate(*m[0], prompts, steps);
        const GenerationResult eager = generate(*m[1], prompts, steps);
        expect(again.tokens == eager.tokens, what + ": a second generation replays the same graph, same tokens");
        expect(again.timing.setup_steps == 0 && eager.timing.setup_steps == 0,
               what + ": no capture the second time (the graph is kept), none eagerly");
      } catch (const std::exception& ex) {
        expect(false, fmt::format("graphs {} batch {}: {}", name, batch, ex.what()));
      }
    }
  }
  // Refused with overlapped streams and offloaded weights.
  for (const bool offload : {false, true}) {
    ModelRequest r = request(Backend::cuda, offload ? WeightsKind::cpu_offload : WeightsKind::df11, 1, 8);
    r.graphs = true;
    r.overlap = !offload;
    try {
      (void)build_models(*src, {r});
      expect(false, "graphs: refused with " + std::string(offload ? "cpu-offload" : "--overlap"));
    } catch (const Error& e) {
      expect(std::string(e.what()).find("--graphs") != std::string::npos, std::string("graphs refused: ") + e.what());
    }
  }
}

// --kernel-times: CUPTI records of a few decode steps, by kind. Exact counts where the forward
// pass fixes them (one attention kernel a layer a step); decoders only where weights are decoded,
// fused kernels only in a fused model; the device busy within the steps' wall time; the traced
// steps give generate's tokens.
void check_kernel_times() {
  const ModelShape tiny = named_config("tiny");
  const auto src = synthetic_source(tiny, 0, 0, "tiny");
  const int steps = 3, L = 6;
  const auto prompts = batch_prompts(random_prompt(L, tiny.vocab, 3), 1, tiny.vocab);
  ModelRequest fused = request(Backend::cuda, WeightsKind::df11, 1, L + 4);
  fused.fused_gemv = true;
  ModelRequest chunked = request(Backend::cuda, WeightsKind::df11, 1, L + 4);
  chunked.chunk_bytes = 64 * 1024;
  chunked.overlap = true;
  // A dyn-schedule decoder (its kernel counted as GEMM time until kernel_trace knew its name), and
  // a model whose decode steps replay a CUDA graph (CUPTI attached after the graph was made: its
  // kernels must still be reported one by one).
  ModelRequest dyn = request(Backend::cuda, WeightsKind::df11, 1, L + 4);
  dyn.variant = "multi12.gap5-cnt.exp-smem-v16.t256.b16.dyn";
  ModelRequest graphs = request(Backend::cuda, WeightsKind::df11, 1, L + 4);
  graphs.graphs = true;
  const std::vector<std::pair<std::string, ModelRequest>> cases{
      {"bf16", request(Backend::cuda, WeightsKind::bf16, 1, L + 4)},
      {"df11 whole blocks", request(Backend::cuda, WeightsKind::df11, 1, L + 4)},
      {"df11 whole blocks, dyn decoder", dyn},
      {"df11 whole blocks, graphs", graphs},
      {"df11 fused", fused},
      {"df11 chunked, overlapped", chunked}};
  for (const auto& [name, req] : cases) {
    try {
      auto m = build_models(*src, {req});
      const GenerationResult g = generate(*m[0], prompts, steps + 1);
      if (req.graphs) {
        expect(m[0]->describe().find("replayed as a CUDA graph") != std::string::npos,
               "kernel times " + name + ": " + m[0]->describe());
        expect(g.timing.setup_steps == 1, "kernel times " + name + ": the capture step is left out of the timing");
      }
      std::string why;
      const auto tracer = cuda_step_tracer(why);
      if (!tracer) {
        expect(false, "kernel times " + name + ": no tracer (" + why + ")");
        continue;
      }
      const TracedSteps t = trace_decode_steps(*m[0], prompts, steps, *tracer);
      const trace::Summary& d = t.device;
      const bool decodes = req.weights == WeightsKind::df11 && !req.fused_gemv;
      expect(t.tokens[0] == g.tokens[0], "kernel times " + name + ": the traced steps give generate's tokens");
      expect(d.records(trace::Kind::attention) == tiny.n_layers * steps,
             fmt::format("kernel times {}: {} attention kernels ({} layers x {} steps)", name,
                         d.records(trace::Kind::attention), tiny.n_layers, steps));
      expect(d.records(trace::Kind::forward) >= 4 * tiny.n_layers * steps,
             fmt::format("kernel times {}: {} other forward-pass kernels", name, d.records(trace::Kind::forward)));
      expect(decodes ? d.records(trace::Kind::decode) >= tiny.n_layers * steps
                     : d.records(trace::Kind::decode) == 0 || req.fused_gemv,
             fmt::format("kernel times {}: {} decode kernels", name, d.records(trace::Kind::decode)));
      expect(req.fused_gemv ? d.records(trace::Kind::fused) >= tiny.n_layers * steps
                            : d.records(trace::Kind::fused) == 0,
             fmt::format("kernel times {}: {} fused kernels", name, d.records(trace::Kind::fused)));
      expect(req.fused_gemv || d.records(trace::Kind::gemm) >= 4 * tiny.n_layers * steps,
             fmt::format("kernel times {}: {} GEMM kernels", name, d.records(trace::Kind::gemm)));
      expect(d.busy_s > 0 && d.busy_s <= t.wall_s * 1.01 + 1e-4 && d.busy_s <= d.span_s + 1e-9,
             fmt::format("kernel times {}: busy {:.1f} us, span {:.1f} us, wall {:.1f} us", name, d.busy_s * 1e6,
                         d.span_s * 1e6, t.wall_s * 1e6));
    } catch (const std::exception& e) {
      expect(false, "kernel times " + name + ": " + e.what());
    }
  }
}

}  // namespace

int main() {
  if (!cuda_available()) {
    std::fprintf(stderr, "no CUDA device: skipped\n");
    return 77;
  }
  try {
    std::fprintf(stderr, "device: %s\n", cuda_device_name().c_str());
    run();
    check_weight_reuse();
    check_early_decode();
    check_kernel_times();
    check_graphs();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
