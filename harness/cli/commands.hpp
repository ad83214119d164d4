// The `df11` tool's subcommands. Each lives in its own cmd_*.cpp and registers itself on the
// app through one add_* function listed in df11.cpp; the callback it installs returns the exit
// code through `exit_code` and throws df11::Error for user errors.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "datasets/checkpoint.hpp"

namespace df11::cli {

// Exit code of the subcommand that ran (set by its callback).
int& exit_code();

void add_stats(CLI::App& app);
void add_synth(CLI::App& app);
void add_compress(CLI::App& app);
void add_decompress(CLI::App& app);
void add_verify(CLI::App& app);
void add_gate(CLI::App& app);
void add_variants(CLI::App& app);
void add_generate(CLI::App& app);  // cmd_generate.cpp (harness/e2e)

// ---- shared by the subcommands (cmd_common.cpp) ----

// --threads: 0 (all cores) up to kMaxThreads (codec/common.hpp).
CLI::Option* add_threads(CLI::App& cmd, int& threads, const std::string& help = "Worker threads (0 = all cores)");
// For an unsigned 64-bit option: digits only, at most 2^64-1 (CLI11 itself reads "-1" as 2^64-1
// and clamps larger values).
[[nodiscard]] const CLI::Validator& unsigned_64();

// A progress line on stderr, redrawn in place when stderr is a terminal (silent otherwise):
// units done, gigabytes of BF16 done, MB/s and weights/s. Also where Ctrl-C is noticed: after
// install_interrupt_handler(), update() throws df11::Error once SIGINT, SIGTERM or SIGHUP arrived, so
// the half-written output directory is removed on the way out.
class ProgressBar {
 public:
  explicit ProgressBar(std::string verb);
  void update(const ckpt::Progress& p);
  // Ends the line and prints one summary line (always).
  void finish(const std::string& summary);
  [[nodiscard]] double elapsed_s() const;

 private:
  std::string verb_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
  bool tty_ = false;
  bool drawn_ = false;
};

// SIGINT, SIGTERM and SIGHUP make the next ProgressBar::update throw (a second Ctrl-C kills at
// once; SIGTERM and SIGHUP stay handled); SIGXFSZ is ignored, so a write past `ulimit -f` fails
// and is cleaned up after like any failed write.
void install_interrupt_handler();
// --shard-mb (decimal megabytes, as Hugging Face's "5GB") to bytes; throws df11::Error unless > 0.
[[nodiscard]] uint64_t shard_bytes_of_mb(double mb);
// Bytes of all regular files in a directory.
[[nodiscard]] uint64_t directory_bytes(const std::string& dir);

}  // namespace df11::cli
