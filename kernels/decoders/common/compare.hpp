// Bit-for-bit comparison of two BF16 buffers where they are, on the device (compare.cuh's body):
// how many elements it compared, how many differ and the first that does. Used by the sweep to
// verify a decoded unit against the resident BF16 weights without reading the unit back.
#pragma once

#include <cstdint>

#include "decoder.hpp"

namespace df11::dec {

struct DeviceComparison {
  uint64_t checked = 0;  // elements compared (n when the launch covered both buffers)
  uint64_t differ = 0;   // elements that differ
  uint64_t first = 0;    // the first index that differs, when differ > 0
};

// a and b: device pointers to n BF16 elements each, 16-byte aligned (an unaligned pointer is a
// df11::Error). Runs on stream s after its earlier work and returns once the result is back.
[[nodiscard]] DeviceComparison compare_on_device(const uint16_t* a, const uint16_t* b, uint64_t n, Stream s);

}  // namespace df11::dec
