// Device parts of the official-ptx baseline: the PTX is JIT-compiled by the driver for the GPU
// at hand. Driver functions are reached through cudaGetDriverEntryPointByVersion, so binaries
// never link libcuda and still start on machines without a driver.
#include <cuda.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <fmt/format.h>

#include "common/device_image.cuh"
#include "common/variant.hpp"
#include "official_ptx/official_ptx.hpp"

namespace df11::dec {

namespace {

using ModuleLoadDataEx = CUresult (*)(CUmodule*, const void*, unsigned, CUjit_option*, void**);
using ModuleGetFunction = CUresult (*)(CUfunction*, CUmodule, const char*);
using FuncSetAttribute = CUresult (*)(CUfunction, CUfunction_attribute, int);
using LaunchKernel = CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  CUstream, void**, void**);

template <class Fn>
Fn driver_fn(const char* symbol) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q{};
  CUDA_CHECK(cudaGetDriverEntryPointByVersion(symbol, &fn, 12000, cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || fn == nullptr) throw Error(std::string("driver symbol not found: ") + symbol);
  return reinterpret_cast<Fn>(fn);
}

void check(CUresult r, const char* what) {
  if (r != CUDA_SUCCESS) throw Error(fmt::format("official-ptx: {} failed (CUresult {})", what, static_cast<int>(r)));
}

// decode.ptx loaded once per path and process.
CUfunction official_function(const std::string& path) {
  static std::mutex m;
  static std::map<std::string, CUfunction> cache;
  std::lock_guard<std::mutex> lock(m);
  if (auto it = cache.find(path); it != cache.end()) return it->second;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("official-ptx: cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string ptx = ss.str();
  CUDA_CHECK(cudaFree(nullptr));  // make the runtime's primary context current for the driver calls
  CUmodule mod{};
  // With the JIT's error log, so that a PTX the driver cannot compile says why.
  char log[8192] = {};
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void* vals[] = {log, reinterpret_cast<void*>(static_cast<uintptr_t>(sizeof log))};
  if (const CUresult r = driver_fn<ModuleLoadDataEx>("cuModuleLoadDataEx")(&mod, ptx.c_str(), 2, opts, vals);
      r != CUDA_SUCCESS) {
    throw Error("official-ptx: " + path + ": cuModuleLoadDataEx failed (CUresult " + std::to_string(static_cast<int>(r)) +
                "): " + log);
  }
  CUfunction f{};
  check(driver_fn<ModuleGetFunction>("cuModuleGetFunction")(&f, mod, "decode"), "cuModuleGetFunction(decode)");
  cache[path] = f;
  return f;
}

}  // namespace

std::unique_ptr<DeviceImage> OfficialPtxDecoder::upload(const EncodedUnit& unit, Stream stream) const {
  const Status s = can_implement(unit);
  if (!s.ok) throw Error(s.reason);
  if (unit.n_elements > INT32_MAX || unit.encoded_exponent.size() > INT32_MAX) {
    throw Error("official-ptx: unit " + unit.name + " is too large for the official kernel's int sizes");
  }
  (void)official_function(ptx_path());  // JIT now: a PTX that does not load fails at upload, not mid-timing
  return std::make_unique<GapDeviceImage>(official_algorithm(), prepare_image(official_algorithm(), unit), stream);
}

void OfficialPtxDecoder::launch(const DeviceImage& image, uint16_t* out_device, uint64_t lo, uint64_t hi,
                                Stream stream, Order, Start) const {  // its own order, serial
  const auto* img = dynamic_cast<const GapDeviceImage*>(&image);
  if (img == nullptr) throw Error("official-ptx: launch with an image it did not upload");
  if (lo != 0 || hi != img->n_elements()) {
    throw Error("official-ptx: the official kernel decodes whole units only");
  }
  const HostImage& h = img->host();
  if (h.n_blocks == 0) return;
  const CUfunction f = official_function(ptx_path());
  const unsigned smem = 512 * 4 + 4 + 2 * h.max_block_elements;
  if (smem > 48 * 1024) {
    check(driver_fn<FuncSetAttribute>("cuFuncSetAttribute")(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                            static_cast<int>(smem)),
          "cuFuncSetAttribute");
  }
  const LaunchParams p = img->params(out_device, lo, hi);
  const uint8_t* luts = p.luts;
  const uint8_t* codes = p.stream;
  const uint8_t* sm = p.sign_mantissa;
  const uint32_t* positions = p.positions;
  const uint8_t* gaps = p.gaps;
  uint16_t* outputs = out_device;
  int n_luts = h.n_rows;
  int n_bytes = static_cast<int>(h.n_bytes);
  int n_elements = static_cast<int>(h.n_elements);
  void* args[] = {&luts, &codes, &sm, &positions, &gaps, &outputs, &n_luts, &n_bytes, &n_elements};
  check(driver_fn<LaunchKernel>("cuLaunchKernel")(f, static_cast<unsigned>(h.n_blocks), 1, 1, 512, 1, 1, smem,
                                                  reinterpret_cast<CUstream>(stream), args, nullptr),
        "cuLaunchKernel");
}

}  // namespace df11::dec
