// GPU micro-benchmarks of df11_bench (gpu_bench.cpp, CUDA builds only).
#pragma once

namespace df11::bench {

// Registers gpu_decode/<variant> for every decoder variant (official-ptx when DF11_OFFICIAL_PTX
// names decode.ptx), gpu_copy, gpu_gemm/<batch> and
// gpu_fused_gemv/<batch>/<source>. Touches no device until a benchmark runs.
void register_gpu_benchmarks();

}  // namespace df11::bench
