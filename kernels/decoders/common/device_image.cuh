// The device copy of a unit for the gap-decode family (and the official kernel, which reads the
// same DF11 arrays): RAII buffers plus the host-side facts a launch needs (positions for block
// ranges, shared-memory sizing).
#pragma once

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
        luts_(cuda::DeviceBuffer<uint8_t>::from(host.luts, stream)),
        flat_(cuda::DeviceBuffer<uint16_t>::from(host.flat_root, stream)) {
    if (host.has_canon) canon_ = cuda::DeviceBuffer<CanonicalTable>::from({host.canon}, stream);
    // The host copies were only staging; the launch needs sizes and positions.
    CUDA_CHECK(cudaStreamSynchronize(stream));
    host.stream = {};
    host.sign_mantissa = {};
    host.gaps = {};
    host_ = std::move(host);
  }
  [[nodiscard]] uint64_t device_bytes() const override {
    return stream_buf_.bytes() + sm_.bytes() + positions_.bytes() + gaps_.bytes() + luts_.bytes() + flat_.bytes() +
           canon_.bytes();
  }
  [[nodiscard]] uint64_t n_elements() const override { return host_.n_elements; }

  [[nodiscard]] LaunchParams params(uint16_t* out, uint64_t lo, uint64_t hi) const {
    LaunchParams p{};
    p.stream = stream_buf_.get();
    p.n_bytes = host_.n_bytes;
    p.sign_mantissa = sm_.get();
    p.positions = positions_.get();
    p.gaps = gaps_.get();
    p.luts = luts_.get();
    p.n_rows = host_.n_rows;
    p.flat_root = flat_.get();
    p.canon = canon_.get();
    p.out = out;
    p.n_elements = host_.n_elements;
    p.n_chunks = host_.n_chunks;
    p.lo = lo;
    p.hi = hi;
    p.max_block_elements = host_.max_block_elements;
    p.gap_bits = host_.gap_bits;
    return p;
  }
  [[nodiscard]] const HostImage& host() const { return host_; }
  [[nodiscard]] const VariantSpec& spec() const { return spec_; }

 private:
  VariantSpec spec_;
  HostImage host_;
  cuda::DeviceBuffer<uint8_t> stream_buf_, sm_;
  cuda::DeviceBuffer<uint32_t> positions_;
  cuda::DeviceBuffer<uint8_t> gaps_, luts_;
  cuda::DeviceBuffer<uint16_t> flat_;
  cuda::DeviceBuffer<CanonicalTable> canon_;
};

}  // namespace df11::dec
