// A Unit: a named list of BF16 matrices that share one Huffman code (a transformer block's 7
// projections, or lm_head alone). Views borrow memory (memory-mapped files); Unit owns it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace df11 {

// The product of a shape's dimensions. Shapes come from files and configs: a negative dimension
// or a product past 2^63 is an error (naming the shape only: readers check their shapes first
// and name the file), never a wrapped count. A zero dimension empties the tensor whatever the
// others are ([2^40, 2^40, 0] is empty, as the safetensors reader takes it).
[[noreturn]] void throw_bad_shape(const std::vector<int64_t>& shape);  // codec/common.cpp
[[nodiscard]] inline uint64_t element_count(const std::vector<int64_t>& shape) {
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) throw_bad_shape(shape);
    empty |= d == 0;
  }
  if (empty) return 0;
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) || n > (uint64_t{1} << 63))
      throw_bad_shape(shape);
  }
  return n;
}

// One BF16 tensor, row-major, PyTorch [out, in] for a Linear weight. data holds raw BF16 bit
// patterns (host memory).
struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  std::span<const uint16_t> data;
};

struct UnitView {
  std::string name;
  std::vector<TensorView> tensors;

  [[nodiscard]] uint64_t n_elements() const {
    uint64_t n = 0;
    for (const auto& t : tensors) n += t.data.size();
    return n;
  }
};

struct Bf16Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<uint16_t> data;

  [[nodiscard]] TensorView view() const { return TensorView{name, shape, std::span<const uint16_t>(data)}; }
};

struct Unit {
  std::string name;
  std::vector<Bf16Tensor> tensors;

  [[nodiscard]] UnitView view() const {
    UnitView v{name, {}};
    for (const auto& t : tensors) v.tensors.push_back(t.view());
    return v;
  }
  [[nodiscard]] uint64_t n_elements() const { return view().n_elements(); }
};

}  // namespace df11
