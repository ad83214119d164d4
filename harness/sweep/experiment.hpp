// An experiment (experiments/*.toml, schema version 1): what to sweep. Parsed strictly: an
// unknown key, a wrong type or an impossible value is a df11::Error naming the file and key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace df11::sweep {

// One unit to run: a synthetic Nemo layer, a synthetic lm_head, a custom list of matrices, or a
// unit of a checkpoint directory.
struct UnitSpec {
  enum class Kind { nemo_layer, nemo_lm_head, custom, checkpoint } kind = Kind::nemo_layer;
  int layer = 1;                 // nemo_layer
  std::string name;              // custom: unit name; checkpoint: unit name in the checkpoint
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> matrices;  // custom: name, [out, in]
  std::string path;              // checkpoint directory (HF BF16 or DF11)
};

// The name a unit will have in the results (case.unit), without generating or reading it.
[[nodiscard]] std::string unit_name(const UnitSpec& spec);

struct Measurement {
  int warmup = 3;               // untimed runs before the samples
  int min_samples = 10;
  int max_samples = 200;
  double min_time_s = 0.2;      // keep sampling at least this long (sum of samples)
  double max_time_s = 5.0;      // and at most this long (sum of samples; wins over min_samples)
  double noise_target = 0.01;   // stop early once (q3 - q1) / median <= this (after min_*)
  std::string l2_policy = "flush";  // flush (memset a buffer larger than the caches) | none
};

// Settings that replace the common ones on one backend (the CPU cannot run a 4096-token GEMM
// of a full layer in reasonable time, so experiments say what it runs instead).
struct BackendOverride {
  std::optional<std::vector<int>> batches;
  std::optional<double> row_fraction;  // keep this fraction of each matrix's rows (0, 1]
  std::optional<std::vector<std::string>> methods;
  std::optional<Measurement> measurement;
};

struct Experiment {
  int schema_version = 1;
  std::string name;
  std::string description;
  uint64_t seed = 0;
  std::vector<UnitSpec> units;
  // Methods: "bf16", "cpu-offload", "cpu-offload-sync", "copy", "df11:<glob>", "df11-rev:<glob>",
  // "df11-overlap:<glob>", "df11-chunked:<glob>", "df11-pipelined:<glob>", "df11-fused[:<glob>]",
  // "decode:<glob>" (globs over decoder variant names).
  std::vector<std::string> methods;
  std::vector<int> batches;
  double row_fraction = 1.0;
  Measurement measurement;
  std::string backend = "auto";    // auto | cpu | cuda
  // df11-chunked / df11-pipelined slice sizes (bytes of BF16), each method run at every one;
  // 0: half the L2 (slice_l2 persisting: at most the set-aside). TOML: an integer or an array.
  std::vector<uint64_t> chunk_bytes{0};
  // df11-chunked / df11-pipelined: "persisting" holds the slice buffer in the persisting L2
  // (an access-policy window, where the device has one), "normal" leaves it to the cache.
  std::string slice_l2 = "persisting";
  // df11-chunked: "early" lets each slice's decode after the first start before the previous
  // slice's GEMMs end (dec::Start::early: programmatic dependent launch on sm_90+; it stores
  // nothing before they are done), "serial" after them.
  std::string slice_start = "early";
  BackendOverride cpu, cuda;
  std::string source_text;         // the file as read (copied into the run directory)
  std::string path;

  // The settings in force on a backend ("cpu" or "cuda").
  [[nodiscard]] std::vector<int> batches_for(const std::string& backend) const;
  [[nodiscard]] double row_fraction_for(const std::string& backend) const;
  [[nodiscard]] std::vector<std::string> methods_for(const std::string& backend) const;
  [[nodiscard]] Measurement measurement_for(const std::string& backend) const;
};

[[nodiscard]] Experiment parse_experiment_file(const std::string& path);
[[nodiscard]] Experiment parse_experiment_text(const std::string& text, const std::string& origin);

// --quick: fewer batches (first, middle, last), fewer samples, a smaller slice of the units.
void make_quick(Experiment& e);

}  // namespace df11::sweep
