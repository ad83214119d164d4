// BF16 GEMMs through cuBLASLt, as the sweep's cuda backend and the GPU micro-benchmarks run
// them: Y[batch, rows] (leading dimension ldc) = X[batch, in] * W[rows, in]^T, W row-major (a
// PyTorch [out, in] weight), FP32 accumulation, BF16 output. One plan (layouts + the heuristic's
// algorithm) per shape, cached, so every caller of a shape runs the identical GEMM.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

namespace df11::sweep {

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  // The alignment in bytes (a power of two <= 256) every W pointer will have; X and Y are
  // assumed 256-byte aligned, as cudaMalloc gives them. Changing it drops the cached plans.
  void set_w_alignment(uint32_t bytes);
  void run(const uint16_t* w, int64_t rows, int64_t in, const uint16_t* x, uint16_t* y, int64_t ldc, int batch,
           cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace df11::sweep
