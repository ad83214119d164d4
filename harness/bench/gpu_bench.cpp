// GPU micro-benchmarks of df11_bench (CUDA builds): every decoder variant decoding a synthetic
// Mistral-Nemo gate_proj (14336 x 5120: 147 MB of BF16, about three H100 L2s), a
// device-to-device copy of the same bytes (the bandwidth yardstick), cuBLASLt GEMMs on the
// same matrix at a few batch sizes (sweep::LtGemm, as run_sweep runs them), and the fused
// decode + GEMV (gpu_fused_gemv/<batch>/<0: DF11, 1: the same kernels on BF16, 2: the count
// layout, one decode pass, 3: DF11's layout over fix64's 2048-element units, 4: the same units
// multiplied on the tensor cores (fixed_mma), 5: that kernel on the BF16 weights>). Manual time: one
// CUDA event pair per iteration around the work, after an L2 flush outside the pair. Each
// decoder is checked bit for bit once before it is timed. Without a device every benchmark
// skips with the reason. bytes_per_second counts encoded bytes read + BF16 bytes written
// (decode) or read + write (copy), as the sweep's `gbps` does.
#include "bench/gpu_bench.hpp"

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "codec/bf16.hpp"
#include "codec/encoder.hpp"
#include "common/cuda_util.hpp"
#include "datasets/synthetic.hpp"
#include "decoder.hpp"
#include "fused/fused_gemv.hpp"
#include "official_ptx/official_ptx.hpp"
#include "sweep/lt_gemm.hpp"

namespace df11::bench {
namespace {

constexpr int64_t kRows = 14336, kIn = 5120;

// Everything the GPU benchmarks share, made on first use (never at registration).
struct Gpu {
  Unit unit = synth::make_matrix_unit("gate_proj", "mlp.gate_proj", "mlp.gate_proj", kRows, kIn, 1, 0);
  std::map<std::string, EncodedUnit> encodings;  // by layout name
  // The last decoder's image, uploaded and verified once: Google Benchmark calls a benchmark ~4
  // times while it sizes the iteration count, and an upload (the host image of 73 M weights) and
  // a 147 MB read-back each time cost about as long as the timing.
  const dec::Decoder* image_of = nullptr;
  std::unique_ptr<dec::DeviceImage> image;
  cuda::Stream stream;
  cuda::Event e0, e1;
  cuda::DeviceBuffer<uint16_t> w, out;
  cuda::DeviceBuffer<uint8_t> flush;

  Gpu() {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    int l2 = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    flush = cuda::DeviceBuffer<uint8_t>(std::max<std::size_t>(2 * static_cast<std::size_t>(l2), 1 << 20));
    w = cuda::DeviceBuffer<uint16_t>::from(unit.tensors[0].data, stream.get());
    out = cuda::DeviceBuffer<uint16_t>(unit.n_elements());
    CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  }
  const EncodedUnit& encoding(const Layout& l) {
    auto it = encodings.find(l.name());
    if (it == encodings.end()) it = encodings.emplace(l.name(), encode(unit.view(), l, 0)).first;
    return it->second;
  }
  // Flushes L2 (outside the timed pair), times work() with one event pair, returns seconds.
  template <class F>
  double timed(F&& work) {
    CUDA_CHECK(cudaMemsetAsync(flush.get(), 0, flush.bytes(), stream.get()));
    CUDA_CHECK(cudaEventRecord(e0.get(), stream.get()));
    work();
    CUDA_CHECK(cudaEventRecord(e1.get(), stream.get()));
    CUDA_CHECK(cudaEventSynchronize(e1.get()));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0.get(), e1.get()));
    return ms * 1e-3;
  }
};

// The shared state, or nullptr (and a skip) without a device.
Gpu* gpu(benchmark::State& state) {
  if (!cuda::device_available()) {
    state.SkipWithError("no CUDA device");
    return nullptr;
  }
  static Gpu g;
  return &g;
}

void run_decode(benchmark::State& state, const dec::Decoder* d) {
  Gpu* g = gpu(state);
  if (!g) return;
  try {
    const EncodedUnit& enc = g->encoding(d->layout());
    if (const dec::Status st = d->can_implement(enc); !st.ok) {
      state.SkipWithError(st.reason.c_str());
      return;
    }
    const uint64_t n = enc.n_elements;
    if (g->image_of != d) {
      g->image.reset();
      g->image_of = nullptr;
      g->image = d->upload(enc, g->stream.get());
      CUDA_CHECK(cudaMemsetAsync(g->out.get(), 0xFF, n * 2, g->stream.get()));
      d->launch(*g->image, g->out.get(), 0, n, g->stream.get());
      std::vector<uint16_t> host(n);
      CUDA_CHECK(cudaMemcpyAsync(host.data(), g->out.get(), n * 2, cudaMemcpyDeviceToHost, g->stream.get()));
      CUDA_CHECK(cudaStreamSynchronize(g->stream.get()));
      if (host != g->unit.tensors[0].data) {
        state.SkipWithError("decoded output differs from the weights");
        return;
      }
      g->image_of = d;  // uploaded and verified
    }
    const dec::DeviceImage* image = g->image.get();
    for (auto _ : state) state.SetIterationTime(g->timed([&] { d->launch(*image, g->out.get(), 0, n, g->stream.get()); }));
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(enc.stored_bytes() + 2 * n));
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void BM_gpu_copy(benchmark::State& state) {
  Gpu* g = gpu(state);
  if (!g) return;
  const uint64_t bytes = g->w.bytes();
  for (auto _ : state) {
    state.SetIterationTime(g->timed([&] {
      CUDA_CHECK(cudaMemcpyAsync(g->out.get(), g->w.get(), bytes, cudaMemcpyDeviceToDevice, g->stream.get()));
    }));
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * bytes));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(g->w.size()));
}

// Arg: batch. Y[batch, 14336] = X[batch, 5120] * W^T with the resident BF16 weights.
void BM_gpu_gemm(benchmark::State& state) {
  Gpu* g = gpu(state);
  if (!g) return;
  try {
    const int batch = static_cast<int>(state.range(0));
    std::mt19937_64 rng(static_cast<uint64_t>(batch));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> x(static_cast<std::size_t>(batch) * kIn);
    for (auto& v : x) v = float_to_bf16(nd(rng));
    const auto dx = cuda::DeviceBuffer<uint16_t>::from(x, g->stream.get());
    cuda::DeviceBuffer<uint16_t> dy(static_cast<std::size_t>(batch) * kRows);
    sweep::LtGemm gemm;
    // Once untimed: the algorithm search and the lazy module load stay out of the first sample.
    gemm.run(g->w.get(), kRows, kIn, dx.get(), dy.get(), kRows, batch, g->stream.get());
    CUDA_CHECK(cudaStreamSynchronize(g->stream.get()));
    for (auto _ : state) {
      state.SetIterationTime(
          g->timed([&] { gemm.run(g->w.get(), kRows, kIn, dx.get(), dy.get(), kRows, batch, g->stream.get()); }));
    }
    const double flops = 2.0 * batch * static_cast<double>(kRows * kIn);
    state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(g->w.bytes() + 2 * (x.size() + dy.size())));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// Args: batch, source (0: decode the DF11 encoding, two passes; 1: the same kernels on the BF16
// weights, DF11's partition; 2: decode the count-layout encoding, one pass; 3: decode the DF11
// encoding over fix64's units, the fixed decode; 4: the same units, the products on the tensor
// cores; 5: that tensor-core kernel on the BF16 weights).
// Fused decode + GEMV (kernels/decoders/fused) on the same matrix; verified once: decoding gives
// the reference's bits.
void BM_gpu_fused_gemv(benchmark::State& state) {
  Gpu* g = gpu(state);
  if (!g) return;
  try {
    const int batch = static_cast<int>(state.range(0));
    const bool from_bf16 = state.range(1) == 1 || state.range(1) == 5;
    const dec::FusedDecode decode = state.range(1) == 2   ? dec::FusedDecode::one_pass
                                    : state.range(1) == 3 ? dec::FusedDecode::fixed
                                    : state.range(1) >= 4 ? dec::FusedDecode::fixed_mma
                                                          : dec::FusedDecode::two_pass;
    const EncodedUnit& enc = g->encoding(dec::fused_spec(decode).layout());
    const std::vector<dec::GemvMatrix> mats{{0, kRows, kIn}};
    dec::FusedGemvDevice dev(enc, mats, batch, g->stream.get(), dec::FusedGemvDevice::Source::own_image, nullptr,
                             decode);
    std::mt19937_64 rng(static_cast<uint64_t>(batch));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> x(static_cast<std::size_t>(batch) * kIn);
    for (auto& v : x) v = float_to_bf16(nd(rng));
    const auto dx = cuda::DeviceBuffer<uint16_t>::from(x, g->stream.get());
    cuda::DeviceBuffer<uint16_t> dy(static_cast<std::size_t>(batch) * kRows), dr(static_cast<std::size_t>(batch) * kRows);
    dev.run({dx.get()}, {dy.get()}, batch, g->stream.get());
    dev.run({dx.get()}, {dr.get()}, batch, g->stream.get(), g->w.get());
    std::vector<uint16_t> a(dy.size()), b(dr.size());
    CUDA_CHECK(cudaMemcpyAsync(a.data(), dy.get(), dy.bytes(), cudaMemcpyDeviceToHost, g->stream.get()));
    CUDA_CHECK(cudaMemcpyAsync(b.data(), dr.get(), dr.bytes(), cudaMemcpyDeviceToHost, g->stream.get()));
    CUDA_CHECK(cudaStreamSynchronize(g->stream.get()));
    if (a != b) {
      state.SkipWithError("fused decode differs from the same kernels on BF16 weights");
      return;
    }
    const uint16_t* w = from_bf16 ? g->w.get() : nullptr;
    for (auto _ : state) {
      state.SetIterationTime(g->timed([&] { dev.run({dx.get()}, {dy.get()}, batch, g->stream.get(), w); }));
    }
    const double flops = 2.0 * batch * static_cast<double>(kRows * kIn);
    state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
    const uint64_t weight_bytes = from_bf16 ? g->w.bytes() : enc.stored_bytes();
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(weight_bytes + 2 * (x.size() + dy.size())));
    state.SetLabel(from_bf16 ? (decode == dec::FusedDecode::fixed_mma ? "BF16 weights, tensor-core kernel"
                                                                       : "BF16 weights, same kernels")
                   : decode == dec::FusedDecode::one_pass  ? "decoded from DF11 + count bytes (one pass)"
                   : decode == dec::FusedDecode::fixed     ? "decoded from DF11 over fix64's units"
                   : decode == dec::FusedDecode::fixed_mma ? "decoded from DF11 over fix64's units, tensor cores"
                                                           : "decoded from DF11 (two passes)");
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

void register_gpu_benchmarks() {
  // official-ptx only with a readable PTX file (DF11_OFFICIAL_PTX): without one it has nothing
  // to run, and a benchmark that can only report that would read as a failure.
  const char* ptx = std::getenv("DF11_OFFICIAL_PTX");
  const bool have_ptx = ptx && *ptx && std::ifstream(ptx).good();
  if (have_ptx) dec::OfficialPtxDecoder::set_ptx_path(ptx);
  for (const auto& d : dec::all_decoders().all()) {
    if (d->name() == "official-ptx" && !have_ptx) continue;
    const dec::Decoder* dp = d.get();
    benchmark::RegisterBenchmark(("gpu_decode/" + d->name()).c_str(),
                                 [dp](benchmark::State& s) { run_decode(s, dp); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("gpu_copy", BM_gpu_copy)->UseManualTime()->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("gpu_fused_gemv", BM_gpu_fused_gemv)
      ->ArgsProduct({{1, 4, 16}, {0, 1, 2, 3}})
      ->ArgsProduct({{1, 16, 64}, {4}})  // the tensor-core kernel takes batches up to 64
      ->ArgsProduct({{1, 64}, {5}})      // (few: the device check's bench step has 90 s for all)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("gpu_gemm", BM_gpu_gemm)
      ->Arg(1)
      ->Arg(16)
      ->Arg(256)
      ->Arg(4096)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace df11::bench
