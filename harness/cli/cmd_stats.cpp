// `df11 stats`: compress a unit, verify the round trip, and account for every bit.
#include <cmath>
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "codec/stats.hpp"
#include "codec/tables.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/synthetic.hpp"
#include "lib/codec_report.hpp"

namespace df11::cli {
namespace {

struct StatsArgs {
  std::string path;     // a checkpoint directory (DF11 or BF16) instead of --synthetic
  std::string pattern;  // pattern_dict for a BF16 directory
  std::string synthetic;
  int layer = 0;
  uint64_t seed = 0;
  double fraction = 1.0;
  std::string layout = "df11";
  int threads = 0;
  bool json = false;
  bool unit_options = false;  // --layer or --fraction given (they choose a --synthetic unit)
  bool layer_given = false;   // --layer given
  bool layout_given = false;  // --layout given (a DF11 PATH has its own)
};

Unit synthetic_unit(const StatsArgs& a) {
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
  throw Error(fmt::format("unknown --synthetic '{}' (nemo-layer, nemo-lm-head, nemo-embed)", a.synthetic));
}

// ---- the checkpoint PATH form ----

struct TensorRow {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t elements = 0;
  double entropy = 0;
  int min_len = 0, max_len = 0, n_symbols = 0;
  double exponent_bits = 0;  // average code length over this tensor's exponents
};

struct UnitRow {
  std::string name;
  UnitStats stats;
  std::vector<TensorRow> tensors;
};

CodeLengths code_lengths_of(const EncodedUnit& e) {
  if (e.layout.tables == TableScheme::df11_chained) return df11_length_row(e.luts);
  CodeLengths l{};
  std::copy_n(e.luts.begin(), std::min<std::size_t>(256, e.luts.size()), l.begin());
  return l;
}

// Per-tensor figures from the tensor's exponent histogram and the unit's code.
UnitRow unit_row(const EncodedUnit& e, const std::vector<std::pair<std::string, std::span<const uint16_t>>>& parts) {
  UnitRow row{e.name, {}, {}};
  const CodeLengths lengths = code_lengths_of(e);
  Histogram total{};
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const auto& [name, words] = parts[k];
    const Histogram h = histogram_of(words.data(), words.size());
    TensorRow t{name, e.tensor_shapes[k], words.size(), entropy_bits(h), 0, 0, 0, 0};
    uint64_t bits = 0;
    for (int s = 0; s < 256; ++s) {
      total[s] += h[s];
      if (h[s] == 0) continue;
      t.min_len = t.n_symbols == 0 ? lengths[s] : std::min<int>(t.min_len, lengths[s]);
      t.max_len = std::max<int>(t.max_len, lengths[s]);
      ++t.n_symbols;
      bits += h[s] * lengths[s];
    }
    t.exponent_bits = t.elements ? static_cast<double>(bits) / static_cast<double>(t.elements) : 0.0;
    row.tensors.push_back(std::move(t));
  }
  row.stats = unit_stats(e, total);
  return row;
}

int run_checkpoint_stats(const StatsArgs& a) {
  std::vector<UnitRow> units;
  std::vector<ckpt::TensorSpec> copied;
  std::string kind;
  if (ckpt::is_df11_dir(a.path)) {
    if (a.layout_given || !a.pattern.empty()) {
      throw Error(fmt::format("stats: {} is a DF11 directory: its units keep their own layout and pattern_dict "
                              "(--layout and --pattern are for a BF16 PATH)",
                              a.path));
    }
    kind = "df11";
    const ckpt::Df11Checkpoint ck = ckpt::Df11Checkpoint::open(a.path);
    for (const ckpt::UnitSpec& u : ck.contents().units) {
      const EncodedUnit e = ck.load(u);
      ck.release(u);
      const std::vector<uint16_t> words = ck.decode(u, e, a.threads);  // the histogram needs the exponents
      std::vector<std::pair<std::string, std::span<const uint16_t>>> parts;
      uint64_t offset = 0;
      for (const ckpt::TensorSpec& t : u.tensors) {
        const uint64_t n = element_count(t.shape);
        parts.emplace_back(t.name, std::span<const uint16_t>(words).subspan(offset, n));
        offset += n;
      }
      units.push_back(unit_row(e, parts));
    }
    copied = ck.contents().copied;
  } else {
    kind = "bf16";
    const Layout layout = parse_layout(a.layout);
    const ckpt::HfCheckpoint ck = ckpt::HfCheckpoint::open(a.path);
    const ckpt::Contents contents =
        ck.contents(a.pattern.empty() ? ckpt::PatternDict::mistral() : ckpt::PatternDict::from_argument(a.pattern));
    for (const ckpt::UnitSpec& u : contents.units) {
      const ckpt::LoadedUnit loaded = ck.load(u);
      const EncodedUnit e = encode(loaded.view, layout, a.threads);
      std::vector<std::pair<std::string, std::span<const uint16_t>>> parts;
      for (const TensorView& t : loaded.view.tensors) parts.emplace_back(t.name, t.data);
      units.push_back(unit_row(e, parts));
      ck.release(u);
    }
    copied = contents.copied;
  }

  uint64_t elements = 0, stored = 0, bf16 = 0, copied_bytes = 0;
  double exp_bits = 0, gap_bits = 0, pos_bits = 0, table_bits = 0;
  for (const UnitRow& u : units) {
    const UnitStats& s = u.stats;
    elements += s.n_elements;
    stored += s.stored_bytes;
    bf16 += s.bf16_bytes;
    const auto n = static_cast<double>(s.n_elements);
    exp_bits += s.exponent_bits_per_weight * n;
    gap_bits += s.gaps_bits_per_weight * n;
    pos_bits += s.positions_bits_per_weight * n;
    table_bits += s.tables_bits_per_weight * n;
  }
  for (const ckpt::TensorSpec& t : copied) copied_bytes += element_count(t.shape) * st::dtype_size(t.dtype);
  const double ne = std::max<double>(1.0, static_cast<double>(elements));
  const double units_ratio = bf16 ? static_cast<double>(stored) / static_cast<double>(bf16) : 0.0;
  const double total_ratio = bf16 + copied_bytes ? static_cast<double>(stored + copied_bytes) /
                                                       static_cast<double>(bf16 + copied_bytes)
                                                 : 0.0;
  if (a.json) {
    nlohmann::json j;
    j["source"] = {{"path", a.path}, {"kind", kind}};
    j["units"] = nlohmann::json::array();
    for (const UnitRow& u : units) {
      nlohmann::json ju = to_json(u.stats);
      ju["unit"] = u.name;
      ju["tensors"] = nlohmann::json::array();
      for (const TensorRow& t : u.tensors) {
        ju["tensors"].push_back({{"name", t.name},
                                 {"shape", t.shape},
                                 {"n_elements", t.elements},
                                 {"exponent_entropy_bits", t.entropy},
                                 {"min_code_length", t.min_len},
                                 {"max_code_length", t.max_len},
                                 {"n_symbols", t.n_symbols},
                                 {"exponent_bits_per_weight", t.exponent_bits}});
      }
      j["units"].push_back(std::move(ju));
    }
    j["copied"] = nlohmann::json::array();
    for (const ckpt::TensorSpec& t : copied) {
      j["copied"].push_back({{"name", t.name},
                             {"dtype", std::string(st::dtype_name(t.dtype))},
                             {"shape", t.shape},
                             {"bytes", element_count(t.shape) * st::dtype_size(t.dtype)}});
    }
    j["totals"] = {{"units", units.size()},
                   {"n_elements", elements},
                   {"stored_bytes", stored},
                   {"bf16_bytes", bf16},
                   {"copied_bytes", copied_bytes},
                   {"ratio", units_ratio},
                   {"ratio_with_copied", total_ratio},
                   {"bits_per_weight", 8.0 * static_cast<double>(stored) / ne},
                   {"bits_per_weight_split",
                    {{"exponent_stream", exp_bits / ne},
                     {"sign_mantissa", elements ? 8.0 : 0.0},
                     {"gaps", gap_bits / ne},
                     {"positions", pos_bits / ne},
                     {"tables", table_bits / ne}}}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::size_t width = 24;
  for (const UnitRow& u : units) {
    for (const TensorRow& t : u.tensors) width = std::max(width, t.name.size() + 2);
  }
  fmt::print("{} checkpoint {}: {} units, {} copied tensors\n", kind, a.path, units.size(), copied.size());
  fmt::print("{:<{}} {:>12} {:>8} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8} {:>7}\n", "unit / tensor", width, "elements",
             "entropy", "codes", "exp.bits", "gaps", "pos", "tables", "bits/w", "ratio");
  for (const UnitRow& u : units) {
    const UnitStats& s = u.stats;
    fmt::print("{:<{}} {:>12} {:>8.4f} {:>7} {:>9.4f} {:>7.4f} {:>7.4f} {:>8.6f} {:>8.4f} {:>7.4f}\n", u.name, width,
               s.n_elements, s.exponent_entropy_bits, fmt::format("{}..{}", s.min_code_length, s.max_code_length),
               s.exponent_bits_per_weight, s.gaps_bits_per_weight, s.positions_bits_per_weight,
               s.tables_bits_per_weight, s.bits_per_weight, s.ratio);
    for (const TensorRow& t : u.tensors) {
      fmt::print("  {:<{}} {:>12} {:>8.4f} {:>7} {:>9.4f}\n", t.name, width - 2, t.elements, t.entropy,
                 fmt::format("{}..{}", t.min_len, t.max_len), t.exponent_bits);
    }
  }
  fmt::print("total: {} weights in {} units: {:.3f} GB BF16 -> {:.3f} GB DF11, ratio {:.4f}, {:.4f} bits/weight "
             "= exponent stream {:.4f} + sign/mantissa 8 + gaps {:.4f} + positions {:.4f} + tables {:.6f}\n",
             elements, units.size(), static_cast<double>(bf16) / 1e9, static_cast<double>(stored) / 1e9, units_ratio,
             8.0 * static_cast<double>(stored) / ne, exp_bits / ne, gap_bits / ne, pos_bits / ne, table_bits / ne);
  fmt::print("with {} copied tensors ({} bytes): ratio {:.4f}\n", copied.size(), copied_bytes, total_ratio);
  return 0;
}

int run_stats(const StatsArgs& a) {
  if (!a.path.empty()) {
    if (!a.synthetic.empty()) throw Error("stats: give either a checkpoint PATH or --synthetic, not both");
    if (a.unit_options)
      throw Error("stats: --layer and --fraction choose a --synthetic unit; with a PATH every unit is read");
    return run_checkpoint_stats(a);
  }
  if (a.synthetic.empty()) throw Error("stats: give a checkpoint PATH or --synthetic NAME");
  if (!a.pattern.empty()) throw Error("stats: --pattern is a BF16 PATH's pattern_dict, not a --synthetic unit's");
  if (a.layer_given && a.synthetic != "nemo-layer") {
    throw Error(fmt::format("stats: --layer chooses a nemo-layer; --synthetic {} has none", a.synthetic));
  }
  if (!(a.fraction > 0.0 && a.fraction <= 1.0)) throw Error("stats: --fraction must be in (0, 1]");
  const Layout layout = parse_layout(a.layout);
  const Unit unit = synthetic_unit(a);
  const CodecReport r = run_codec_report(unit.view(), layout, a.threads, 1);
  auto j = to_json(r);
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

void add_stats(CLI::App& app) {
  auto args = std::make_shared<StatsArgs>();
  auto* st = app.add_subcommand("stats", "Compress a unit, verify the round trip, and account for every bit; or, "
                                         "given a checkpoint PATH, account for every unit and tensor of it");
  st->add_option("PATH", args->path,
                 "A DF11 checkpoint directory, or a BF16 one (compressed in memory with --layout)");
  st->add_option("--pattern", args->pattern, "pattern_dict for a BF16 PATH (JSON file or text)");
  st->add_option("--synthetic", args->synthetic, "Synthetic unit: nemo-layer, nemo-lm-head or nemo-embed");
  auto* layer = st->add_option("--layer", args->layer, "Layer index of a synthetic nemo-layer")
                    ->check(CLI::Range(0, 39).description("INT in [0 - 39] (Mistral-Nemo's 40 layers)"));
  st->add_option("--seed", args->seed, "Seed of the synthetic generator")->check(unsigned_64());
  auto* fraction = st->add_option("--fraction", args->fraction, "Keep this fraction of each matrix's rows (0, 1]");
  auto* layout = st->add_option("--layout", args->layout,
                                 "df11 (official), canonical[:L] (ours), or a full layout name (chain32.t512.b8.g5.pcount)");
  add_threads(*st, args->threads);
  st->add_flag("--json", args->json, "Print one JSON object");
  st->callback([args, layer, fraction, layout] {
    args->unit_options = layer->count() + fraction->count() > 0;
    args->layer_given = layer->count() > 0;
    args->layout_given = layout->count() > 0;
    exit_code() = run_stats(*args);
  });
}

}  // namespace df11::cli
