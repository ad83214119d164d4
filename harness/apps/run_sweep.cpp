// run_sweep: runs one experiment (experiments/*.toml) on the cuda or cpu backend into a run
// directory: results.jsonl (docs/RESULTS.md) and a copy of the experiment file.
#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "codec/common.hpp"
#include "datasets/json_io.hpp"
#include "decoder.hpp"
#include "official_ptx/official_ptx.hpp"
#include "sweep/backend.hpp"
#include "sweep/experiment.hpp"
#include "sweep/sweep.hpp"

namespace fs = std::filesystem;

namespace {

std::string utc_compact_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "run_sweep: verify and time the methods of an experiment (experiments/*.toml) over its units "
      "and "
      "batch sizes; writes RUN_DIR/results.jsonl"};
  std::string experiment_path;
  std::string out_dir;
  std::string backend_name;
  bool quick = false;
  std::string official_ptx;
  int threads = 0;
  app.add_option("experiment", experiment_path, "Experiment file (TOML, schema version 1)")
      ->required();
  app.add_option(
      "--out", out_dir,
      "Run directory (default: reports/runs-local/<UTC time>_<backend>_<experiment name>)");
  app.add_option("--backend", backend_name,
                 "auto (cuda when available, else cpu), cpu or cuda (default: the "
                 "experiment's `backend`, else auto)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_flag("--quick", quick,
               "First, middle and last batch, 3-5 samples, at most 0.5 s per case, "
               "a quarter of the rows on cpu");
  app.add_option("--official-ptx", official_ptx,
                 "decode.ptx of the dfloat11 wheel, for the official-ptx variant");
  app.add_option("--threads", threads,
                 "CPU threads for generation, encoding and the cpu backend (0: all cores)")
      ->check(CLI::Range(0, df11::kMaxThreads).description(fmt::format("INT in [0 - {}]", df11::kMaxThreads)));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    df11::sweep::Experiment e = df11::sweep::parse_experiment_file(experiment_path);
    if (quick) df11::sweep::make_quick(e);
    if (!official_ptx.empty()) {
      if (!fs::is_regular_file(official_ptx))
        throw df11::Error(fmt::format("--official-ptx {}: no such file", official_ptx));
      df11::dec::OfficialPtxDecoder::set_ptx_path(official_ptx);
    }

    const std::string wanted = backend_name.empty() ? e.backend : backend_name;
    std::string kind = wanted;
    if (wanted == "auto") kind = df11::sweep::cuda_backend_available() ? "cuda" : "cpu";
    std::unique_ptr<df11::sweep::Backend> backend =
        kind == "cuda" ? df11::sweep::make_cuda_backend(e) : df11::sweep::make_cpu_backend(threads);

    df11::dec::Registry registry;
    df11::dec::register_all(registry);
    // Bad method globs are reported before a run directory appears.
    (void)df11::sweep::resolve_methods(e, kind, registry);

    const fs::path run_dir = out_dir.empty()
                                 ? fs::path("reports/runs-local") /
                                       fmt::format("{}_{}_{}", utc_compact_now(), kind, e.name)
                                 : fs::path(out_dir);
    if (fs::exists(run_dir / "results.jsonl")) {
      throw df11::Error(fmt::format("{}: already exists; choose another --out",
                                    (run_dir / "results.jsonl").string()));
    }
    std::error_code ec;
    if (fs::exists(run_dir, ec) && !fs::is_directory(run_dir, ec)) {
      throw df11::Error(fmt::format("{}: exists and is not a directory; choose another --out", run_dir.string()));
    }
    const bool made_dir = !fs::exists(run_dir);
    fs::create_directories(run_dir, ec);
    if (ec) throw df11::Error(fmt::format("{}: cannot create the run directory: {}", run_dir.string(), ec.message()));
    // The copy is always this run's experiment, and goes again if the run fails before
    // results.jsonl exists. A file of that name with other contents is not replaced: it may be
    // the user's. One with the same contents is left as it is and never removed: it may be the
    // experiment itself (--out its own directory) or a copy the user keeps.
    const fs::path copy = run_dir / fs::path(experiment_path).filename();
    bool copy_was_there = false;
    if (fs::exists(copy, ec)) {
      if (!fs::is_regular_file(copy, ec) || df11::read_regular_file(copy) != e.source_text) {
        throw df11::Error(fmt::format("{}: exists and is not this experiment; the run directory's copy would replace "
                                      "it: choose another --out",
                                      copy.string()));
      }
      copy_was_there = true;
    }
    if (!copy_was_there) {
      const fs::path tmp = run_dir / (copy.filename().string() + ".tmp");
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << e.source_text;
      out.close();
      if (!out) throw df11::Error(fmt::format("{}: cannot write the experiment's copy", tmp.string()));
      fs::rename(tmp, copy);
    }
    struct Unstarted {  // removes the copy it wrote (and a directory made for it) if no results file appeared
      fs::path copy, dir, results;
      bool made_dir, wrote_copy;
      ~Unstarted() {
        std::error_code ec;
        if (fs::exists(results, ec)) return;
        if (wrote_copy) fs::remove(copy, ec);
        if (made_dir) fs::remove(dir, ec);  // only if empty
      }
    } unstarted{copy, run_dir, run_dir / "results.jsonl", made_dir, !copy_was_there};

    df11::sweep::SweepOptions options;
    options.results_path = run_dir / "results.jsonl";
    options.argv.assign(argv, argv + argc);
    options.threads = threads;
    options.progress = true;
    fmt::print("run_sweep: {} on the {} backend ({}{}) -> {}\n", e.name, kind,
               backend->device_info().value("name", "?"), quick ? ", quick" : "", run_dir.string());
    std::fflush(stdout);

    df11::sweep::install_sigint_handler();
    const df11::sweep::SweepReport r = df11::sweep::run_sweep(e, *backend, registry, options);
    fmt::print("{} cases: {} passed, {} incorrect, {} not supported, {} not run\n", r.lines,
               r.passed, r.incorrect, r.not_supported, r.not_run);
    if (const uint64_t refused = df11::dec::early_launches_refused(); refused > 0) {
      fmt::print("warning: {} early slice-decode launch{} refused and ran serially, although device.slice_start "
                 "says early (see stderr)\n",
                 refused, refused == 1 ? " was" : "es were");
    }
    for (const std::string& d : r.departures) fmt::print("warning: {}\n", d);
    fmt::print("results: {}\n", options.results_path.string());
    fmt::print("run directory: {}\n", run_dir.string());
    if (r.interrupted) {
      // 128 + the signal, as a shell reports a process the signal ended (130 for Ctrl-C, 143 for
      // SIGTERM, 129 for SIGHUP).
      const int sig = df11::sweep::interrupt_signal();
      fmt::print(stderr, "run_sweep: interrupted ({}); {} holds the {} lines written (valid JSONL)\n",
                 df11::sweep::interrupt_signal_name(), options.results_path.string(), r.lines);
      return 128 + (sig != 0 ? sig : SIGINT);
    }
    return r.incorrect ? 1 : 0;
  } catch (const std::exception& err) {
    fmt::print(stderr, "run_sweep: error: {}\n", err.what());
    return 1;
  }
}
