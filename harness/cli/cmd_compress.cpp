// `df11 compress`: Hugging Face BF16 directory -> official-compatible DF11 directory.
#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"

namespace df11::cli {
namespace {

struct CompressArgs {
  std::string in, out, pattern;
  int threads = 0;
  bool force = false;
  bool fsync = false;
};

int run_compress(const CompressArgs& a) {
  ckpt::CompressOptions o;
  if (!a.pattern.empty()) o.patterns = ckpt::PatternDict::from_argument(a.pattern);
  o.threads = a.threads;
  o.write = {a.force, a.fsync};
  install_interrupt_handler();
  ProgressBar bar("compress");
  ckpt::Progress last;
  ckpt::compress(a.in, a.out, o, [&](const ckpt::Progress& p) {
    last = p;
    bar.update(p);
  });
  const double t = bar.elapsed_s();
  const uint64_t in_bytes = directory_bytes(a.in), out_bytes = directory_bytes(a.out);
  bar.finish(fmt::format(
      "compress: {} -> {}: {} units, {:.3f} GB -> {:.3f} GB ({:.2f}% of the input files) in {:.2f} "
      "s, {:.0f} MB/s, "
      "{:.0f} M weights/s",
      a.in, a.out, last.units_total, static_cast<double>(in_bytes) / 1e9,
      static_cast<double>(out_bytes) / 1e9,
      in_bytes ? 100.0 * static_cast<double>(out_bytes) / static_cast<double>(in_bytes) : 0.0, t,
      static_cast<double>(last.bytes_total) / t / 1e6,
      static_cast<double>(last.elements_total) / t / 1e6));
  return 0;
}

}  // namespace

void add_compress(CLI::App& app) {
  auto args = std::make_shared<CompressArgs>();
  auto* cmd = app.add_subcommand("compress",
                                 "Compress a Hugging Face BF16 checkpoint directory into an "
                                 "official-compatible DF11 directory, unit by unit");
  cmd->add_option("IN", args->in, "BF16 checkpoint directory (config.json + safetensors)")
      ->required();
  cmd->add_option("OUT", args->out, "DF11 output directory (created atomically)")->required();
  cmd->add_option("--pattern", args->pattern,
                  "pattern_dict overriding the architecture's units: a JSON file or JSON text, "
                  "{\"regex\": [\"submodule\", ...]}");
  add_threads(*cmd, args->threads);
  cmd->add_flag("--force", args->force, "Replace OUT if it exists");
  cmd->add_flag("--fsync", args->fsync, "fsync every file before OUT appears");
  cmd->callback([args] { exit_code() = run_compress(*args); });
}

}  // namespace df11::cli
