// compare_on_device (compare.hpp): compare.cuh's body as a kernel, its totals in a small device
// buffer of the call's own.
#include <cuda_runtime.h>

#include <algorithm>

#include "common/compare.cuh"
#include "common/compare.hpp"
#include "common/cuda_util.hpp"

namespace df11::dec {
namespace {

__global__ void __launch_bounds__(body::kCompareThreads)
    compare_bf16_kernel(const uint16_t* a, const uint16_t* b, uint64_t n, body::CompareTotals* totals) {
  body::compare_bf16(a, b, n, totals);
}

}  // namespace

DeviceComparison compare_on_device(const uint16_t* a, const uint16_t* b, uint64_t n, Stream s) {
  if (n == 0) return {};
  if (reinterpret_cast<uintptr_t>(a) % 16 != 0 || reinterpret_cast<uintptr_t>(b) % 16 != 0) {
    throw Error("compare_on_device: both buffers must be 16-byte aligned");
  }
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // Enough blocks to fill the device a few times over; each thread then loops over groups.
  const uint64_t groups = std::max<uint64_t>(n / 8, 1);
  const uint64_t want = (groups + body::kCompareThreads - 1) / body::kCompareThreads;
  const auto blocks = static_cast<unsigned>(std::min<uint64_t>(want, static_cast<uint64_t>(std::max(sms, 1)) * 8));
  const body::CompareTotals init{0, 0, body::kNoDifference};
  body::CompareTotals got{};
  cuda::DeviceBuffer<body::CompareTotals> totals(1);
  CUDA_CHECK(cudaMemcpyAsync(totals.get(), &init, sizeof init, cudaMemcpyHostToDevice, s));
  compare_bf16_kernel<<<blocks, body::kCompareThreads, 0, s>>>(a, b, n, totals.get());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaMemcpyAsync(&got, totals.get(), sizeof got, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  DeviceComparison r;
  r.checked = got.checked;
  r.differ = got.differ;
  r.first = got.differ ? got.first : 0;
  return r;
}

}  // namespace df11::dec
