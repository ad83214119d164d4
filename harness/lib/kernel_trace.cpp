#include "lib/kernel_trace.hpp"

#include <algorithm>

namespace df11::trace {

namespace {
bool has(std::string_view name, std::string_view part) { return name.find(part) != std::string_view::npos; }
}  // namespace

Kind classify_kernel(std::string_view name) {
  // gap_decode.cu's three schedules (tests/sweep/test_kernel_trace.cpp reads that file's kernels).
  if (has(name, "gap_decode_kernel") || has(name, "gap_decode_persistent_kernel") ||
      has(name, "gap_decode_dynamic_kernel") || name == "decode") {
    return Kind::decode;
  }
  if (has(name, "fused_gemv_kernel") || has(name, "fused_finish_kernel")) return Kind::fused;
  // The forward pass's kernels live in df11::e2e::gpu (mangled "...3e2e3gpu...").
  if (has(name, "3e2e3gpu") || has(name, "e2e::gpu::")) {
    return has(name, "attention_kernel") ? Kind::attention : Kind::forward;
  }
  return Kind::gemm;
}

const char* to_string(Kind k) {
  switch (k) {
    case Kind::decode: return "decode";
    case Kind::fused: return "fused";
    case Kind::attention: return "attention";
    case Kind::forward: return "forward";
    case Kind::gemm: return "gemm";
    case Kind::copy: return "copy";
  }
  return "?";
}

int64_t Summary::kernels() const {
  int64_t n = 0;
  for (int k = 0; k < kKinds; ++k)
    if (static_cast<Kind>(k) != Kind::copy) n += count[k];
  return n;
}

Summary summarize(std::vector<Record> records) {
  Summary s;
  std::erase_if(records, [](const Record& r) { return r.end <= r.start; });
  if (records.empty()) return s;
  std::sort(records.begin(), records.end(), [](const Record& a, const Record& b) { return a.start < b.start; });
  uint64_t busy = 0, cur_start = records.front().start, cur_end = records.front().end, last = 0;
  for (const Record& r : records) {
    const int k = static_cast<int>(r.kind);
    s.seconds[k] += static_cast<double>(r.end - r.start) * 1e-9;
    ++s.count[k];
    last = std::max(last, r.end);
    if (r.start > cur_end) {  // a gap: close the interval so far
      busy += cur_end - cur_start;
      cur_start = r.start;
      cur_end = r.end;
    } else {
      cur_end = std::max(cur_end, r.end);
    }
  }
  busy += cur_end - cur_start;
  s.busy_s = static_cast<double>(busy) * 1e-9;
  s.span_s = static_cast<double>(last - records.front().start) * 1e-9;
  return s;
}

}  // namespace df11::trace
