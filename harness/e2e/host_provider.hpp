// Weight providers of the CPU path: BF16 units all resident, or DF11 units decoded one at a time
// into one reused buffer just before the unit runs (decode_cpu, or a decoder variant's host
// emulation), as the official DFloat11 runtime does on the GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "e2e/model.hpp"
#include "e2e/weights.hpp"

namespace df11::e2e {

class HostProvider {
 public:
  virtual ~HostProvider() = default;
  // Takes one unit while the model is built (every unit once, any order).
  virtual void add(UnitFeed& feed) = 0;
  // The unit's concatenated BF16 words (host memory, map(unit).n_elements of them). Valid until
  // the next acquire: a DF11 provider decodes every unit into the same buffer.
  [[nodiscard]] virtual const uint16_t* acquire(int unit) = 0;
  [[nodiscard]] const UnitMap& map(int unit) const {
    return maps_.at(static_cast<std::size_t>(unit));
  }
  [[nodiscard]] virtual WeightsKind kind() const = 0;
  [[nodiscard]] virtual std::string describe() const = 0;
  [[nodiscard]] virtual uint64_t weight_bytes() const = 0;
  [[nodiscard]] virtual uint64_t decode_buffer_bytes() const { return 0; }
  [[nodiscard]] double decode_seconds() const { return decode_s_; }

 protected:
  void set_map(const UnitFeed& feed);
  std::vector<UnitMap> maps_;
  double decode_s_ = 0;
};

// kind bf16 or df11 (cpu-offload is a CUDA method: df11::Error). variant: empty = decode_cpu
// on the official DF11 layout; else the registered decoder of that name, emulated on the host.
[[nodiscard]] std::unique_ptr<HostProvider> make_host_provider(WeightsKind kind,
                                                               const ModelShape& shape,
                                                               const std::string& variant,
                                                               int threads);

}  // namespace df11::e2e
