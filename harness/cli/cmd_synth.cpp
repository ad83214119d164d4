// `df11 synth`: writes a Hugging Face BF16 checkpoint of synthetic, Nemo-calibrated weights.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"

namespace df11::cli {
namespace {

struct SynthArgs {
  std::string out;
  std::string arch = "tiny";
  int64_t layers = 0;  // 0: the architecture's
  int64_t vocab = 0;
  uint64_t seed = 0;
  double shard_mb = static_cast<double>(ckpt::kDefaultShardBytes) / 1e6;
  int threads = 0;
  bool force = false;
  bool fsync = false;
};

int run_synth(const SynthArgs& a) {
  ckpt::SynthOptions o;
  o.shape = ckpt::shape_of_arch(a.arch);
  if (a.layers > 0) o.shape.n_layers = a.layers;
  if (a.vocab > 0) o.shape.vocab = a.vocab;
  o.seed = a.seed;
  o.shard_bytes = shard_bytes_of_mb(a.shard_mb);
  o.threads = a.threads;
  o.write = {a.force, a.fsync};
  install_interrupt_handler();
  ProgressBar bar("synth");
  ckpt::Progress last;
  ckpt::synthesize(a.out, o, [&](const ckpt::Progress& p) {
    last = p;
    bar.update(p);
  });
  const double t = bar.elapsed_s();
  bar.finish(fmt::format(
      "synth: wrote {} ({}, {} layers, vocab {}, seed {}): {} units, {:.3f} GB BF16 in {:.1f} s",
      a.out, a.arch, o.shape.n_layers, o.shape.vocab, a.seed, last.units_total,
      static_cast<double>(last.bytes_total) / 1e9, t));
  return 0;
}

}  // namespace

void add_synth(CLI::App& app) {
  auto args = std::make_shared<SynthArgs>();
  auto* cmd =
      app.add_subcommand("synth",
                         "Write a Hugging Face BF16 checkpoint of synthetic weights calibrated "
                         "to the DF11 release of Mistral-Nemo");
  cmd->add_option("OUT", args->out, "Output directory (created atomically)")->required();
  cmd->add_option("--arch", args->arch, "mistral-nemo (the real shapes) or tiny (the test model)")
      ->check(CLI::IsMember({"mistral-nemo", "tiny"}));
  cmd->add_option("--layers", args->layers,
                  "Number of decoder layers (default: the architecture's)")
      ->check(CLI::Range(int64_t{1}, int64_t{ckpt::kMaxLayers}));
  cmd->add_option("--vocab", args->vocab, "Vocabulary size (default: the architecture's)")->check(CLI::Range(int64_t{1}, int64_t{ckpt::kMaxVocab}));
  cmd->add_option("--seed", args->seed, "Seed of the generator")->check(unsigned_64());
  cmd->add_option("--shard-mb", args->shard_mb,
                  "Largest shard in MB (1e6 bytes); more data is split into shards")
      ->capture_default_str();
  add_threads(*cmd, args->threads);
  cmd->add_flag("--force", args->force, "Replace OUT if it exists");
  cmd->add_flag("--fsync", args->fsync, "fsync every file before OUT appears");
  cmd->callback([args] { exit_code() = run_synth(*args); });
}

}  // namespace df11::cli
