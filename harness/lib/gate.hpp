// The regression gate behind `df11 gate`: reads two results.jsonl files (docs/RESULTS.md),
// matches their cases, and gives each pair a noise-aware verdict.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/disposition.hpp"

namespace df11::gate {

// ---- The rule (threshold t, default 0.03) -------------------------------------------------
//
// Cases are matched by (experiment, unit, method, variant, chunk_bytes, batch). For a matched pair:
//
// 1. Dispositions first (timings exist only on `passed` rows):
//    - baseline passed, candidate anything else                      -> WORSE   (fails)
//    - baseline not passed, candidate passed                         -> BETTER
//    - neither passed: candidate `incorrect`                         -> WORSE   (fails: wrong
//      bits fail whatever the baseline said, even `incorrect` there too: a baseline promoted
//      with them must not make them pass)
//    - neither passed, otherwise                                     -> SAME    (nothing to time)
//
// 2. Both passed: with medians mb (baseline), mc (candidate), quartile intervals [q1b, q3b] and
//    [q1c, q3c], change = (mc - mb) / mb and overlap = (q1c <= q3b && q1b <= q3c):
//    - |change| <= t                      -> SAME       (even if the intervals are apart: a
//                                                        real but negligible difference)
//    - |change| >  t and not overlap      -> SLOW if change > 0 (fails), FAST if change < 0
//    - |change| >  t and overlap          -> AMBIGUOUS  (does not fail)
//    AMBIGUOUS means the medians moved by more than the threshold but the runs' middle halves
//    still overlap: the noise is too large to decide. As each median lies in its own interval,
//    this needs (q3b - q1b) + (q3c - q1c) >= |mc - mb| > t * mb: together the spreads exceed
//    the threshold. Rerun with more samples, or on a quieter machine, to get a verdict.
//
//    The spirit is nvbench's robust compare (FAST/SLOW only when the intervals are disjoint and
//    the gap exceeds a threshold), with [q1, q3] instead of [min, q3] and a default threshold
//    of 3% instead of 0.5%, since our samples are wall/event times of whole forward passes.
//
//    Timed differently (summary.cuda_graph true in one file and false in the other, e.g. a
//    capture that failed and fell back to eager launches) -> PROTOCOL (fails): the medians are
//    not comparable, and the change of protocol is itself a change to look at.
//
//    Host-bound methods (kHostBoundMethods: the offload baselines, whose time is the host's
//    PCIe link and memory) that would be SLOW are SLOW-HOST instead, which does not fail: a
//    device name does not fix the host it is lent with (two H200 runs a day apart: cpu-offload
//    +4.9% and cpu-offload-sync +9.6% and -16% with disjoint quartiles, every kernel-bound
//    case within 1%). GateOptions::gate_host_bound (--gate-host-bound) makes them SLOW again.
//
// 3. Cases in only one file: NEW (candidate only) or MISSING (baseline only). NEW does not fail,
//    except a candidate-only case that is `incorrect`: WORSE (fails; wrong bits are never new).
//    MISSING fails unless GateOptions::allow_missing (--allow-missing): a candidate that lost
//    cases (a run cut short, a key that changed, such as chunk_bytes on the sliced methods) would
//    otherwise pass having compared only what it kept, while the same cases written as not_run
//    fail as WORSE.
//
// Devices: every row of a file must name the same device (backend + name); the two files'
// devices must be equal, or the gate refuses (unless ignore_device).
//
// Exit code (GateReport::exit_code): 1 if any SLOW, WORSE or PROTOCOL, a MISSING case (unless
// allowed), or no case is in both files (nothing was compared), 2 if refused, else 0. Malformed
// input throws df11::Error naming the file and line (the CLI prints it and exits 3).

using df11::Disposition;
using df11::parse_disposition;
using df11::to_string;
enum class Verdict { same, fast, slow, ambiguous, better, worse, new_case, missing, slow_host, protocol };
inline constexpr std::size_t verdict_count = 10;

// Methods whose timings are the host's more than the device's (rule step 2).
inline constexpr std::array<std::string_view, 2> kHostBoundMethods{"cpu-offload",
                                                                   "cpu-offload-sync"};
[[nodiscard]] bool host_bound(const std::string& method);

[[nodiscard]] const char* to_string(Verdict v);  // upper case, as printed: "SLOW", "NEW", ...

struct CaseKey {
  std::string experiment;
  std::string unit;
  std::string method;
  std::optional<std::string> variant;  // null for methods without decoder variants
  std::optional<uint64_t> chunk_bytes;  // the slice size of df11-chunked / df11-pipelined; else null
  int64_t batch = 0;
  auto operator<=>(const CaseKey&) const = default;
};
// "experiment unit method[variant]@chunk_bytesB b=batch", the case column of the table.
[[nodiscard]] std::string to_string(const CaseKey& k);

// Seconds per sample (one forward pass of the unit at that batch).
struct Timing {
  double median_s = 0;
  double q1_s = 0;
  double q3_s = 0;
};

struct Device {
  std::string backend;  // "cuda" or "cpu"
  std::string name;
  auto operator<=>(const Device&) const = default;
};
[[nodiscard]] std::string to_string(const Device& d);  // "cuda: NVIDIA H100 80GB HBM3"

struct ResultRow {
  CaseKey key;
  Device device;
  Disposition disposition = Disposition::passed;
  std::string reason;
  std::optional<Timing> timing;  // present exactly when disposition is passed
  std::optional<bool> cuda_graph;  // summary.cuda_graph where the row says (cuda backend, passed)
  int line = 0;                  // 1-based line in its file, for messages
};

struct ResultFile {
  std::string path;  // as given, for messages
  Device device;     // the one device of every row
  std::vector<ResultRow> rows;
};

// Parses results.jsonl text. Blank lines are skipped; anything else must be a complete schema
// version 1 row. Throws df11::Error "PATH:LINE: ..." on malformed JSON, a wrong
// schema_version, missing or mistyped fields, implausible timings (non-positive, or not
// q1 <= median <= q3), a duplicated case, a second device, or no rows at all.
[[nodiscard]] ResultFile parse_results(std::istream& in, const std::string& path);
[[nodiscard]] ResultFile load_results(const std::string& path);

// The timing part of the rule (step 2) for two passed rows.
[[nodiscard]] Verdict compare_timings(const Timing& baseline, const Timing& candidate,
                                      double threshold);

struct Comparison {
  CaseKey key;
  std::optional<ResultRow> baseline;
  std::optional<ResultRow> candidate;
  Verdict verdict = Verdict::same;
  std::optional<double> change;  // (mc - mb) / mb when both passed
};

struct GateOptions {
  double threshold = 0.03;  // relative, 0.03 = 3%
  bool ignore_device = false;
  bool gate_host_bound = false;  // SLOW, not SLOW-HOST, for kHostBoundMethods
  bool allow_missing = false;    // MISSING cases do not fail
};

struct GateReport {
  std::string baseline_path;
  std::string candidate_path;
  Device baseline_device;
  Device candidate_device;
  GateOptions options;
  std::optional<std::string> refusal;  // why no comparison was made
  std::vector<Comparison> rows;        // sorted by key
  std::array<int, verdict_count> counts{};

  [[nodiscard]] int count(Verdict v) const { return counts[static_cast<std::size_t>(v)]; }
  // Cases in both files (whatever their verdict; a candidate-only incorrect case is WORSE but
  // not matched).
  [[nodiscard]] int matched() const {
    int n = 0;
    for (const auto& c : rows) n += c.baseline && c.candidate;
    return n;
  }
  // A SLOW, WORSE or PROTOCOL case, a MISSING one (unless allowed), or no case in both files: a
  // gate that compared nothing cannot have found a regression, so it does not pass (a renamed
  // experiment or method, a wrong file).
  [[nodiscard]] bool failed() const {
    return count(Verdict::slow) > 0 || count(Verdict::worse) > 0 || count(Verdict::protocol) > 0 ||
           (count(Verdict::missing) > 0 && !options.allow_missing) || matched() == 0;
  }
  [[nodiscard]] int exit_code() const { return refusal ? 2 : failed() ? 1 : 0; }
};

// Applies the rule to every case of both files. Throws df11::Error for a threshold outside
// [0, 1]; a device mismatch is not an error but a refusal recorded in the report.
[[nodiscard]] GateReport run_gate(const ResultFile& baseline, const ResultFile& candidate,
                                  const GateOptions& options);

// The table (case, baseline median, candidate median, change %, verdict) and the summary
// line; on refusal only the reason.
void print_report(std::ostream& out, const GateReport& report);
[[nodiscard]] std::string summary_line(const GateReport& report);

}  // namespace df11::gate
