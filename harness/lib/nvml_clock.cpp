// NVML through dlopen (see nvml_clock.hpp). The few entry points used are declared here with the
// ABI nvml.h gives them (the toolkit here ships no nvml.h): every call returns an int status,
// NVML_SUCCESS = 0; nvmlClockType_t NVML_CLOCK_SM = 1.
#include "lib/nvml_clock.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

namespace df11::trace {
namespace {

using Init = int (*)();
using Shutdown = int (*)();
using HandleByPci = int (*)(const char*, void**);
using ClockInfo = int (*)(void*, int, unsigned*);
constexpr int kSuccess = 0;
constexpr int kClockSm = 1;

}  // namespace

SmClock::SmClock(const std::string& pci_bus_id) {
  if (const char* env = std::getenv("DF11_NVML"); env && std::strcmp(env, "0") == 0) {
    why_not_ = "off (DF11_NVML=0)";
    return;
  }
  for (const char* name : {"libnvidia-ml.so.1", "libnvidia-ml.so"}) {
    lib_ = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib_) break;
  }
  if (!lib_) {
    why_not_ = "libnvidia-ml not found";
    return;
  }
  const auto init = reinterpret_cast<Init>(dlsym(lib_, "nvmlInit_v2"));
  const auto by_pci = reinterpret_cast<HandleByPci>(dlsym(lib_, "nvmlDeviceGetHandleByPciBusId_v2"));
  get_clock_ = dlsym(lib_, "nvmlDeviceGetClockInfo");
  shutdown_ = dlsym(lib_, "nvmlShutdown");
  if (!init || !by_pci || !get_clock_ || !shutdown_) {
    why_not_ = "libnvidia-ml lacks nvmlInit_v2, nvmlDeviceGetHandleByPciBusId_v2 or nvmlDeviceGetClockInfo";
    dlclose(lib_), lib_ = nullptr;
    return;
  }
  if (const int rc = init(); rc != kSuccess) {
    why_not_ = "nvmlInit_v2 failed (status " + std::to_string(rc) + ")";
    dlclose(lib_), lib_ = nullptr;
    return;
  }
  void* dev = nullptr;
  if (const int rc = by_pci(pci_bus_id.c_str(), &dev); rc != kSuccess || dev == nullptr) {
    why_not_ = "no NVML device at PCI bus id " + pci_bus_id + " (status " + std::to_string(rc) + ")";
    reinterpret_cast<Shutdown>(shutdown_)();
    dlclose(lib_), lib_ = nullptr;
    return;
  }
  device_ = dev;
  if (!mhz()) {
    why_not_ = "nvmlDeviceGetClockInfo(NVML_CLOCK_SM) failed";
    device_ = nullptr;
  }
}

SmClock::~SmClock() {
  // The library stays loaded (as NVML's own bindings leave it): only NVML is shut down.
  if (lib_) reinterpret_cast<Shutdown>(shutdown_)();
}

std::optional<unsigned> SmClock::mhz() const {
  if (!device_) return std::nullopt;
  unsigned v = 0;
  if (reinterpret_cast<ClockInfo>(get_clock_)(device_, kClockSm, &v) != kSuccess) return std::nullopt;
  return v;
}

}  // namespace df11::trace
