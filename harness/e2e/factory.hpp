// Builds models from a weight source: every unit is loaded once and handed to each model being
// built (so `--check` reads a checkpoint once), on the CPU or CUDA backend.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "decoder.hpp"
#include "fused/fused_gemv.hpp"
#include "e2e/model.hpp"
#include "e2e/weights.hpp"

namespace df11::e2e {

class StepTracer;  // generate.hpp

// The decoder variant CUDA models use unless told otherwise: the fastest of DF11's own layout on
// the second H200 run (reports/2026-11-28_h200_decode_throughput: 333 us per Nemo layer against
// 633 us for multi12.gap5-warp.exp-smem-v16.t512.b8, the default before, and 1050 us for the
// published kernel; its fixed-output index is derived from DF11's stream on upload, ~2.5 ns a
// code a core).
inline constexpr const char* kDefaultCudaVariant = "multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist";
// With fused_gemv, DF11 models decode (prefill, the embedding) with this variant unless told
// otherwise, and the fused kernels read the image it uploads (a fix64 variant: the fixed decode
// over its 2048-element units; a multi12 variant of DF11's layout: two passes; of the count
// layout, multi12.gap5-cnt.*.t256.b16: one). The same decoder as without fused_gemv: on that run
// the fixed decode took 315 us a Nemo layer at batch 1, the two-pass one 788 us.
inline constexpr const char* kDefaultFusedVariant = "multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist";

struct ModelRequest {
  Backend backend = Backend::cpu;
  WeightsKind weights = WeightsKind::bf16;
  // DF11 decoder variant. Empty: decode_cpu on the CPU, kDefaultCudaVariant (or the first
  // variant of the DF11 layout) on CUDA. On the CPU a named variant runs its host emulation.
  std::string variant;
  int batch = 1;
  int max_positions = 0;  // KV-cache positions per row
  int threads = 0;        // CPU worker threads (0 = all cores)
  // CUDA only: > 0 runs every decoder-block GEMM in row slices of about this many bytes of BF16
  // weights, each slice acquired (decoded, copied) just before its GEMM so that it is still in
  // L2 ("chunked"); the same slices for every kind of weights, so models with the same value
  // stay bit-identical. 0: a block is acquired whole before it runs.
  uint64_t chunk_bytes = 0;
  // CUDA only, bf16 and df11 weights: a pass of at most fused_max_rows rows (decode steps at
  // batch <= that) runs every block GEMM and the lm_head through the fused decode + GEMV kernels
  // (kernels/decoders/fused), which read DF11 straight from its encoding (bf16: the same kernels
  // reading the resident BF16 words, the same sums in the same order, so the two stay
  // bit-identical). Larger passes decode (or read) and run cuBLAS as without it.
  bool fused_gemv = false;
  // With fused_gemv: passes of at most this many rows run fused (1..16; with fused_mma 1..64); 0: where the fused
  // decode of the variant stops paying (dec::fused_default_max_rows: 4 for fix64's units, else
  // 1). A model and its --check partner get the same, so the same arithmetic.
  int fused_max_rows = 0;
  // With fused_gemv: the fused passes multiply on the tensor cores (dec::FusedDecode::fixed_mma:
  // fix64's units decoded as the fixed fused kernel decodes them, 16 units at the same columns
  // of 16 rows a CUDA block), for a fix64 decoder whose fused decode is `fixed`; the --check
  // partner runs the same kernel on its BF16 words. Shapes that do not tile are refused.
  bool fused_mma = false;
  // CUDA only: each block matrix (with chunk_bytes, each slice) is acquired on a second stream
  // of the lowest priority into one of two halves of the reused buffer while the previous one's
  // GEMM runs on the model's stream, of the highest priority (decode or copy overlapped with
  // GEMMs). Slices are at most half the buffer, and a half holds a block's largest GEMM whole
  // (the buffer grows to twice that where needed), so without chunk_bytes the GEMMs are those
  // of whole blocks, so the same results.
  bool overlap = false;
  // CUDA only, with chunk_bytes and without overlap: the reused buffer's first chunk_bytes held in
  // the persisting L2 (an access-policy window on the model's stream, where the device has one),
  // so that each slice stays in L2 for its GEMM and is overwritten there by the next, never
  // written back to DRAM. false: the cache's normal policy. Caching only: results are the same.
  bool slice_l2 = true;
  // CUDA only, DF11 weights acquired as whole blocks: the block's decode takes its units in
  // descending order (dec::Order::descending), so that the block's first weights, which its
  // first GEMM (q, k, v) reads, are the last written and still in L2. The same bits either way.
  bool descending_decode = false;
  // CUDA only, with chunk_bytes and without overlap: each slice's decode may start before the
  // kernel before it (a GEMM) ends (dec::Start::early: programmatic dependent launch on sm_90+),
  // storing nothing before that kernel is done. false: after it. The same bits either way.
  bool early_slices = true;
  // CUDA only, bf16 and df11 weights, without overlap: a decode step's layers and head (all but
  // the embedding rows, which depend on the tokens) captured into a CUDA graph at the second
  // decode step and replayed from then on, the position read from the device; no launch gaps,
  // the same kernels, so the same bits. A capture that fails leaves the model eager (describe
  // says why).
  bool graphs = false;
};

// The DF11 decoder a CUDA model's DF11 weights use: `variant`, or where empty the default
// (kDefaultCudaVariant, else the first variant of DF11's layout); official-ptx and unknown names
// refused.
[[nodiscard]] const dec::Decoder* pick_cuda_decoder(const dec::Registry& reg, const std::string& variant);
// The variant a request's DF11 decoder is picked by: --fused-gemv changes the default (even at
// batches that never run fused), so it is part of the choice.
[[nodiscard]] std::string cuda_df11_variant(const ModelRequest& r);
// The name of the decoder a request's DF11 device weights are built with (its --variant, or the
// default, which --fused-gemv picks by kDefaultFusedVariant): what keys the device weights a later
// run may reuse, so that no --variant and the default's own name are one set of weights, and a
// --fused-gemv run finds the plain run's images to add its kernels to.
[[nodiscard]] std::string cuda_df11_decoder_name(const ModelRequest& r);
// The fused decode of the DF11 decoder `variant` (empty: kDefaultFusedVariant); mma
// (--fused-mma): the tensor-core kernel, over a decoder whose fused decode is the fixed one.
// Throws naming the decoder where the fused kernels cannot read its layout, and, with
// shares_image (a DF11 model: its fused kernels read the decoder's device image), where they
// cannot read that image (dec::fused_can_share_image). A BF16 model's fused kernels make their
// own from the BF16 words and take the variant's layout and partition only.
[[nodiscard]] dec::FusedDecode fused_decode_of(const std::string& variant, bool mma = false, bool shares_image = false);
// What decodes a request's weights, as a building model would pick it ("decoder NAME", "fused
// NAME", "decode_cpu"; empty for resident BF16 or offload): `df11 generate --dry-run` names it
// without a device or any weights. Throws where the build would (unknown variant, a fused decode
// the variant has not).
[[nodiscard]] std::string request_decoders(const ModelRequest& r);
// Refuses, on the cpu backend, what only the CUDA models do (--chunk-bytes, --fused-gemv,
// --overlap, --graphs, cpu-offload weights); the model builders and --dry-run both ask it.
void check_backend_methods(const ModelRequest& r);

// Takes the units of one model while it is built.
class ModelBuilder {
 public:
  virtual ~ModelBuilder() = default;
  virtual void add(UnitFeed& feed) = 0;
  [[nodiscard]] virtual std::unique_ptr<Model> finish() = 0;
};

// Called after each unit: (units done, units in all, name of the unit).
using BuildProgress = std::function<void(int, int, const std::string&)>;

[[nodiscard]] std::vector<std::unique_ptr<Model>> build_models(
    const WeightSource& source, const std::vector<ModelRequest>& requests,
    const BuildProgress& progress = {});

// The units of a source loaded once and kept, with every form a provider asked for (BF16, an
// encoding), across several build_models calls: `df11 generate --runs` builds the models of many
// runs from one load (host memory: the BF16 model plus its encodings). CUDA models built from
// one keep their device weights (DeviceProvider: resident BF16, DF11 images with their fused
// kernels, pinned offload buffers) for later models of the same FeedCache with the same weights,
// decoder and fused kernels (no upload; Model::weights_reused), until cuda_keep_weights_for
// drops them.
class FeedCache {
 public:
  explicit FeedCache(const WeightSource& source);
  // Drops the cached device weights of its models (cuda_keep_weights_for keeps
  // one FeedCache's at a time): none can serve a model after it. Models still alive keep theirs.
  ~FeedCache();
  FeedCache(const FeedCache&) = delete;
  FeedCache& operator=(const FeedCache&) = delete;
  [[nodiscard]] const WeightSource& source() const { return source_; }
  // The unit's feed, loaded on first use.
  [[nodiscard]] UnitFeed& feed(int unit);
  // Unique in the process (never reused, unlike an address): names these weights in the cache
  // of device weights.
  [[nodiscard]] uint64_t id() const { return id_; }

 private:
  const WeightSource& source_;
  std::vector<std::optional<UnitFeed>> feeds_;
  uint64_t id_;
};

[[nodiscard]] std::vector<std::unique_ptr<Model>> build_models(FeedCache& cache,
                                                               const std::vector<ModelRequest>& requests,
                                                               const BuildProgress& progress = {});

// "auto" (cuda when a device is available, else cpu), "cpu" or "cuda".
[[nodiscard]] Backend resolve_backend(const std::string& name);

// ---- CUDA (cuda_model.cpp; in builds without CUDA these say so) ----
[[nodiscard]] bool cuda_built();
// A usable device: false without a driver, without a device, or in builds without CUDA.
[[nodiscard]] bool cuda_available();
[[nodiscard]] std::string cuda_device_name();
// feed_cache: FeedCache::id() of the units the builder will get, 0 when they come straight from
// a WeightSource (then nothing is reused or kept).
[[nodiscard]] std::unique_ptr<ModelBuilder> make_cuda_builder(const ModelShape& shape,
                                                              const Norms& norms,
                                                              const ModelRequest& request,
                                                              uint64_t feed_cache = 0);
// Device memory in use by this process beyond what it used at the first call (bytes, sampled
// by the CUDA models after every forward); 0 without CUDA.
[[nodiscard]] uint64_t cuda_peak_memory();
// Starts a new peak (the baseline stays): for a run after earlier runs' models are gone.
void cuda_reset_peak_memory();
// A tracer of the device's kernels and copies (CUPTI activity records; generate.hpp's
// trace_decode_steps), or nullptr with why_not set: no CUDA in this build, no device, or no
// CUPTI (or DF11_CUPTI=0).
[[nodiscard]] std::unique_ptr<StepTracer> cuda_step_tracer(std::string& why_not);
// Drops every cached device weights (see FeedCache) that none of these requests of
// `cache` would reuse (all of any other FeedCache's), freeing their memory. `df11 generate --runs`
// calls it before each run builds its models, once the earlier run's are gone, and before
// cuda_reset_peak_memory: a run's peak then holds only the weights it uses.
void cuda_keep_weights_for(const FeedCache& cache, const std::vector<ModelRequest>& requests);
// Fills synthetic matrices on the GPU (gpu::synth_fill, in slices of at most 64 MB of device
// memory, freed before it returns) and copies them to the host: the bits of the host filler,
// spot-checked against the host's draw at 257 elements per matrix (a mismatch throws).
[[nodiscard]] synth::MatrixFiller cuda_synth_filler();
// Synthesis on the GPU: cuda_synth_filler for host bits, and BF16 units filled in place.
[[nodiscard]] inline SynthesisPlace cuda_synthesis() {
  return SynthesisPlace{cuda_synth_filler(), "cuda", true};
}

}  // namespace df11::e2e
