// kernel_trace: kernels by kind from the names CUPTI reports (mangled, as the builds here emit
// them), and the summary of a trace: per-kind sums, record counts, the busy union and the span.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "lib/kernel_trace.hpp"
#include "lib/nvml_clock.hpp"

using namespace df11::trace;

TEST_CASE("kernel_trace: kernels by kind, by the names the builds emit", "[sweep][trace]") {
  // Mangled names as nvcc emits them for this project's kernels (from the release build's objects).
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__384bece1_13_gap_decode_cu_2a74dfdc17gap_decode_kernelILNS0_"
                        "9TableKindE0ELNS0_9PartitionE0ELNS0_7StagingE0ELi512ELi8EEEvNS0_12LaunchParamsE") ==
        Kind::decode);
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__384bece1_13_gap_decode_cu_2a74dfdc28gap_decode_persistent_"
                        "kernelILNS0_9TableKindE2ELNS0_9PartitionE1ELNS0_7StagingE4ELi512ELi8EEEvNS0_") == Kind::decode);
  // The dyn schedule (counter-fed blocks): counted as GEMM time until this check was added, so the
  // .dyn rows of the 2026-11-28 H200 sweep show a decode time of 0 (reports/.../ERRATA.md).
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__384bece1_13_gap_decode_cu_2a74dfdc25gap_decode_dynamic_kernelILNS0_"
                        "9TableKindE7ELNS0_9PartitionE5ELNS0_7StagingE4ELi512ELi8EEEvNS0_12LaunchParamsENS0_1") ==
        Kind::decode);
  CHECK(classify_kernel("decode") == Kind::decode);  // the official DF11 kernel (extern "C")
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__0357ad1a_13_fused_gemv_cu_1afe31ef17fused_gemv_kernelIL") ==
        Kind::fused);
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__0357ad1a_13_fused_gemv_cu_1afe31ef19fused_finish_kernelENS0_"
                        "5fused10GemvParamsE") == Kind::fused);
  CHECK(classify_kernel("_ZN4df113e2e3gpu48_GLOBAL__N__4dda825b_15_cuda_kernels_cu_467e26be16attention_kernelEPKflP"
                        "KtS6_iiPKiiiiifPt") == Kind::attention);
  CHECK(classify_kernel("_ZN4df113e2e3gpu48_GLOBAL__N__4dda825b_15_cuda_kernels_cu_467e26be14rmsnorm_kernelEPKflPKt"
                        "lfPt") == Kind::forward);
  CHECK(classify_kernel("df11::e2e::gpu::(anonymous namespace)::swiglu_kernel(const float*, long, long, unsigned "
                        "short*)") == Kind::forward);  // demangled, should a tool report it so
  // cuBLAS / cuBLASLt kernels, and anything else: GEMM.
  CHECK(classify_kernel("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1") ==
        Kind::gemm);
  CHECK(classify_kernel("_Z17gemv2T_kernel_valIii14__nv_bfloat16S0_ffLi128ELi16ELi4ELi4ELb0ELb0E") == Kind::gemm);
  CHECK(classify_kernel("") == Kind::gemm);
  // A name that merely contains "decode" is not the official kernel.
  CHECK(classify_kernel("decode_something_else") == Kind::gemm);
  for (int k = 0; k < kKinds; ++k) CHECK(std::string(to_string(static_cast<Kind>(k))) != "?");
}

TEST_CASE("kernel_trace: sums per kind, the busy union and the span", "[sweep][trace]") {
  // ns: decode [0, 100), GEMM [50, 150) on another stream (overlap 50), a gap, attention
  // [200, 210), a copy [300, 340), an incomplete record (end <= start), forward [330, 360).
  const std::vector<Record> r{{Kind::gemm, 50, 150},       {Kind::decode, 0, 100},   {Kind::attention, 200, 210},
                              {Kind::copy, 300, 340},      {Kind::decode, 500, 500}, {Kind::forward, 330, 360}};
  const Summary s = summarize(r);
  CHECK(s.of(Kind::decode) == Approx(100e-9));
  CHECK(s.of(Kind::gemm) == Approx(100e-9));
  CHECK(s.of(Kind::attention) == Approx(10e-9));
  CHECK(s.of(Kind::forward) == Approx(30e-9));
  CHECK(s.of(Kind::copy) == Approx(40e-9));
  CHECK(s.of(Kind::fused) == 0);
  CHECK(s.records(Kind::decode) == 1);  // the incomplete one is skipped
  CHECK(s.kernels() == 4);
  CHECK(s.records(Kind::copy) == 1);
  // busy: [0,150) + [200,210) + [300,360) = 150 + 10 + 60
  CHECK(s.busy_s == Approx(220e-9));
  CHECK(s.span_s == Approx(360e-9));
  // The sweep's split: decoders apart, every other kernel GEMM, copies apart.
  CHECK(s.decode_s() == Approx(100e-9));
  CHECK(s.gemm_s() == Approx(140e-9));
  CHECK(s.copy_s() == Approx(40e-9));

  // Nested and touching intervals: one busy stretch.
  const Summary t = summarize({{Kind::gemm, 10, 100}, {Kind::decode, 20, 30}, {Kind::fused, 100, 120}});
  CHECK(t.busy_s == Approx(110e-9));
  CHECK(t.span_s == Approx(110e-9));
  CHECK(t.records(Kind::fused) == 1);

  const Summary e = summarize({});
  CHECK(e.busy_s == 0);
  CHECK(e.kernels() == 0);
}

namespace {
// The __global__ functions a source file defines (the name before the parameter list, across
// line breaks and __launch_bounds__).
std::vector<std::string> kernels_in(const std::string& rel) {
  std::ifstream f(std::string(DF11_SOURCE_DIR) + "/" + rel);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  const std::regex global(R"(__global__\s+void\s+(?:__launch_bounds__\((?:[^()]|\([^()]*\))*\)\s*)?(\w+)\s*\()");
  std::vector<std::string> names;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), global); it != std::sregex_iterator(); ++it) {
    names.push_back((*it)[1].str());
  }
  return names;
}
}  // namespace

TEST_CASE("kernel_trace: every kernel the decoders' sources define has its kind", "[sweep][trace]") {
  // A kernel added to these files without a name classify_kernel knows would be counted as GEMM
  // time (as the dyn schedule's was): its name, mangled as nvcc does in these files, must
  // classify by file.
  // Each file's kernels, mangled as nvcc does there (namespace and file prefix, the name's length
  // and the name, a template or parameter tail), and the kind each must have.
  auto check = [](const std::string& file, std::size_t at_least, const std::string& prefix, const std::string& tail,
                  auto kind_of) {
    const std::vector<std::string> names = kernels_in(file);
    REQUIRE(names.size() >= at_least);
    for (const std::string& k : names) {
      INFO(file << ": " << k);
      CHECK(classify_kernel(prefix + std::to_string(k.size()) + k + tail) == kind_of(k));
    }
  };
  check("kernels/decoders/gap_decode/gap_decode.cu", 3, "_ZN4df113dec46_GLOBAL__N__384bece1_13_gap_decode_cu_2a74dfdc",
        "ILNS0_9TableKindE0EEEvNS0_12LaunchParamsE", [](const std::string&) { return Kind::decode; });
  check("kernels/decoders/fused/fused_gemv.cu", 2, "_ZN4df113dec46_GLOBAL__N__0357ad1a_13_fused_gemv_cu_1afe31ef",
        "ENS0_5fused10GemvParamsE", [](const std::string&) { return Kind::fused; });
  check("harness/e2e/cuda_kernels.cu", 6, "_ZN4df113e2e3gpu48_GLOBAL__N__4dda825b_15_cuda_kernels_cu_467e26be", "EPKfl",
        [](const std::string& k) { return k == "attention_kernel" ? Kind::attention : Kind::forward; });
}

TEST_CASE("SmClock: the SM clock from NVML where there is one, else none and why", "[sweep][trace]") {
  {
    const SmClock c("0000:00:00.0");  // a bus id no GPU has: unavailable, whether or not NVML loads
    CHECK_FALSE(c.available());
    CHECK_FALSE(c.mhz().has_value());
    CHECK_FALSE(c.why_not().empty());
  }
  ::setenv("DF11_NVML", "0", 1);
  const SmClock off("0000:00:00.0");
  ::unsetenv("DF11_NVML");
  CHECK(off.why_not() == "off (DF11_NVML=0)");
  CHECK_FALSE(off.mhz().has_value());
}
