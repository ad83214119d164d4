// Model building for both backends.
#include "e2e/factory.hpp"

#include <atomic>

#include <fmt/format.h>

#include "e2e/cpu_model.hpp"
#include "e2e/host_provider.hpp"
#include "common/variant_decoder.hpp"
#include "fused/fused_gemv.hpp"

namespace df11::e2e {
namespace {

class CpuBuilder final : public ModelBuilder {
 public:
  CpuBuilder(const ModelShape& shape, const Norms& norms, const ModelRequest& r)
      : shape_(shape),
        norms_(norms),
        request_(r),
        provider_(make_host_provider(r.weights, shape, r.variant, r.threads)) {}
  void add(UnitFeed& feed) override { provider_->add(feed); }
  std::unique_ptr<Model> finish() override {
    return std::make_unique<CpuModel>(shape_, norms_, std::move(provider_), request_.batch,
                                      request_.max_positions, request_.threads);
  }

 private:
  ModelShape shape_;
  const Norms& norms_;
  ModelRequest request_;
  std::unique_ptr<HostProvider> provider_;
};

}  // namespace

const dec::Decoder* pick_cuda_decoder(const dec::Registry& reg, const std::string& variant) {
  if (!variant.empty()) {
    const dec::Decoder* d = reg.find(variant);
    if (!d) throw Error(fmt::format("no decoder variant '{}' (see `df11 variants`)", variant));
    if (d->name() == "official-ptx") {
      throw Error("official-ptx decodes whole units only; the model decodes embedding rows and lm_head slices");
    }
    return d;
  }
  if (const dec::Decoder* d = reg.find(kDefaultCudaVariant)) return d;
  for (const auto& d : reg.all())
    if (d->layout() == Layout::df11()) return d.get();
  throw Error("no registered decoder reads the DF11 layout");
}

std::string cuda_df11_variant(const ModelRequest& r) {
  return r.variant.empty() && r.fused_gemv ? std::string(kDefaultFusedVariant) : r.variant;
}

std::string cuda_df11_decoder_name(const ModelRequest& r) {
  return pick_cuda_decoder(dec::all_decoders(), cuda_df11_variant(r))->name();
}

dec::FusedDecode fused_decode_of(const std::string& variant, bool mma, bool shares_image) {
  const dec::Decoder* d =
      pick_cuda_decoder(dec::all_decoders(), variant.empty() ? std::string(kDefaultFusedVariant) : variant);
  const std::optional<dec::FusedDecode> decode = dec::fused_decode_for(*d);
  if (!decode) {
    throw Error(fmt::format("--fused-gemv with decoder {}: the fused kernels read layouts {} and {} (and fix64 "
                            "variants' DF11 units), not {}",
                            d->name(), dec::fused_spec(dec::FusedDecode::two_pass).layout().name(),
                            dec::fused_spec(dec::FusedDecode::one_pass).layout().name(), d->layout().name()));
  }
  // The DF11 model's fused kernels read its decoder's image: one they cannot read is refused
  // here, so that --dry-run says so too (not first when the model is built).
  if (const auto* v = dynamic_cast<const dec::VariantDecoder*>(d); v != nullptr && shares_image && !mma) {
    if (const dec::Status st = dec::fused_can_share_image(v->spec(), *decode); !st.ok) {
      throw Error(fmt::format("--fused-gemv with decoder {}: {}", d->name(), st.reason));
    }
  }
  if (mma) {
    if (*decode != dec::FusedDecode::fixed) {
      throw Error(fmt::format("--fused-mma with decoder {}: the tensor-core kernel decodes fix64's units as the fixed "
                              "fused decode does (a multi12n or multi12ng fix64 exp-smem variant, e.g. {})",
                              d->name(), kDefaultFusedVariant));
    }
    return dec::FusedDecode::fixed_mma;
  }
  return *decode;
}

void check_backend_methods(const ModelRequest& r) {
  if (r.backend != Backend::cpu) return;
  if (r.chunk_bytes != 0) throw Error("model: chunked GEMMs (--chunk-bytes) are a CUDA method");
  if (r.fused_gemv) throw Error("model: the fused decode + GEMV kernels (--fused-gemv) are a CUDA method");
  if (r.overlap) throw Error("model: overlapped decodes (--overlap) are a CUDA method");
  if (r.graphs) throw Error("model: CUDA graphs (--graphs) are a CUDA method");
  if (r.weights == WeightsKind::cpu_offload) {
    throw Error("--weights cpu-offload copies host weights to the GPU per block: it needs --backend cuda");
  }
}

std::string request_decoders(const ModelRequest& r) {
  check_backend_methods(r);
  std::string what;
  if (r.backend == Backend::cuda) {
    if (r.weights == WeightsKind::df11) what = "decoder " + cuda_df11_decoder_name(r);
    if (r.fused_gemv) {
      const dec::FusedDecode f = fused_decode_of(r.weights == WeightsKind::df11 ? cuda_df11_variant(r) : r.variant,
                                                 r.fused_mma, r.weights == WeightsKind::df11);
      what += (what.empty() ? "" : ", ") + std::string("fused ") + std::string(dec::fused_decode_name(f));
    }
  } else if (r.weights == WeightsKind::df11) {
    if (!r.variant.empty() && dec::all_decoders().find(r.variant) == nullptr) {
      throw Error(fmt::format("no decoder variant '{}' (see `df11 variants`)", r.variant));
    }
    what = r.variant.empty() ? "decode_cpu" : "decoder " + r.variant + " (host emulation)";
  }
  return what;
}

namespace {

// feed_cache: FeedCache::id() when the units come from one, else 0.
std::vector<std::unique_ptr<ModelBuilder>> make_builders(const WeightSource& source,
                                                         const std::vector<ModelRequest>& requests,
                                                         uint64_t feed_cache) {
  const ModelShape& s = source.shape();
  std::vector<std::unique_ptr<ModelBuilder>> builders;
  for (const ModelRequest& r : requests) {
    if (r.batch <= 0 || r.max_positions <= 0) {
      throw Error(fmt::format("model: batch ({}) and positions ({}) must be positive", r.batch,
                              r.max_positions));
    }
    // A row of max_positions runs positions 0 .. max_positions - 2 (the last token is not fed back).
    if (s.sliding_window > 0 && r.max_positions - 1 > s.sliding_window) {
      throw Error(fmt::format("{}: config.json's sliding_window is {}: attention here is full causal, which equals "
                              "the window only while a row's positions stay within it, and this run's rows reach {} "
                              "positions (prompt + --max-new-tokens - 1)",
                              source.description(), s.sliding_window, r.max_positions - 1));
    }
    check_backend_methods(r);
    if (r.backend == Backend::cpu) {
      builders.push_back(std::make_unique<CpuBuilder>(s, source.norms(), r));
    } else {
      builders.push_back(make_cuda_builder(s, source.norms(), r, feed_cache));
    }
  }
  return builders;
}

// Hands every unit to every builder (feed(u) gives the unit's feed), then finishes them.
template <class Feed>
std::vector<std::unique_ptr<Model>> build_all(const WeightSource& source, const std::vector<ModelRequest>& requests,
                                              uint64_t feed_cache, const BuildProgress& progress, Feed&& feed) {
  auto builders = make_builders(source, requests, feed_cache);
  const int n = n_units(source.shape());
  for (int u = 0; u < n; ++u) {
    feed(u, [&](UnitFeed& f) {
      for (auto& b : builders) b->add(f);
      if (progress) progress(u + 1, n, f.name());
    });
  }
  std::vector<std::unique_ptr<Model>> models;
  for (auto& b : builders) models.push_back(b->finish());
  return models;
}

}  // namespace

std::vector<std::unique_ptr<Model>> build_models(const WeightSource& source,
                                                 const std::vector<ModelRequest>& requests,
                                                 const BuildProgress& progress) {
  // Each unit is loaded, handed to the builders and dropped: one unit in host memory at a time.
  return build_all(source, requests, 0, progress, [&](int u, auto&& use) {
    UnitFeed f = source.load(u);
    use(f);
  });
}

FeedCache::FeedCache(const WeightSource& source)
    : source_(source), feeds_(static_cast<std::size_t>(n_units(source.shape()))) {
  static std::atomic<uint64_t> next_id{0};
  id_ = ++next_id;  // from 1: 0 means "no FeedCache" to make_cuda_builder
}

FeedCache::~FeedCache() {
  // The cached device weights of its models live no longer than it: after it they could serve
  // nothing, and a static holding them would be destroyed after the CUDA runtime at exit.
  try {
    cuda_keep_weights_for(*this, {});
  } catch (...) {  // nothing to report from a destructor; the memory goes with the process
  }
}

UnitFeed& FeedCache::feed(int unit) {
  auto& slot = feeds_.at(static_cast<std::size_t>(unit));
  if (!slot) slot.emplace(source_.load(unit));
  return *slot;
}

std::vector<std::unique_ptr<Model>> build_models(FeedCache& cache, const std::vector<ModelRequest>& requests,
                                                 const BuildProgress& progress) {
  return build_all(cache.source(), requests, cache.id(), progress, [&](int u, auto&& use) { use(cache.feed(u)); });
}

Backend resolve_backend(const std::string& name) {
  if (name == "cpu") return Backend::cpu;
  if (name == "cuda") {
    if (!cuda_built())
      throw Error("--backend cuda: this build has no CUDA (nvcc was not found at configure time)");
    if (!cuda_available())
      throw Error("--backend cuda: no CUDA device is available (no driver or no GPU)");
    return Backend::cuda;
  }
  if (name == "auto") return cuda_available() ? Backend::cuda : Backend::cpu;
  throw Error(fmt::format("unknown --backend '{}' (auto, cpu or cuda)", name));
}

}  // namespace df11::e2e
