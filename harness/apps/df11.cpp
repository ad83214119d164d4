// `df11`: the user tool. Subcommands: stats (size accounting and round-trip check of a unit).
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codec/common.hpp"
#include "datasets/synthetic.hpp"
#include "lib/codec_report.hpp"

namespace {

struct StatsArgs {
  std::string synthetic;
  int layer = 0;
  uint64_t seed = 0;
  double fraction = 1.0;
  std::string layout = "df11";
  int threads = 0;
  bool json = false;
};

df11::Unit synthetic_unit(const StatsArgs& a) {
  namespace sy = df11::synth;
  if (a.synthetic == "nemo-layer") return sy::make_nemo_layer(a.layer, a.seed, a.fraction, a.threads);
  const auto shape = sy::nemo_shape();
  const auto rows = static_cast<int64_t>(std::ceil(static_cast<double>(shape.vocab) * a.fraction));
  if (a.synthetic == "nemo-lm-head") {
    return sy::make_matrix_unit("lm_head", "lm_head", "lm_head", rows, shape.hidden, a.seed, a.threads);
  }
  if (a.synthetic == "nemo-embed") {
    return sy::make_matrix_unit("model.embed_tokens", "model.embed_tokens", "embed_tokens", rows, shape.hidden,
                                a.seed, a.threads);
  }
  throw df11::Error(fmt::format("unknown --synthetic '{}' (nemo-layer, nemo-lm-head, nemo-embed)", a.synthetic));
}

int run_stats(const StatsArgs& a) {
  if (a.synthetic.empty()) throw df11::Error("stats: give --synthetic NAME");
  if (!(a.fraction > 0.0 && a.fraction <= 1.0)) throw df11::Error("stats: --fraction must be in (0, 1]");
  const df11::Layout layout = df11::parse_layout(a.layout);
  const df11::Unit unit = synthetic_unit(a);
  const df11::CodecReport r = df11::run_codec_report(unit.view(), layout, a.threads, 1);
  auto j = df11::to_json(r);
  j["source"] = {{"synthetic", a.synthetic}, {"layer", a.layer}, {"seed", a.seed}, {"fraction", a.fraction}};
  if (a.json) {
    std::cout << j.dump() << "\n";
  } else {
    const auto& s = r.stats;
    fmt::print("unit {} ({} elements), layout {}\n", r.unit, s.n_elements, r.layout);
    fmt::print("  ratio            {:.4f}  (entropy bound {:.4f})\n", s.ratio, s.bound_ratio);
    fmt::print("  bits per weight  {:.4f}  = exponent stream {:.4f} + sign/mantissa 8 + gaps {:.4f}"
               " + positions {:.4f} + tables {:.6f}\n",
               s.bits_per_weight, s.exponent_bits_per_weight, s.gaps_bits_per_weight, s.positions_bits_per_weight,
               s.tables_bits_per_weight);
    fmt::print("  exponent entropy {:.4f} bits, {} symbols, code lengths {}..{}\n", s.exponent_entropy_bits,
               s.n_symbols, s.min_code_length, s.max_code_length);
    fmt::print("  encode {:.3f} s ({:.0f} M weights/s), decode {:.3f} s ({:.0f} M weights/s), {} threads\n",
               r.encode_s, static_cast<double>(s.n_elements) / r.encode_s / 1e6, r.decode_s,
               static_cast<double>(s.n_elements) / r.decode_s / 1e6, r.threads);
    fmt::print("  roundtrip        {}\n", r.roundtrip_ok ? "bit-exact" : "MISMATCH");
  }
  return r.roundtrip_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"df11: lossless DFloat11 compression of BF16 weights"};
  app.require_subcommand(1);

  StatsArgs stats;
  auto* st = app.add_subcommand("stats", "Compress a unit, verify the round trip, and account for every bit");
  st->add_option("--synthetic", stats.synthetic, "Synthetic unit: nemo-layer, nemo-lm-head or nemo-embed")->required();
  st->add_option("--layer", stats.layer, "Layer index of a synthetic nemo-layer");
  st->add_option("--seed", stats.seed, "Seed of the synthetic generator");
  st->add_option("--fraction", stats.fraction, "Keep this fraction of each matrix's rows (0, 1]");
  st->add_option("--layout", stats.layout, "df11 (official) or canonical[:L] (ours)");
  st->add_option("--threads", stats.threads, "Worker threads (0 = all cores)");
  st->add_flag("--json", stats.json, "Print one JSON object");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*st) return run_stats(stats);
  } catch (const df11::Error& e) {
    fmt::print(stderr, "df11: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "df11: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
