// run_sweep: the main job. For now (issue "Foundation") it compresses a synthetic Nemo layer
// in the DF11 and our canonical layout, verifies the round trip bit for bit, prints ratio and
// speed, and writes the numbers as JSON Lines.
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codec/common.hpp"
#include "datasets/synthetic.hpp"
#include "lib/codec_report.hpp"

int main(int argc, char** argv) {
  CLI::App app{"run_sweep: compress a synthetic Mistral-Nemo layer, verify it, and time the codec"};
  int layer = 1;
  uint64_t seed = 0;
  double fraction = 1.0;
  int threads = 0;
  int repeats = 3;
  std::string out_dir;
  std::vector<std::string> layouts{"df11", "canonical"};
  app.add_option("--layer", layer, "Synthetic Nemo layer index");
  app.add_option("--seed", seed, "Generator seed");
  app.add_option("--fraction", fraction, "Fraction of each matrix's rows (0, 1]");
  app.add_option("--threads", threads, "Worker threads (0 = all cores)");
  app.add_option("--repeats", repeats, "Timed repetitions per direction (median kept)");
  app.add_option("--layouts", layouts, "Layouts to run: df11, canonical, canonical:L");
  app.add_option("--out", out_dir, "Directory for results.jsonl");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!(fraction > 0.0 && fraction <= 1.0)) throw df11::Error("--fraction must be in (0, 1]");
    const auto t0 = std::chrono::steady_clock::now();
    const df11::Unit unit = df11::synth::make_nemo_layer(layer, seed, fraction, threads);
    const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("synthetic {}: {} elements ({:.1f} MB BF16), generated in {:.2f} s\n", unit.name, unit.n_elements(),
               2.0 * static_cast<double>(unit.n_elements()) / 1e6, gen_s);
    std::ofstream jsonl;
    if (!out_dir.empty()) {
      std::filesystem::create_directories(out_dir);
      jsonl.open(std::filesystem::path(out_dir) / "results.jsonl");
      if (!jsonl) throw df11::Error(fmt::format("cannot write {}/results.jsonl", out_dir));
    }
    bool all_ok = true;
    fmt::print("{:<24} {:>8} {:>8} {:>10} {:>12} {:>12}  {}\n", "layout", "ratio", "bound", "bits/w", "encode M/s",
               "decode M/s", "roundtrip");
    for (const auto& name : layouts) {
      const df11::Layout layout = df11::parse_layout(name);
      const df11::CodecReport r = df11::run_codec_report(unit.view(), layout, threads, repeats);
      const double n = static_cast<double>(r.stats.n_elements);
      fmt::print("{:<24} {:>8.4f} {:>8.4f} {:>10.3f} {:>12.0f} {:>12.0f}  {}\n", r.layout, r.stats.ratio,
                 r.stats.bound_ratio, r.stats.bits_per_weight, n / r.encode_s / 1e6, n / r.decode_s / 1e6,
                 r.roundtrip_ok ? "bit-exact" : "MISMATCH");
      all_ok = all_ok && r.roundtrip_ok;
      if (jsonl) {
        auto j = df11::to_json(r);
        j["schema_version"] = 0;
        j["source"] = {{"synthetic", "nemo-layer"}, {"layer", layer}, {"seed", seed}, {"fraction", fraction}};
        jsonl << j.dump() << "\n";
      }
    }
    if (!out_dir.empty()) fmt::print("results: {}/results.jsonl\n", out_dir);
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "run_sweep: error: {}\n", e.what());
    return 1;
  }
}
