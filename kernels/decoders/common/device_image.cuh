// The device copy of a unit for the gap-decode family (and the official kernel, which reads the
// same DF11 arrays): RAII buffers plus the host-side facts a launch needs (positions for block
// ranges, shared-memory sizing).
#pragma once

#include <atomic>

#include "common/core.cuh"
#include "common/cuda_util.hpp"
#include "common/host_image.hpp"
#include "decoder.hpp"

namespace df11::dec {

class GapDeviceImage final : public DeviceImage {
 public:
  GapDeviceImage(const VariantSpec& spec, HostImage host, cudaStream_t stream)
      : spec_(spec),
        stream_buf_(cuda::DeviceBuffer<uint8_t>::from(host.stream, stream)),
        sm_(cuda::DeviceBuffer<uint8_t>::from(host.sign_mantissa, stream)),
        positions_(cuda::DeviceBuffer<uint32_t>::from(host.positions, stream)),
        gaps_(cuda::DeviceBuffer<uint8_t>::from(host.gaps, stream)),
        counts_(cuda::DeviceBuffer<uint8_t>::from(host.counts, stream)),
        luts_(cuda::DeviceBuffer<uint8_t>::from(host.luts, stream)),
        flat_(cuda::DeviceBuffer<uint16_t>::from(host.flat_root, stream)),
        multi_(cuda::DeviceBuffer<uint32_t>::from(host.multi_root, stream)),
        lane_off_(cuda::DeviceBuffer<uint16_t>::from(host.lane_off, stream)) {
    if (host.has_canon) canon_ = cuda::DeviceBuffer<CanonicalTable>::from({host.canon}, stream);
    // Made here, not at the first launch: a launch may be inside a graph capture, where
    // cudaMalloc is not allowed.
    if (spec.schedule == Schedule::dyn) {
      work_ = cuda::DeviceBuffer<uint32_t>(kWorkCounters);
      CUDA_CHECK(cudaMemsetAsync(work_.get(), 0, work_.bytes(), stream));
    }
    // The host copies were only staging; the launch needs sizes and positions.
    CUDA_CHECK(cudaStreamSynchronize(stream));
    host.stream = {};
    host.sign_mantissa = {};
    host.gaps = {};
    host.counts = {};
    host.lane_off = {};
    host_ = std::move(host);
  }
  [[nodiscard]] uint64_t device_bytes() const override {
    return stream_buf_.bytes() + sm_.bytes() + positions_.bytes() + gaps_.bytes() + counts_.bytes() + luts_.bytes() +
           flat_.bytes() + multi_.bytes() + canon_.bytes() + work_.bytes() + lane_off_.bytes();
  }
  [[nodiscard]] uint64_t n_elements() const override { return host_.n_elements; }

  [[nodiscard]] LaunchParams params(uint16_t* out, uint64_t lo, uint64_t hi) const {
    LaunchParams a{};
    a.stream = stream_buf_.get();
    a.sign_mantissa = sm_.get();
    a.positions = positions_.get();
    a.gaps = gaps_.get();
    a.counts = counts_.get();
    a.luts = luts_.get();
    a.flat_root = flat_.get();
    a.multi_root = multi_.get();
    a.canon = canon_.get();
    a.lane_off = lane_off_.get();
    return launch_params(host_, a, out, lo, hi);
  }
  [[nodiscard]] const HostImage& host() const { return host_; }
  // A counter word for one launch of a dyn-schedule kernel: 0 at upload, and every launch
  // leaves its word at 0 (gap_decode_persistent), so no memset goes before a launch. Launches
  // take the kWorkCounters words in turn: launches of this image that run at once (on two
  // streams) must be fewer than kWorkCounters launches apart, and a CUDA graph keeps the words
  // its capture took, so it must not run beside eager launches or another graph of the same
  // image. The sweep and the e2e model launch an image from one stream at a time.
  [[nodiscard]] uint32_t* work_counter() const { return work_.get() + next_work_++ % kWorkCounters; }
  static constexpr unsigned kWorkCounters = 64;
  [[nodiscard]] const VariantSpec& spec() const { return spec_; }

 private:
  VariantSpec spec_;
  HostImage host_;
  cuda::DeviceBuffer<uint8_t> stream_buf_, sm_;
  cuda::DeviceBuffer<uint32_t> positions_;
  cuda::DeviceBuffer<uint8_t> gaps_, counts_, luts_;
  cuda::DeviceBuffer<uint16_t> flat_;
  cuda::DeviceBuffer<uint32_t> multi_;
  cuda::DeviceBuffer<uint16_t> lane_off_;  // fixed_out
  cuda::DeviceBuffer<CanonicalTable> canon_;
  cuda::DeviceBuffer<uint32_t> work_;  // dyn launches' counters (dyn variants only)
  mutable std::atomic<unsigned> next_work_{0};
};

}  // namespace df11::dec
