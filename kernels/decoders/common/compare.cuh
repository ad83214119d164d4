// The body of the bit-for-bit comparison of two BF16 buffers on the device (compare.cu wraps it
// in a kernel; tests/decoders/test_simt.cpp runs it on the host SIMT executor). The sweep uses
// it to verify a decoded unit against the resident BF16 weights without reading 545 MB back.
//
// Every thread compares 8-element (16-byte) groups, grid-stride, then at most one element of
// the tail; each warp sums its lanes' counts and takes the minimum of their first differing
// indices, and lane 0 adds them into the totals. `checked` counts the elements compared, so
// that a launch that did not cover the buffers (a wrong grid, a kernel that never ran) cannot
// pass as "no difference".
#pragma once

#include <cstdint>
#include <cstring>

#include "simt/simt.cuh"

namespace df11::dec::body {

inline constexpr int kCompareThreads = 256;
inline constexpr unsigned long long kNoDifference = ~0ull;

struct CompareTotals {
  unsigned long long checked;  // elements compared
  unsigned long long differ;   // elements that differ
  unsigned long long first;    // the smallest index that differs, kNoDifference if none
};

struct Words4 {
  uint32_t w[4];
};

// 16 bytes at p (16-byte aligned) in one load on the device.
DF11_HD Words4 load16(const uint16_t* p) {
  Words4 r;
#if defined(__CUDA_ARCH__)
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
  r.w[0] = v.x;
  r.w[1] = v.y;
  r.w[2] = v.z;
  r.w[3] = v.w;
#else
  std::memcpy(r.w, p, 16);
#endif
  return r;
}

// a and b: n elements each, 16-byte aligned. totals: {0, 0, kNoDifference} before the launch.
// Any grid of whole warps (blocks of a multiple of 32 threads).
DF11_HD void compare_bf16(const uint16_t* a, const uint16_t* b, uint64_t n, CompareTotals* totals) {
  const uint64_t threads = static_cast<uint64_t>(simt::gdim_x()) * simt::bdim_x();
  const uint64_t me = static_cast<uint64_t>(simt::bid_x()) * simt::bdim_x() + simt::tid_x();
  const uint64_t groups = n / 8;
  unsigned long long checked = 0, differ = 0, first = kNoDifference;
  for (uint64_t g = me; g < groups; g += threads) {
    const Words4 x = load16(a + g * 8), y = load16(b + g * 8);
    checked += 8;
    for (int k = 0; k < 4; ++k) {
      const uint32_t d = x.w[k] ^ y.w[k];
      if (d == 0) continue;
      const uint64_t at = g * 8 + 2 * static_cast<uint64_t>(k);
      // Little-endian: the low half is the element at the lower index.
      if (d & 0xFFFFu) {
        ++differ;
        if (at < first) first = at;
      }
      if (d >> 16) {
        ++differ;
        if (at + 1 < first) first = at + 1;
      }
    }
  }
  if (const uint64_t t = groups * 8 + me; t < n) {
    ++checked;
    if (a[t] != b[t]) {
      ++differ;
      if (t < first) first = t;
    }
  }
  for (unsigned m = 16; m >= 1; m /= 2) {
    checked += simt::warp_shfl_xor(checked, m);
    differ += simt::warp_shfl_xor(differ, m);
    const unsigned long long f = simt::warp_shfl_xor(first, m);
    if (f < first) first = f;
  }
  if (simt::tid_x() % 32 == 0) {
    simt::atomic_add_u64(&totals->checked, checked);
    if (differ != 0) {
      simt::atomic_add_u64(&totals->differ, differ);
      simt::atomic_min_u64(&totals->first, first);
    }
  }
}

}  // namespace df11::dec::body
