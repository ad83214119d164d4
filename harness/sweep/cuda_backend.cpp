// The CUDA backend of the sweep: cuBLASLt BF16 GEMMs (FP32 accumulate) for every method, the
// decoder variants (whole unit, per matrix, whole matrices on a second stream beside the GEMMs,
// or L2-sized row slices), host-to-device offload (pinned + copy stream + double buffer, or
// pageable + synchronous), a device-to-device copy as the bandwidth yardstick. The GEMMs' stream
// has the device's highest priority and the second stream (decodes, copies) its lowest.
// Timing: L2 flushed before every sample, warm-up, one event pair per
// sample around a replay of the method's CUDA graph (offload methods: eager), adaptive stop; a
// separate traced pass (CUPTI) splits samples into decode, GEMM and copy time; NVTX names phases.
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <cstring>
#include <random>
#include <tuple>

#include <fmt/format.h>

#include "codec/bf16.hpp"
#include "common/compare.hpp"
#include "common/cuda_util.hpp"
#include "fused/fused_gemv.hpp"
#include "sweep/backend.hpp"
#include "lib/cupti_timer.hpp"
#include "lib/nvml_clock.hpp"
#include "sweep/lt_gemm.hpp"
#include "sweep/results.hpp"
#include "sweep/slices.hpp"
#include "sweep/sweep.hpp"

namespace df11::sweep {
namespace {

// RAII NVTX range: names a phase for Nsight Systems.
class NvtxRange {
 public:
  explicit NvtxRange(const std::string& name) { nvtxRangePushA(name.c_str()); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes_) CUDA_CHECK(cudaMallocHost(&ptr_, bytes_));
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFreeHost(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  [[nodiscard]] void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// The slices of df11-chunked and df11-pipelined at one of the experiment's slice sizes.
struct SlicePlan {
  uint64_t requested = 0;                 // the experiment's chunk_bytes entry (0: the default)
  uint64_t chunk_elems = 0, pipe_half = 0;  // budgets (elements): a chunked slice, a pipelined half
  std::vector<Slice> chunk, pipe;         // plan_slices of each
};

struct Matrix {
  std::string name;
  int64_t out = 0, in = 0;
  uint64_t offset = 0;  // first element in the unit
  [[nodiscard]] uint64_t elements() const { return static_cast<uint64_t>(out) * static_cast<uint64_t>(in); }
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const Experiment& e)
      : chunk_sizes_(e.chunk_bytes),
        slice_l2_(e.slice_l2 == "persisting"),
        slice_start_(e.slice_start == "early" ? dec::Start::early : dec::Start::serial) {
    CUDA_CHECK(cudaGetDevice(&device_));
    CUDA_CHECK(cudaGetDeviceProperties(&prop_, device_));
    {
      char bus_id[32] = {};
      if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device_) != cudaSuccess) (void)cudaGetLastError();
      clock_ = std::make_unique<trace::SmClock>(bus_id);
    }
    l2_bytes_ = static_cast<uint64_t>(prop_.l2CacheSize);
    flush_ = cuda::DeviceBuffer<uint8_t>(std::max<uint64_t>(2 * l2_bytes_, 1 << 20));
    // The default slice: half the L2; held in the persisting L2 (slice_l2), no more than it can
    // hold whole: a window larger than the set-aside would leave a random part of every slice to
    // be evicted and written back, what the window is there to stop.
    default_chunk_ = std::max<uint64_t>(l2_bytes_ / 2, 1 << 20);
    const auto persisting_max = static_cast<uint64_t>(prop_.persistingL2CacheMaxSize);
    if (slice_l2_ && persisting_max > 0) {
      default_chunk_ = std::max<uint64_t>(std::min(default_chunk_, persisting_max), 1 << 20);
    }
  }
  ~CudaBackend() override {
  }

  [[nodiscard]] std::string kind() const override { return "cuda"; }

  [[nodiscard]] nlohmann::json device_info() const override {
    // An attribute the driver does not report is 0 here, and its error is cleared so that no
    // later launch check reports it.
    auto attribute = [this](cudaDeviceAttr a) {
      int v = 0;
      if (cudaDeviceGetAttribute(&v, a, device_) != cudaSuccess) {
        (void)cudaGetLastError();
        v = 0;
      }
      return v;
    };
    const int clock_khz = attribute(cudaDevAttrClockRate), mem_khz = attribute(cudaDevAttrMemoryClockRate),
              bus_bits = attribute(cudaDevAttrGlobalMemoryBusWidth);
    // Peak DRAM bandwidth from the spec sheet values the driver reports (double data rate).
    const double bw_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    return {{"backend", "cuda"},
            {"name", prop_.name},
            {"sm_version", fmt::format("{}.{}", prop_.major, prop_.minor)},
            {"sm_count", prop_.multiProcessorCount},
            {"sm_clock_mhz", clock_khz / 1000},  // nominal; summary.sm_clock_mhz: during the samples
            {"nvml", clock_->available() ? "on (the SM clock read after the first, every 16th and the last timed sample)"
                                         : clock_->why_not()},
            {"memory_bandwidth_gbps", bw_gbps},
            {"l2_bytes", l2_bytes_},
            {"memory_bytes", prop_.totalGlobalMem},
            {"cupti", cupti_.available() ? "on" : cupti_.why_not()},
            {"cuda_graphs", graphs_ ? "on (offload methods and copy eager)" : "off (DF11_CUDA_GRAPHS=0)"},
            {"slice_l2", slice_l2_info()},
            {"slice_start", slice_start_info()},
            {"decode_verify", verify_on_host_ ? "host (DF11_VERIFY_ON_HOST=1: the output read back)"
                                              : "device (a compare kernel against the resident weights, "
                                                "with a host spot check)"},
            {"cpu_model", nullptr},
            {"cpu_cores", nullptr}};
  }

  void load_unit(const Unit& unit, const std::vector<EncodedUnit>& encodings, uint64_t seed) override {
    NvtxRange r("load_unit " + unit.name);
    unload_unit();
    seed_ = seed;
    uint64_t off = 0, largest = 0;
    for (const auto& t : unit.tensors) {
      if (t.shape.size() != 2) throw Error(fmt::format("unit {}: tensor {} is not a matrix", unit.name, t.name));
      mats_.push_back({t.name, t.shape[0], t.shape[1], off});
      off += t.data.size();
      largest = std::max<uint64_t>(largest, t.data.size());
    }
    n_ = off;
    host_w_.resize(n_);
    for (const auto& m : mats_) {
      const auto& src = unit.tensors[&m - mats_.data()].data;
      std::copy(src.begin(), src.end(), host_w_.begin() + static_cast<std::ptrdiff_t>(m.offset));
    }
    w_ = cuda::DeviceBuffer<uint16_t>(n_);
    // On stream_ (non-blocking, so not ordered after the legacy stream) and waited for.
    CUDA_CHECK(cudaMemcpyAsync(w_.get(), host_w_.data(), n_ * 2, cudaMemcpyHostToDevice, stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    decode_buf_ = cuda::DeviceBuffer<uint16_t>(n_);
    matrix_buf_ = cuda::DeviceBuffer<uint16_t>(largest);
    // GEMM operands must keep the alignment the plans promise cuBLASLt: the largest power of two
    // (<= 256 bytes) dividing every matrix's byte offset in the unit; row slices are whole
    // multiples of kSliceRows rows, so slices keep it too.
    int64_t max_in = 1;
    uint32_t w_align = 256;
    for (const auto& m : mats_) {
      max_in = std::max(max_in, m.in);
      while ((m.offset * 2) % w_align != 0) w_align /= 2;
    }
    gemm_.set_w_alignment(w_align);
    // For each slice size of the experiment: df11-chunked's slices of that many bytes (at least
    // kSliceRows rows of the widest matrix); df11-pipelined's half that, two in flight (the same
    // L2 footprint), each at least kSliceRows rows. One buffer holds any of them.
    const auto min_slice = static_cast<uint64_t>(kSliceRows * max_in);  // a multiple of 128 elements
    std::vector<SliceMatrix> shapes;
    for (const auto& m : mats_) shapes.push_back({m.offset, m.out, m.in});
    uint64_t slice_buf = 0;
    for (const uint64_t requested : chunk_sizes_) {
      SlicePlan p;
      p.requested = requested;
      const SliceBudgets b = slice_budgets(resolved_chunk(requested), min_slice, n_);
      p.chunk_elems = b.chunk_elems;
      p.pipe_half = b.pipe_half;
      p.chunk = plan_slices(shapes, p.chunk_elems, kSliceRows, kSliceAlign);
      p.pipe = plan_slices(shapes, p.pipe_half, kSliceRows, kSliceAlign);
      slice_buf = std::max({slice_buf, p.chunk_elems, 2 * p.pipe_half});
      plans_.push_back(std::move(p));
    }
    slice_buf_ = cuda::DeviceBuffer<uint16_t>(slice_buf);
    for (auto& b : double_buf_) b = cuda::DeviceBuffer<uint16_t>(largest);
    pinned_w_ = PinnedBuffer(n_ * 2);
    std::memcpy(pinned_w_.get(), host_w_.data(), n_ * 2);
    encodings_ = &encodings;
    batch_ = -1;
  }

  [[nodiscard]] std::vector<std::string> departures() const override {
    std::vector<std::string> out;
    if (!slice_l2_why_.empty()) {
      out.push_back(fmt::format("the persisting L2 window over the slice buffer was refused at run time ({}): "
                                "df11-chunked/df11-pipelined slices ran in normal L2 although device.slice_l2 "
                                "says persisting",
                                slice_l2_why_));
    }
    return out;
  }

  void unload_unit() override {
    images_.clear();
    for (auto& f : fused_) f.reset();
    mats_.clear();
    host_w_ = {};
    w_ = {};
    decode_buf_ = {};
    matrix_buf_ = {};
    slice_buf_ = {};
    plans_.clear();
    for (auto& b : double_buf_) b = {};
    pinned_w_ = {};
    x_.clear();
    y_.clear();
    batch_ = -1;
    encodings_ = nullptr;
  }

  [[nodiscard]] dec::Status supports(const MethodCase& m) const override {
    if (m.kind == "bf16" || m.kind == "copy" || m.kind == "cpu-offload" || m.kind == "cpu-offload-sync") {
      return dec::Status::yes();
    }
    if (m.fused()) {  // fused_can_implement names the layouts (and for fixed_mma the shapes) the kernels take
      const std::optional<dec::FusedDecode> decode = fused_decode_of(m);
      if (!decode) {  // (a variant of the layout without a fused decode of its own)
        return dec::Status::no(fmt::format("{} has no fused decode (the fused kernels read fix64's units for the "
                                           "2^12 root's stagings and the wide root's exp-smem only)",
                                           m.variant ? m.variant->name() : m.layout()->name()));
      }
      const EncodedUnit* e = encoding_in(*m.layout());
      if (!e) return dec::Status::no("no encoding in layout " + m.layout()->name());
      return dec::fused_can_implement(*e, gemv_matrices(), 1, decode);
    }
    if (m.decodes()) {
      if (m.variant == nullptr) return dec::Status::no("the cuda backend runs GPU decoder variants, not '" + m.variant_name + "'");
      const EncodedUnit* e = encoding_for(*m.variant);
      if (!e) return dec::Status::no("no encoding in layout " + m.variant->layout().name());
      const dec::Status s = m.variant->can_implement(*e);
      if (!s.ok) return s;
      if (m.kind == "df11-rev" && !m.variant->honors_order()) {
        return dec::Status::no("the decoder keeps its own order of units (df11-rev decodes them in descending order)");
      }
      if (m.kind != "df11" && m.kind != "decode" && m.variant->name() == "official-ptx") {
        return dec::Status::no("the official kernel decodes whole units only");
      }
      if (m.sliced()) {
        // Sizes of the experiment that give one plan (0 and the device's default, or sizes raised
        // to a slice's minimum of kSliceRows rows of the widest matrix) would be rows of one case.
        const SlicePlan& p = plan_of(m);
        if (const SlicePlan& r = runner_of(m); &r != &p) {
          return dec::Status::no(fmt::format(
              "chunk_bytes {} slices this unit as chunk_bytes {} does ({} B; a slice holds at least {} rows of the "
              "widest matrix and at most the whole unit), which runs them",
              m.chunk_bytes, r.requested, 2 * slice_elems(m, p), kSliceRows));
        }
      }
      return dec::Status::yes();
    }
    return dec::Status::no("unknown method " + m.kind);
  }

  [[nodiscard]] dec::Status supports_batch(const MethodCase& m, int batch) const override {
    if (m.fused()) {
      const std::optional<dec::FusedDecode> d = fused_decode_of(m);
      const int most = d ? dec::fused_max_batch(*d) : dec::kFusedMaxBatch;
      if (batch > most) {
        return dec::Status::no(fmt::format("{} runs batches 1..{} ({})", m.kind, most,
                                           m.kind == "df11-fused" ? "a GEMV kernel" : "16 rows of X an MMA, a loop of them"));
      }
    }
    return dec::Status::yes();
  }

  [[nodiscard]] std::vector<uint16_t> run_for_output(const MethodCase& m, int batch) override {
    NvtxRange r("verify " + m.label() + " batch " + std::to_string(batch));
    run_poisoned(m, batch);
    std::vector<uint16_t> out = method_output(m, batch);
    // time() replays the method's captured graph once against this output.
    replay_check_ = {};
    if (graphed(m)) replay_check_ = {case_key(m, batch), out, false};
    return out;
  }

  // Decode and copy: the output stays on the device and is compared there with the resident
  // weights (dec::compare_on_device), with a host spot check of the comparison itself.
  // DF11_VERIFY_ON_HOST=1 reads the output back instead (run_for_output).
  [[nodiscard]] std::optional<WeightsComparison> run_and_compare_with_weights(const MethodCase& m) override {
    if (m.needs_gemm() || verify_on_host_) return std::nullopt;
    NvtxRange r("verify " + m.label() + " against the weights");
    run_poisoned(m, 0);
    const WeightsComparison c = compare_with_weights(m.label());
    // time() replays the method's captured graph once, and compares that with the weights too.
    replay_check_ = {};
    if (graphed(m) && c.elements == n_ && c.differ == 0) replay_check_ = {case_key(m, 0), {}, true};
    return c;
  }

  // One run of the method for verification, its outputs and buffers poisoned first (one it fails
  // to write cannot hold an earlier run's data), waited for on both streams.
  void run_poisoned(const MethodCase& m, int batch) {
    prepare_batch(batch);
    poison();
    const std::unique_ptr<cuda::L2Window> window = slice_window(m);
    run(m);
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(copy_stream_.get()));
    if (window) window->close();
  }

  // decode_buf_ (a batch-0 method's output) against the resident weights w_, on the device. The
  // comparison kernel is itself checked from the host: windows spread over the unit are read
  // back and compared with host_w_, and a difference there that the device did not report, or
  // a reported first difference that reads back equal, is an error, not a pass.
  [[nodiscard]] WeightsComparison compare_with_weights(const std::string& label) {
    NvtxRange r("compare on device " + label);
    const dec::DeviceComparison d = dec::compare_on_device(decode_buf_.get(), w_.get(), n_, stream_.get());
    WeightsComparison c{d.checked, d.differ, d.first, 0, 0};
    if (d.differ > 0) {
      if (d.first >= n_) throw Error(fmt::format("{}: the device comparison reported element {} of {}", label, d.first, n_));
      CUDA_CHECK(cudaMemcpy(&c.got, decode_buf_.get() + d.first, 2, cudaMemcpyDeviceToHost));
      c.want = host_w_[d.first];
      if (c.got == c.want) {
        throw Error(fmt::format("{}: the device comparison reported element {} as differing, but it reads back "
                                "equal (0x{:04x})", label, d.first, c.got));
      }
    }
    constexpr uint64_t kWindow = 4096, kWindows = 33;
    const uint64_t w = std::min<uint64_t>(kWindow, n_);
    std::vector<uint16_t> spots(static_cast<std::size_t>(w * kWindows));
    std::vector<uint64_t> starts;
    for (uint64_t k = 0; k < kWindows; ++k) starts.push_back((n_ - w) * k / (kWindows - 1));
    for (uint64_t k = 0; k < kWindows; ++k) {
      CUDA_CHECK(cudaMemcpyAsync(spots.data() + k * w, decode_buf_.get() + starts[k], w * 2, cudaMemcpyDeviceToHost,
                                 stream_.get()));
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    for (uint64_t k = 0; k < kWindows; ++k) {
      for (uint64_t i = 0; i < w; ++i) {
        const uint64_t at = starts[k] + i;
        if (spots[k * w + i] == host_w_[at]) continue;
        if (d.differ == 0 || at < d.first) {
          throw Error(fmt::format("{}: element {} is 0x{:04x}, the weights' 0x{:04x}, which the device comparison "
                                  "did not report ({} differences reported)", label, at, spots[k * w + i],
                                  host_w_[at], d.differ));
        }
      }
    }
    return c;
  }

  // What a method leaves for verification: the decoded unit (decode-only methods) or the GEMM
  // outputs.
  [[nodiscard]] std::vector<uint16_t> method_output(const MethodCase& m, int batch) {
    if (m.needs_gemm()) return collect_outputs(batch);
    std::vector<uint16_t> out(n_);
    CUDA_CHECK(cudaMemcpyAsync(out.data(), decode_buf_.get(), n_ * 2, cudaMemcpyDeviceToHost, stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    return out;
  }

  // df11-chunked and df11-pipelined multiply row slices; cuBLASLt may choose other kernels
  // (split-K, other tiles) for a slice than for the whole matrix, which round differently. Their
  // reference is the same slices read straight from the resident BF16 weights.
  [[nodiscard]] std::optional<std::vector<uint16_t>> same_gemm_reference(const MethodCase& m, int batch) override {
    if (m.fused()) {  // the fused kernels reading the resident BF16 weights
      prepare_batch(batch);
      poison();
      NvtxRange r("same-gemm reference " + m.kind);
      fused(m).run(x_ptrs(), y_ptrs(), batch_, stream_.get(), w_.get());
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
      std::vector<uint16_t> ref = collect_outputs(batch);
      check_fused_against_double(ref, batch);
      return ref;
    }
    if (!m.sliced()) return std::nullopt;
    prepare_batch(batch);
    poison();
    NvtxRange r("same-gemm reference " + m.label());
    sliced_gemms(nullptr, stream_.get(), slices_of(m));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    return collect_outputs(batch);
  }

  [[nodiscard]] Samples time(const MethodCase& m, int batch, const Measurement& meas) override {
    if (meas.l2_policy != "flush" && meas.l2_policy != "none") {
      throw Error("cuda backend: l2_policy '" + meas.l2_policy + "' is not implemented (flush or none)");
    }
    NvtxRange r("time " + m.label() + " batch " + std::to_string(batch));
    prepare_batch(batch);
    // df11-chunked / df11-pipelined: the slice buffer held in L2 for the whole case (released
    // below, before the next method runs).
    const std::unique_ptr<cuda::L2Window> window = slice_window(m);
    cuda::GraphExec graph;
    capture(m, graph, window.get());
    verify_replay(m, batch, graph);
    auto go = [&] {
      if (graph.get()) {
        CUDA_CHECK(cudaGraphLaunch(graph.get(), stream_.get()));
      } else {
        run(m);
      }
    };
    for (int i = 0; i < meas.warmup; ++i) go();
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    Samples s;
    s.bytes = bytes_moved(m, batch);
    s.cuda_graph = graph.get() != nullptr;
    cuda::Event e0, e1;
    auto flush_l2 = [&](int i) {
      if (meas.l2_policy == "flush") {
        NvtxRange f("l2 flush");
        CUDA_CHECK(cudaMemsetAsync(flush_.get(), i & 0xFF, flush_.bytes(), stream_.get()));
      }
    };
    // Timed samples, CUPTI off (its tracing adds time to every kernel). Ctrl-C ends them (the
    // sweep writes the case as interrupted).
    StopRule stop(meas);
    for (int i = 0; i < meas.max_samples && !interrupt_requested(); ++i) {
      flush_l2(i);
      CUDA_CHECK(cudaEventRecord(e0.get(), stream_.get()));
      go();
      CUDA_CHECK(cudaEventRecord(e1.get(), stream_.get()));
      CUDA_CHECK(cudaEventSynchronize(e1.get()));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0.get(), e1.get()));
      s.total_s.push_back(ms * 1e-3);
      const auto why = stop.after(s.total_s);
      // The SM clock after the first sample, every 16th and the last (an NVML read costs host
      // time between samples, never inside an event pair).
      if (i % 16 == 0 || why) {
        if (const auto mhz = clock_->mhz()) s.sm_clock_mhz.push_back(*mhz);
      }
      if (why) {
        s.stopped_by = *why;
        break;
      }
    }
    // The split into decode, GEMM and copy kernel time: a few more runs, traced.
    if (cupti_.available()) {
      NvtxRange split_range("cupti split");
      cupti_.enable();
      // Tracing off again however this block ends (a CUDA error throws): left on, it would slow
      // every later case's timed samples.
      struct Off {
        trace::CuptiTimer& c;
        ~Off() { c.disable(); }
      } off{cupti_};
      const int n_split = std::min<int>(kSplitSamples, static_cast<int>(s.total_s.size()));
      for (int i = 0; i < n_split && cupti_.available(); ++i) {
        flush_l2(i);
        CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
        cupti_.start();
        go();
        CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
        CUDA_CHECK(cudaStreamSynchronize(copy_stream_.get()));
        const trace::Summary k = cupti_.stop();
        if (const std::string gap = trace_shortfall(m, k); !gap.empty()) {
          // Zero seconds of a kind the method runs would read as measured: no split at all.
          fmt::print(stderr, "\ncuda backend: {}: decode/GEMM/copy split left out\n", gap);
          s.decode_s.clear(), s.gemm_s.clear(), s.copy_s.clear();
          break;
        }
        // Only the kinds the method ran (trace_shortfall above says it ran each it should):
        // bf16 has no decode and no copy time, df11 no copy time; those stay null, as on the cpu
        // backend and in docs/RESULTS.md, not 0.
        using trace::Kind;
        // (gemm_s: every kernel but decoders and copies, a fused method's kernels too.)
        if (k.records(Kind::decode) > 0) s.decode_s.push_back(k.decode_s());
        if (k.kernels() > k.records(Kind::decode)) s.gemm_s.push_back(k.gemm_s());
        if (k.records(Kind::copy) > 0) s.copy_s.push_back(k.copy_s());
      }
    }
    if (window) window->close();
    return s;
  }

 private:
  // A method's launches captured once into a CUDA graph and replayed for every sample, so that
  // a chunked method's dozens of small launches pay no launch gaps (what a serving runtime does).
  // Captures run(m) into g. Not for the offload methods (their host copies and synchronization
  // are what they measure) or with DF11_CUDA_GRAPHS=0; a capture that fails leaves g empty and
  // the samples run eagerly.
  // Whether time() captures the method into a graph (offload methods run eagerly). The copy runs
  // eagerly too: it is the bandwidth bound the decoders are held to, and captured, it becomes a
  // graph memcpy node, which an H200 ran at 2.69 TB/s (read + write) where the same
  // cudaMemcpyAsync on a stream (df11_bench gpu_copy) reached 4.00 TB/s (2026-11-27 report).
  [[nodiscard]] bool graphed(const MethodCase& m) const {
    return graphs_ && m.kind != "cpu-offload" && m.kind != "cpu-offload-sync" && m.kind != "copy";
  }

  // window: the L2 window the method's kernel nodes get (slice_window), if any. The kernel nodes
  // keep their streams' priorities (GEMMs high, the second stream's decodes low), as the eager
  // run has them (cuda::capture_graph).
  void capture(const MethodCase& m, cuda::GraphExec& g, const cuda::L2Window* window) {
    if (!graphed(m)) return;
    // Uploads (and their syncs) stay out of the capture; the fused methods read their own images.
    if (m.variant && !m.fused()) (void)image_for(*m.variant);
    if (m.fused()) (void)fused(m);
    NvtxRange r("capture " + m.label());
    const std::string why = cuda::capture_graph(stream_.get(), [&] { run(m); }, window, g);
    if (why.empty()) {
      // capture_graph uploaded it (else its first launch would, in a timed sample).
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    } else {
      fmt::print(stderr, "\ncuda backend: capture of {} failed ({}); timing it eagerly\n", m.label(), why);
    }
  }

  [[nodiscard]] static std::string case_key(const MethodCase& m, int batch) {
    return m.label() + "@" + std::to_string(batch);
  }

  // The verification runs a method eagerly; samples replay its captured graph. A capture can
  // differ from the eager run (a launch parameter read at capture time, and for a method on two
  // streams, an order that comes only from the events the capture recorded), so one replay is
  // compared with the verified eager output, bit for bit, before any sample is taken.
  void verify_replay(const MethodCase& m, int batch, const cuda::GraphExec& graph) {
    if (!graph.get() || replay_check_.key != case_key(m, batch)) return;
    poison();
    CUDA_CHECK(cudaGraphLaunch(graph.get(), stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(copy_stream_.get()));
    if (replay_check_.against_weights) {  // verified on the device: the replay is compared there too
      const WeightsComparison c = compare_with_weights(m.label() + " (graph replay)");
      if (c.elements != n_ || c.differ != 0) {
        throw OutputMismatch(fmt::format("{}: the replay of its CUDA graph differs from the weights at element {} ({} of {} "
                                "elements compared differ)", m.label(), c.first, c.differ, c.elements));
      }
      replay_check_ = {};
      return;
    }
    const std::vector<uint16_t> out = method_output(m, batch);
    const std::vector<uint16_t>& want = replay_check_.out;
    const auto [a, b] = std::mismatch(out.begin(), out.end(), want.begin(), want.end());
    if (a != out.end() || b != want.end()) {
      throw OutputMismatch(fmt::format("{}: the replay of its CUDA graph differs from the verified run at output element {}",
                              m.label(), a - out.begin()));
    }
    replay_check_ = {};
  }

  // df11-chunked slices are whole multiples of this many rows: 256 bytes of BF16 output per
  // batch row, so a slice's Y pointer keeps cuBLASLt's default 256-byte alignment; a slice's
  // later parts start at whole 256 bytes of the slice buffer, so their W pointers keep it too.
  static constexpr int64_t kSliceRows = 128;
  static constexpr uint64_t kSliceAlign = 128;
  // Traced runs per case for the decode/GEMM/copy split (after the untraced timed samples).
  static constexpr int kSplitSamples = 5;

  // The unit's encoding in a layout (the one a decoder reads; DF11 for the fused methods), if made.
  const EncodedUnit* encoding_in(const Layout& l) const {
    if (!encodings_) return nullptr;
    for (const auto& e : *encodings_)
      if (e.layout == l) return &e;
    return nullptr;
  }
  const EncodedUnit* encoding_for(const dec::Decoder& d) const { return encoding_in(d.layout()); }

  // The fused reference is the fused kernels themselves on BF16 weights; an error common to both
  // paths (indexing, the reduction) would pass that comparison. So up to 64 rows of every matrix
  // are checked against a double-precision dot product (dec::fused_output_close).
  void check_fused_against_double(const std::vector<uint16_t>& y, int batch) const {
    std::size_t at = 0;
    for (std::size_t i = 0; i < mats_.size(); ++i) {
      const Matrix& m = mats_[i];
      const int64_t step = std::max<int64_t>(1, m.out / 64);
      for (int b = 0; b < batch; ++b) {
        for (int64_t r = 0; r < m.out; r += step) {
          const uint16_t got = y[at + static_cast<std::size_t>(b * m.out + r)];
          double ref = 0;
          if (!dec::fused_output_close(host_w_.data() + m.offset + static_cast<uint64_t>(r * m.in),
                                       host_x_[i].data() + b * m.in, m.in, got, &ref)) {
            throw Error(fmt::format("fused kernels: {} row {} batch row {}: they give {}, a double dot product {}",
                                    m.name, r, b, bf16_to_float(got), ref));
          }
        }
      }
      at += static_cast<std::size_t>(batch) * static_cast<std::size_t>(m.out);
    }
  }

  std::vector<dec::GemvMatrix> gemv_matrices() const {
    std::vector<dec::GemvMatrix> out;
    for (const auto& m : mats_) out.push_back({m.offset, m.out, m.in});
    return out;
  }

  // The fused decode of a fused method: df11-fused-mma's tensor-core one; df11-fused's variant's (a
  // fix64 variant: fix64's units), else its layout's (two-pass on DF11's, one-pass on the count layout).
  static std::optional<dec::FusedDecode> fused_decode_of(const MethodCase& m) {
    if (m.kind == "df11-fused-mma") return dec::FusedDecode::fixed_mma;
    return m.variant != nullptr ? dec::fused_decode_for(*m.variant) : dec::fused_decode_for(*m.layout());
  }
  // The unit's fused decode + GEMV kernels and plan for the method's decode, made on first use.
  const dec::FusedGemvDevice& fused(const MethodCase& m) {
    const Layout l = *m.layout();
    const std::optional<dec::FusedDecode> d = fused_decode_of(m);
    if (!d) throw Error(m.kind + ": the fused kernels do not read layout " + l.name());
    auto& slot = fused_.at(static_cast<std::size_t>(*d));
    if (!slot) {
      const EncodedUnit* e = encoding_in(l);
      if (!e) throw Error(m.kind + ": no encoding in layout " + l.name());
      NvtxRange r("upload " + m.label());
      slot = std::make_unique<dec::FusedGemvDevice>(*e, gemv_matrices(), dec::fused_max_batch(*d), stream_.get(),
                                                    dec::FusedGemvDevice::Source::own_image, nullptr, d);
    }
    return *slot;
  }
  std::vector<const uint16_t*> x_ptrs() const {
    std::vector<const uint16_t*> p;
    for (const auto& x : x_) p.push_back(x.get());
    return p;
  }
  std::vector<uint16_t*> y_ptrs() const {
    std::vector<uint16_t*> p;
    for (const auto& y : y_) p.push_back(y.get());
    return p;
  }

  const dec::DeviceImage& image_for(const dec::Decoder& d) {
    auto it = images_.find(&d);
    if (it == images_.end()) {
      const EncodedUnit* e = encoding_for(d);
      if (!e) throw Error("no encoding for " + d.name());
      NvtxRange r("upload " + d.name());
      it = images_.emplace(&d, d.upload(*e, stream_.get())).first;
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    }
    return *it->second;
  }

  // Activations of every matrix for this batch (the same for every method), outputs poisoned.
  void prepare_batch(int batch) {
    if (batch == batch_) return;
    x_.clear();
    y_.clear();
    host_x_.clear();
    batch_ = 0;  // the batch it holds: set once every buffer is there (an allocation may throw)
    if (batch == 0) return;
    std::mt19937_64 rng(seed_ * 1000003u + static_cast<uint64_t>(batch));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const auto& m : mats_) {
      std::vector<uint16_t> x(static_cast<std::size_t>(batch) * static_cast<std::size_t>(m.in));
      for (auto& v : x) v = float_to_bf16(nd(rng));
      x_.push_back(cuda::DeviceBuffer<uint16_t>::from(x, stream_.get()));
      host_x_.push_back(std::move(x));
      cuda::DeviceBuffer<uint16_t> y(static_cast<std::size_t>(batch) * static_cast<std::size_t>(m.out));
      CUDA_CHECK(cudaMemsetAsync(y.get(), 0xFF, y.bytes(), stream_.get()));
      y_.push_back(std::move(y));
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    batch_ = batch;
  }

  // Every matrix's Y for this batch, concatenated, copied to the host (after the run, on
  // stream_).
  std::vector<uint16_t> collect_outputs(int batch) {
    // Sized once before any copy is queued: a resize could move storage a queued copy writes to.
    std::size_t total = 0;
    for (const auto& m : mats_) total += static_cast<std::size_t>(batch) * static_cast<std::size_t>(m.out);
    std::vector<uint16_t> out(total);
    std::size_t at = 0;
    for (std::size_t i = 0; i < mats_.size(); ++i) {
      const std::size_t cnt = static_cast<std::size_t>(batch) * static_cast<std::size_t>(mats_[i].out);
      CUDA_CHECK(cudaMemcpyAsync(out.data() + at, y_[i].get(), cnt * 2, cudaMemcpyDeviceToHost, stream_.get()));
      at += cnt;
    }
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    return out;
  }

  // Every output and intermediate buffer set to 0xFFFF (a NaN) on stream_, before a verified run.
  void poison() {
    auto fill = [&](auto& b) {
      if (b.bytes()) CUDA_CHECK(cudaMemsetAsync(b.get(), 0xFF, b.bytes(), stream_.get()));
    };
    fill(decode_buf_);
    fill(matrix_buf_);
    fill(slice_buf_);
    for (auto& b : double_buf_) fill(b);
    for (auto& y : y_) fill(y);
  }

  // The persisting L2 window over the slice buffer for df11-chunked and df11-pipelined (slice_l2
  // = "persisting", the default), on both streams: what the slices of the method touch (a slice,
  // or the pipelined method's two halves). None for other methods, with slice_l2 = "normal", or
  // where the device has no persisting L2.
  [[nodiscard]] std::unique_ptr<cuda::L2Window> slice_window(const MethodCase& m) const {
    if (!slice_l2_ || !m.sliced()) return nullptr;
    const SlicePlan& p = plan_of(m);
    const uint64_t bytes = 2 * slice_elems(m, p);
    auto w = std::make_unique<cuda::L2Window>(slice_buf_.get(), bytes,
                                              std::vector<cudaStream_t>{stream_.get(), copy_stream_.get()});
    if (!w->plan().on()) {
      if (!slice_l2_refused_) fmt::print(stderr, "\ncuda backend: slices not held in L2: {}\n", w->plan().why_not);
      slice_l2_refused_ = true;
      // A departure from device.slice_l2 only where the device's plan had the window on (a
      // driver call refused it); where the plan was off, device.slice_l2 says so already.
      if (cuda::plan_l2_window(bytes, static_cast<uint64_t>(prop_.persistingL2CacheMaxSize),
                               static_cast<uint64_t>(prop_.accessPolicyMaxWindowSize))
              .on()) {
        slice_l2_why_ = w->plan().why_not;
      }
      return nullptr;
    }
    return w;
  }

  // device.slice_l2 of the results: the policy and, when persisting, the window of a slice of
  // each of the experiment's sizes on this device.
  [[nodiscard]] std::string slice_l2_info() const {
    if (!slice_l2_) return "normal (the experiment's slice_l2)";
    const auto persisting_max = static_cast<uint64_t>(prop_.persistingL2CacheMaxSize);
    std::string out;
    for (const uint64_t requested : chunk_sizes_) {
      const uint64_t bytes = resolved_chunk(requested);
      const cuda::L2WindowPlan p =
          cuda::plan_l2_window(bytes, persisting_max, static_cast<uint64_t>(prop_.accessPolicyMaxWindowSize));
      const std::string what =
          !p.on() ? "normal: " + p.why_not
                  : fmt::format("persisting: a {:.1f} MB window, {:.1f} MB set aside (hit ratio {:.2f}) of at most "
                                "{:.1f} MB",
                                p.window_bytes / 1e6, p.set_aside_bytes / 1e6, p.hit_ratio, persisting_max / 1e6);
      out += (out.empty() ? "" : "; ") + (chunk_sizes_.size() > 1 ? fmt::format("{} B slices: ", bytes) : "") + what;
    }
    return out;
  }

  // device.slice_start of the results: how df11-chunked's later slice decodes start.
  [[nodiscard]] std::string slice_start_info() const {
    if (slice_start_ == dec::Start::serial) return "serial (the experiment's slice_start)";
    if (!dec::device_starts_early()) {
      return fmt::format("serial (early needs sm_90, this is sm_{}{})", prop_.major, prop_.minor);
    }
    return "early (programmatic dependent launch after each slice's GEMMs; a refused one is said on stderr and "
           "in the run's last line, and that decoder's slices then start serially)";
  }

  // A requested slice size (an entry of the experiment's chunk_bytes) in bytes: 0 is the default.
  [[nodiscard]] uint64_t resolved_chunk(uint64_t requested) const {
    return requested ? requested : default_chunk_;
  }
  // What a slice of the case's plan holds in L2 (elements): df11-chunked's slice, df11-pipelined's
  // two halves; the requested size unless a slice's minimum of kSliceRows rows raised it.
  [[nodiscard]] static uint64_t slice_elems(const MethodCase& m, const SlicePlan& p) {
    return m.kind == "df11-pipelined" ? 2 * p.pipe_half : p.chunk_elems;
  }
  // Of the experiment's sizes that give this case's slices, the one that runs them: the size
  // asked for in exactly those bytes, else the first.
  [[nodiscard]] const SlicePlan& runner_of(const MethodCase& m) const {
    const uint64_t e = slice_elems(m, plan_of(m));
    const SlicePlan* first = nullptr;
    for (const SlicePlan& q : plans_) {
      if (slice_elems(m, q) != e) continue;
      if (q.requested == 2 * e) return q;
      if (first == nullptr) first = &q;
    }
    return *first;
  }
  // case.chunk_bytes: the bytes a slice holds, for the size that runs them; a size whose slices
  // another runs (not_supported) keeps its value as asked (0: the default), so that no two rows
  // share a case key (chunk_bytes are distinct in an experiment). Before a unit is loaded (no
  // plans), the requested size resolved.
  [[nodiscard]] std::optional<uint64_t> slice_bytes(const MethodCase& m) const override {
    if (!m.sliced()) return std::nullopt;
    for (const SlicePlan& p : plans_) {
      if (p.requested != m.chunk_bytes) continue;
      return &runner_of(m) == &p ? 2 * slice_elems(m, p) : m.chunk_bytes;
    }
    return resolved_chunk(m.chunk_bytes);
  }
  // The slice plan of a df11-chunked / df11-pipelined case (made in load_unit).
  [[nodiscard]] const SlicePlan& plan_of(const MethodCase& m) const {
    for (const SlicePlan& p : plans_)
      if (p.requested == m.chunk_bytes) return p;
    throw Error(fmt::format("cuda backend: {}: no slice plan for {} bytes (not in the experiment's chunk_bytes)",
                            m.label(), m.chunk_bytes));
  }

  // The slices of df11-chunked (chunk_elems each) or df11-pipelined (pipe_half each).
  [[nodiscard]] const std::vector<Slice>& slices_of(const MethodCase& m) const {
    const SlicePlan& p = plan_of(m);
    return m.kind == "df11-pipelined" ? p.pipe : p.chunk;
  }

  // A slice's GEMMs, one a part, reading `w` (the slice's first element) at the part's offset.
  void slice_gemms(const Slice& sl, const uint16_t* w, cudaStream_t s) {
    for (const SlicePart& p : sl.parts) {
      const Matrix& m = mats_[p.matrix];
      gemm(w + p.at, p.r1 - p.r0, m.in, x_[p.matrix].get(), y_[p.matrix].get() + p.r0, m.out, batch_, s);
    }
  }

  // Every slice of `slices` (each sized for L2, slice_buf_ holds any): decoded by `variant` into
  // slice_buf_ in one launch and multiplied while it is still in L2 (df11-chunked), or, with no
  // variant, the same GEMMs reading the slice from the resident BF16 weights. Each decode after
  // the first follows the previous slice's last GEMM, which reads the buffer it overwrites: it
  // starts as the experiment's slice_start says (early: beside that GEMM's end, storing nothing
  // before it is done).
  void sliced_gemms(const dec::Decoder* variant, cudaStream_t s, const std::vector<Slice>& slices) {
    const dec::DeviceImage* img = variant ? &image_for(*variant) : nullptr;
    for (std::size_t i = 0; i < slices.size(); ++i) {
      const Slice& sl = slices[i];
      const uint16_t* w = w_.get() + sl.lo;
      if (variant) {
        variant->launch(*img, slice_buf_.get(), sl.lo, sl.hi, s, dec::Order::ascending,
                        i == 0 ? dec::Start::serial : slice_start_);
        w = slice_buf_.get();
      }
      slice_gemms(sl, w, s);
    }
  }

  // df11-pipelined: the slices of pipe_half elements (a multiple of 128, so the second half of
  // slice_buf_ keeps the 256-byte alignment of the first), each decoded on copy_stream_ into one
  // half of slice_buf_ in turn while the previous slice's GEMMs run on s (slots_ orders them).
  void pipelined_gemms(const dec::Decoder& variant, const SlicePlan& plan, cudaStream_t s) {
    const dec::DeviceImage& img = image_for(variant);
    slots_.begin();
    for (const Slice& sl : plan.pipe) {
      auto slot = [&](int h) { return slice_buf_.get() + static_cast<uint64_t>(h) * plan.pipe_half; };
      slots_.step(
          copy_stream_.get(), s, [&](int h) { variant.launch(img, slot(h), sl.lo, sl.hi, copy_stream_.get()); },
          [&](int h) { slice_gemms(sl, slot(h), s); });
    }
  }

  // Whole matrices in turn through the two matrix buffers (double_buf_): fill(matrix, buffer)
  // enqueues matrix i's weights into the buffer on copy_stream_ while matrix i-1's GEMM runs on
  // s; a buffer is refilled only after the GEMM that read it finished, and the copy stream first
  // waits for everything before this run on s (the L2 flush, the start event, the previous run's
  // GEMMs still reading the buffers): slots_. The GEMMs are bf16's, whole matrices.
  template <class Fill>
  void double_buffered_gemms(cudaStream_t s, Fill&& fill) {
    slots_.begin();
    for (std::size_t i = 0; i < mats_.size(); ++i) {
      const Matrix& m = mats_[i];
      slots_.step(
          copy_stream_.get(), s, [&](int h) { fill(m, double_buf_[h].get()); },
          [&](int h) { gemm(double_buf_[h].get(), m.out, m.in, x_[i].get(), y_[i].get(), m.out, batch_, s); });
    }
  }

  void gemm(const uint16_t* w, int64_t rows, int64_t in, const uint16_t* x, uint16_t* y, int64_t ldc, int batch,
            cudaStream_t stream) {
    gemm_.run(w, rows, in, x, y, ldc, batch, stream);
  }

  void gemms_from(const uint16_t* base) {
    for (std::size_t i = 0; i < mats_.size(); ++i) {
      const Matrix& m = mats_[i];
      gemm(base + m.offset, m.out, m.in, x_[i].get(), y_[i].get(), m.out, batch_, stream_.get());
    }
  }

  void run(const MethodCase& mc) {
    cudaStream_t s = stream_.get();
    if (mc.kind == "bf16") {
      NvtxRange r("bf16 gemms");
      gemms_from(w_.get());
    } else if (mc.kind == "copy") {
      NvtxRange r("d2d copy");
      CUDA_CHECK(cudaMemcpyAsync(decode_buf_.get(), w_.get(), n_ * 2, cudaMemcpyDeviceToDevice, s));
    } else if (mc.kind == "decode") {
      NvtxRange r("decode " + mc.variant->name());
      mc.variant->launch(image_for(*mc.variant), decode_buf_.get(), 0, n_, s);
    } else if (mc.kind == "df11" || mc.kind == "df11-rev") {
      // df11-rev: the same with the decode's units in descending order, so that the first
      // weights the GEMMs read (each matrix's, or the unit's first) are the last written, still
      // in L2.
      const dec::DeviceImage& img = image_for(*mc.variant);
      const dec::Order order = mc.kind == "df11-rev" ? dec::Order::descending : dec::Order::ascending;
      if (mc.variant->traits().granularity == "matrix") {
        for (std::size_t i = 0; i < mats_.size(); ++i) {
          const Matrix& m = mats_[i];
          {
            NvtxRange r("decode " + m.name);
            mc.variant->launch(img, matrix_buf_.get(), m.offset, m.offset + m.elements(), s, order);
          }
          NvtxRange r("gemm " + m.name);
          gemm(matrix_buf_.get(), m.out, m.in, x_[i].get(), y_[i].get(), m.out, batch_, s);
        }
      } else {
        {
          NvtxRange r("decode unit");
          mc.variant->launch(img, decode_buf_.get(), 0, n_, s, order);
        }
        NvtxRange r("gemms");
        gemms_from(decode_buf_.get());
      }
    } else if (mc.fused()) {
      NvtxRange r(mc.kind);
      fused(mc).run(x_ptrs(), y_ptrs(), batch_, s);
    } else if (mc.kind == "df11-chunked") {
      // Decode a slice of rows small enough to stay in L2, multiply it while it is there, next.
      NvtxRange r("df11-chunked");
      sliced_gemms(mc.variant, s, slices_of(mc));
    } else if (mc.kind == "df11-pipelined") {
      // The same with two slices in flight: slice k+1 decodes while slice k multiplies.
      NvtxRange r("df11-pipelined");
      pipelined_gemms(*mc.variant, plan_of(mc), s);
    } else if (mc.kind == "df11-overlap") {
      // Whole matrices, each decoded on the copy stream while the previous one multiplies: what
      // a runtime that decodes per matrix can hide of its GEMMs, with two matrix buffers.
      NvtxRange r("df11-overlap");
      const dec::DeviceImage& img = image_for(*mc.variant);
      double_buffered_gemms(s, [&](const Matrix& m, uint16_t* buf) {
        mc.variant->launch(img, buf, m.offset, m.offset + m.elements(), copy_stream_.get());
      });
    } else if (mc.kind == "cpu-offload") {
      // Pinned weights, copied on the copy stream: matrix i+1 travels while matrix i multiplies.
      double_buffered_gemms(s, [&](const Matrix& m, uint16_t* buf) {
        CUDA_CHECK(cudaMemcpyAsync(buf, static_cast<uint16_t*>(pinned_w_.get()) + m.offset, m.elements() * 2,
                                   cudaMemcpyHostToDevice, copy_stream_.get()));
      });
    } else if (mc.kind == "cpu-offload-sync") {
      // What a naive offloading runtime does: pageable memory, a blocking copy per matrix.
      for (std::size_t i = 0; i < mats_.size(); ++i) {
        const Matrix& m = mats_[i];
        CUDA_CHECK(cudaMemcpyAsync(double_buf_[0].get(), host_w_.data() + m.offset, m.elements() * 2,
                                   cudaMemcpyHostToDevice, s));
        CUDA_CHECK(cudaStreamSynchronize(s));
        gemm(double_buf_[0].get(), m.out, m.in, x_[i].get(), y_[i].get(), m.out, batch_, s);
      }
    } else {
      throw Error("cuda backend: unknown method " + mc.kind);
    }
    CUDA_CHECK(cudaGetLastError());
  }

  uint64_t bytes_moved(const MethodCase& m, int batch) const {
    const uint64_t bf16 = n_ * 2;
    uint64_t act = 0;
    for (const auto& mm : mats_) act += 2 * static_cast<uint64_t>(batch) * static_cast<uint64_t>(mm.in + mm.out);
    if (m.kind == "copy") return 2 * bf16;
    const EncodedUnit* e = m.variant ? encoding_for(*m.variant) : nullptr;
    const uint64_t enc = e ? e->stored_bytes() : 0;
    if (m.kind == "decode") return enc + bf16;
    if (m.kind == "df11" || m.kind == "df11-rev" || m.kind == "df11-overlap") return enc + 2 * bf16 + act;  // read encoded, write BF16, read it back
    if (m.sliced()) return enc + act;  // slices stay in L2
    if (m.fused()) {                                       // encoded weights only
      const EncodedUnit* d = encoding_in(*m.layout());
      return (d ? d->stored_bytes() : 0) + act;
    }
    return bf16 + act;                                      // bf16 and offload: weights once
  }

  int device_ = 0;
  cudaDeviceProp prop_{};
  cuda::Stream stream_{cuda::Priority::high}, copy_stream_{cuda::Priority::low};
  bool graphs_ = [] {  // DF11_CUDA_GRAPHS=0: every sample runs eagerly
    const char* e = std::getenv("DF11_CUDA_GRAPHS");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  bool verify_on_host_ = [] {  // DF11_VERIFY_ON_HOST=1: batch-0 outputs read back and compared on the host
    const char* e = std::getenv("DF11_VERIFY_ON_HOST");
    return e && std::strcmp(e, "1") == 0;
  }();
  cuda::TwoSlots slots_;  // the double buffer of cpu-offload, df11-overlap and df11-pipelined (copy_stream_ fills)
  LtGemm gemm_;
  cuda::DeviceBuffer<uint8_t> flush_;
  uint64_t l2_bytes_ = 0;
  std::vector<uint64_t> chunk_sizes_;  // the experiment's chunk_bytes (0: default_chunk_)
  uint64_t default_chunk_ = 0;          // the device's default slice (bytes)
  bool slice_l2_ = true;  // the experiment's slice_l2: "persisting"
  dec::Start slice_start_ = dec::Start::early;  // the experiment's slice_start
  mutable bool slice_l2_refused_ = false;  // said once: the device gave no window
  mutable std::string slice_l2_why_;  // a window the plan had on and the driver refused
  std::vector<SlicePlan> plans_;  // one per entry of chunk_sizes_, for the loaded unit
  // The verified run time() replays its graph against (verify_replay): the case, and its output,
  // or (batch-0 methods verified on the device) that it equals the weights.
  struct ReplayCheck {
    std::string key;
    std::vector<uint16_t> out;
    bool against_weights = false;
  };
  ReplayCheck replay_check_;
  trace::CuptiTimer cupti_;
  // The SM clock now (NVML), read between timed samples; made in the constructor.
  std::unique_ptr<trace::SmClock> clock_;
  // The unit.
  std::vector<Matrix> mats_;
  uint64_t n_ = 0, seed_ = 0;
  std::vector<uint16_t> host_w_;
  PinnedBuffer pinned_w_;
  // double_buf_: two buffers of the largest matrix (cpu-offload's copies, df11-overlap's decodes).
  cuda::DeviceBuffer<uint16_t> w_, decode_buf_, matrix_buf_, slice_buf_, double_buf_[2];
  const std::vector<EncodedUnit>* encodings_ = nullptr;
  std::map<const dec::Decoder*, std::unique_ptr<dec::DeviceImage>> images_;
  std::array<std::unique_ptr<dec::FusedGemvDevice>, dec::kFusedDecodes> fused_;  // per dec::FusedDecode
  int batch_ = -1;
  std::vector<cuda::DeviceBuffer<uint16_t>> x_, y_;
  std::vector<std::vector<uint16_t>> host_x_;  // the activations, for the fused check
};

}  // namespace

bool cuda_backend_available() { return cuda::device_available(); }

std::unique_ptr<Backend> make_cuda_backend(const Experiment& e) {
  if (!cuda::device_available()) throw Error("cuda backend: no CUDA device (or no driver) on this machine");
  return std::make_unique<CudaBackend>(e);
}

}  // namespace df11::sweep
