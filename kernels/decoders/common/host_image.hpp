// What an upload puts on the device, prepared on the host: the padded stream and gaps, the
// positions as uint32, and the tables the variant's table scheme needs. The CUDA upload copies
// it; the host emulation decodes from it directly.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "codec/canonical.hpp"
#include "common/core.cuh"
#include "common/variant.hpp"

namespace df11::dec {

// A std::allocator whose construct() without arguments leaves the element uninitialised, so that
// resize() does not write every byte before the copy that fills it (one pass over a Nemo layer's
// 273 MB of sign/mantissa bytes instead of two, and its pages first touched by the copying threads).
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
// The image's two large arrays: every byte is written by padded_copy (or a resize with a value).
using PaddedBytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

// out = src followed by zeros (out.size() >= src.size(), else df11::Error), written by up to
// n_threads threads (0: all cores) in pieces of 16 MB; one thread below 32 MB.
void fill_padded(std::span<uint8_t> out, std::span<const uint8_t> src, int n_threads = 0);
// A fresh array of `total` bytes so filled.
[[nodiscard]] PaddedBytes padded_copy(std::span<const uint8_t> src, std::size_t total, int n_threads = 0);

struct HostImage {
  PaddedBytes stream;  // encoded_exponent + zero padding (look-ahead never leaves it)
  uint64_t n_bytes = 0;
  PaddedBytes sign_mantissa;
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
