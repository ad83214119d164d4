// A Decoder built from a VariantSpec: host emulation from gap_decode_host.cpp, upload and
// launch from gap_decode.cu (or errors, in builds without CUDA).
#pragma once

#include "common/variant.hpp"
#include "decoder.hpp"

namespace df11::dec {

class VariantDecoder final : public Decoder {
 public:
  explicit VariantDecoder(VariantSpec spec) : spec_(spec) {}
  [[nodiscard]] std::string name() const override { return spec_.name(); }
  [[nodiscard]] Traits traits() const override { return spec_.traits(); }
  [[nodiscard]] Layout layout() const override { return spec_.layout(); }
  [[nodiscard]] Status can_implement(const EncodedUnit& unit) const override;
  void decode_host(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi) const override;
  void decode_simt(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi,
                   Order order = Order::ascending) const override;
  [[nodiscard]] bool honors_order() const override { return true; }
  [[nodiscard]] bool honors_start() const override { return true; }
  [[nodiscard]] std::unique_ptr<DeviceImage> upload(const EncodedUnit& unit, Stream stream) const override;
  void launch(const DeviceImage& image, uint16_t* out_device, uint64_t lo, uint64_t hi, Stream stream,
              Order order = Order::ascending, Start start = Start::serial) const override;
  [[nodiscard]] const VariantSpec& spec() const { return spec_; }

 private:
  VariantSpec spec_;
};

}  // namespace df11::dec
