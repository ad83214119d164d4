// A sweep backend runs the methods of one unit at one batch size on one kind of hardware: the
// CPU (Eigen GEMMs, the CPU decoder) or CUDA (cuBLASLt, the GPU decoder variants, offload). The
// sweep (sweep.cpp) verifies each method against bf16 and times it through this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/common.hpp"
#include "codec/layout.hpp"
#include "codec/unit.hpp"
#include "decoder.hpp"
#include "lib/kernel_trace.hpp"
#include "sweep/experiment.hpp"

namespace df11::sweep {

// A method resolved for a run: kind plus, for df11 kinds, the decoder: a GPU variant from the
// registry, or on the cpu backend the CPU decoder (variant_name "cpu", variant null).
struct MethodCase {
  std::string kind;  // bf16 | cpu-offload | cpu-offload-sync | copy | df11 | df11-rev | df11-overlap | df11-chunked |
                    // df11-pipelined | df11-fused | df11-fused-mma | decode
  const dec::Decoder* variant = nullptr;
  std::string variant_name;  // empty for kinds without a decoder
  // df11-chunked / df11-pipelined: one of the experiment's chunk_bytes (0: the backend's default
  // slice); 0 for other kinds. A nonzero size is part of the label.
  uint64_t chunk_bytes = 0;
  [[nodiscard]] std::string label() const {
    const std::string base = variant_name.empty() ? kind : kind + ":" + variant_name;
    return chunk_bytes ? base + "@" + std::to_string(chunk_bytes) + "B" : base;
  }
  [[nodiscard]] bool sliced() const { return kind == "df11-chunked" || kind == "df11-pipelined"; }
  // The fused decode + GEMM kernels: df11-fused (FMAs, batches up to 16) and df11-fused-mma (the
  // tensor cores over fix64's units, batches up to 64).
  [[nodiscard]] bool fused() const { return kind == "df11-fused" || kind == "df11-fused-mma"; }
  // Runs a decoder of its own (whole units or slices), apart from any GEMM: not the fused
  // methods, whose decode is inside their kernels.
  [[nodiscard]] bool decodes() const {
    return kind == "df11" || kind == "df11-rev" || kind == "df11-overlap" || sliced() || kind == "decode";
  }
  [[nodiscard]] bool needs_gemm() const { return kind != "copy" && kind != "decode"; }
  // The encoded layout the method reads: its decoder's (df11-fused:<variant>: that variant's,
  // which picks the fused decode); DF11 for the CPU decoder and for df11-fused and
  // df11-fused-mma; none for methods on BF16 weights.
  [[nodiscard]] std::optional<Layout> layout() const {
    if (variant) return variant->layout();
    if (!variant_name.empty() || fused()) return Layout::df11();
    return std::nullopt;
  }
};

// Thrown by Backend::time when an output it checks while timing (a CUDA graph's replay against
// the verified eager run) differs: the sweep writes the case as incorrect, not as not run.
class OutputMismatch : public df11::Error {
 public:
  using df11::Error::Error;
};

// What a traced run of the method lacks for its split into decode, GEMM and copy time: "" when
// the trace holds every kind of work the method does (decoders for the df11 kinds and decode,
// GEMMs or fused kernels for every method with GEMMs, copies for copy and the offload methods),
// else what is missing. A trace without them (a kernel named outside classify_kernel's rules, a
// tracer that dropped records) would report zero seconds as measured; the CUDA backend leaves
// such a run out of the split instead.
[[nodiscard]] std::string trace_shortfall(const MethodCase& m, const trace::Summary& k);

// A batch-0 method's output compared with the unit's weights where both are
// (Backend::run_and_compare_with_weights).
struct WeightsComparison {
  uint64_t elements = 0;       // elements compared: the unit's, when the comparison covered it
  uint64_t differ = 0;         // how many differ
  uint64_t first = 0;          // the first that differs (differ > 0)
  uint16_t got = 0, want = 0;  // the output's and the weights' bits there (differ > 0)
};

// One timed sample set of a case.
struct Samples {
  std::vector<double> total_s;               // one per sample (event pair / wall clock)
  std::vector<double> decode_s, gemm_s, copy_s;  // per-sample kernel time where measured
  uint64_t bytes = 0;                        // bytes the case must move (see docs/RESULTS.md)
  std::optional<bool> cuda_graph;            // cuda: samples replayed a CUDA graph (else eager); cpu: none
  std::string stopped_by;                    // why the samples stopped (stop_reason)
  std::vector<double> sm_clock_mhz;          // cuda: the SM clock after each sample (NVML), where read
};

class Backend {
 public:
  virtual ~Backend() = default;
  [[nodiscard]] virtual std::string kind() const = 0;  // "cpu" | "cuda"
  // The `device` object of the results (docs/RESULTS.md).
  [[nodiscard]] virtual nlohmann::json device_info() const = 0;
  // Takes a unit (host BF16 data + its encodings, one per distinct layout the methods need) and
  // draws the activations of every matrix for every batch from `seed` (the same for all methods).
  virtual void load_unit(const Unit& unit, const std::vector<EncodedUnit>& encodings, uint64_t seed) = 0;
  // The slice size (bytes of BF16) a df11-chunked / df11-pipelined case runs with here (its
  // chunk_bytes, 0 resolved from the device); none for other methods or where none runs.
  [[nodiscard]] virtual std::optional<uint64_t> slice_bytes(const MethodCase&) const { return std::nullopt; }
  // Whether the method can run here (e.g. offload on the CPU: no); reason when not.
  [[nodiscard]] virtual dec::Status supports(const MethodCase& m) const = 0;
  // Whether the method runs at this batch size (e.g. df11-fused: batches up to 16, df11-fused-mma 64).
  [[nodiscard]] virtual dec::Status supports_batch(const MethodCase& m, int batch) const {
    (void)m;
    (void)batch;
    return dec::Status::yes();
  }
  // Runs the method once at this batch and returns its outputs (all matrices' Y, concatenated,
  // as BF16 bit patterns) for verification against bf16. Batch 0: decode/copy output instead.
  [[nodiscard]] virtual std::vector<uint16_t> run_for_output(const MethodCase& m, int batch) = 0;
  // Batch-0 methods (decode, copy) where the unit's BF16 weights are resident next to the output:
  // runs the method once and compares its whole output with the weights there, bit for bit,
  // reading back only the result (a Nemo layer's decode is 545 MB; on an H200 a decoder-alone
  // case took ~2.5 s where a batch-1 df11 case, which reads back kilobytes, took <0.1 s).
  // nullopt: no such comparison here, and the sweep reads the output back with run_for_output.
  [[nodiscard]] virtual std::optional<WeightsComparison> run_and_compare_with_weights(const MethodCase& m) {
    (void)m;
    return std::nullopt;
  }
  // When the method's GEMMs are not bf16's (df11-chunked and df11-pipelined multiply row slices, and a GEMM
  // library may pick other kernels, and so round differently, for a slice than for the whole
  // matrix): the output of those same GEMMs on the resident BF16 weights, so that the sweep can
  // tell a decode error from a GEMM that rounds differently. nullopt when the method runs
  // bf16's GEMMs.
  [[nodiscard]] virtual std::optional<std::vector<uint16_t>> same_gemm_reference(const MethodCase& m, int batch) {
    (void)m;
    (void)batch;
    return std::nullopt;
  }
  // Warm-up + adaptive sampling under the measurement settings (L2 policy, limits).
  [[nodiscard]] virtual Samples time(const MethodCase& m, int batch, const Measurement& meas) = 0;
  virtual void unload_unit() = 0;
  // After the run: where the device did not do what the results' device object says it would
  // (written before the first case), one line each, e.g. a persisting L2 window refused at run
  // time while device.slice_l2 says persisting. The sweep's report carries them; run_sweep prints
  // them as warnings in its last lines.
  [[nodiscard]] virtual std::vector<std::string> departures() const { return {}; }
};

[[nodiscard]] std::unique_ptr<Backend> make_cpu_backend(int n_threads);
// CUDA builds with a device only; otherwise throws df11::Error saying why.
[[nodiscard]] std::unique_ptr<Backend> make_cuda_backend(const Experiment& e);
[[nodiscard]] bool cuda_backend_available();

}  // namespace df11::sweep
