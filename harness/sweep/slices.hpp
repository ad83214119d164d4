// The row slices of df11-chunked and df11-pipelined: which elements of a unit one decode launch
// writes into the slice buffer, and which GEMMs then read them. Pure (no CUDA), so the plan is
// tested on any machine (test_sweep "[slices]").
//
// A slice is one contiguous element range [lo, hi) of the unit, decoded by one launch, and one
// or more parts: whole rows of one matrix each, multiplied by one GEMM reading the slice buffer
// at the part's offset. A slice fills up to its budget across matrix boundaries (the end of q
// and the start of k in one decode), so the number of decode launches, each with its ramp and
// tail, is about the unit's size over the budget, not the sum of that over the matrices.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace df11::sweep {

// A matrix of the unit: its first element in the unit and its shape [out, in] (rows of `in`).
struct SliceMatrix {
  uint64_t offset = 0;
  int64_t out = 0;
  int64_t in = 0;
};

// Rows [r0, r1) of matrix `matrix`, at element `at` of the slice buffer.
struct SlicePart {
  std::size_t matrix = 0;
  int64_t r0 = 0, r1 = 0;
  uint64_t at = 0;
};

struct Slice {
  uint64_t lo = 0, hi = 0;  // the unit's elements the slice's decode writes
  std::vector<SlicePart> parts;
};

// Slices of at most `budget` elements, in the unit's order. A part ends at a whole multiple of
// `row_quantum` rows or at its matrix's last row; the slice goes on into the next matrix when
// that matrix starts where this one ends and the next part's offset in the buffer is a multiple
// of `align` elements (a GEMM operand's alignment). A slice that cannot hold `row_quantum` rows
// of a matrix gets them anyway (over budget, alone): the buffer is sized for that.
[[nodiscard]] inline std::vector<Slice> plan_slices(std::span<const SliceMatrix> mats, uint64_t budget,
                                                    int64_t row_quantum, uint64_t align) {
  std::vector<Slice> out;
  if (row_quantum < 1) row_quantum = 1;
  if (align < 1) align = 1;
  Slice cur;
  auto close = [&] {
    if (!cur.parts.empty()) out.push_back(std::move(cur));
    cur = Slice{};
  };
  for (std::size_t i = 0; i < mats.size(); ++i) {
    const SliceMatrix& m = mats[i];
    if (m.out <= 0 || m.in <= 0) continue;
    const auto in = static_cast<uint64_t>(m.in);
    int64_t r = 0;
    while (r < m.out) {
      const uint64_t start = m.offset + static_cast<uint64_t>(r) * in;
      if (!cur.parts.empty() && (cur.hi != start || (cur.hi - cur.lo) % align != 0)) close();
      const uint64_t used = cur.hi - cur.lo;
      const auto fit = static_cast<int64_t>(budget > used ? (budget - used) / in : 0);
      int64_t rows;
      if (fit >= m.out - r) {
        rows = m.out - r;                                  // the rest of the matrix fits
      } else if (fit >= row_quantum) {
        rows = fit / row_quantum * row_quantum;            // whole quanta, the slice is full
      } else if (!cur.parts.empty()) {
        close();                                           // no quantum fits: the next slice
        continue;
      } else {
        rows = std::min(row_quantum, m.out - r);           // alone and over budget
      }
      if (cur.parts.empty()) cur.lo = cur.hi = start;
      cur.parts.push_back({i, r, r + rows, cur.hi - cur.lo});
      cur.hi += static_cast<uint64_t>(rows) * in;
      r += rows;
      if (cur.hi - cur.lo >= budget) close();
    }
  }
  close();
  return out;
}

// The budgets (elements) of the slices for a slice size of `bytes`: df11-chunked's slice holds
// bytes / 2 elements, df11-pipelined's half of that in whole 128 elements (two halves in flight,
// the same L2 footprint); each at least `min_slice` (a multiple of 128) and at most the unit
// (`unit_elems` rounded up to 128): a larger size plans the unit as that does, and the slice
// buffer, sized from the budgets, is never larger than the unit. (chunk_bytes may ask for any
// size: 200 GB asked for a buffer of that size, whose failed allocation made every method of the
// unit not_run, bf16 too.)
struct SliceBudgets {
  uint64_t chunk_elems = 0, pipe_half = 0;
};
[[nodiscard]] inline SliceBudgets slice_budgets(uint64_t bytes, uint64_t min_slice, uint64_t unit_elems) {
  const uint64_t cap = std::max((unit_elems + 127) / 128 * 128, min_slice);
  SliceBudgets b;
  b.chunk_elems = std::min(std::max(bytes / 2, min_slice), cap);
  b.pipe_half = std::min(std::max(b.chunk_elems / 2 / 128 * 128, min_slice), cap);
  return b;
}

// The most elements any slice of the plan holds (the buffer it needs).
[[nodiscard]] inline uint64_t largest_slice(std::span<const Slice> slices) {
  uint64_t n = 0;
  for (const auto& s : slices) n = std::max(n, s.hi - s.lo);
  return n;
}

}  // namespace df11::sweep
