// CUDA helpers for host code (CUDA builds only): CUDA_CHECK that names file and line, RAII
// device buffers, streams and events.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "codec/common.hpp"

#define CUDA_CHECK(expr)                                                                                  \
  do {                                                                                                    \
    const cudaError_t df11_err_ = (expr);                                                                 \
    if (df11_err_ != cudaSuccess) {                                                                       \
      throw ::df11::Error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + #expr +          \
                          " failed: " + cudaGetErrorString(df11_err_));                                   \
    }                                                                                                     \
  } while (0)

namespace df11::cuda {

// True when a CUDA device can be used; "no driver" and "no device" are not errors.
[[nodiscard]] bool device_available();

// Blocks of `kernel` resident on the current device at once with `threads` threads and `smem`
// bytes of dynamic shared memory each (occupancy x SMs, at least 1): the grid of a persistent
// kernel. Host calls only; callers cache it per kernel and size.
template <class Kernel>
uint64_t resident_blocks(Kernel kernel, int threads, unsigned smem) {
  int per_sm = 0, device = 0, sms = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return static_cast<uint64_t>(per_sm > 0 ? per_sm : 1) * static_cast<uint64_t>(sms > 0 ? sms : 1);
}

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n_) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (ptr_) cudaFree(ptr_);  // no throw from a destructor path
    ptr_ = nullptr;
    n_ = 0;
  }
  // Copies host data into a fresh buffer of the same size.
  static DeviceBuffer from(const std::vector<T>& host, cudaStream_t stream) {
    DeviceBuffer b(host.size());
    if (!host.empty()) {
      CUDA_CHECK(cudaMemcpyAsync(b.ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    }
    return b;
  }
  [[nodiscard]] T* get() const { return ptr_; }
  [[nodiscard]] std::size_t size() const { return n_; }
  [[nodiscard]] std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

class Stream {
 public:
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  [[nodiscard]] cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_{};
};

class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreate(&e_)); }
  explicit Event(unsigned flags) { CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags)); }  // e.g. cudaEventDisableTiming
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { cudaEventDestroy(e_); }
  [[nodiscard]] cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_{};
};

}  // namespace df11::cuda
