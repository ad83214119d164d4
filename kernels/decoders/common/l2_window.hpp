// How much of a buffer an L2 access-policy window can hold in the persisting part of the L2
// (compute capability 8.0+): the plan behind cuda::L2Window (cuda_util.hpp), pure so that it is
// tested without a GPU. Chunked GEMMs decode a slice of weights into one reused buffer and read
// it back at once; held by a persisting window, the slice's lines stay in L2 across the decode,
// its GEMM and the next slice's decode (which overwrites them there), so the decoded weights are
// never written back to DRAM, as the chunked method's byte count assumes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

namespace df11::cuda {

struct L2WindowPlan {
  uint64_t window_bytes = 0;     // [base, base + window_bytes) of the buffer gets the policy
  uint64_t set_aside_bytes = 0;  // persisting L2 reserved (cudaLimitPersistingL2CacheSize)
  float hit_ratio = 0;           // the fraction of the window's lines that persist
  std::string why_not;           // non-empty: no window (and why)
  [[nodiscard]] bool on() const { return why_not.empty(); }
};

// want: the bytes the buffer's users touch (a slice, or two). persisting_max: the device's
// cudaDevAttrMaxPersistingL2CacheSize; window_max: its cudaDevAttrMaxAccessPolicyWindowSize
// (both 0 before compute capability 8.0). The window covers as much of `want` as a window may;
// when the persisting part is smaller, the hit ratio makes only that many bytes' worth of lines
// persist (so that the window's lines do not evict each other).
[[nodiscard]] inline L2WindowPlan plan_l2_window(uint64_t want, uint64_t persisting_max, uint64_t window_max) {
  L2WindowPlan p;
  if (want == 0) {
    p.why_not = "nothing to hold";
  } else if (persisting_max == 0 || window_max == 0) {
    p.why_not = "the device has no persisting L2 (compute capability 8.0+)";
  } else {
    p.window_bytes = std::min(want, window_max);
    p.set_aside_bytes = std::min(p.window_bytes, persisting_max);
    p.hit_ratio = std::min(1.0f, static_cast<float>(static_cast<double>(p.set_aside_bytes) /
                                                    static_cast<double>(p.window_bytes)));
  }
  return p;
}

}  // namespace df11::cuda
