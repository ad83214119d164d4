// Per-kernel device time from CUPTI activity records, to split a sample into decode, GEMM and
// copy time. libcupti is opened at run time (dlopen), so binaries start without it and without
// a driver; when it cannot be loaded (or DF11_CUPTI=0) the split is simply not measured.
// Tracing instruments kernels (it adds time to each), so it is on only between enable() and
// disable(): the timed samples run without it, a separate short pass measures the split.
#pragma once

#include <memory>
#include <string>

namespace df11::sweep {

struct KernelSplit {
  double decode_s = 0, gemm_s = 0, copy_s = 0;
};

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
  [[nodiscard]] KernelSplit stop();  // flush (forced: the caller has synchronized) and sum since start()

 private:
  bool ok_ = false;
  std::string why_not_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace df11::sweep
