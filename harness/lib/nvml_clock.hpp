// The SM clock a GPU runs at now, from NVML (libnvidia-ml, the driver's), opened at run time
// (dlopen) as CUPTI is: binaries start without it, and where it cannot be loaded or initialized
// (no driver, DF11_NVML=0) nothing is read and why_not() says why. The sweep reads it between
// timed samples (after the first, every 16th and the last), so a row shows the clock its samples
// ran at, throttling included, where cudaDevAttrClockRate gives only the nominal maximum. It
// reads; it never sets a clock.
#pragma once

#include <optional>
#include <string>

namespace df11::trace {

class SmClock {
 public:
  // pci_bus_id: the device's, as cudaDeviceGetPCIBusId writes it ("0000:3B:00.0").
  explicit SmClock(const std::string& pci_bus_id);
  ~SmClock();
  SmClock(const SmClock&) = delete;
  SmClock& operator=(const SmClock&) = delete;
  [[nodiscard]] bool available() const { return device_ != nullptr; }
  [[nodiscard]] const std::string& why_not() const { return why_not_; }
  // The SM clock now in MHz; none when NVML is unavailable or the read fails.
  [[nodiscard]] std::optional<unsigned> mhz() const;

 private:
  void* lib_ = nullptr;
  void* device_ = nullptr;  // nvmlDevice_t
  void* get_clock_ = nullptr;
  void* shutdown_ = nullptr;
  std::string why_not_;
};

}  // namespace df11::trace
