// `df11`: the user tool. Each subcommand is registered from harness/cli/cmd_*.cpp.
#include <cstdio>
#include <exception>
#include <string_view>

#include <CLI/CLI.hpp>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"

namespace df11::cli {
int& exit_code() {
  static int code = 0;
  return code;
}
}  // namespace df11::cli

int main(int argc, char** argv) {
  CLI::App app{"df11: lossless DFloat11 compression of BF16 weights"};
  app.require_subcommand(1);
  df11::cli::add_stats(app);
  df11::cli::add_synth(app);
  df11::cli::add_compress(app);
  df11::cli::add_decompress(app);
  df11::cli::add_verify(app);
  df11::cli::add_gate(app);
  df11::cli::add_variants(app);
  df11::cli::add_generate(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    // `df11 gate` exits 3 on a bad option, as on an unreadable file, so that CI tells a broken
    // call from a regression (1) or a refusal (2); CLI11's own codes (106, 109, ...) otherwise.
    if (rc != 0 && argc > 1 && std::string_view(argv[1]) == "gate") return 3;
    return rc;
  } catch (const std::exception& e) {
    fmt::print(stderr, "df11: error: {}\n", e.what());
    return 1;
  }
  return df11::cli::exit_code();
}
