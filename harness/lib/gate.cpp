// The regression gate: strict parsing of results.jsonl and the verdict rule documented in
// gate.hpp (kept there so the rule and its one implementation are read together).
#include "lib/gate.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <istream>
#include <map>
#include <ostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codec/common.hpp"
#include "datasets/json_io.hpp"

namespace df11::gate {
namespace {

using nlohmann::json;

constexpr int kSchemaVersion = 1;

// Every parse error names the file and line, so a user can open the row at fault.
struct LineContext {
  const std::string& path;
  int line;
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(fmt::format("{}:{}: {}", path, line, what));
  }
};

std::string field_name(const char* parent, const char* name) {
  return *parent ? fmt::format("{}.{}", parent, name) : std::string(name);
}

const json& member(const LineContext& at, const json& obj, const char* parent, const char* name) {
  const auto it = obj.find(name);
  if (it == obj.end()) at.fail("missing field " + field_name(parent, name));
  return *it;
}

std::string string_field(const LineContext& at, const json& obj, const char* parent,
                         const char* name) {
  const json& v = member(at, obj, parent, name);
  if (!v.is_string())
    at.fail(fmt::format("field {} must be a string, got {}", field_name(parent, name), brief(v)));
  return v.get<std::string>();
}

const json& object_field(const LineContext& at, const json& obj, const char* parent,
                         const char* name) {
  const json& v = member(at, obj, parent, name);
  if (!v.is_object()) at.fail(fmt::format("field {} must be an object", field_name(parent, name)));
  return v;
}

double seconds_field(const LineContext& at, const json& summary, const char* name) {
  const json& v = member(at, summary, "summary", name);
  if (!v.is_number())
    at.fail(fmt::format("field summary.{} must be a number, got {}", name, brief(v)));
  const double s = v.get<double>();
  // A zero or negative time cannot come from a measurement, and would make ratios meaningless.
  if (!std::isfinite(s) || s <= 0.0)
    at.fail(fmt::format("field summary.{} must be > 0 seconds, got {}", name, s));
  return s;
}

ResultRow parse_row(const LineContext& at, const std::string& text) {
  json j;
  try {
    j = parse_json(text, "the line");  // nesting-limited: the messages below print values
  } catch (const Error& e) {
    at.fail(fmt::format("malformed JSON ({})", e.what()));
  }
  if (!j.is_object()) at.fail("a results line must be a JSON object");
  const json& version = member(at, j, "", "schema_version");
  if (!version.is_number_integer() || version.get<int64_t>() != kSchemaVersion) {
    at.fail(fmt::format(
        "schema_version {} is not supported (this gate reads version {}; see docs/RESULTS.md)",
        brief(version), kSchemaVersion));
  }

  ResultRow row;
  row.line = at.line;
  const json& device = object_field(at, j, "", "device");
  row.device = {string_field(at, device, "device", "backend"),
                string_field(at, device, "device", "name")};

  const json& c = object_field(at, j, "", "case");
  row.key.experiment = string_field(at, c, "case", "experiment");
  row.key.unit = string_field(at, c, "case", "unit");
  row.key.method = string_field(at, c, "case", "method");
  const json& variant = member(at, c, "case", "variant");
  if (variant.is_string()) {
    row.key.variant = variant.get<std::string>();
  } else if (!variant.is_null()) {
    at.fail(fmt::format("field case.variant must be a string or null, got {}", brief(variant)));
  }
  // case.chunk_bytes came within schema 1: a file without it has no sliced cases to tell apart.
  if (const auto it = c.find("chunk_bytes"); it != c.end() && !it->is_null()) {
    if (!it->is_number_unsigned()) {
      at.fail(fmt::format("field case.chunk_bytes must be an integer >= 0 or null, got {}", brief(*it)));
    }
    row.key.chunk_bytes = it->get<uint64_t>();
  }
  const json& batch = member(at, c, "case", "batch");
  if (!batch.is_number_integer() || batch.get<int64_t>() < 0) {
    at.fail(fmt::format("field case.batch must be an integer >= 0, got {}", brief(batch)));
  }
  row.key.batch = batch.get<int64_t>();

  const std::string disposition = string_field(at, j, "", "disposition");
  try {
    row.disposition = parse_disposition(disposition);
  } catch (const Error& e) {
    at.fail(e.what());
  }
  if (const auto it = j.find("reason"); it != j.end() && it->is_string())
    row.reason = it->get<std::string>();

  // Rows that did not pass have no timings to read (their summary is null).
  if (row.disposition == Disposition::passed) {
    const auto it = j.find("summary");
    if (it == j.end() || !it->is_object())
      at.fail("a passed row needs a summary object with median_s, q1_s and q3_s");
    const json& summary = *it;
    Timing t{seconds_field(at, summary, "median_s"), seconds_field(at, summary, "q1_s"),
             seconds_field(at, summary, "q3_s")};
    if (!(t.q1_s <= t.median_s && t.median_s <= t.q3_s)) {
      at.fail(fmt::format("summary must satisfy q1_s <= median_s <= q3_s, got {} / {} / {}", t.q1_s,
                          t.median_s, t.q3_s));
    }
    row.timing = t;
    if (const auto g = summary.find("cuda_graph"); g != summary.end() && g->is_boolean()) row.cuda_graph = g->get<bool>();
  }
  return row;
}

std::string format_seconds(double s) {
  if (s >= 1.0) return fmt::format("{:.3f} s", s);
  if (s >= 1e-3) return fmt::format("{:.3f} ms", s * 1e3);
  if (s >= 1e-6) return fmt::format("{:.3f} us", s * 1e6);
  return fmt::format("{:.1f} ns", s * 1e9);
}

std::string median_cell(const std::optional<ResultRow>& r) {
  if (!r) return "-";
  if (r->timing) return format_seconds(r->timing->median_s);
  return to_string(r->disposition);
}

}  // namespace

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::same:
      return "SAME";
    case Verdict::fast:
      return "FAST";
    case Verdict::slow:
      return "SLOW";
    case Verdict::ambiguous:
      return "AMBIGUOUS";
    case Verdict::better:
      return "BETTER";
    case Verdict::worse:
      return "WORSE";
    case Verdict::new_case:
      return "NEW";
    case Verdict::missing:
      return "MISSING";
    case Verdict::slow_host:
      return "SLOW-HOST";
    case Verdict::protocol:
      return "PROTOCOL";
  }
  return "?";
}

std::string to_string(const CaseKey& k) {
  return fmt::format("{} {} {}{}{} b={}", k.experiment, k.unit, k.method,
                     k.variant ? fmt::format("[{}]", *k.variant) : std::string(),
                     k.chunk_bytes ? fmt::format("@{}B", *k.chunk_bytes) : std::string(), k.batch);
}

std::string to_string(const Device& d) {
  return fmt::format("{}: {}", d.backend, d.name);
}

ResultFile parse_results(std::istream& in, const std::string& path) {
  ResultFile file;
  file.path = path;
  std::map<CaseKey, int> seen;  // key -> line, to name both lines of a duplicate
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (std::all_of(text.begin(), text.end(),
                    [](unsigned char ch) { return std::isspace(ch) != 0; }))
      continue;
    const LineContext at{path, line};
    ResultRow row = parse_row(at, text);
    if (file.rows.empty()) {
      file.device = row.device;
    } else if (row.device != file.device) {
      at.fail(
          fmt::format("device '{}' differs from '{}' of line {}; one file holds one device's run",
                      to_string(row.device), to_string(file.device), file.rows.front().line));
    }
    if (const auto [it, inserted] = seen.emplace(row.key, line); !inserted) {
      at.fail(fmt::format("case '{}' already appeared on line {}", to_string(row.key), it->second));
    }
    file.rows.push_back(std::move(row));
  }
  // An empty file would let every gate pass vacuously.
  if (file.rows.empty()) throw Error(fmt::format("{}: no result rows", path));
  return file;
}

ResultFile load_results(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(fmt::format("{}: cannot open for reading", path));
  return parse_results(in, path);
}

bool host_bound(const std::string& method) {
  return std::find(kHostBoundMethods.begin(), kHostBoundMethods.end(), method) !=
         kHostBoundMethods.end();
}

Verdict compare_timings(const Timing& baseline, const Timing& candidate, double threshold) {
  const double change = (candidate.median_s - baseline.median_s) / baseline.median_s;
  // "At most t": a change of exactly t in decimal (1.03 against 1.0 at t = 0.03) comes out a few
  // ulps over t in binary, so the limit takes a relative 1e-9 of slack.
  if (std::abs(change) <= threshold * (1 + 1e-9)) return Verdict::same;
  const bool overlap = candidate.q1_s <= baseline.q3_s && baseline.q1_s <= candidate.q3_s;
  if (overlap) return Verdict::ambiguous;
  return change > 0 ? Verdict::slow : Verdict::fast;
}

GateReport run_gate(const ResultFile& baseline, const ResultFile& candidate,
                    const GateOptions& options) {
  if (!(options.threshold >= 0.0 && options.threshold <= 1.0)) {
    throw Error(
        fmt::format("gate: threshold must be in [0, 1] (0.03 = 3%), got {}", options.threshold));
  }
  GateReport report;
  report.baseline_path = baseline.path;
  report.candidate_path = candidate.path;
  report.baseline_device = baseline.device;
  report.candidate_device = candidate.device;
  report.options = options;
  if (baseline.device != candidate.device && !options.ignore_device) {
    report.refusal = fmt::format(
        "refusing to compare results of different devices: baseline {} is '{}', candidate {} is "
        "'{}' "
        "(pass --ignore-device to compare anyway)",
        baseline.path, to_string(baseline.device), candidate.path, to_string(candidate.device));
    return report;
  }

  std::map<CaseKey, Comparison> cases;
  for (const ResultRow& r : baseline.rows) cases[r.key].baseline = r;
  for (const ResultRow& r : candidate.rows) cases[r.key].candidate = r;
  for (auto& [key, c] : cases) {
    c.key = key;
    if (!c.candidate) {
      c.verdict = Verdict::missing;
    } else if (!c.baseline) {
      // A new case is no failure, unless it produces wrong bits: lossless is not a speed question.
      c.verdict = c.candidate->disposition == Disposition::incorrect ? Verdict::worse : Verdict::new_case;
    } else {
      const Disposition b = c.baseline->disposition;
      const Disposition d = c.candidate->disposition;
      if (b == Disposition::passed && d == Disposition::passed) {
        c.change = (c.candidate->timing->median_s - c.baseline->timing->median_s) /
                   c.baseline->timing->median_s;
        const auto& gb = c.baseline->cuda_graph;
        const auto& gc = c.candidate->cuda_graph;
        if (gb && gc && *gb != *gc) {
          c.verdict = Verdict::protocol;  // graph replays against eager launches: not comparable
        } else {
          c.verdict = compare_timings(*c.baseline->timing, *c.candidate->timing, options.threshold);
          if (c.verdict == Verdict::slow && !options.gate_host_bound && host_bound(key.method))
            c.verdict = Verdict::slow_host;
        }
      } else if (b == Disposition::passed) {
        c.verdict = Verdict::worse;
      } else if (d == Disposition::passed) {
        c.verdict = Verdict::better;
      } else {
        c.verdict = d == Disposition::incorrect ? Verdict::worse : Verdict::same;
      }
    }
    ++report.counts[static_cast<std::size_t>(c.verdict)];
    report.rows.push_back(std::move(c));
  }
  return report;
}

std::string summary_line(const GateReport& report) {
  if (report.refusal) return "gate: REFUSED";
  std::string counts;
  for (std::size_t v = 0; v < verdict_count; ++v) {
    if (report.counts[v] == 0) continue;
    counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", report.counts[v],
                          to_string(static_cast<Verdict>(v)));
  }
  return fmt::format("gate: {} ({} cases, {} matched: {}; threshold {:.1f}%)",
                     report.failed() ? "FAIL" : "PASS", report.rows.size(), report.matched(), counts,
                     report.options.threshold * 100.0);
}

void print_report(std::ostream& out, const GateReport& report) {
  if (report.refusal) {
    out << "gate: " << *report.refusal << "\n" << summary_line(report) << "\n";
    return;
  }
  out << fmt::format("baseline:  {} ({})\ncandidate: {} ({})\n", report.baseline_path,
                     to_string(report.baseline_device), report.candidate_path,
                     to_string(report.candidate_device));
  if (report.baseline_device != report.candidate_device) {
    out << "warning: devices differ (--ignore-device): timings are not comparable as regressions\n";
  }
  std::vector<std::array<std::string, 5>> table;
  table.push_back({"case", "baseline", "candidate", "change", "verdict"});
  for (const Comparison& c : report.rows) {
    std::string verdict = to_string(c.verdict);
    // A failing disposition change says which way it went; a reason helps without the JSON.
    if ((c.verdict == Verdict::worse || c.verdict == Verdict::better) && c.candidate) {
      verdict += fmt::format(" ({} -> {})", c.baseline ? to_string(c.baseline->disposition) : "new",
                             to_string(c.candidate->disposition));
      if (!c.candidate->reason.empty()) verdict += ": " + c.candidate->reason;
    }
    if (c.verdict == Verdict::protocol) {  // (both rows passed and both say cuda_graph)
      verdict += fmt::format(" (cuda_graph {} -> {}: times not comparable)", *c.baseline->cuda_graph,
                             *c.candidate->cuda_graph);
    }
    table.push_back({to_string(c.key), median_cell(c.baseline), median_cell(c.candidate),
                     c.change ? fmt::format("{:+.1f}%", *c.change * 100.0) : "-", verdict});
  }
  std::array<std::size_t, 5> width{};
  for (const auto& row : table) {
    for (std::size_t i = 0; i < 4; ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : table) {
    out << fmt::format("{:<{}}  {:>{}}  {:>{}}  {:>{}}  {}\n", row[0], width[0], row[1], width[1],
                       row[2], width[2], row[3], width[3], row[4]);
  }
  if (report.matched() == 0)
    out << "FAIL: no case of the candidate matches the baseline; nothing was compared\n";
  if (const int missing = report.count(Verdict::missing); missing > 0) {
    out << (report.options.allow_missing
                ? fmt::format("note: {} case(s) of the baseline are missing from the candidate (--allow-missing)\n",
                              missing)
                : fmt::format("FAIL: {} case(s) of the baseline are missing from the candidate (a run cut short, or "
                              "keys that changed: promote a new baseline, or pass --allow-missing)\n",
                              missing));
  }
  out << summary_line(report) << "\n";
}

}  // namespace df11::gate
