// The ranges test_gpu decodes each variant over, on a unit of n elements. Shared with
// test_emulation, which runs the same list on the host (decode_host, decode_simt): the GPU test
// runs only where a GPU is lent, so its range arithmetic is checked here, where CI runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "decoder.hpp"

namespace df11::test {

struct DecodeRange {
  uint64_t lo = 0, hi = 0;
  dec::Order order = dec::Order::ascending;
  std::string what;
};

// The whole unit in both orders, two ranges in descending order (one from an odd start, one from
// an 8-aligned one) and two ascending ones that cut blocks (one not 8-aligned: scalar stores;
// one from an 8-aligned start: vector stores), then each tensor of `tensor_sizes` alone. Only
// non-empty ranges inside [0, n): small units have fewer.
inline std::vector<DecodeRange> gpu_test_ranges(uint64_t n, const std::vector<uint64_t>& tensor_sizes) {
  std::vector<DecodeRange> r;
  const auto add = [&](uint64_t lo, uint64_t hi, dec::Order order, std::string what) {
    if (lo < hi && hi <= n) r.push_back({lo, hi, order, std::move(what)});
  };
  add(0, n, dec::Order::ascending, "whole unit");
  add(0, n, dec::Order::descending, "whole unit, descending");
  add(n / 5 + 3, n - n / 7, dec::Order::descending, "a range, descending");
  add((n / 3) & ~uint64_t{7}, n - n / 9, dec::Order::descending, "a range from an 8-aligned start, descending");
  add(n / 3 + 1, n / 3 + 1 + n / 4, dec::Order::ascending, "a range, not 8-aligned");
  add((n - n / 5) & ~uint64_t{7}, n, dec::Order::ascending, "a range from an 8-aligned start");
  uint64_t lo = 0;
  for (std::size_t i = 0; i < tensor_sizes.size(); ++i) {
    add(lo, lo + tensor_sizes[i], dec::Order::ascending, "tensor " + std::to_string(i));
    lo += tensor_sizes[i];
  }
  return r;
}

}  // namespace df11::test
