// The CUDA forward pass (CUDA builds only). Precision policy: weights BF16; GEMMs are cuBLAS
// BF16 x BF16 with FP32 accumulation and FP32 output; the residual stream, norms, rotary
// embeddings, softmax and logits are FP32; GEMM inputs (normed activations, attention output,
// SwiGLU output) and the KV cache are rounded to BF16, as a BF16 inference runtime holds them.
// Weight providers: bf16 (all units resident on the device), df11 (DeviceImages of every unit,
// each decoded by the selected variant into one reused buffer just before it runs), cpu-offload
// (BF16 in pinned host memory, copied per unit into one reused buffer). Everything runs on one
// stream, so a unit's decode or copy waits for the GEMMs still reading the buffer; with
// --overlap, the block GEMMs' weights (whole matrices, or with --chunk-bytes the slices of
// chunked GEMMs) are acquired on a second stream of the lowest priority into the buffer's two
// halves in turn, ordered against the GEMMs (on a stream of the highest priority) by events. With
// fused_gemv, passes of at most 16 rows run the block GEMMs and the lm_head through the fused
// decode + GEMV kernels instead (df11: straight from the encoding; bf16: the same kernels on the
// resident words), in groups the data flow allows: q k v; o; gate up; down.
// Models built from a FeedCache (`df11 generate --runs`) share their provider
// through a process-wide cache: a later model with the same key gets the device weights as they
// are, not uploaded again; cuda_keep_weights_for drops those a run does not use.
// cuBLAS is opened with dlopen when the first CUDA model is built: linked, its libraries cost
// every run of the df11 tool ~0.2 s and ~200 MB of resident memory at start, GPU or not.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "common/cuda_util.hpp"
#include "decoder.hpp"
#include "e2e/cuda_kernels.cuh"
#include "fused/fused_gemv.hpp"
#include "e2e/factory.hpp"
#include "e2e/generate.hpp"
#include "e2e/rope.hpp"
#include "lib/cupti_timer.hpp"

#define CUBLAS_CHECK(expr)                                                                        \
  do {                                                                                            \
    const cublasStatus_t df11_st_ = (expr);                                                       \
    if (df11_st_ != CUBLAS_STATUS_SUCCESS) {                                                      \
      throw ::df11::Error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #expr + \
                          " failed: " + cublas().status_string(df11_st_));                        \
    }                                                                                             \
  } while (0)

namespace df11::e2e {
namespace {

// The cuBLAS entry points this model calls, resolved at run time. The library stays loaded for
// the life of the process (handles may outlive any scope that would unload it).
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetWorkspace_v2) set_workspace = nullptr;
  // The cublasComputeType_t form (C++ overloads it with an inline cudaDataType shim).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

CublasApi load_cublas() {
  void* lib = nullptr;
  std::string tried;
  for (const char* name : {"libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.13", "libcublas.so"}) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    tried += fmt::format(" {} ({})", name, dlerror());
  }
  if (!lib)
    throw Error("cannot load cuBLAS:" + tried + "; put the CUDA 13 libraries on LD_LIBRARY_PATH");
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn) throw Error(fmt::format("cuBLAS has no symbol {}", name));
  };
  CublasApi api;
  sym(api.create, "cublasCreate_v2");
  sym(api.destroy, "cublasDestroy_v2");
  sym(api.set_stream, "cublasSetStream_v2");
  sym(api.set_workspace, "cublasSetWorkspace_v2");
  sym(api.gemm_ex, "cublasGemmEx");
  sym(api.status_string, "cublasGetStatusString");
  return api;
}

const CublasApi& cublas() {
  static const CublasApi api = load_cublas();
  return api;
}

std::size_t sz(int64_t v) {
  return static_cast<std::size_t>(v);
}

class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
  ~NvtxRange() { nvtxRangePop(); }
};

// Device memory in use by the process, relative to the first sample (taken before the first
// model allocates anything, so the CUDA context itself is not counted).
struct MemoryWatch {
  bool started = false;
  uint64_t baseline = 0, peak = 0;
  void sample() {
    std::size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const uint64_t used = total_b - free_b;
    if (!started) {
      started = true;
      baseline = used;
    }
    peak = std::max(peak, used > baseline ? used - baseline : 0);
  }
};

MemoryWatch& watch() {
  static MemoryWatch w;
  return w;
}

class PinnedBuffer {
 public:
  explicit PinnedBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes_) CUDA_CHECK(cudaHostAlloc(&ptr_, bytes_, cudaHostAllocDefault));
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  [[nodiscard]] void* get() const { return ptr_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A model's cuBLAS handle on its stream, with a workspace of its own: the same workspace whether
// its GEMMs run eagerly or are captured into a CUDA graph (--graphs), so that cuBLAS sees the
// same configuration, picks the same kernels and gives the same bits either way (a captured GEMM
// otherwise draws on cuBLAS's default pool). The size is cuBLAS's own default on sm_90.
class CublasHandle {
 public:
  static constexpr std::size_t kWorkspaceBytes = 32u << 20;
  explicit CublasHandle(cudaStream_t s) : workspace_(kWorkspaceBytes) {
    CUBLAS_CHECK(cublas().create(&h_));
    CUBLAS_CHECK(cublas().set_stream(h_, s));  // (resets the workspace: set it after)
    CUBLAS_CHECK(cublas().set_workspace(h_, workspace_.get(), kWorkspaceBytes));
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() { cublas().destroy(h_); }
  [[nodiscard]] cublasHandle_t get() const { return h_; }

 private:
  cuda::DeviceBuffer<uint8_t> workspace_;  // outlives the handle (destroyed after it)
  cublasHandle_t h_{};
};

// ---- weight providers ------------------------------------------------------------------------

class DeviceProvider {
 public:
  virtual ~DeviceProvider() = default;
  virtual void add(UnitFeed& feed, cudaStream_t s) = 0;
  // Sizes what the model about to take the provider needs of the reused buffer (halves: with
  // --overlap); providers without one (resident BF16) have nothing to size.
  virtual void size_buffer(bool /*halves*/) {}
  // Sizes the reused buffer once every unit is known: as large as the largest decoder block
  // (the official runtime's one buffer); the embedding and lm_head, bigger than a block at
  // Nemo's vocabulary, are acquired in ranges that fit (CudaModel::pass). Its two halves (of
  // --overlap) each hold a block's largest GEMM, which makes the buffer twice that where it is
  // more than half a block (Nemo: 2 x 146.8 M elements for 272.6 M).
  virtual void prepare(const ModelShape& s) {
    buffer_elements_ = reused_buffer_elements(s);
    uint64_t largest_gemm = 0;
    for (int u = 0; u < static_cast<int>(s.n_layers) && sz(u) < maps_.size(); ++u)
      largest_gemm = std::max(largest_gemm, maps_[sz(u)].largest_gemm_elements());
    half_elements_ = reused_half_elements(buffer_elements_, largest_gemm, kAlignElements);
    prepare_fused();
  }
  // Device pointer to elements [lo, hi) of the unit as BF16 words, ready in stream order on s;
  // valid until the next acquire into the same place (df11, cpu-offload: they decode or copy
  // into the reused buffer) or for good (bf16: resident). half: -1 for the whole buffer; 0 or
  // 1 for one of its two halves (the overlapped slices of --overlap; at most half_elements()).
  // order: how a decoding provider (df11) orders the units of its decode (the same bits).
  // start: whether its decode may start early (dec::Start), for a caller whose kernel before it on
  // s is not a decode of the same weights (one that reads the buffer, as a GEMM, is fine).
  [[nodiscard]] virtual const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t s, int half,
                                                dec::Order order, dec::Start start) = 0;
  [[nodiscard]] const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t s, int half,
                                        dec::Order order) {
    return acquire(unit, lo, hi, s, half, order, dec::Start::serial);
  }
  [[nodiscard]] const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t s, int half) {
    return acquire(unit, lo, hi, s, half, dec::Order::ascending);
  }
  [[nodiscard]] const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t s) {
    return acquire(unit, lo, hi, s, -1);
  }
  [[nodiscard]] const uint16_t* acquire(int unit, cudaStream_t s, dec::Order order = dec::Order::ascending) {
    return acquire(unit, 0, map(unit).n_elements, s, -1, order);
  }
  // Whether acquire costs nothing (weights resident as BF16).
  [[nodiscard]] virtual bool resident() const { return false; }
  // Whether acquire decodes in the dec::Order it is given (a df11 decoder that honors it).
  [[nodiscard]] virtual bool honors_order() const { return false; }
  // Whether acquire can start its decode early (dec::Start) where the device allows it.
  [[nodiscard]] virtual bool honors_start() const { return false; }
  // Elements the reused buffer holds, which sets the lm_head and embedding slices for every kind
  // of weights (resident weights allocate no buffer but slice the same way).
  [[nodiscard]] uint64_t buffer_elements() const { return buffer_elements_; }
  // Elements one half of the buffer holds (whole multiples of kAlignElements).
  [[nodiscard]] uint64_t half_elements() const { return half_elements_; }
  [[nodiscard]] const UnitMap& map(int unit) const { return maps_.at(sz(unit)); }
  [[nodiscard]] virtual WeightsKind kind() const = 0;
  [[nodiscard]] virtual std::string describe() const = 0;
  [[nodiscard]] virtual uint64_t weight_bytes() const = 0;
  [[nodiscard]] virtual uint64_t decode_buffer_bytes() const { return 0; }
  // The reused buffer acquire brings weights into (its start: the whole buffer and half 0), or
  // null where weights are resident.
  [[nodiscard]] virtual const void* reused_buffer() const { return nullptr; }

  // ---- the fused decode + GEMV kernels (ModelRequest::fused_gemv) ----
  [[nodiscard]] bool fused() const { return fused_on_; }
  [[nodiscard]] bool fused_mma() const { return fused_on_ && fused_decode_ == dec::FusedDecode::fixed_mma; }
  // The unit's fused kernels (decoder blocks and the lm_head), and where matrix `slice` of the
  // unit's map is in their plan.
  [[nodiscard]] const dec::FusedGemvDevice& fused_device(int unit) const {
    const auto& d = fused_.at(sz(unit));
    if (!d) throw Error(fmt::format("cuda model: unit {} has no fused kernels", unit));
    return *d;
  }
  [[nodiscard]] std::size_t fused_matrix(int unit, int slice) const {
    if (sz(unit) >= fused_index_.size() || sz(slice) >= fused_index_[sz(unit)].size()) {
      throw Error(fmt::format("cuda model: unit {} has no fused matrix {}", unit, slice));
    }
    return fused_index_[sz(unit)][sz(slice)];
  }
  // What the fused kernels read: null to decode (df11); the unit's resident BF16 words (bf16).
  [[nodiscard]] virtual const uint16_t* fused_weights(int) const { return nullptr; }
  // The partial sums' scratch, shared by every unit (one stream orders the runs).
  [[nodiscard]] float* fused_partials() const { return partials_.get(); }

  // Called before the first add: units get fused kernels, except the embedding (unit
  // embed_unit; the model gathers its rows, no GEMV). Or, on DF11 weights built without them (a
  // --fused-gemv run after runs of the same decoder): then add_fused_only for every unit, and
  // prepare_fused.
  // mma: the tensor-core kernel over the decoder's fix64 units (fused_decode_of checked it).
  void enable_fused(int embed_unit, bool mma = false) {
    fused_on_ = true;
    embed_unit_ = embed_unit;
    if (mma) fused_decode_ = dec::FusedDecode::fixed_mma;
  }
  // The unit's fused kernels alone, on weights built without them: DF11, whose kernels read the
  // provider's own images.
  virtual void add_fused_only(UnitFeed&, cudaStream_t) {
    throw Error("cuda model: these weights cannot take fused kernels after they were built");
  }
  // The shared partials, sized for the largest unit at the largest fused batch.
  void prepare_fused() {
    uint64_t floats = 0;
    for (const auto& d : fused_)
      if (d) floats = std::max(floats, d->partials_floats(dec::fused_max_batch(d->plan().decode)));
    if (floats > 0) partials_ = cuda::DeviceBuffer<float>(floats);
  }

 protected:
  // The decode the fused kernels run (none: the unit layout's; fix64 decoders: their units).
  void set_fused_decode(std::optional<dec::FusedDecode> d) { fused_decode_ = d; }
  // Whether add must build fused kernels for this unit.
  [[nodiscard]] bool wants_fused(int unit) const { return fused_on_ && unit != embed_unit_; }
  // Builds the unit's fused kernels over its matrices in element order (wants_fused units only).
  // shared: the decoder's image of the unit (df11), or null with bf16_only (bf16).
  void add_fused(const UnitFeed& feed, const EncodedUnit& encoded, dec::FusedGemvDevice::Source source,
                 const dec::DeviceImage* shared, cudaStream_t s) {
    const AddTime timed(host_prep_times().upload_s);
    const UnitMap& m = feed.map();
    std::vector<std::size_t> order(m.slices.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return m.slices[a].offset < m.slices[b].offset; });
    std::vector<dec::GemvMatrix> mats;
    std::vector<std::size_t> index(m.slices.size());
    for (const std::size_t i : order) {
      index[i] = mats.size();
      mats.push_back({m.slices[i].offset, m.slices[i].rows, m.slices[i].cols});
    }
    if (sz(feed.unit()) >= fused_.size()) {
      fused_.resize(sz(feed.unit()) + 1);
      fused_index_.resize(sz(feed.unit()) + 1);
    }
    fused_[sz(feed.unit())] = std::make_unique<dec::FusedGemvDevice>(encoded, mats, 0, s, source, shared, fused_decode_);
    fused_index_[sz(feed.unit())] = std::move(index);
  }
  [[nodiscard]] uint64_t fused_bytes() const {
    uint64_t b = partials_.bytes();
    for (const auto& d : fused_) b += d ? d->device_bytes() : 0;
    return b;
  }
  void set_map(const UnitFeed& feed) {
    if (sz(feed.unit()) >= maps_.size()) maps_.resize(sz(feed.unit()) + 1);
    maps_[sz(feed.unit())] = feed.map();
  }
  // The largest block unit, and at least kSliceRows rows of the embedding or lm_head.
  [[nodiscard]] uint64_t reused_buffer_elements(const ModelShape& s) const {
    uint64_t n = static_cast<uint64_t>(kSliceRows * s.hidden);
    for (int u = 0; u < static_cast<int>(s.n_layers) && sz(u) < maps_.size(); ++u) n = std::max(n, maps_[sz(u)].n_elements);
    return n;
  }
  void check_range(int unit, uint64_t lo, uint64_t hi, int half) const {
    const uint64_t room = half < 0 ? buffer_elements_ : half_elements();
    if (half > 1 || lo > hi || hi > map(unit).n_elements || (!resident() && hi - lo > room)) {
      throw Error(fmt::format("cuda model: range [{}, {}) of unit {} ({} elements) does not fit the {}-element {}",
                              lo, hi, unit, map(unit).n_elements, room, half < 0 ? "buffer" : "half buffer"));
    }
  }

 public:
  // Embedding and lm_head ranges are whole multiples of this many rows (256-byte aligned
  // GEMM operands and outputs for any hidden size that is a multiple of 2).
  static constexpr int64_t kSliceRows = 128;
  // Where a range starting at element lo goes in the reused buffer: at the same alignment
  // modulo 256 bytes as element lo of a resident unit (whose base cudaMalloc aligns), so that
  // cuBLAS, which may choose kernels by pointer alignment, sees the same alignment for every
  // kind of weights.
  static constexpr uint64_t kAlignElements = 128;

 protected:
  std::vector<UnitMap> maps_;
  uint64_t buffer_elements_ = 0;
  uint64_t half_elements_ = 0;

 private:
  bool fused_on_ = false;
  int embed_unit_ = -1;
  std::vector<std::unique_ptr<dec::FusedGemvDevice>> fused_;
  std::vector<std::vector<std::size_t>> fused_index_;  // per unit: per slice of its map, the plan's matrix
  std::optional<dec::FusedDecode> fused_decode_;        // the fused decode (none: the layout's)
  cuda::DeviceBuffer<float> partials_;
};

class Bf16DeviceProvider final : public DeviceProvider {
 public:
  // fused: the fused decode whose partition the fused kernels follow on BF16 words (that of the
  // DF11 decoder they are checked against); they read the encoding of its layout.
  explicit Bf16DeviceProvider(dec::FusedDecode fused = dec::FusedDecode::two_pass)
      : fused_layout_(dec::fused_spec(fused).layout()) {
    set_fused_decode(fused);
  }
  void add(UnitFeed& feed, cudaStream_t s) override {
    set_map(feed);
    if (sz(feed.unit()) >= units_.size()) units_.resize(sz(feed.unit()) + 1);
    if (const synth::UnitPlan* plan = feed.synthetic_plan()) {
      // A synthetic unit generated in place (the host generator's bits: gpu::synth_fill), so the
      // resident BF16 weights never cross PCIe.
      const AddTime timed(host_prep_times().upload_s);
      auto& buf = units_[sz(feed.unit())] = cuda::DeviceBuffer<uint16_t>(feed.map().n_elements);
      synth::fill_unit(std::span<uint16_t>(buf.get(), buf.size()), *plan, 0,
                       [s](std::span<uint16_t> out, const synth::MatrixRecipe& r) {
                         gpu::synth_fill(out.data(), out.size(), 0, r, s);  // out is device memory
                       });
      CUDA_CHECK(cudaStreamSynchronize(s));
    } else {
      const std::vector<uint16_t>& w = feed.bf16();
      const AddTime timed(host_prep_times().upload_s);
      auto& buf = units_[sz(feed.unit())] = cuda::DeviceBuffer<uint16_t>(w.size());
      CUDA_CHECK(cudaMemcpyAsync(buf.get(), w.data(), w.size() * 2, cudaMemcpyHostToDevice, s));
      CUDA_CHECK(cudaStreamSynchronize(s));  // the feed's host copy goes away after add
    }
    // The fused kernels on BF16 words still follow the DF11 blocks' partition: they hold the
    // block positions of the unit's encoding (made here for a BF16 source), not its image.
    if (wants_fused(feed.unit())) {
      const EncodedUnit& e = feed.encoded(fused_layout_);
      add_fused(feed, e, dec::FusedGemvDevice::Source::bf16_only, nullptr, s);
    }
  }
  const uint16_t* fused_weights(int unit) const override { return units_.at(sz(unit)).get(); }
  const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t, int half, dec::Order,
                          dec::Start) override {
    check_range(unit, lo, hi, half);
    return units_.at(sz(unit)).get() + lo;
  }
  bool resident() const override { return true; }
  WeightsKind kind() const override { return WeightsKind::bf16; }
  std::string describe() const override { return "bf16"; }
  // With fused kernels, also their plans, block positions and partials: scratch that plain BF16
  // inference would not hold.
  uint64_t weight_bytes() const override {
    uint64_t b = fused_bytes();
    for (const auto& u : units_) b += u.bytes();
    return b;
  }

 private:
  std::vector<cuda::DeviceBuffer<uint16_t>> units_;
  Layout fused_layout_;
};

// A provider that brings ranges of units into one reused device buffer (decoded or copied).
class ReusedBufferProvider : public DeviceProvider {
 public:
  void prepare(const ModelShape& s) override {
    DeviceProvider::prepare(s);
    size_buffer(false);
  }
  // The buffer as the model about to take the provider uses it: the whole buffer, and with
  // halves (--overlap) room for both (Nemo: 587 MB where whole blocks need 545 MB), plus room
  // for the alignment shift (kAlignElements) of the whole buffer or of each half. Cached weights
  // serve models with and without --overlap, so each model sizes it as it takes it, and a
  // whole-block model's peak memory holds no halves it never uses. A cached provider serves one
  // live model at a time; the device is synchronized before the old buffer goes.
  void size_buffer(bool halves) override {
    const uint64_t want =
        (halves ? std::max(buffer_elements_, 2 * half_elements_) : buffer_elements_) + 2 * kAlignElements;
    halves_ = halves;
    if (buffer_.get() != nullptr && buffer_.size() == want) return;
    if (buffer_.get() != nullptr) CUDA_CHECK(cudaDeviceSynchronize());
    buffer_.reset();  // freed before the new one: a peak never holds both
    buffer_ = cuda::DeviceBuffer<uint16_t>(want);
  }
  uint64_t decode_buffer_bytes() const override { return buffer_.bytes(); }
  const void* reused_buffer() const override { return buffer_.get(); }

 protected:
  // Where [lo, ...) goes: the whole buffer (half -1) and half 0 start at its base, half 1 past
  // half 0 (half_elements() + kAlignElements); then lo's alignment shift (kAlignElements above).
  [[nodiscard]] uint16_t* slot(uint64_t lo, int half) const {
    if (half >= 0 && !halves_) throw Error("reused buffer: a half asked of a buffer sized without --overlap's halves");
    const uint64_t base = half == 1 ? half_elements() + kAlignElements : 0;
    return buffer_.get() + base + lo % kAlignElements;
  }

  cuda::DeviceBuffer<uint16_t> buffer_;
  bool halves_ = false;  // sized for two halves (size_buffer)
};

class Df11DeviceProvider final : public ReusedBufferProvider {
 public:
  // variant: as cuda_df11_variant gives it ("" picks kDefaultCudaVariant).
  explicit Df11DeviceProvider(const std::string& variant) {
    dec::register_all(registry_);
    decoder_ = pick_cuda_decoder(registry_, variant);
    set_fused_decode(dec::fused_decode_for(*decoder_));  // the fused kernels follow the decoder (fix64: its units)
  }
  void add(UnitFeed& feed, cudaStream_t s) override {
    set_map(feed);
    const EncodedUnit& e = feed.encoded(decoder_->layout());
    const dec::Status ok = decoder_->can_implement(e);
    if (!ok.ok) throw Error(fmt::format("{}: {}", decoder_->name(), ok.reason));
    if (sz(feed.unit()) >= images_.size()) images_.resize(sz(feed.unit()) + 1);
    {
      const AddTime timed(host_prep_times().upload_s);
      images_[sz(feed.unit())] = decoder_->upload(e, s);
    }
    if (images_[sz(feed.unit())]->n_elements() != feed.map().n_elements) {
      throw Error(fmt::format("unit {}: {} encoded elements, its tensors hold {}", feed.name(),
                              images_[sz(feed.unit())]->n_elements(), feed.map().n_elements));
    }
    add_fused_shared(feed, e, s);
  }
  // The fused kernels read the decoder's images, so cached weights of this decoder can take them.
  void add_fused_only(UnitFeed& feed, cudaStream_t s) override {
    add_fused_shared(feed, feed.encoded(decoder_->layout()), s);
  }
  const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t s, int half, dec::Order order,
                          dec::Start start) override {
    NvtxRange r("e2e.df11_decode");
    check_range(unit, lo, hi, half);
    uint16_t* dst = slot(lo, half);
    decoder_->launch(*images_.at(sz(unit)), dst, lo, hi, s, order, start);
    return dst;
  }
  WeightsKind kind() const override { return WeightsKind::df11; }
  bool honors_order() const override { return decoder_->honors_order(); }
  bool honors_start() const override { return decoder_->honors_start(); }
  std::string describe() const override { return fmt::format("df11 ({})", decoder_->name()); }
  uint64_t weight_bytes() const override {
    uint64_t b = buffer_.bytes() + fused_bytes();
    for (const auto& i : images_) b += i ? i->device_bytes() : 0;
    return b;
  }

 private:
  // The unit's fused kernels (wants_fused units), over the decoder's image of it: no second copy.
  void add_fused_shared(const UnitFeed& feed, const EncodedUnit& e, cudaStream_t s) {
    if (!wants_fused(feed.unit())) return;
    try {
      add_fused(feed, e, dec::FusedGemvDevice::Source::shared_image, images_.at(sz(feed.unit())).get(), s);
    } catch (const Error& err) {
      throw Error(fmt::format("--fused-gemv with decoder {}: {}", decoder_->name(), err.what()));
    }
  }

  dec::Registry registry_;
  const dec::Decoder* decoder_ = nullptr;
  std::vector<std::unique_ptr<dec::DeviceImage>> images_;
};

class OffloadProvider final : public ReusedBufferProvider {
 public:
  void add(UnitFeed& feed, cudaStream_t) override {
    set_map(feed);
    const std::vector<uint16_t>& w = feed.bf16();
    const AddTime timed(host_prep_times().upload_s);
    if (sz(feed.unit()) >= pinned_.size()) pinned_.resize(sz(feed.unit()) + 1);
    pinned_[sz(feed.unit())] = std::make_unique<PinnedBuffer>(w.size() * 2);
    // On all cores: one core copies ~10 GB/s, and Nemo's units hold 24.5 GB in all.
    parallel_copy(pinned_[sz(feed.unit())]->get(), w.data(), w.size() * 2, 0);
  }
  const uint16_t* acquire(int unit, uint64_t lo, uint64_t hi, cudaStream_t s, int half, dec::Order,
                          dec::Start) override {
    NvtxRange r("e2e.offload_copy");
    check_range(unit, lo, hi, half);
    const auto* p = static_cast<const uint16_t*>(pinned_.at(sz(unit))->get());
    uint16_t* dst = slot(lo, half);
    CUDA_CHECK(cudaMemcpyAsync(dst, p + lo, (hi - lo) * 2, cudaMemcpyHostToDevice, s));
    return dst;
  }
  WeightsKind kind() const override { return WeightsKind::cpu_offload; }
  std::string describe() const override {
    return "cpu-offload (pinned host BF16, copied per unit)";
  }
  // Device bytes: only the buffer; the weights live in host memory.
  uint64_t weight_bytes() const override { return buffer_.bytes(); }

 private:
  std::vector<std::unique_ptr<PinnedBuffer>> pinned_;
};

// ---- the model -------------------------------------------------------------------------------

class CudaModel final : public Model {
 public:
  // Rows of activations one pass holds at most; longer prefills run in chunks of positions.
  static constexpr int kMaxRowsPerPass = 4096;
  // Up to this many distinct tokens in a pass, the embedding rows are acquired one by one.
  static constexpr std::size_t kRowGatherTokens = 64;

  // provider: shared with the process's cache of device weights when the request allowed it
  // (weights_reused: it came from there, built by an earlier model).
  CudaModel(const ModelShape& s, const Norms& norms, std::shared_ptr<DeviceProvider> provider,
            std::unique_ptr<cuda::Stream> stream, int batch, int max_positions, uint64_t chunk_bytes,
            int fused_rows, bool fused_mma, bool overlap, bool slice_l2, bool descending_decode, bool early_slices,
            bool graphs, bool weights_reused)
      : s_(s),
        provider_(std::move(provider)),
        stream_(std::move(stream)),
        blas_(stream_->get()),
        batch_(batch),
        max_positions_(max_positions),
        chunk_bytes_(chunk_bytes),
        fused_rows_(fused_rows),
        fused_mma_(fused_mma),
        block_order_(descending_decode ? dec::Order::descending : dec::Order::ascending),
        slice_start_(early_slices ? dec::Start::early : dec::Start::serial),
        weights_reused_(weights_reused),
        graphs_(graphs) {
    if (graphs && overlap) {
      throw Error("cuda model: --graphs replays one stream's decode steps; --overlap runs two streams (not both)");
    }
    if (graphs && provider_->kind() == WeightsKind::cpu_offload) {
      throw Error("cuda model: --graphs is for bf16 and df11 weights; cpu-offload's copies run eagerly");
    }
    if (overlap) {
      // Low priority: as the side stream's decode blocks retire, the GEMM's pending blocks on
      // the main stream (high priority when overlapped: CudaBuilder) start first.
      side_ = std::make_unique<cuda::Stream>(cuda::Priority::low);
      // Tests only: DF11_E2E_SKEW=main (or side) delays that stream by ~200 us before each GEMM
      // (acquire), so that a missing wait on the other stream gives wrong results every time.
      if (const char* skew = std::getenv("DF11_E2E_SKEW")) {
        skew_main_ = std::string(skew) == "main";
        skew_side_ = std::string(skew) == "side";
      }
      slots_ = std::make_unique<cuda::TwoSlots>();
    }
    const cudaStream_t st = stream_->get();
    if (max_positions > gpu::attention_max_positions(static_cast<int>(s.head_dim))) {
      throw Error(fmt::format(
          "cuda model: {} positions exceed what the attention kernel holds in shared memory ({})",
          max_positions, gpu::attention_max_positions(static_cast<int>(s.head_dim))));
    }
    if (batch > 65535 || s.n_heads > 65535) {  // attention's grid: (positions, heads, batch)
      throw Error(fmt::format("cuda model: batch {} and {} heads must each be at most 65535", batch, s.n_heads));
    }
    for (int64_t d :
         {s.hidden, s.intermediate * 2, s.vocab, (s.n_heads + 2 * s.n_kv_heads) * s.head_dim}) {
      if (d > INT_MAX / 2) throw Error("cuda model: a dimension exceeds what cuBLAS takes as int");
    }
    auto upload = [&](const std::vector<uint16_t>& w) {
      auto b = cuda::DeviceBuffer<uint16_t>::from(w, st);
      return b;
    };
    for (std::size_t l = 0; l < sz(s.n_layers); ++l) {
      norm_in_.push_back(upload(norms.input.at(l)));
      norm_post_.push_back(upload(norms.post.at(l)));
    }
    norm_final_ = upload(norms.final_norm);
    rope_ = cuda::DeviceBuffer<float>::from(rope_table(s, max_positions), st);
    const std::size_t cache = sz(batch) * sz(s.n_kv_heads) * sz(max_positions) * sz(s.head_dim);
    for (int64_t l = 0; l < s.n_layers; ++l) {
      kc_.emplace_back(cache);
      vc_.emplace_back(cache);
    }
    // Rows of one pass: all of a forward's rows up to kMaxRowsPerPass (never more than the
    // model can ever take at once), so small runs do not hold activations sized for 4096 rows.
    rows_cap_ = static_cast<int>(
        std::max<int64_t>(batch, std::min<int64_t>(kMaxRowsPerPass, int64_t{batch} * max_positions)));
    const auto rows = sz(rows_cap_);
    const int64_t nq = s.n_heads * s.head_dim, nqkv = nq + 2 * s.n_kv_heads * s.head_dim;
    tokens_ = cuda::DeviceBuffer<int32_t>(rows);
    h_ = cuda::DeviceBuffer<float>(rows * sz(s.hidden));
    xb_ = cuda::DeviceBuffer<uint16_t>(rows * sz(s.hidden));
    qkv_ = cuda::DeviceBuffer<float>(rows * sz(nqkv));
    att_ = cuda::DeviceBuffer<uint16_t>(rows * sz(nq));
    gu_ = cuda::DeviceBuffer<float>(rows * sz(2 * s.intermediate));
    act_ = cuda::DeviceBuffer<uint16_t>(rows * sz(s.intermediate));
    xf_ = cuda::DeviceBuffer<uint16_t>(sz(batch) * sz(s.hidden));
    logits_ = cuda::DeviceBuffer<float>(sz(batch) * sz(s.vocab));
    CUDA_CHECK(cudaMemsetAsync(logits_.get(), 0, logits_.bytes(), st));  // as the CPU model: zeros before any forward
    next_ = cuda::DeviceBuffer<int32_t>(sz(batch));
    if (graphs_) pos_dev_ = cuda::DeviceBuffer<int32_t>(1);
    // Chunked (not overlapped): every slice is acquired at the start of the reused buffer
    // (ReusedBufferProvider::slot: plus lo's alignment shift), so one window holds them all.
    // Overlapped, the two halves lie a block's largest GEMM apart: no window.
    if (slice_l2 && chunk_bytes_ && !side_ && provider_->reused_buffer()) {
      // A slice of chunk_bytes_ starts at most kAlignElements - 1 elements into the buffer; the
      // window never reaches past the buffer (decode_buffer_bytes: the reused buffer's size).
      const uint64_t window_bytes = std::min<uint64_t>(
          chunk_bytes_ + DeviceProvider::kAlignElements * sizeof(uint16_t), provider_->decode_buffer_bytes());
      auto w = std::make_unique<cuda::L2Window>(provider_->reused_buffer(), window_bytes,
                                                std::vector<cudaStream_t>{st});
      if (w->plan().on()) {
        slice_window_ = std::move(w);
      } else {
        slice_l2_refused_ = w->plan().why_not;
      }
    }
    CUDA_CHECK(cudaStreamSynchronize(st));
    watch().sample();
  }

  // Work may still run on the device (and, overlapped, on the side stream, which the main stream
  // has not joined if a pass threw halfway): finish it before the buffers it uses go away.
  ~CudaModel() override {
    if (side_) (void)cudaStreamSynchronize(side_->get());
    (void)cudaStreamSynchronize(stream_->get());
  }
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelShape& shape() const override { return s_; }
  int batch() const override { return batch_; }
  int max_positions() const override { return max_positions_; }
  int position() const override { return position_; }
  Backend backend() const override { return Backend::cuda; }
  WeightsKind weights() const override { return provider_->kind(); }
  bool weights_reused() const override { return weights_reused_; }
  bool last_forward_was_setup() const override { return captured_; }
  std::string describe() const override {
    return "cuda " + provider_->describe() +
           (chunk_bytes_ ? fmt::format(", chunked GEMMs ({} B slices{})", chunk_bytes_,
                                       side_ ? ", each decoded or copied on a second stream while the last one's GEMM runs" : "")
            : side_      ? std::string(", each matrix of a cuBLAS pass decoded or copied on a second stream while the last "
                                       "one's GEMM runs")
                         : std::string()) +
           (slice_window_              ? fmt::format(", slices held in persisting L2 ({:.1f} MB)",
                                                     slice_window_->plan().set_aside_bytes / 1e6)
            : !slice_l2_refused_.empty() ? ", slices not held in L2 (" + slice_l2_refused_ + ")"
                                         : std::string()) +
           (provider_->kind() == WeightsKind::df11 && chunk_bytes_ && !side_ ? slice_start_note() : std::string()) +
           (block_order_ == dec::Order::descending && provider_->kind() == WeightsKind::df11 && !chunk_bytes_ && !side_
                ? (provider_->honors_order() ? std::string(", blocks decoded last unit first")
                                             : std::string(", blocks decoded in the decoder's own order (it has no other)"))
                : std::string()) +
           (provider_->fused() ? fmt::format(", fused decode+{} up to {} rows", provider_->fused_mma() ? "MMA" : "GEMV",
                                             fused_rows_)
            : fused_rows_ > 0  ? fmt::format(", no fused decode+{} at batch {} (> {})", fused_mma_ ? "MMA" : "GEMV",
                                             batch_, fused_rows_)
                               : std::string()) +
           graphs_note();
  }

  // --graphs: what became of it (describe).
  [[nodiscard]] std::string graphs_note() const {
    if (!graphs_) return "";
    if (!graphs_refused_.empty()) return ", no CUDA graph (" + graphs_refused_ + "): decode steps eager";
    if (step_graph_.get() != nullptr) {
      return fmt::format(", decode steps after the first replayed as a CUDA graph ({} replays)", replays_);
    }
    return ", decode steps to be replayed as a CUDA graph (none run yet)";
  }
  void reset() override { position_ = 0; }

  // How a chunked DF11 model's slice decodes start (describe).
  [[nodiscard]] std::string slice_start_note() const {
    if (slice_start_ == dec::Start::serial) return ", slice decodes started after the kernel before them";
    if (!provider_->honors_start()) return ", slice decodes started serially (the decoder cannot start early)";
    if (!dec::device_starts_early()) return ", slice decodes started serially (early needs sm_90)";
    if (const uint64_t n = dec::early_launches_refused(); n > 0) {
      return fmt::format(", slice decodes asked to start early, but {} early launch{} refused in this process "
                         "(those decoders' launches ran serially from then on)",
                         n, n == 1 ? " was" : "es were");
    }
    return ", slice decodes started early (programmatic dependent launch)";
  }

  void forward(std::span<const int32_t> tokens, int n_new) override {
    NvtxRange r("e2e.forward");
    check_forward_args(*this, tokens, n_new);
    const int chunk = std::max(1, rows_cap_ / batch_);
    for (int t0 = 0; t0 < n_new; t0 += chunk) {
      const int tn = std::min(chunk, n_new - t0);
      part_.resize(sz(batch_) * sz(tn));
      for (int b = 0; b < batch_; ++b) {
        std::copy_n(tokens.data() + sz(b) * sz(n_new) + sz(t0), tn, part_.data() + sz(b) * sz(tn));
      }
      // Pageable source: the call returns once the bytes are staged, so part_ may change after.
      CUDA_CHECK(cudaMemcpyAsync(tokens_.get(), part_.data(), part_.size() * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream_->get()));
      pass(tn);
    }
  }

  void logits(std::vector<float>& out) override {
    out.resize(sz(batch_) * sz(s_.vocab));
    CUDA_CHECK(cudaMemcpyAsync(out.data(), logits_.get(), out.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_->get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_->get()));
    watch().sample();
  }

  void argmax(std::vector<int32_t>& out) override {
    gpu::argmax(logits_.get(), batch_, s_.vocab, next_.get(), stream_->get());
    out.resize(sz(batch_));
    CUDA_CHECK(cudaMemcpyAsync(out.data(), next_.get(), out.size() * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, stream_->get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_->get()));
    watch().sample();
  }

  MemoryStats memory() const override {
    MemoryStats m;
    m.weight_bytes = provider_->weight_bytes();
    m.decode_buffer_bytes = provider_->decode_buffer_bytes();
    m.kv_cache_bytes = kc_.empty() ? 0 : 2 * kc_.size() * kc_[0].bytes();
    m.device_peak_bytes = watch().peak;
    return m;
  }

 private:
  // y[m][n] (+)= x[m][k] . w[n][k]^T: BF16 inputs, FP32 accumulation and output. cuBLAS is
  // column-major, so it computes y^T = w^T(op T on the [k, n] view) x x^T.
  void gemm(const uint16_t* x, int64_t m, int64_t k, const uint16_t* w, int64_t n, float* y,
            int64_t ldy, bool accumulate) {
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublas().gemm_ex(blas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                  static_cast<int>(m), static_cast<int>(k), &alpha, w, CUDA_R_16BF,
                                  static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &beta,
                                  y, CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
  }

  // One matrix of a fused run: Y[rows][ld] (+)= X[rows][in] . W^T, float output.
  struct FusedGemv {
    int slice;  // the matrix: its slice in the unit's map (a Role for blocks, 0 for the lm_head)
    const uint16_t* x;
    float* y;
    int64_t ld;
    bool accumulate;
  };
  // The unit's fused kernels over these matrices: decoding them (df11) or reading the resident
  // BF16 words (bf16) with the same arithmetic.
  void fused_run(int unit, int64_t rows, std::initializer_list<FusedGemv> mats) {
    NvtxRange r("e2e.fused_gemv");
    const dec::FusedGemvDevice& dev = provider_->fused_device(unit);
    const std::size_t n = dev.plan().mats.size();
    dec::GemvRun run;
    run.x.assign(n, nullptr);
    run.y.assign(n, {});
    for (const FusedGemv& g : mats) {
      const std::size_t i = provider_->fused_matrix(unit, g.slice);
      run.x[i] = g.x;
      run.y[i] = dec::GemvOut{nullptr, g.y, g.ld, g.accumulate};
    }
    run.batch = static_cast<int>(rows);
    run.weights = provider_->fused_weights(unit);
    run.partials = provider_->fused_partials();
    dev.run(run, stream_->get());
  }

  // One pass of t_new positions per row (tokens in tokens_ and part_): the embedding rows, then
  // the layers and the head (after_embedding). With graphs, a decode step's after_embedding is
  // captured once, at the second decode step (every kernel then launched eagerly before, so no
  // first-launch set-up happens in the capture), and replayed from then on, its position read
  // from pos_dev_, written before each replay; a capture that fails leaves the model eager and
  // says why (describe).
  void pass(int t_new) {
    captured_ = false;
    embed_rows(int64_t{batch_} * t_new);
    const bool step = graphs_ && t_new == 1 && graphs_refused_.empty();
    if (step && (step_graph_.get() != nullptr || stepped_eagerly_)) {
      const cudaStream_t st = stream_->get();
      pos_stage_ = position_;  // pageable: staged before the call returns
      CUDA_CHECK(cudaMemcpyAsync(pos_dev_.get(), &pos_stage_, sizeof(int32_t), cudaMemcpyHostToDevice, st));
      if (step_graph_.get() == nullptr) {
        capture_step();
        captured_ = true;  // this step's time holds the capture (or its failed attempt)
      }
      if (step_graph_.get() != nullptr) {
        CUDA_CHECK(cudaGraphLaunch(step_graph_.get(), st));
        ++replays_;
        position_ += t_new;
        return;
      }
    }
    if (step) stepped_eagerly_ = true;
    after_embedding(t_new, nullptr);
    position_ += t_new;
  }

  // Captures a decode step's after_embedding (positions from pos_dev_) into step_graph_, or sets
  // graphs_refused_ (the step then runs eagerly). The persisting L2 window, a stream attribute,
  // goes onto the graph's kernel nodes.
  void capture_step() {
    NvtxRange r("e2e.capture");
    graphs_refused_ =
        cuda::capture_graph(stream_->get(), [&] { after_embedding(1, pos_dev_.get()); }, slice_window_.get(),
                            step_graph_);
  }

  // The layers and the head of a pass whose embedding rows are in h_. pos_dev: the position is
  // read from the device (a captured step), else position_.
  void after_embedding(int t_new, const int* pos_dev) {
    const ModelShape& s = s_;
    const cudaStream_t st = stream_->get();
    const int64_t rows = int64_t{batch_} * t_new, H = s.hidden, D = s.head_dim, I = s.intermediate;
    const int64_t nq = s.n_heads * D, nkv = s.n_kv_heads * D, nqkv = nq + 2 * nkv;
    const auto eps = static_cast<float>(s.rms_norm_eps);
    // Overlapped: the side stream's first slice of this pass waits for everything before it here,
    // the embedding rows acquired into the same buffer among it. (Later users of the buffer on
    // this stream, the lm_head slices, come after GEMMs that waited for every side-stream slice.)
    if (slots_) slots_->begin();
    // Fused decode + GEMV: passes of at most fused_rows_ rows (a model's choice by rows alone, so
    // that models with the same settings run the same arithmetic).
    const bool fused = provider_->fused() && rows <= fused_rows_;
    for (int64_t l = 0; l < s.n_layers; ++l) {
      NvtxRange r("e2e.layer");
      const int unit = static_cast<int>(l);
      // Whole blocks: the block is acquired once, before its first GEMM. Chunked or overlapped:
      // each GEMM acquires its weights slice by slice (wgemm; overlapped without chunk_bytes_, a
      // slice is the whole matrix). Fused: nothing is acquired.
      const uint16_t* W = chunk_bytes_ || side_ || fused ? nullptr : provider_->acquire(unit, st, block_order_);
      const UnitMap& m = provider_->map(unit);
      // y[rows][n] (+)= x[rows][k] . (the n x k matrix of the block starting at `role`)^T
      auto wgemm = [&](const uint16_t* x, int64_t k, Role role, int64_t n, float* y, int64_t ldy, bool acc) {
        const uint64_t off = m.slices[role].offset;
        if (W != nullptr) {
          gemm(x, rows, k, W + off, n, y, ldy, acc);
          return;
        }
        // Overlapped whole matrices (no chunk_bytes_): the matrix is one slice; a half holds any
        // block GEMM (prepare), and acquire checks the room.
        const int64_t slice = chunk_bytes_ ? chunk_rows(k) : n;
        for (int64_t r0 = 0; r0 < n; r0 += slice) {
          const int64_t r1 = std::min(n, r0 + slice);
          const uint64_t lo = off + static_cast<uint64_t>(r0 * k), hi = off + static_cast<uint64_t>(r1 * k);
          if (!side_) {
            // The kernel before this slice's decode on st is a GEMM (the last slice's, or another
            // matrix's) or a kernel of the forward pass, never a decode: it may start early.
            gemm(x, rows, k, provider_->acquire(unit, lo, hi, st, -1, dec::Order::ascending, slice_start_), r1 - r0,
                 y + r0, ldy, acc);
            continue;
          }
          // Overlapped: the slice is decoded (copied) on the side stream into the half the GEMM
          // before last read, once that GEMM is done, while the last slice's GEMM runs here.
          const uint16_t* w = nullptr;
          slots_->step(
              side_->get(), st,
              [&](int h) {
                if (skew_side_) gpu::spin(kSkewUs, side_->get());
                w = provider_->acquire(unit, lo, hi, side_->get(), h);
              },
              [&](int) {
                if (skew_main_) gpu::spin(kSkewUs, st);
                gemm(x, rows, k, w, r1 - r0, y + r0, ldy, acc);
              });
        }
      };
      gpu::rmsnorm(h_.get(), rows, H, norm_in_[sz(l)].get(), H, eps, xb_.get(), st);
      if (fused) {
        fused_run(unit, rows, {{q_proj, xb_.get(), qkv_.get(), nqkv, false},
                               {k_proj, xb_.get(), qkv_.get() + nq, nqkv, false},
                               {v_proj, xb_.get(), qkv_.get() + nq + nkv, nqkv, false}});
      } else if (m.qkv_fused()) {
        wgemm(xb_.get(), H, q_proj, nqkv, qkv_.get(), nqkv, false);
      } else {
        wgemm(xb_.get(), H, q_proj, nq, qkv_.get(), nqkv, false);
        wgemm(xb_.get(), H, k_proj, nkv, qkv_.get() + nq, nqkv, false);
        wgemm(xb_.get(), H, v_proj, nkv, qkv_.get() + nq + nkv, nqkv, false);
      }
      gpu::rope_store(qkv_.get(), nqkv, batch_, t_new, position_, static_cast<int>(s.n_heads),
                      static_cast<int>(s.n_kv_heads), static_cast<int>(D), rope_.get(),
                      kc_[sz(l)].get(), vc_[sz(l)].get(), max_positions_, st, pos_dev);
      gpu::attention(qkv_.get(), nqkv, kc_[sz(l)].get(), vc_[sz(l)].get(), batch_, t_new, position_,
                     static_cast<int>(s.n_heads), static_cast<int>(s.n_kv_heads),
                     static_cast<int>(D), max_positions_, att_.get(), st, pos_dev);
      if (fused) {
        fused_run(unit, rows, {{o_proj, att_.get(), h_.get(), H, true}});
      } else {
        wgemm(att_.get(), nq, o_proj, H, h_.get(), H, true);
      }
      gpu::rmsnorm(h_.get(), rows, H, norm_post_[sz(l)].get(), H, eps, xb_.get(), st);
      if (fused) {
        fused_run(unit, rows, {{gate_proj, xb_.get(), gu_.get(), 2 * I, false},
                               {up_proj, xb_.get(), gu_.get() + I, 2 * I, false}});
      } else if (m.gate_up_fused()) {
        wgemm(xb_.get(), H, gate_proj, 2 * I, gu_.get(), 2 * I, false);
      } else {
        wgemm(xb_.get(), H, gate_proj, I, gu_.get(), 2 * I, false);
        wgemm(xb_.get(), H, up_proj, I, gu_.get() + I, 2 * I, false);
      }
      gpu::swiglu(gu_.get(), rows, I, act_.get(), st);
      if (fused) {
        fused_run(unit, rows, {{down_proj, act_.get(), h_.get(), H, true}});
      } else {
        wgemm(act_.get(), I, down_proj, H, h_.get(), H, true);
      }
    }
    gpu::rmsnorm(h_.get() + (t_new - 1) * H, batch_, int64_t{t_new} * H, norm_final_.get(), H, eps,
                 xf_.get(), st);
    const int lm = lm_head_unit(s);
    if (provider_->fused()) {  // on only at batch <= fused_rows_ (CudaBuilder)
      fused_run(lm, batch_, {{0, xf_.get(), logits_.get(), s.vocab, false}});
      return;
    }
    // lm_head in row slices that fit the reused buffer, for every kind of weights alike (the
    // same GEMMs, so BF16 and DF11 logits stay bit-identical).
    const uint64_t lm_off = provider_->map(lm).slices[0].offset;
    const int64_t slice = table_slice_rows();
    for (int64_t r0 = 0; r0 < s.vocab; r0 += slice) {
      const int64_t r1 = std::min<int64_t>(s.vocab, r0 + slice);
      const uint16_t* W = provider_->acquire(lm, lm_off + static_cast<uint64_t>(r0 * H),
                                             lm_off + static_cast<uint64_t>(r1 * H), st);
      gemm(xf_.get(), batch_, H, W, r1 - r0, logits_.get() + r0, s.vocab, false);
    }
  }

  // Rows of a chunked GEMM's weight slice for rows of k elements (chunk_bytes_ > 0): about
  // chunk_bytes_ of BF16, whole kSliceRows, and never more than the reused buffer (overlapped:
  // half of it) holds. A whole matrix is one slice: one GEMM, the very call of the whole-block
  // path (same shape and ld; ReusedBufferProvider::slot keeps the alignment).
  [[nodiscard]] int64_t chunk_rows(int64_t k) const {
    const int64_t want = static_cast<int64_t>(chunk_bytes_ / 2) / k;
    const int64_t fit = static_cast<int64_t>(side_ ? provider_->half_elements() : provider_->buffer_elements()) / k;
    const int64_t rows = std::min(want, fit) / DeviceProvider::kSliceRows * DeviceProvider::kSliceRows;
    return std::max<int64_t>(DeviceProvider::kSliceRows, rows);
  }

  // Rows of the embedding or lm_head acquired at once: what the reused buffer holds, in whole
  // kSliceRows; the same for every kind of weights, so that the lm_head GEMMs are identical.
  [[nodiscard]] int64_t table_slice_rows() const {
    const int64_t fit = static_cast<int64_t>(provider_->buffer_elements()) / s_.hidden;
    return std::max<int64_t>(DeviceProvider::kSliceRows, fit / DeviceProvider::kSliceRows * DeviceProvider::kSliceRows);
  }

  // h_[r] = embedding row of token r, for the rows of this pass (tokens in tokens_, and on the
  // host in part_). Resident weights: one gather. Otherwise the embedding is acquired (decoded
  // or copied) only where needed: a row per distinct token when there are few, else in slices;
  // each piece gathers the rows whose token falls in it.
  void embed_rows(int64_t rows) {
    const cudaStream_t st = stream_->get();
    const int e = embed_unit(s_);
    const uint64_t off = provider_->map(e).slices[0].offset;
    const auto H = static_cast<uint64_t>(s_.hidden);
    auto piece = [&](int64_t r0, int64_t r1) {
      const uint16_t* E = provider_->acquire(e, off + static_cast<uint64_t>(r0) * H, off + static_cast<uint64_t>(r1) * H, st);
      gpu::embed(tokens_.get(), rows, E, s_.hidden, h_.get(), r0, r1, st);
    };
    distinct_.assign(part_.begin(), part_.end());
    std::sort(distinct_.begin(), distinct_.end());
    distinct_.erase(std::unique(distinct_.begin(), distinct_.end()), distinct_.end());
    if (!provider_->resident() && distinct_.size() <= kRowGatherTokens) {
      for (const int32_t t : distinct_) piece(t, t + 1);
      return;
    }
    const int64_t slice = provider_->resident() ? s_.vocab : table_slice_rows();  // a copy: any pieces do
    for (int64_t r0 = 0; r0 < s_.vocab; r0 += slice) piece(r0, std::min<int64_t>(s_.vocab, r0 + slice));
  }

  ModelShape s_;
  std::shared_ptr<DeviceProvider> provider_;
  std::unique_ptr<cuda::Stream> stream_;
  CublasHandle blas_;
  int batch_, max_positions_, position_ = 0, rows_cap_ = 0;
  uint64_t chunk_bytes_ = 0;
  int fused_rows_ = 0;  // --fused-gemv: passes of at most this many rows run fused; 0: not asked
  bool fused_mma_ = false;  // --fused-mma: those passes on the tensor-core kernel
  dec::Order block_order_ = dec::Order::ascending;  // a whole block's decode (ModelRequest::descending_decode)
  dec::Start slice_start_ = dec::Start::early;       // a chunked slice's decode (ModelRequest::early_slices)
  bool weights_reused_ = false;
  // --graphs (ModelRequest::graphs): a decode step's layers and head captured once (capture_step)
  // and replayed; the position it reads, staged through pos_stage_.
  bool graphs_ = false;
  cuda::GraphExec step_graph_;
  std::string graphs_refused_;
  bool stepped_eagerly_ = false;  // a decode step ran eagerly with graphs_ (the capture waits for one)
  bool captured_ = false;         // the last pass captured the step (last_forward_was_setup)
  int64_t replays_ = 0;
  cuda::DeviceBuffer<int32_t> pos_dev_;
  int32_t pos_stage_ = 0;
  // --overlap: the side stream that acquires slices into the buffer's halves, ordered against
  // the GEMMs by slots_.
  std::unique_ptr<cuda::Stream> side_;
  std::unique_ptr<cuda::TwoSlots> slots_;
  bool skew_main_ = false, skew_side_ = false;  // DF11_E2E_SKEW (tests)
  // Chunked, not overlapped (ModelRequest::slice_l2): the slices' persisting L2 window on stream_,
  // released (streams synchronized) before the streams go.
  std::unique_ptr<cuda::L2Window> slice_window_;
  std::string slice_l2_refused_;  // asked for, but the device gave no window: why
  static constexpr unsigned kSkewUs = 200;
  std::vector<cuda::DeviceBuffer<uint16_t>> norm_in_, norm_post_;
  cuda::DeviceBuffer<uint16_t> norm_final_;
  cuda::DeviceBuffer<float> rope_;
  std::vector<cuda::DeviceBuffer<uint16_t>> kc_, vc_;
  cuda::DeviceBuffer<int32_t> tokens_, next_;
  cuda::DeviceBuffer<float> h_, qkv_, gu_, logits_;
  cuda::DeviceBuffer<uint16_t> xb_, att_, act_, xf_;
  std::vector<int32_t> part_, distinct_;
};

// ---- device weights kept between the models of a FeedCache ---------------------------------

// The most rows a pass of the request's model runs fused (0 without --fused-gemv): its
// fused_max_rows, else where its variant's fused decode stops paying.
int fused_rows(const ModelRequest& r) {
  if (!r.fused_gemv) return 0;
  const dec::FusedDecode d =
      fused_decode_of(r.weights == WeightsKind::df11 ? cuda_df11_variant(r) : r.variant, r.fused_mma,
                      r.weights == WeightsKind::df11);
  if (r.fused_max_rows < 0 || r.fused_max_rows > dec::fused_max_batch(d)) {
    throw Error(fmt::format("--fused-max-rows {}: the fused kernels take passes of 1..{} rows (0: the decode's default)",
                            r.fused_max_rows, dec::fused_max_batch(d)));
  }
  if (r.fused_max_rows > 0) return r.fused_max_rows;
  return dec::fused_default_max_rows(d);
}

// Whether a request's provider builds the fused kernels: batches over its fused rows never run
// fused (every pass has more rows), so they get none.
bool fused_kernels(const ModelRequest& r) {
  return r.fused_gemv && r.batch <= fused_rows(r);
}

// Everything a provider's construction depends on, so that providers with equal keys are the
// same: the weights (one FeedCache, so one source and shape), their kind, the DF11 decoder, and
// the fused kernels with the partition they follow. Nothing else of a request reaches the
// provider: batch (beyond `fused`), max_positions, chunk_bytes and overlap are the model's (its
// KV cache, activations, slicing and second stream); the reused buffer and the fused partials
// are sized by the shape and the fused decode's largest batch alone.
struct WeightsKey {
  uint64_t source = 0;  // FeedCache::id()
  WeightsKind kind = WeightsKind::bf16;
  // df11: the name of its decoder (cuda_df11_decoder_name); bf16 with fused kernels: the
  // name of the layout whose partition they follow; else empty.
  std::string variant;
  bool fused = false;  // fused kernels built (fused_kernels)
  bool mma = false;    // and they are the tensor-core ones (--fused-mma)
  bool operator==(const WeightsKey&) const = default;
};

WeightsKey weights_key(const ModelRequest& r, uint64_t source) {
  const bool fused = fused_kernels(r);
  WeightsKey k{source, r.weights, "", fused, fused && r.fused_mma};
  if (r.weights == WeightsKind::df11) k.variant = cuda_df11_decoder_name(r);  // "" and the default: one key
  if (r.weights == WeightsKind::bf16 && r.fused_gemv) {
    // Checked even where no kernel is built (batch > 16), as the provider's construction does,
    // so that a reused provider does not let a bad --variant through.
    const dec::FusedDecode d = fused_decode_of(r.variant, r.fused_mma);
    // The fused decode's decoder spec: its layout and the partition the kernels follow (the
    // layout's blocks, or fix64's units), one name per decode but fixed and fixed_mma (mma above).
    if (k.fused) k.variant = dec::fused_spec(d).name();
  }
  return k;
}

struct CachedWeights {
  WeightsKey key;
  std::shared_ptr<DeviceProvider> provider;
};

// The process's device weights kept for later models. Never destroyed: at exit the CUDA runtime
// may be torn down before a static's destructor runs (FeedCache's destructor empties it first).
std::vector<CachedWeights>& weights_cache() {
  static auto* cache = new std::vector<CachedWeights>();
  return *cache;
}

// A fused DF11 key's twin without the fused kernels: cached weights of that key can take them
// (DeviceProvider::add_fused_only) instead of the unit images being uploaded again.
std::optional<WeightsKey> extendable_key(const WeightsKey& k) {
  if (!k.fused || k.kind != WeightsKind::df11) return std::nullopt;
  WeightsKey plain = k;
  plain.fused = false;
  plain.mma = false;
  return plain;
}

// The cached provider of this key that no live model holds (the reused buffer and the fused
// partials are scratch that models on two streams must not share), or null.
std::shared_ptr<DeviceProvider> cached_weights(const WeightsKey& key) {
  for (const CachedWeights& c : weights_cache())
    if (c.key == key && c.provider.use_count() == 1) return c.provider;
  return nullptr;
}

class CudaBuilder final : public ModelBuilder {
 public:
  // source: FeedCache::id() of the units this builder will get, 0 when they come from a
  // WeightSource directly (nothing identifies the weights then, so nothing is reused or kept).
  CudaBuilder(const ModelShape& s, const Norms& norms, const ModelRequest& r, uint64_t source)
      : s_(s), norms_(norms), request_(r) {
    if (!cuda_available())
      throw Error("the CUDA backend: no CUDA device is available (no driver or no GPU)");
    watch().sample();  // the baseline, before this process allocates anything
    // Overlapped, the GEMMs' stream runs at the highest priority (CudaModel: the side stream).
    stream_ = std::make_unique<cuda::Stream>(r.overlap ? cuda::Priority::high : cuda::Priority::normal);
    if (source != 0) {
      key_ = weights_key(r, source);
      provider_ = cached_weights(*key_);
      reused_ = provider_ != nullptr;
      if (reused_) return;  // every unit is on the device already: add and prepare are done
      // --fused-gemv after runs of the same DF11 decoder: their cached weights take the fused
      // kernels, which read the decoder's images (a Nemo model's upload took ~28 s on an H200).
      if (const std::optional<WeightsKey> plain = extendable_key(*key_)) {
        provider_ = cached_weights(*plain);
        extending_ = provider_ != nullptr;
        if (extending_) {
          provider_->enable_fused(embed_unit(s), r.fused_mma);
          return;
        }
      }
    }
    switch (r.weights) {
      case WeightsKind::bf16:
        // With --fused-gemv, the partition of the DF11 decoder it is checked against (--variant).
        provider_ = std::make_shared<Bf16DeviceProvider>(r.fused_gemv ? fused_decode_of(r.variant, r.fused_mma)
                                                                      : dec::FusedDecode::two_pass);
        break;
      case WeightsKind::df11:
        provider_ = std::make_shared<Df11DeviceProvider>(cuda_df11_variant(r));
        break;
      case WeightsKind::cpu_offload:
        if (r.fused_gemv) throw Error("--fused-gemv: the fused kernels read bf16 or df11 weights, not cpu-offload");
        provider_ = std::make_shared<OffloadProvider>();
        break;
    }
    if (fused_kernels(r)) provider_->enable_fused(embed_unit(s), r.fused_mma);
  }
  CudaBuilder(const CudaBuilder&) = delete;
  CudaBuilder& operator=(const CudaBuilder&) = delete;
  // A build that failed while extending cached weights with fused kernels leaves them half
  // extended: no later run may take them (finish hands provider_ to the model).
  ~CudaBuilder() override {
    if (extending_ && provider_) drop_cached(provider_);
  }
  void add(UnitFeed& feed) override {
    if (reused_) return;
    if (extending_) {
      provider_->add_fused_only(feed, stream_->get());
    } else {
      provider_->add(feed, stream_->get());
    }
    watch().sample();
  }
  std::unique_ptr<Model> finish() override {
    if (extending_) {
      provider_->prepare_fused();
      CUDA_CHECK(cudaStreamSynchronize(stream_->get()));
      for (CachedWeights& c : weights_cache())  // cached under the key they now answer
        if (c.provider == provider_) c.key = *key_;
    } else if (!reused_) {
      provider_->prepare(s_);
      if (key_) {
        // Uploads done before a later model uses the provider on its own stream.
        CUDA_CHECK(cudaStreamSynchronize(stream_->get()));
        // Another builder of the same build may have stored one with this key: keep that one.
        if (std::none_of(weights_cache().begin(), weights_cache().end(),
                         [&](const CachedWeights& c) { return c.key == *key_; })) {
          weights_cache().push_back({*key_, provider_});
        }
      }
    }
    provider_->size_buffer(request_.overlap);  // each model as it uses the buffer (cached ones too)
    return std::make_unique<CudaModel>(s_, norms_, std::move(provider_), std::move(stream_),
                                       request_.batch, request_.max_positions, request_.chunk_bytes,
                                       fused_rows(request_), request_.fused_gemv && request_.fused_mma,
                                       request_.overlap, request_.slice_l2,
                                       request_.descending_decode, request_.early_slices, request_.graphs,
                                       reused_ || extending_);
  }

 private:
  static void drop_cached(const std::shared_ptr<DeviceProvider>& p) {
    auto& c = weights_cache();
    c.erase(std::remove_if(c.begin(), c.end(), [&](const CachedWeights& w) { return w.provider == p; }), c.end());
  }

  ModelShape s_;
  const Norms& norms_;
  ModelRequest request_;
  std::unique_ptr<cuda::Stream> stream_;
  std::shared_ptr<DeviceProvider> provider_;
  std::optional<WeightsKey> key_;  // set when the provider may come from, or go to, the cache
  bool reused_ = false;
  bool extending_ = false;  // provider_: cached weights without fused kernels, taking them now
};

}  // namespace

bool cuda_built() {
  return true;
}
bool cuda_available() {
  return cuda::device_available();
}

std::string cuda_device_name() {
  if (!cuda_available()) return "none";
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB)", p.name, p.major, p.minor,
                     p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1 << 30));
}

uint64_t cuda_peak_memory() {
  return watch().started ? watch().peak : 0;
}

void cuda_reset_peak_memory() {
  watch().peak = 0;
}

namespace {
// Kernels and copies of the whole device between begin() and end() (every stream: an overlapped
// model's side stream too), each end waiting for the device first.
class CuptiStepTracer final : public StepTracer {
 public:
  [[nodiscard]] const trace::CuptiTimer& timer() const { return timer_; }
  void begin() override {
    CUDA_CHECK(cudaDeviceSynchronize());
    timer_.enable();
    // A timer that could not enable its records would return an empty summary: a measured zero.
    if (!timer_.available()) throw TracerUnavailable(timer_.why_not());
    timer_.start();
  }
  trace::Summary end() override {
    CUDA_CHECK(cudaDeviceSynchronize());
    if (!timer_.available()) throw TracerUnavailable(timer_.why_not());
    trace::Summary s = timer_.stop();
    timer_.disable();
    return s;
  }

 private:
  trace::CuptiTimer timer_;
};
}  // namespace

std::unique_ptr<StepTracer> cuda_step_tracer(std::string& why_not) {
  if (!cuda_available()) {
    why_not = "no CUDA device is available";
    return nullptr;
  }
  auto t = std::make_unique<CuptiStepTracer>();
  if (!t->timer().available()) {
    why_not = t->timer().why_not();
    return nullptr;
  }
  return t;
}

void cuda_keep_weights_for(const FeedCache& cache, const std::vector<ModelRequest>& requests) {
  std::vector<WeightsKey> wanted;
  for (const ModelRequest& r : requests) {
    if (r.backend != Backend::cuda) continue;
    try {
      const WeightsKey k = weights_key(r, cache.id());
      wanted.push_back(k);
      // Weights without fused kernels that a fused request will extend (CudaBuilder), unless
      // weights with them are cached already (then those are the run's, and these would only
      // add to its peak).
      const std::optional<WeightsKey> plain = extendable_key(k);
      const auto& c = weights_cache();
      if (plain && std::none_of(c.begin(), c.end(), [&](const CachedWeights& w) { return w.key == k; })) {
        wanted.push_back(*plain);
      }
    } catch (const Error&) {
      // A request whose key cannot be made (a --variant the fused kernels cannot read) fails
      // when its model is built, with this error; it keeps nothing.
    }
  }
  auto& c = weights_cache();
  // Dropping the last reference frees the provider's device (and pinned host) memory now.
  c.erase(std::remove_if(c.begin(), c.end(),
                         [&](const CachedWeights& w) {
                           return std::find(wanted.begin(), wanted.end(), w.key) == wanted.end();
                         }),
          c.end());
}

synth::MatrixFiller cuda_synth_filler() {
  if (!cuda_available()) throw Error("generating weights on the GPU: no CUDA device is available");
  return [](std::span<uint16_t> out, const synth::MatrixRecipe& recipe) {
    constexpr uint64_t kSlice = uint64_t{1} << 25;  // elements: 64 MB
    const uint64_t n = out.size();
    if (n == 0) return;
    cuda::DeviceBuffer<uint16_t> buf(std::min(n, kSlice));
    for (uint64_t first = 0; first < n; first += kSlice) {
      const uint64_t count = std::min(kSlice, n - first);
      gpu::synth_fill(buf.get(), count, first, recipe, nullptr);
      CUDA_CHECK(cudaMemcpy(out.data() + first, buf.get(), count * 2, cudaMemcpyDeviceToHost));
    }
    // Spot check against the host's draw (the GPU test compares whole matrices): 257 elements
    // spread over the matrix, the last one included.
    for (uint64_t k = 0; k <= 256; ++k) {
      const uint64_t i = k == 256 ? n - 1 : (n * k) / 256;
      const uint16_t want = synth::draw_element(recipe.columns, recipe.seed, recipe.stream_id, i);
      if (out[i] != want) {
        throw Error(fmt::format("synthesis on the GPU: element {} of stream {} is {:#06x}, the host draws {:#06x}",
                                i, recipe.stream_id, out[i], want));
      }
    }
  };
}

std::unique_ptr<ModelBuilder> make_cuda_builder(const ModelShape& shape, const Norms& norms,
                                                const ModelRequest& request, uint64_t feed_cache) {
  return std::make_unique<CudaBuilder>(shape, norms, request, feed_cache);
}

}  // namespace df11::e2e
