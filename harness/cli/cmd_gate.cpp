// `df11 gate BASELINE CANDIDATE`: the regression verdict CI runs on kernel changes; the rule
// lives in harness/lib/gate.hpp.
#include <iostream>
#include <memory>

#include "cli/commands.hpp"
#include "lib/gate.hpp"

namespace df11::cli {
namespace {

struct GateArgs {
  std::string baseline;
  std::string candidate;
  gate::GateOptions options;
};

// Exit 3: a file could not be read or an option is bad, so that a CI log tells a broken input
// from a regression (1).
constexpr int kBadInput = 3;

int run_gate_command(const GateArgs& a) {
  gate::GateReport report;
  try {
    const gate::ResultFile baseline = gate::load_results(a.baseline);
    const gate::ResultFile candidate = gate::load_results(a.candidate);
    report = gate::run_gate(baseline, candidate, a.options);
  } catch (const Error& e) {
    std::cerr << "df11: error: " << e.what() << "\n";
    return kBadInput;
  }
  // A refusal goes to stderr with the summary, so a CI log shows why nothing was compared.
  gate::print_report(report.refusal ? std::cerr : std::cout, report);
  return report.exit_code();
}

}  // namespace

void add_gate(CLI::App& app) {
  auto args = std::make_shared<GateArgs>();
  auto* g = app.add_subcommand("gate",
                               "Compare a candidate results.jsonl with a baseline: "
                               "SAME/FAST/SLOW/AMBIGUOUS per case (noise-aware; SLOW-HOST for the "
                               "host-bound offload methods, which does not fail), "
                               "BETTER/WORSE on disposition changes (an incorrect case is always WORSE), PROTOCOL when one "
                               "file replayed graphs and the other did not, NEW/MISSING. Exit 1 on SLOW, WORSE, PROTOCOL, "
                               "MISSING (unless --allow-missing) or when no case is in both files, 2 when the devices "
                               "differ, 3 when a file cannot be read or an option is bad");
  g->add_option("BASELINE", args->baseline,
                "Baseline results.jsonl (e.g. reports/baselines/<device>.jsonl)")
      ->required();
  g->add_option("CANDIDATE", args->candidate, "Candidate results.jsonl")->required();
  g->add_option("--threshold", args->options.threshold,
                "Relative change of the median that counts, in [0, 1] (default 0.03 = 3%)");
  g->add_flag("--ignore-device", args->options.ignore_device,
              "Compare even when the two files come from different devices");
  g->add_flag("--allow-missing", args->options.allow_missing,
              "Cases of the baseline missing from the candidate do not fail (a deliberate subset)");
  g->add_flag("--gate-host-bound", args->options.gate_host_bound,
              "A slower cpu-offload or cpu-offload-sync case is SLOW (fails), not SLOW-HOST: "
              "for two runs on one machine, whose host did not change");
  g->callback([args] { exit_code() = run_gate_command(*args); });
}

}  // namespace df11::cli
