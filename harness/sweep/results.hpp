// The results of a sweep as JSON Lines, schema version 1 (docs/RESULTS.md): the statistics of a
// case's samples, the objects of one line, and a writer that appends whole, flushed lines.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/disposition.hpp"
#include "sweep/backend.hpp"

namespace df11::sweep {

inline constexpr int kResultsSchemaVersion = 1;

// ---- statistics: the one place where medians and quartiles are computed ----------------------

// The q-quantile (q in [0, 1]) by linear interpolation between the closest ranks (numpy's
// default, so plots and gates that recompute from samples agree). Throws df11::Error when empty.
[[nodiscard]] double quantile(std::vector<double> values, double q);
[[nodiscard]] double median(std::vector<double> values);

struct Spread {
  double min = 0, q1 = 0, median = 0, q3 = 0, max = 0;
};
[[nodiscard]] Spread spread(std::vector<double> values);
// (q3 - q1) / median: the noise measure of the adaptive stop; infinite for fewer than 2 values
// (one sample shows no noise: it never converges alone) and where the median is not positive.
// O(n): selection, not a sort.
[[nodiscard]] double relative_iqr(std::vector<double> values);

// The stop rule of a case's timed samples, the same on every backend: after each sample is
// appended to the case's samples (`after(samples)`, the latest last), why sampling stops, or nullopt to take another. "max_samples"; "max_time" (the sum of samples
// reached max_time_s: a slow case stops then, before min_samples if need be, rather than blow
// the run's budget); "converged" (min_samples and min_time_s, the sum of samples, reached and
// the relative IQR within noise_target). Results carry it as summary.stopped_by.
// The noise is measured after every sample up to 64 of them, then after every n/64th (n the
// count so far), so that a case of many samples costs O(n log n) in all, not O(n^2 log n): a
// case of 20000 samples took 13 s of host time between its samples when every sample sorted
// them all. A converged case may so take up to ~1.6% more samples than the first count at
// which it converged.
class StopRule {
 public:
  explicit StopRule(const Measurement& m) : m_(m) {}
  // samples_s: every sample so far, one more than at the last call (the rule keeps their sum).
  [[nodiscard]] std::optional<std::string> after(const std::vector<double>& samples_s);

 private:
  Measurement m_;
  double sum_ = 0;
  std::size_t next_check_ = 0;
};
// The rule over a whole list of samples at once (the last one just taken), for tests: what
// StopRule::after says for the last of them.
[[nodiscard]] std::optional<std::string> stop_reason(const Measurement& m, const std::vector<double>& samples_s);

// ---- one line ----------------------------------------------------------------------------------

struct Summary {
  int samples = 0;
  double median_s = 0, min_s = 0, q1_s = 0, q3_s = 0;
  std::optional<double> decode_s, gemm_s, copy_s;  // medians of the phases, where measured
  uint64_t bytes = 0;
  std::optional<double> gbps;  // bytes / median_s / 1e9; null when bytes is 0
  std::optional<bool> cuda_graph;  // cuda: samples replayed a CUDA graph (false: eager); cpu: null
  std::string stopped_by;          // stop_reason's, or "" where the backend gave none
  // The SM clock after the samples (MHz, NVML on cuda): lowest and median; none where not read.
  std::optional<double> sm_clock_min_mhz, sm_clock_median_mhz;
};
// Throws df11::Error when there is no sample.
[[nodiscard]] Summary summarize(const Samples& s);

struct CaseInfo {
  std::string experiment;
  std::string unit;
  std::string method;                  // bf16 | cpu-offload | ... | decode | copy
  std::optional<std::string> variant;  // the decoder variant of df11*/decode; else null
  int batch = 0;                       // 0 for decode and copy
  uint64_t seed = 0;
  std::optional<uint64_t> chunk_bytes;  // df11-chunked / df11-pipelined: the slice size run; else null
};

using df11::Disposition;
using df11::to_string;

// The current time, UTC, "2026-11-27T00:00:00Z".
[[nodiscard]] std::string utc_now_iso8601();
// `meta`: the build (git SHA and dirty flag as of the build, compiler, build type), argv, and the
// CUDA runtime and driver versions when the backend is "cuda" (null otherwise).
// Objects keep the key order of docs/RESULTS.md (ordered_json), so a line reads like the example.
using Line = nlohmann::ordered_json;
[[nodiscard]] Line meta_json(const std::vector<std::string>& argv, const std::string& backend_kind,
                             const std::string& start_time);
// Backend::device_info() in the documented key order (keys the schema does not list follow).
[[nodiscard]] Line device_json(const nlohmann::json& device);
[[nodiscard]] Line case_json(const CaseInfo& c);
[[nodiscard]] Line summary_json(const Summary& s);
// A whole line. Only passed rows carry a summary (null otherwise), per the schema.
// verified_against: what a passed row's output was found bit-identical to (docs/RESULTS.md);
// ignored (null) unless passed.
[[nodiscard]] Line result_line(const Line& meta, const Line& device, const CaseInfo& c,
                               Disposition d, const std::optional<Summary>& summary,
                               const std::string& reason,
                               const std::optional<std::string>& verified_against);

// Appends lines to a results file that it creates (refusing to replace an existing one). Each
// line goes out in one write(2) call (no user-space buffer to lose), so a run stopped at any
// point between lines leaves a valid JSONL file; a write that fails part-way (a full disk, a
// file-size limit) is cut back off before the error is thrown.
class ResultsWriter {
 public:
  explicit ResultsWriter(const std::filesystem::path& path);
  ResultsWriter(const ResultsWriter&) = delete;
  ResultsWriter& operator=(const ResultsWriter&) = delete;
  ~ResultsWriter();

  void write(const Line& line);
  [[nodiscard]] std::size_t lines_written() const { return lines_; }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::size_t lines_ = 0;
  uint64_t bytes_ = 0;  // the file's length: its whole lines
};

}  // namespace df11::sweep
