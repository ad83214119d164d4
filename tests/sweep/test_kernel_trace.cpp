// kernel_trace: kernels by kind from the names CUPTI reports (mangled, as the builds here emit
// them), and the summary of a trace: per-kind sums, record counts, the busy union and the span.
#include <catch2/catch.hpp>

#include "lib/kernel_trace.hpp"

using namespace df11::trace;

TEST_CASE("kernel_trace: kernels by kind, by the names the builds emit", "[sweep][trace]") {
  // Mangled names as nvcc emits them for this project's kernels (from the release build's objects).
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__384bece1_13_gap_decode_cu_2a74dfdc17gap_decode_kernelILNS0_"
                        "9TableKindE0ELNS0_9PartitionE0ELNS0_7StagingE0ELi512ELi8EEEvNS0_12LaunchParamsE") ==
        Kind::decode);
  CHECK(classify_kernel("_ZN4df113dec46_GLOBAL__N__384bece1_13_gap_decode_cu_2a74dfdc28gap_decode_persistent_"
                        "kernelILNS0_9TableKindE2ELNS0_9PartitionE1ELNS0_7StagingE4ELi512ELi8EEEvNS0_") == Kind::decode);
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
