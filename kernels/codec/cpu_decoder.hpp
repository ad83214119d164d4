// The CPU decoder: validates an EncodedUnit's metadata, then decodes it following the layout's
// partition the way the GPU kernels do (thread chunks start at their gaps, blocks at their
// output positions), on several threads. Also a plain bit-serial reference decoder for tests.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "codec/layout.hpp"

namespace df11 {

// Checks everything that can be checked without decoding: layout, sizes of every tensor,
// positions monotone from 0 to n_elements, the first gap 0, the decode tables safe to follow,
// split positions consistent with the shapes. Throws df11::Error naming the unit and tensor.
void validate_encoded(const EncodedUnit& unit);

// How decode_cpu walks a block.
// - serial: one thread chunk at a time, each from its gap, as a GPU thread decodes it.
// - lanes (the default, ~1.6x faster on one core): four runs of a block's chunks decoded at
//   once, each run straight through its chunk boundaries, then checked at every boundary as
//   serial checks it (chain and count). Every block but the unit's last, in layouts of chunks of
//   64 bits or more; the others, and any block whose check fails, go the serial way, which names
//   the error. Same output and same errors either way.
enum class CpuDecodePath : uint8_t { lanes, serial };

// Blocks decoded each way (a lane block that failed its check counts as serial).
struct CpuDecodeStats {
  std::atomic<uint64_t> lane_blocks{0};
  std::atomic<uint64_t> serial_blocks{0};
};

// Decodes into out (n_elements BF16 words, host memory). Validates first; while decoding it
// also checks that each thread's last code ends where the next thread's gap says, and that each
// block yields exactly the elements its positions promise, so corruption is an error, not
// garbage. n_threads = 0 uses all cores.
void decode_cpu(const EncodedUnit& unit, std::span<uint16_t> out, int n_threads = 0,
                CpuDecodePath path = CpuDecodePath::lanes, CpuDecodeStats* stats = nullptr);
[[nodiscard]] std::vector<uint16_t> decode_cpu(const EncodedUnit& unit, int n_threads = 0,
                                               CpuDecodePath path = CpuDecodePath::lanes);

// decode_cpu's validation and every check of its walk, without writing the BF16 words: for a
// unit from a file that a decoder without these checks (the GPU kernels) will read, so that a
// corrupt stream is an error naming the unit at load, not garbage weights. Throws what
// decode_cpu throws for the same unit.
void check_stream(const EncodedUnit& unit, int n_threads = 0, CpuDecodePath path = CpuDecodePath::lanes,
                  CpuDecodeStats* stats = nullptr);

// Oracle for tests: decodes the stream serially from bit 0, symbol by symbol, with the plain
// table lookup of the layout (no partition, no multi-symbol tables).
[[nodiscard]] std::vector<uint16_t> decode_reference(const EncodedUnit& unit);

}  // namespace df11
