// Where device time goes, from activity records (CUPTI on CUDA: cupti_timer.hpp): each kernel by
// its name into one kind, summed per kind, and the time the device was busy with anything (the
// union of all records' intervals, so that kernels on two streams count once where they overlap).
// Pure C++, so the rules are tested without a GPU.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace df11::trace {

// What a kernel is, by its (mangled or plain) name:
enum class Kind {
  decode,     // a DF11 decoder: gap_decode_kernel / gap_decode_persistent_kernel, the official "decode"
  fused,      // decode + GEMV in one kernel (fused_gemv_kernel) and its finishing pass
  attention,  // the e2e forward pass's attention kernel
  forward,    // the e2e forward pass's other kernels (embedding, norms, rotary, SwiGLU, argmax, ...)
  gemm,       // anything else: cuBLAS / cuBLASLt GEMMs and GEMVs
  copy,       // a memcpy record (not a kernel)
};
inline constexpr int kKinds = 6;

[[nodiscard]] Kind classify_kernel(std::string_view name);
[[nodiscard]] const char* to_string(Kind k);

// One activity record: [start, end) in nanoseconds of one device clock.
struct Record {
  Kind kind = Kind::gemm;
  uint64_t start = 0, end = 0;
};

struct Summary {
  double seconds[kKinds] = {};  // per Kind, summed over records (overlaps count twice)
  int64_t count[kKinds] = {};   // records per Kind
  double busy_s = 0;            // union of all records' intervals
  double span_s = 0;            // first start to last end
  [[nodiscard]] double of(Kind k) const { return seconds[static_cast<int>(k)]; }
  [[nodiscard]] int64_t records(Kind k) const { return count[static_cast<int>(k)]; }
  [[nodiscard]] int64_t kernels() const;  // records that are not copies
  // The sweep's split: decoders apart, every other kernel counts as GEMM (a df11-fused method's
  // kernels are its GEMM).
  [[nodiscard]] double decode_s() const { return of(Kind::decode); }
  [[nodiscard]] double gemm_s() const {
    return of(Kind::gemm) + of(Kind::fused) + of(Kind::attention) + of(Kind::forward);
  }
  [[nodiscard]] double copy_s() const { return of(Kind::copy); }
};

// Records with end <= start (incomplete) are skipped.
[[nodiscard]] Summary summarize(std::vector<Record> records);

}  // namespace df11::trace
