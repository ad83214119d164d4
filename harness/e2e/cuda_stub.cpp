// Builds without CUDA: the CUDA backend exists and says why it cannot run.
#include "codec/common.hpp"
#include "e2e/factory.hpp"
#include "e2e/generate.hpp"

namespace df11::e2e {

bool cuda_built() {
  return false;
}
bool cuda_available() {
  return false;
}
std::string cuda_device_name() {
  return "none (built without CUDA)";
}
uint64_t cuda_peak_memory() {
  return 0;
}
void cuda_reset_peak_memory() {}
std::unique_ptr<StepTracer> cuda_step_tracer(std::string& why_not) {
  why_not = "this build has no CUDA";
  return nullptr;
}
void cuda_keep_weights_for(const FeedCache&, const std::vector<ModelRequest>&) {}  // nothing is cached
synth::MatrixFiller cuda_synth_filler() {
  throw Error("generating weights on the GPU: this build has no CUDA (nvcc was not found at configure time)");
}

std::unique_ptr<ModelBuilder> make_cuda_builder(const ModelShape&, const Norms&,
                                                const ModelRequest&, uint64_t) {
  throw Error("the CUDA backend: this build has no CUDA (nvcc was not found at configure time)");
}

}  // namespace df11::e2e
