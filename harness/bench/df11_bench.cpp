// df11_bench: Google Benchmark timings of the codec on a synthetic Mistral-Nemo q_proj
// (4096 x 5120 BF16), single-threaded and on all cores; items_per_second counts weights.
// BM_memcpy of the same BF16 bytes is the yardstick. BM_cpu_gemm / BM_cpu_df11_gemm: the sweep's
// cpu backend (bf16 and df11:cpu methods) on the same q_proj at a few batch sizes. CUDA builds
// add gpu_decode/<variant>, gpu_copy, gpu_gemm/<batch> and gpu_fused_gemv/<batch>/<source>
// (gpu_bench.cpp; they skip without a device). Not a test: targets live in the issues.
#include <benchmark/benchmark.h>

#include <cstring>

#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "datasets/synthetic.hpp"
#include "decoder.hpp"
#include "common/host_image.hpp"
#include "common/variant_decoder.hpp"
#include "sweep/backend.hpp"
#if defined(DF11_HAVE_CUDA)
#include "bench/gpu_bench.hpp"
#endif

namespace {

const df11::Unit& q_proj() {
  static const df11::Unit u =
      df11::synth::make_matrix_unit("q_proj", "self_attn.q_proj", "self_attn.q_proj", 4096, 5120, 1, 0);
  return u;
}

df11::Layout layout_arg(int64_t a) { return a == 0 ? df11::Layout::df11() : df11::Layout::canonical(); }

// Arg 0: layout (0 = df11, 1 = canonical 16); arg 1: threads (0 = all cores).
void BM_encode(benchmark::State& state) {
  const auto& u = q_proj();
  const auto layout = layout_arg(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  for (auto _ : state) {
    auto enc = df11::encode(u.view(), layout, threads);
    benchmark::DoNotOptimize(enc.encoded_exponent.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(u.n_elements()));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * u.n_elements()));
  state.SetLabel(layout.name() + (threads ? " threads=" + std::to_string(threads) : " all threads"));
}

void BM_decode_cpu(benchmark::State& state) {
  const auto& u = q_proj();
  const auto layout = layout_arg(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const auto path = state.range(2) ? df11::CpuDecodePath::serial : df11::CpuDecodePath::lanes;
  const auto enc = df11::encode(u.view(), layout, 0);
  std::vector<uint16_t> out(u.n_elements());
  for (auto _ : state) {
    df11::decode_cpu(enc, out, threads, path);
    benchmark::DoNotOptimize(out.data());
  }
  if (out != u.tensors[0].data) state.SkipWithError("decode mismatch");
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(u.n_elements()));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * u.n_elements()));
  state.SetLabel(layout.name() + (threads ? " threads=" + std::to_string(threads) : " all threads") +
                 (state.range(2) ? " serial" : " lanes"));
}

void BM_memcpy(benchmark::State& state) {
  const auto& u = q_proj();
  const int threads = static_cast<int>(state.range(0));
  const auto& src = u.tensors[0].data;
  std::vector<uint16_t> dst(src.size());
  const std::size_t n_tasks = 64;
  const std::size_t per = (src.size() + n_tasks - 1) / n_tasks;
  for (auto _ : state) {
    df11::parallel_for(n_tasks, threads, [&](std::size_t t) {
      const std::size_t b = t * per, e = std::min(src.size(), b + per);
      if (b < e) std::memcpy(dst.data() + b, src.data() + b, (e - b) * sizeof(uint16_t));
    });
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(src.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * src.size()));
  state.SetLabel(threads ? "threads=" + std::to_string(threads) : "all threads");
}

// The host half of a decoder's upload (prepare_image: padded copies, tables, and for fix64 the
// index of every 64th code's start, one walk over the codes) on q_proj, all cores. Arg: 0 the
// e2e default (fix64's units over DF11's layout), 1 the t256.b16 count layout.
void BM_prepare_image(benchmark::State& state) {
  static const char* const kNames[] = {"multi12n.gap5-fix64.exp-smem-v16.t512.b8.persist",
                                       "multi12n.gap5-cnt.exp-smem-reg-v16.t256.b16.persist"};
  df11::dec::Registry registry;
  df11::dec::register_all(registry);
  const auto* d = dynamic_cast<const df11::dec::VariantDecoder*>(registry.find(kNames[state.range(0)]));
  if (d == nullptr) {
    state.SkipWithError("no such variant decoder");
    return;
  }
  const auto enc = df11::encode(q_proj().view(), d->layout(), 0);
  for (auto _ : state) {
    auto img = df11::dec::prepare_image(d->spec(), enc);
    benchmark::DoNotOptimize(img.stream.data());
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(q_proj().n_elements()));
  state.SetLabel(d->name());
}

// The cpu backend holding q_proj and its DF11 encoding, shared by the GEMM benchmarks (Eigen on all
// cores, the BF16 -> float conversion of the weights included, as in run_sweep).
df11::sweep::Backend& cpu_backend() {
  static const std::vector<df11::EncodedUnit> encodings{df11::encode(q_proj().view(), df11::Layout::df11(), 0)};
  static const std::unique_ptr<df11::sweep::Backend> b = [] {
    auto backend = df11::sweep::make_cpu_backend(0);
    backend->load_unit(q_proj(), encodings, 0);
    return backend;
  }();
  return *b;
}

void run_gemm(benchmark::State& state, const df11::sweep::MethodCase& method) {
  auto& backend = cpu_backend();
  const int batch = static_cast<int>(state.range(0));
  for (auto _ : state) {
    auto y = backend.run_for_output(method, batch);
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * batch * static_cast<double>(q_proj().n_elements());
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(method.label() + " batch=" + std::to_string(batch));
}

// Arg: batch (tokens). Y [batch, 4096] = X [batch, 5120] * W^T.
void BM_cpu_gemm(benchmark::State& state) { run_gemm(state, df11::sweep::MethodCase{"bf16", nullptr, ""}); }
void BM_cpu_df11_gemm(benchmark::State& state) { run_gemm(state, df11::sweep::MethodCase{"df11", nullptr, "cpu"}); }

}  // namespace

BENCHMARK(BM_cpu_gemm)->Arg(1)->Arg(16)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cpu_df11_gemm)->Arg(1)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_encode)->Args({0, 1})->Args({0, 0})->Args({1, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_decode_cpu)
    ->Args({0, 1, 0})
    ->Args({0, 1, 1})
    ->Args({0, 0, 0})
    ->Args({0, 0, 1})
    ->Args({1, 1, 0})
    ->Args({1, 1, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_prepare_image)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_memcpy)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
#if defined(DF11_HAVE_CUDA)
  df11::bench::register_gpu_benchmarks();
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
