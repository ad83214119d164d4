// `official-ptx`: the published DFloat11 kernel as a side-by-side baseline. It is loaded at run
// time from the decode.ptx the user names (it ships inside the dfloat11 wheel; never committed
// here) through the CUDA driver API, and run on our DF11-layout encodings.
#pragma once

#include <string>

#include "common/variant.hpp"
#include "decoder.hpp"

namespace df11::dec {

// The variant that reimplements the published algorithm (its host emulation and device image).
[[nodiscard]] const VariantSpec& official_algorithm();

class OfficialPtxDecoder final : public Decoder {
 public:
  // Where decode.ptx is (from --official-ptx); empty: the variant is not_supported.
  static void set_ptx_path(std::string path);
  [[nodiscard]] static const std::string& ptx_path();

  [[nodiscard]] std::string name() const override { return "official-ptx"; }
  [[nodiscard]] Traits traits() const override;
  [[nodiscard]] Layout layout() const override { return Layout::df11(); }
  [[nodiscard]] Status can_implement(const EncodedUnit& unit) const override;
  // The published algorithm, as our lut8x4.gap5-block.smem-out.t512.b8 reimplements it: the host
  // cannot run the PTX, so the emulation checks the algorithm the PTX implements.
  void decode_host(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi) const override;
  [[nodiscard]] std::unique_ptr<DeviceImage> upload(const EncodedUnit& unit, Stream stream) const override;
  // Whole units only (lo = 0, hi = n_elements): the official kernel has no range parameters.
  void launch(const DeviceImage& image, uint16_t* out_device, uint64_t lo, uint64_t hi, Stream stream,
              Order order = Order::ascending, Start start = Start::serial) const override;
};

}  // namespace df11::dec
