// Guard bands in host runs of kernel bodies (the fast emulation and the SIMT executor): the
// shared-memory layout is built with `kHostSmemGuard` unused bytes around every region
// (smem_layout's guard; 0 on the device), the buffer starts poisoned, and after every block the
// bytes outside all regions must still hold the poison. A write past a region's end (into its
// neighbour, on a GPU: silent corruption that no sanitizer reports) becomes an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gap_decode/gap_decode.cuh"

namespace df11::dec {

inline constexpr unsigned kHostSmemGuard = 64;

// [begin, end) byte ranges.
using ByteRanges = std::vector<std::pair<std::size_t, std::size_t>>;

// The ranges of a `size`-byte buffer outside the layout's regions and the `extra` regions
// (given as {offset, bytes}).
[[nodiscard]] ByteRanges smem_outside_regions(const SmemLayout& sl, std::size_t size, const ByteRanges& extra = {});

// Throws df11::Error naming `who`, the block and the byte when a byte of `outside` is not `poison`.
void check_smem_guards(const std::string& who, const uint8_t* smem, const ByteRanges& outside, uint64_t block,
                       uint8_t poison = 0xCD);

}  // namespace df11::dec
