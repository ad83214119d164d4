// Per-kernel device time from CUPTI activity records, summarized by kernel_trace.hpp (decode,
// GEMM, fused, forward-pass kernels, copies; the time the device was busy at all). libcupti is
// opened at run time (dlopen), so binaries start without it and without a driver; when it cannot
// be loaded (or DF11_CUPTI=0) nothing is measured and why_not() says why.
// Tracing instruments kernels (it adds time to each), so it is on only between enable() and
// disable(): timed runs go without it, a separate short pass is traced.
#pragma once

#include <memory>
#include <string>

#include "lib/kernel_trace.hpp"

namespace df11::trace {

class CuptiTimer {
 public:
  CuptiTimer();
  ~CuptiTimer();
  CuptiTimer(const CuptiTimer&) = delete;
  CuptiTimer& operator=(const CuptiTimer&) = delete;
  [[nodiscard]] bool available() const { return ok_; }
  [[nodiscard]] const std::string& why_not() const { return why_not_; }
  void enable();                // start tracing kernels and copies
  void disable();               // stop tracing (records still buffered are dropped)
  void start();                 // forget earlier records
  [[nodiscard]] Summary stop();  // flush (forced: the caller has synchronized) and summarize since start()

 private:
  bool ok_ = false;
  std::string why_not_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace df11::trace
