// `df11 decompress`: DF11 directory -> Hugging Face BF16 directory with bit-identical tensors.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"

namespace df11::cli {
namespace {

struct DecompressArgs {
  std::string in, out;
  double shard_mb = static_cast<double>(ckpt::kDefaultShardBytes) / 1e6;
  int threads = 0;
  bool force = false;
  bool fsync = false;
  std::string config;  // shapes from this config.json (or directory)
};

int run_decompress(const DecompressArgs& a) {
  ckpt::DecompressOptions o;
  o.shard_bytes = shard_bytes_of_mb(a.shard_mb);
  o.threads = a.threads;
  o.write = {a.force, a.fsync};
  if (!a.config.empty()) o.architecture = a.config;
  install_interrupt_handler();
  ProgressBar bar("decompress");
  ckpt::Progress last;
  ckpt::decompress(a.in, a.out, o, [&](const ckpt::Progress& p) {
    last = p;
    bar.update(p);
  });
  const double t = bar.elapsed_s();
  bar.finish(fmt::format("decompress: {} -> {}: {} units, {:.3f} GB BF16 in {:.2f} s, {:.0f} MB/s",
                         a.in, a.out, last.units_total, static_cast<double>(last.bytes_total) / 1e9,
                         t, static_cast<double>(last.bytes_total) / t / 1e6));
  return 0;
}

}  // namespace

void add_decompress(CLI::App& app) {
  auto args = std::make_shared<DecompressArgs>();
  auto* cmd = app.add_subcommand("decompress",
                                 "Decompress a DF11 directory into a Hugging Face BF16 directory");
  cmd->add_option("IN", args->in, "DF11 checkpoint directory (official layout)")->required();
  cmd->add_option("OUT", args->out, "BF16 output directory (created atomically)")->required();
  cmd->add_option("--shard-mb", args->shard_mb, "Largest shard in MB (1e6 bytes)")
      ->capture_default_str();
  cmd->add_option("--config", args->config,
                  "A config.json (or a directory with one) whose architecture gives the weights' shapes and "
                  "the output's config.json: for a DF11 directory whose config.json holds only dfloat11_config "
                  "(the official single-file layout)");
  add_threads(*cmd, args->threads);
  cmd->add_flag("--force", args->force, "Replace OUT if it exists");
  cmd->add_flag("--fsync", args->fsync, "fsync every file before OUT appears");
  cmd->callback([args] { exit_code() = run_decompress(*args); });
}

}  // namespace df11::cli
