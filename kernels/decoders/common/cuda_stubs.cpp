// Builds without CUDA: the device entry points exist and say why they cannot run.
#include "codec/common.hpp"
#include "common/compare.hpp"
#include "common/variant_decoder.hpp"
#include "decoder.hpp"
#include "fused/fused_gemv.hpp"
#include "official_ptx/official_ptx.hpp"

namespace df11::dec {
namespace {
[[noreturn]] void no_cuda(const std::string& who) {
  throw Error(who + ": this build has no CUDA (nvcc was not found at configure time)");
}
}  // namespace

std::unique_ptr<DeviceImage> Decoder::upload(const EncodedUnit&, Stream) const { no_cuda(name()); }
void Decoder::launch(const DeviceImage&, uint16_t*, uint64_t, uint64_t, Stream, Order, Start) const { no_cuda(name()); }
std::unique_ptr<DeviceImage> VariantDecoder::upload(const EncodedUnit&, Stream) const { no_cuda(name()); }
void VariantDecoder::launch(const DeviceImage&, uint16_t*, uint64_t, uint64_t, Stream, Order, Start) const {
  no_cuda(name());
}
std::unique_ptr<DeviceImage> OfficialPtxDecoder::upload(const EncodedUnit&, Stream) const { no_cuda(name()); }
void OfficialPtxDecoder::launch(const DeviceImage&, uint16_t*, uint64_t, uint64_t, Stream, Order, Start) const {
  no_cuda(name());
}
bool built_with_cuda() { return false; }
DeviceComparison compare_on_device(const uint16_t*, const uint16_t*, uint64_t, Stream) {
  no_cuda("compare_on_device");
}
bool device_starts_early() { return false; }
uint64_t early_launches_refused() { return 0; }

struct FusedGemvDevice::Impl {};
FusedGemvDevice::FusedGemvDevice(const EncodedUnit&, const std::vector<GemvMatrix>&, int, Stream, Source,
                                 const DeviceImage*, std::optional<FusedDecode>) {
  no_cuda("fused gemv");
}
FusedGemvDevice::~FusedGemvDevice() = default;
void FusedGemvDevice::run(const std::vector<const uint16_t*>&, const std::vector<uint16_t*>&, int, Stream,
                          const uint16_t*) const {
  no_cuda("fused gemv");
}
void FusedGemvDevice::run(const GemvRun&, Stream) const { no_cuda("fused gemv"); }
const FusedPlan& FusedGemvDevice::plan() const { no_cuda("fused gemv"); }
uint64_t FusedGemvDevice::partials_floats(int) const { return 0; }
uint64_t FusedGemvDevice::device_bytes() const { return 0; }

}  // namespace df11::dec
