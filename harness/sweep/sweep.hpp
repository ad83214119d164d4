// The sweep driver: experiment x backend -> results.jsonl. Materializes each unit once, encodes
// it once per layout the methods need, verifies every (method, batch) bit for bit against bf16,
// times what passed, and writes one line per case as it finishes.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "codec/layout.hpp"
#include "codec/unit.hpp"
#include "decoder.hpp"
#include "sweep/backend.hpp"
#include "sweep/experiment.hpp"

namespace df11::sweep {

struct SweepOptions {
  std::filesystem::path results_path;  // created by the sweep; must not exist yet
  std::vector<std::string> argv;       // recorded in meta
  int threads = 0;                     // generation and encoding threads (0: all cores)
  bool progress = true;                // progress on stderr
};

struct SweepReport {
  std::size_t passed = 0, incorrect = 0, not_supported = 0, not_run = 0;
  std::size_t lines = 0;
  bool interrupted = false;
  std::vector<std::string> departures;  // Backend::departures() after the run
};

// The methods of the experiment on a backend, globs expanded: over the registry's variant names
// on cuda, over the one CPU decoder ("cpu") on cpu. Duplicates are dropped. Throws df11::Error
// naming the file and the key when a glob matches nothing, before anything runs.
[[nodiscard]] std::vector<MethodCase> resolve_methods(const Experiment& e,
                                                      const std::string& backend_kind,
                                                      const dec::Registry& registry);

// The distinct layouts the methods' decoders read (the CPU decoder: Layout::df11()).
[[nodiscard]] std::vector<Layout> layouts_needed(const std::vector<MethodCase>& methods);

// A unit's data, and its DF11 encoding when it came encoded from an official DF11 checkpoint (the
// sweep then runs on the file's own bytes instead of re-encoding).
struct MaterializedUnit {
  Unit unit;
  std::optional<EncodedUnit> df11;
};

// Generates (synthetic kinds, keeping ceil(rows * row_fraction) rows of each matrix) or reads
// (checkpoint: a BF16 or DF11 directory, relative paths from the experiment file's folder;
// row_fraction keeps the first rows of each 2-D tensor) a unit.
[[nodiscard]] MaterializedUnit materialize_unit(const UnitSpec& spec, const Experiment& e,
                                                double row_fraction, int threads);

// Runs the whole sweep. Errors in the experiment (bad globs, missing checkpoint directories)
// throw df11::Error before the results file is created; failures of single cases become rows.
[[nodiscard]] SweepReport run_sweep(const Experiment& e, Backend& backend,
                                    const dec::Registry& registry, const SweepOptions& options);

// Interruption (Ctrl-C, or SIGTERM as `timeout` sends it): the handler only sets a flag; the
// sweep finishes the line it is writing, records the rest as not_run and returns with
// interrupted set. A second Ctrl-C kills at once (SIGTERM stays handled: timeout sends it twice).
void install_sigint_handler();
void request_interrupt() noexcept;
[[nodiscard]] bool interrupt_requested() noexcept;
void clear_interrupt() noexcept;
// The signal that interrupted the run, for reasons ("SIGINT", "SIGTERM", "SIGHUP").
[[nodiscard]] std::string interrupt_signal_name();
// The signal that requested the interrupt (SIGINT, SIGTERM or SIGHUP), 0 when none did.
[[nodiscard]] int interrupt_signal() noexcept;

}  // namespace df11::sweep
