// Helpers shared by the subcommands: the progress line, Ctrl-C handling, sizes, option checks.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"

namespace df11::cli {
namespace {

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  g_signal.store(sig);
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // SIGTERM and SIGHUP stay handled: `timeout` sends SIGTERM twice (to the child and to its
  // group), and a second one must not kill the process before it removes its unfinished output.
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  // A second Ctrl-C kills at once (a person asking twice); the unfinished OUT.tmp-PID it leaves
  // is removed by the next run writing the same OUT (OutputDir).
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  // Past a file-size limit (ulimit -f) a write fails with EFBIG, which the writers report and
  // clean up after, instead of the signal killing the process mid-write.
  signal(SIGXFSZ, SIG_IGN);
}

ProgressBar::ProgressBar(std::string verb)
    : verb_(std::move(verb)), start_(std::chrono::steady_clock::now()), tty_(::isatty(2) == 1) {}

double ProgressBar::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::update(const ckpt::Progress& p) {
  if (const int sig = g_signal.load(); sig != 0) {
    throw Error(
        fmt::format("{}: interrupted by signal {}; the unfinished output was removed", verb_, sig));
  }
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = p.items_done == p.items_total;
  // Redrawing for every norm tensor would flood a slow terminal.
  if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  drawn_ = true;
  const double t = std::max(elapsed_s(), 1e-9);
  const double frac =
      p.bytes_total ? static_cast<double>(p.bytes_done) / static_cast<double>(p.bytes_total) : 1.0;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(std::lround(frac * kWidth));
  fmt::print(
      stderr, "\r{} [{}{}] {}/{} units  {:.2f}/{:.2f} GB  {:.0f} MB/s  {:.0f} M weights/s  \033[K",
      verb_, std::string(static_cast<std::size_t>(filled), '#'),
      std::string(static_cast<std::size_t>(kWidth - filled), ' '), p.units_done, p.units_total,
      static_cast<double>(p.bytes_done) / 1e9, static_cast<double>(p.bytes_total) / 1e9,
      static_cast<double>(p.bytes_done) / t / 1e6, static_cast<double>(p.elements_done) / t / 1e6);
  std::fflush(stderr);
}

void ProgressBar::finish(const std::string& summary) {
  if (drawn_) fmt::print(stderr, "\n");
  fmt::print(stderr, "{}\n", summary);
}

uint64_t shard_bytes_of_mb(double mb) {
  if (!(mb > 0) || !std::isfinite(mb) || mb > 1e12) {
    throw Error(fmt::format("--shard-mb must be a positive number of megabytes, got {}", mb));
  }
  return std::max<uint64_t>(1, static_cast<uint64_t>(mb * 1e6));
}

uint64_t directory_bytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += e.file_size(ec);
  }
  return total;
}

CLI::Option* add_threads(CLI::App& cmd, int& threads, const std::string& help) {
  return cmd.add_option("--threads", threads, help)
      ->check(CLI::Range(0, kMaxThreads).description(fmt::format("INT in [0 - {}]", kMaxThreads)));
}

const CLI::Validator& unsigned_64() {
  static const CLI::Validator v(
      [](const std::string& text) -> std::string {
        uint64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, value);
        if (text.empty() || ptr != end || ec != std::errc()) {
          return fmt::format("'{}' is not an integer in [0, 18446744073709551615]", text);
        }
        return {};
      },
      "UINT64");
  return v;
}

}  // namespace df11::cli
