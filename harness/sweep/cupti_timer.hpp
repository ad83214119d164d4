// Per-kernel device time from CUPTI activity records, to split a sample into decode, GEMM and
// copy time. libcupti is opened at run time (dlopen), so binaries start without it and without
// a driver; when it cannot be loaded the split is simply not measured.
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
  void start();                 // forget earlier records
  [[nodiscard]] KernelSplit stop();  // flush and sum the records since start()

 private:
  bool ok_ = false;
  std::string why_not_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace df11::sweep
