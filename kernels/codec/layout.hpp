// Layout: every parameter of an encoded layout (code length limit, table scheme, the thread and
// block partition of the stream, the position scheme), and EncodedUnit, the DF11 tensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codec/unit.hpp"

namespace df11 {

// How the decode tables are stored in EncodedUnit::luts.
enum class TableScheme : uint8_t {
  // Official DF11: [k+1, 256] bytes: k chained 256-entry tables (entries >= 240 point to row
  // 256-entry), then the code-length row. Any prefix code; exponents >= 240 impossible.
  df11_chained,
  // Ours: the canonical code is implied by its 256-byte code-length row, stored alone; decoders
  // derive what tables they want (flat 2^k, canonical limits) on upload. All 256 exponents.
  canonical,
};

// Where each decoding thread learns the index of its first output element.
enum class PositionScheme : uint8_t {
  block,   // official: one uint32 per block (+ final n_elements); threads scan within the block
  thread,  // one uint32 per thread chunk (+ final n_elements); no scan needed
  // Ours: block positions as `block`, plus one byte per thread chunk: how many codes start in
  // it (EncodedUnit::thread_counts). Threads scan the counts instead of decoding twice.
  count,
};

struct Layout {
  int max_code_length = 32;      // bits, 1..32 (DF11: 32)
  TableScheme tables = TableScheme::df11_chained;
  int threads_per_block = 512;   // threads whose chunks share one output position (DF11: 512)
  int bytes_per_thread = 8;      // encoded bytes per thread chunk, power of two (DF11: 8)
  int gap_bits = 5;              // bits per packed gap (DF11: 5)
  PositionScheme positions = PositionScheme::block;

  // The official DFloat11 layout: its tensors, chained tables, 5-bit gaps and block positions,
  // read by the official kernel. (Which prefix code fills them is the encoder's choice: ours is
  // length-limited and optimal, the official tool's is dahuffman's with an EOF symbol.)
  [[nodiscard]] static Layout df11();
  // Our default layout: canonical code of at most 16 bits (flat tables fit), all exponents.
  [[nodiscard]] static Layout canonical(int max_code_length = 16, int threads_per_block = 512,
                                        int bytes_per_thread = 8,
                                        PositionScheme positions = PositionScheme::block);

  [[nodiscard]] bool is_df11() const;
  // Exponent values >= 240 are representable (false only for df11_chained tables).
  [[nodiscard]] bool all_exponents() const { return tables != TableScheme::df11_chained; }
  [[nodiscard]] int chunk_bits() const { return bytes_per_thread * 8; }
  [[nodiscard]] uint64_t block_bytes() const {
    return static_cast<uint64_t>(threads_per_block) * static_cast<uint64_t>(bytes_per_thread);
  }
  // A short procedural name, e.g. "df11" or "canon16.t256.b16.g4.pthread".
  [[nodiscard]] std::string name() const;
  // Throws df11::Error when the parameters are inconsistent.
  void validate() const;

  bool operator==(const Layout&) const = default;
};

[[nodiscard]] std::string to_string(TableScheme);
[[nodiscard]] std::string to_string(PositionScheme);

// The encoded form of a Unit in one Layout: the DF11 tensors plus what is needed to slice the
// decoded buffer back into tensors. Byte vectors hold exactly the bytes a DF11 checkpoint stores.
struct EncodedUnit {
  std::string name;
  Layout layout;
  std::vector<std::string> tensor_names;
  std::vector<std::vector<int64_t>> tensor_shapes;
  uint64_t n_elements = 0;

  std::vector<uint8_t> luts;              // see TableScheme
  std::vector<uint8_t> encoded_exponent;  // MSB-first bit stream, padded to a byte
  std::vector<uint8_t> sign_mantissa;     // one byte per element
  std::vector<uint8_t> output_positions;  // little-endian uint32: per block or per thread, + n_elements
  std::vector<uint8_t> gaps;              // gap_bits per thread, MSB-first, threads_per_block per block
  std::vector<uint8_t> thread_counts;     // PositionScheme::count: codes starting in each chunk,
                                          // threads_per_block per block (padding 0); else empty
  std::vector<int64_t> split_positions;   // cumulative element counts between tensors

  [[nodiscard]] uint64_t n_chunks() const;  // thread chunks covering the stream
  [[nodiscard]] uint64_t n_blocks() const;
  // Bytes of all stored tensors (what a checkpoint holds for this unit).
  [[nodiscard]] uint64_t stored_bytes() const;
  [[nodiscard]] uint64_t bf16_bytes() const { return 2 * n_elements; }
  [[nodiscard]] uint32_t position(uint64_t i) const;  // output_positions[i] as uint32
  // Unpacked gap of a thread chunk (gap_bits <= 8, so it spans at most two bytes).
  [[nodiscard]] unsigned gap(uint64_t chunk) const {
    const uint64_t bit = chunk * static_cast<uint64_t>(layout.gap_bits);
    const uint64_t byte = bit >> 3;
    const unsigned hi = gaps[byte];
    const unsigned lo = byte + 1 < gaps.size() ? gaps[byte + 1] : 0u;
    const unsigned two = (hi << 8) | lo;
    return (two >> (16 - layout.gap_bits - static_cast<unsigned>(bit & 7))) & ((1u << layout.gap_bits) - 1u);
  }
};

}  // namespace df11
