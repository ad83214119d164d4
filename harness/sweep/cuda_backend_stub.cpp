// The CUDA backend of builds without it: run_sweep --backend auto falls back to the cpu backend,
// and --backend cuda says why it cannot run. CUDA builds compile cuda_backend.cu instead.
#include "codec/common.hpp"
#include "sweep/backend.hpp"

namespace df11::sweep {

std::unique_ptr<Backend> make_cuda_backend(const Experiment&) {
  throw Error("the cuda backend is not available: built without CUDA");
}

bool cuda_backend_available() {
  return false;
}

}  // namespace df11::sweep
