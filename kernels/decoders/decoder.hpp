// The decoder interface (modelled on CUTLASS's Operation): every GPU decoder variant is a
// Decoder with a procedural name, its design traits, the encoded Layout it consumes, a host
// emulation that CI runs, and on CUDA builds an upload + launch. Variants come from one
// explicit register_all(Registry&).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "codec/layout.hpp"

struct CUstream_st;  // cudaStream_t without including the CUDA runtime in host-only code

namespace df11::dec {

using Stream = CUstream_st*;

// The axes of the design space a variant sits on (what `df11 variants` prints).
struct Traits {
  std::string table;        // lut8x4 (global, read-only cache), lut8x4-smem, flat<k>, canon
  std::string partition;    // gap-block (two-pass, block scan), gap-warp (warp-shuffle scan), thread-pos
  std::string staging;      // smem-out, direct, keep (symbols kept from pass 1), cp.async input
  std::string granularity;  // unit (one launch per unit) or matrix (one launch per matrix)
  int threads_per_block = 0;
  int bytes_per_thread = 0;
};

// The order in which a launch decodes its units (DF11 blocks, warp units), and so writes its
// output: ascending, or descending, the units nearest lo last, so that a reader that starts at
// lo right after the decode (the first GEMM of a layer) finds them still in L2. The output is
// the same bits either way. Decoders that cannot choose (honors_order() false) decode in their
// own order.
enum class Order : uint8_t { ascending, descending };

// When a launch may start on its stream: after the kernel before it has finished (serial), or as
// soon as that kernel's blocks have all finished or let it (early: programmatic dependent launch
// on sm_90 and later, where it saves the gap between the two kernels: the launch, the previous
// kernel's memory flush, the new blocks' table loads). An early decode reads nothing the previous
// kernel writes (its image is constant) and waits for that kernel's completion and memory before
// its first global store, so it may follow a kernel that reads its output buffer (a chunked
// slice's GEMM). Decoders that cannot (honors_start() false) and devices before sm_90 start
// serially; the output is the same bits either way.
enum class Start : uint8_t { serial, early };

struct Status {
  bool ok = true;
  std::string reason;  // why not, when !ok
  static Status yes() { return {}; }
  static Status no(std::string why) { return {false, std::move(why)}; }
};

// What upload() leaves on the device for launch(): opaque outside the CUDA code.
class DeviceImage {
 public:
  virtual ~DeviceImage() = default;
  [[nodiscard]] virtual uint64_t device_bytes() const = 0;  // encoded + tables, as stored on the GPU
  [[nodiscard]] virtual uint64_t n_elements() const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  [[nodiscard]] virtual Traits traits() const = 0;
  [[nodiscard]] virtual Layout layout() const = 0;
  // Whether this variant can decode `unit` (layout match, sizes within its limits).
  [[nodiscard]] virtual Status can_implement(const EncodedUnit& unit) const;
  // Host emulation: runs the variant's per-thread logic block by block, thread by thread.
  // Decodes the elements [lo, hi) of the unit into out (hi - lo elements); the whole unit by
  // default. Validates the unit first (df11::Error on bad metadata).
  virtual void decode_host(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi) const = 0;
  void decode_host(const EncodedUnit& unit, std::span<uint16_t> out) const {
    decode_host(unit, out, 0, unit.n_elements);
  }
  // The kernel's own block body run on the host SIMT executor (kernels/simt): a host thread per
  // CUDA thread, real barriers and warp shuffles, shared memory poisoned per block. Exact but
  // slow (meant for units of a few blocks). Same contract as decode_host; a decoder without a
  // host-compilable body (official-ptx) throws df11::Error.
  virtual void decode_simt(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi,
                           Order order = Order::ascending) const;
  // Whether launch and decode_simt decode in the Order asked for.
  [[nodiscard]] virtual bool honors_order() const { return false; }
  // Whether launch can start early (Start::early) where the device allows it.
  [[nodiscard]] virtual bool honors_start() const { return false; }

  // CUDA builds with a device only; elsewhere these throw df11::Error ("built without CUDA").
  // upload validates the metadata and refuses a malformed unit before anything is launched.
  [[nodiscard]] virtual std::unique_ptr<DeviceImage> upload(const EncodedUnit& unit, Stream stream) const;
  // Decodes elements [lo, hi) into out_device (hi - lo BF16 words on the device).
  virtual void launch(const DeviceImage& image, uint16_t* out_device, uint64_t lo, uint64_t hi, Stream stream,
                      Order order = Order::ascending, Start start = Start::serial) const;
  // Bytes of device scratch a launch needs beyond the image (0 for all current variants).
  [[nodiscard]] virtual uint64_t workspace_bytes(const EncodedUnit& unit) const;
};

class Registry {
 public:
  void add(std::unique_ptr<Decoder> d);  // names must be unique
  [[nodiscard]] const std::vector<std::unique_ptr<Decoder>>& all() const { return decoders_; }
  [[nodiscard]] const Decoder* find(const std::string& name) const;
  // Variants whose name matches the glob (`*` any run, `?` one character).
  [[nodiscard]] std::vector<const Decoder*> select(const std::string& glob) const;
  // The distinct layouts the registered variants consume (encode each unit once per layout).
  [[nodiscard]] std::vector<Layout> layouts() const;

 private:
  std::vector<std::unique_ptr<Decoder>> decoders_;
};

// Lists every variant; the one place where variants are named.
void register_all(Registry& registry);
// A process-wide registry holding every variant (built on first use, never modified).
[[nodiscard]] const Registry& all_decoders();

[[nodiscard]] bool glob_match(const std::string& pattern, const std::string& text);

// True when this binary was built with the CUDA decoders.
[[nodiscard]] bool built_with_cuda();
// Whether the current CUDA device starts Start::early launches early (sm_90 and later); false in
// builds without CUDA.
[[nodiscard]] bool device_starts_early();
// How many Start::early launches this process has had refused (each then ran serially, and that
// kernel's later launches on that thread too): a report that says "early" is wrong when this grew
// during its run. 0 in builds without CUDA.
[[nodiscard]] uint64_t early_launches_refused();

}  // namespace df11::dec
