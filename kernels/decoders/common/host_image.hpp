// What an upload puts on the device, prepared on the host: the padded stream and gaps, the
// positions as uint32, and the tables the variant's table scheme needs. The CUDA upload copies
// it; the host emulation decodes from it directly.
#pragma once

#include <cstdint>
#include <vector>

#include "codec/canonical.hpp"
#include "common/core.cuh"
#include "common/variant.hpp"

namespace df11::dec {

struct HostImage {
  std::vector<uint8_t> stream;  // encoded_exponent + zero padding (look-ahead never leaves it)
  uint64_t n_bytes = 0;
  std::vector<uint8_t> sign_mantissa;
  std::vector<uint32_t> positions;  // fixed_out: the first code's bit of each warp of threads
  std::vector<uint16_t> lane_off;   // fixed_out: each thread's first code's bit from its warp's
  std::vector<uint8_t> gaps;  // + one zero byte
  std::vector<uint8_t> counts;  // thread_counts (count partition), else empty
  std::vector<uint8_t> luts;  // DF11 chained luts (lut*, flat_lut)
  int n_rows = 0;
  std::vector<uint16_t> flat_root;  // flat_*, multi_*
  std::vector<uint32_t> multi_root;  // multi_*
  CanonicalTable canon{};           // canon, flat_canon, multi_canon
  bool has_canon = false;
  uint64_t n_elements = 0, n_chunks = 0, n_blocks = 0;
  uint32_t max_block_elements = 0;
  uint32_t max_warp_elements = 0;  // warp-count partition: the most elements of one warp's chunks
  int gap_bits = 0;
};

// Validates the unit (df11::Error on bad metadata, before anything runs) and the variant's
// fit (can_implement), then builds the image.
[[nodiscard]] HostImage prepare_image(const VariantSpec& spec, const EncodedUnit& unit);

// Blocks [first, second) whose elements meet [lo, hi).
[[nodiscard]] std::pair<uint64_t, uint64_t> block_range(const VariantSpec& spec, const HostImage& img, uint64_t lo,
                                                        uint64_t hi);

// Launch parameters of a decode of [lo, hi) into out: sizes from the image, array pointers from
// `arrays` (the image's own vectors on the host, device buffers for a kernel).
[[nodiscard]] LaunchParams launch_params(const HostImage& img, const LaunchParams& arrays, uint16_t* out, uint64_t lo,
                                         uint64_t hi);

// launch_params over the image's own host vectors: what a host run of a kernel body reads.
[[nodiscard]] LaunchParams host_launch_params(const HostImage& img, uint16_t* out, uint64_t lo, uint64_t hi);

// Whether the spec can decode the unit; the reason when not.
[[nodiscard]] Status spec_can_implement(const VariantSpec& spec, const EncodedUnit& unit);

}  // namespace df11::dec
