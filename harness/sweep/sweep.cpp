// The sweep driver (sweep.hpp): units -> encodings -> verify -> time -> results.jsonl, with a
// progress display on stderr and a clean stop on SIGINT.
#include "sweep/sweep.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/nemo.hpp"
#include "datasets/synthetic.hpp"
#include "sweep/results.hpp"

namespace df11::sweep {

// ---- interruption ------------------------------------------------------------------------------

namespace {

std::atomic<int> g_interrupted{0};  // the signal that asked (SIGINT for request_interrupt); 0: none
static_assert(std::atomic<int>::is_always_lock_free,
              "the interrupt flag must be safe to set from a handler");

extern "C" void on_sigint(int sig) {
  g_interrupted.store(sig, std::memory_order_relaxed);
  static const char msg[] =
      "\nrun_sweep: interrupted; finishing the current case's line (Ctrl-C again kills at once)\n";
  // write(2) is async-signal-safe; the result is irrelevant (nothing to do if stderr is gone).
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
}

}  // namespace

void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  // SA_RESETHAND: the second Ctrl-C gets the default action, for a user who cannot wait.
  sa.sa_flags = SA_RESTART | SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  // SIGTERM too (what `timeout` sends, as the device check's time limits do): the cases left are
  // written as not run, so a cut run says what it did not measure. Not reset by the first one:
  // `timeout` sends it twice (to the child, then to its process group), and its -k KILL is the
  // hard stop.
  struct sigaction term = sa;
  term.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &term, nullptr);
  sigaction(SIGHUP, &term, nullptr);
  // Past a file-size limit (ulimit -f) a write fails with EFBIG: the results file is cut back to
  // its last whole line and the run ends with that error, instead of SIGXFSZ killing it mid-line.
  signal(SIGXFSZ, SIG_IGN);
}

void request_interrupt() noexcept {
  g_interrupted.store(SIGINT, std::memory_order_relaxed);
}
bool interrupt_requested() noexcept {
  return g_interrupted.load(std::memory_order_relaxed) != 0;
}
void clear_interrupt() noexcept {
  g_interrupted.store(0, std::memory_order_relaxed);
}
int interrupt_signal() noexcept {
  const int sig = g_interrupted.load(std::memory_order_relaxed);
  return sig == 0 ? 0 : (sig == SIGTERM || sig == SIGHUP ? sig : SIGINT);
}
std::string interrupt_signal_name() {
  switch (interrupt_signal()) {
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "SIGINT";
  }
}

// ---- methods and layouts -----------------------------------------------------------------------

std::string trace_shortfall(const MethodCase& m, const trace::Summary& k) {
  using trace::Kind;
  std::vector<std::string> missing;
  if (m.decodes() && k.records(Kind::decode) == 0) missing.emplace_back("decoder kernels");
  if (m.fused() && k.records(Kind::fused) == 0) missing.emplace_back("fused decode + GEMM kernels");
  if (m.needs_gemm() && !m.fused() && k.records(Kind::gemm) == 0) missing.emplace_back("GEMM kernels");
  if ((m.kind == "copy" || m.kind == "cpu-offload" || m.kind == "cpu-offload-sync") && k.records(Kind::copy) == 0)
    missing.emplace_back("copies");
  if (missing.empty()) return "";
  return fmt::format("the kernel trace of {} holds no {}", m.label(), fmt::join(missing, " and no "));
}

namespace {

bool batch_zero(const std::string& kind) {
  return kind == "copy" || kind == "decode";
}

}  // namespace

std::vector<MethodCase> resolve_methods(const Experiment& e, const std::string& backend_kind,
                                        const dec::Registry& registry) {
  const BackendOverride& o = backend_kind == "cpu" ? e.cpu : e.cuda;
  const std::string key = o.methods ? backend_kind + ".methods" : "methods";
  std::vector<MethodCase> out;
  auto add_one = [&](MethodCase m) {
    const std::string label = m.label();
    if (std::none_of(out.begin(), out.end(),
                     [&](const MethodCase& x) { return x.label() == label; })) {
      out.push_back(std::move(m));
    }
  };
  // A sliced method once per slice size of the experiment.
  auto add = [&](MethodCase m) {
    if (!m.sliced()) return add_one(std::move(m));
    for (const uint64_t c : e.chunk_bytes) {
      m.chunk_bytes = c;
      add_one(m);
    }
  };
  for (const std::string& s : e.methods_for(backend_kind)) {
    const auto colon = s.find(':');
    if (colon == std::string::npos) {
      add(MethodCase{s, nullptr, ""});
      continue;
    }
    const std::string kind = s.substr(0, colon), glob = s.substr(colon + 1);
    std::size_t matched = 0;
    if (backend_kind == "cpu" && kind == "df11-fused") {
      // GPU kernels: the cpu backend says not_supported, one row per variant the glob names on
      // the cuda backend (the same case keys; not the glob itself, which two globs could share).
      for (const dec::Decoder* d : registry.select(glob)) {
        add(MethodCase{kind, nullptr, d->name()});
        ++matched;
      }
    } else if (backend_kind == "cpu") {
      // The CPU backend's one decoder; GPU variants are designs for the cuda backend.
      if (dec::glob_match(glob, "cpu")) {
        add(MethodCase{kind, nullptr, "cpu"});
        ++matched;
      }
    } else {
      for (const dec::Decoder* d : registry.select(glob)) {
        add(MethodCase{kind, d, d->name()});
        ++matched;
      }
    }
    if (matched == 0) {
      std::string names;
      if (backend_kind == "cpu" && kind != "df11-fused") {
        names = "cpu";
      } else {
        for (const auto& d : registry.all()) names += (names.empty() ? "" : ", ") + d->name();
      }
      throw Error(fmt::format(
          "{}: key '{}': method '{}' matches no decoder variant on the {} backend (variants: {})",
          e.path, key, s, backend_kind, names.empty() ? "none" : names));
    }
  }
  return out;
}

std::vector<Layout> layouts_needed(const std::vector<MethodCase>& methods) {
  std::vector<Layout> out;
  for (const auto& m : methods) {
    const std::optional<Layout> l = m.layout();
    if (l && std::find(out.begin(), out.end(), *l) == out.end()) out.push_back(*l);
  }
  return out;
}

// ---- units -------------------------------------------------------------------------------------

namespace {

int64_t kept_rows(int64_t rows, double fraction) {
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(rows) * fraction)),
                             1, rows);
}

std::filesystem::path checkpoint_dir(const UnitSpec& spec, const Experiment& e) {
  std::filesystem::path p(spec.path);
  if (p.is_relative()) p = std::filesystem::path(e.path).parent_path() / p;
  return p;
}

const ckpt::UnitSpec& find_checkpoint_unit(const ckpt::Contents& c, const UnitSpec& spec,
                                           const std::string& dir, const std::string& where) {
  for (const auto& u : c.units)
    if (u.name == spec.name) return u;
  std::string some;
  for (std::size_t i = 0; i < c.units.size() && i < 8; ++i)
    some += (i ? ", " : "") + c.units[i].name;
  if (c.units.size() > 8) some += ", ...";
  throw Error(
      fmt::format("{}: checkpoint {} has no unit '{}' (units: {})", where, dir, spec.name, some));
}

MaterializedUnit read_checkpoint_unit(const UnitSpec& spec, const Experiment& e,
                                      double row_fraction, int threads) {
  const std::filesystem::path dir = checkpoint_dir(spec, e);
  const std::string where = fmt::format("{}: unit '{}'", e.path, spec.name);
  MaterializedUnit mu;
  mu.unit.name = spec.name;
  if (ckpt::is_df11_dir(dir)) {
    const auto ck = ckpt::Df11Checkpoint::open(dir);
    const ckpt::UnitSpec& us = find_checkpoint_unit(ck.contents(), spec, dir.string(), where);
    EncodedUnit enc = ck.load(us);
    const std::vector<uint16_t> flat = ck.decode(us, enc, threads);  // checks the stream, names the file
    std::size_t off = 0;
    for (std::size_t i = 0; i < enc.tensor_names.size(); ++i) {
      Bf16Tensor t;
      t.name = enc.tensor_names[i];
      t.shape = enc.tensor_shapes[i];
      const std::size_t n = element_count(t.shape);
      t.data.assign(flat.begin() + static_cast<std::ptrdiff_t>(off),
                    flat.begin() + static_cast<std::ptrdiff_t>(off + n));
      off += n;
      mu.unit.tensors.push_back(std::move(t));
    }
    mu.df11 = std::move(enc);
  } else {
    const auto ck = ckpt::HfCheckpoint::open(dir);
    const ckpt::Contents contents = ck.contents(ckpt::PatternDict::mistral());
    const ckpt::UnitSpec& us = find_checkpoint_unit(contents, spec, dir.string(), where);
    const ckpt::LoadedUnit lu = ck.load(us);
    for (const auto& tv : lu.view.tensors) {
      mu.unit.tensors.push_back(
          Bf16Tensor{tv.name, tv.shape, std::vector<uint16_t>(tv.data.begin(), tv.data.end())});
    }
  }
  if (row_fraction < 1.0) {
    // Leading rows of each matrix: the same slice a synthetic unit keeps. The file's encoding no
    // longer matches, so the unit is re-encoded like any other.
    for (auto& t : mu.unit.tensors) {
      if (t.shape.size() != 2) continue;
      const int64_t rows = kept_rows(t.shape[0], row_fraction);
      t.data.resize(static_cast<std::size_t>(rows * t.shape[1]));
      t.shape[0] = rows;
    }
    mu.df11.reset();
  }
  return mu;
}

}  // namespace

MaterializedUnit materialize_unit(const UnitSpec& spec, const Experiment& e, double row_fraction,
                                  int threads) {
  MaterializedUnit mu;
  switch (spec.kind) {
    case UnitSpec::Kind::nemo_layer:
      mu.unit = synth::make_nemo_layer(spec.layer, e.seed, row_fraction, threads);
      break;
    case UnitSpec::Kind::nemo_lm_head: {
      const synth::ModelShape s = synth::nemo_shape();
      mu.unit =
          synth::make_matrix_unit("lm_head", "lm_head", "lm_head", kept_rows(s.vocab, row_fraction),
                                  s.hidden, e.seed, threads);
      break;
    }
    case UnitSpec::Kind::custom:
      mu.unit.name = spec.name;
      for (const auto& [name, dims] : spec.matrices) {
        // One generator stream per matrix name: adding a matrix does not change the others.
        Unit one =
            synth::make_matrix_unit(spec.name, name, name, kept_rows(dims.first, row_fraction),
                                    dims.second, e.seed, threads);
        mu.unit.tensors.push_back(std::move(one.tensors.front()));
      }
      break;
    case UnitSpec::Kind::checkpoint:
      return read_checkpoint_unit(spec, e, row_fraction, threads);
  }
  return mu;
}

// ---- progress ----------------------------------------------------------------------------------

namespace {

// Cases done / total, the current case and the elapsed time, on stderr: a redrawn bar on a
// terminal, one line per finished case elsewhere (logs, ctest).
class Progress {
 public:
  Progress(std::size_t total, bool enabled)
      : total_(total),
        enabled_(enabled),
        tty_(enabled && ::isatty(STDERR_FILENO)),
        t0_(Clock::now()) {}

  void note(const std::string& text) {
    if (!enabled_) return;
    clear();
    fmt::print(stderr, "{} {}\n", stamp(), text);
    redraw();
  }
  void begin(const std::string& label) {
    current_ = label;
    redraw();
  }
  void end(const std::string& result) {
    ++done_;
    if (!enabled_) return;
    clear();
    fmt::print(stderr, "{} [{:>{}}/{}] {}: {}\n", stamp(), done_, width(), total_, current_,
               result);
    current_.clear();
    redraw();
  }
  void finish() {
    clear();
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  [[nodiscard]] int width() const { return static_cast<int>(std::to_string(total_).size()); }
  [[nodiscard]] std::string stamp() const {
    const auto s = static_cast<long>(std::chrono::duration<double>(Clock::now() - t0_).count());
    return fmt::format("{:>3}:{:02}", s / 60, s % 60);
  }
  void clear() {
    if (tty_ && drawn_) fmt::print(stderr, "\r\033[K");
    drawn_ = false;
  }
  void redraw() {
    if (!tty_ || current_.empty()) return;
    constexpr std::size_t kBar = 24;
    const std::size_t fill = total_ ? done_ * kBar / total_ : kBar;
    fmt::print(stderr, "\r\033[K{} [{}{}] {}/{} {}", stamp(), std::string(fill, '#'),
               std::string(kBar - fill, '.'), done_, total_, current_);
    std::fflush(stderr);
    drawn_ = true;
  }

  std::size_t total_, done_ = 0;
  bool enabled_, tty_, drawn_ = false;
  Clock::time_point t0_;
  std::string current_;
};

std::string format_seconds(double s) {
  if (s >= 1.0) return fmt::format("{:.3f} s", s);
  if (s >= 1e-3) return fmt::format("{:.3f} ms", s * 1e3);
  return fmt::format("{:.1f} us", s * 1e6);
}

// A difference at element `first` of a reference laid out as `pieces` (sizes) end to end,
// described: where (the piece's name and index within it), the bits, and how many differ.
std::string describe_difference(uint64_t first, uint16_t got, uint16_t want, uint64_t n_diff, uint64_t total,
                                const std::vector<std::size_t>& pieces,
                                const std::vector<std::string>& piece_names, const std::string& what) {
  std::string where;
  uint64_t start = 0;
  for (std::size_t p = 0; p < pieces.size() && p < piece_names.size(); ++p) {
    if (first < start + pieces[p]) {
      where = fmt::format(" ({} element {})", piece_names[p], first - start);
      break;
    }
    start += pieces[p];
  }
  return fmt::format(
      "output differs from {} at element {}{}: got 0x{:04x}, expected 0x{:04x}; {} of {} elements "
      "differ",
      what, first, where, got, want, n_diff, total);
}

std::vector<std::size_t> piece_sizes(const std::vector<std::span<const uint16_t>>& ref) {
  std::vector<std::size_t> sizes;
  for (const auto& p : ref) sizes.push_back(p.size());
  return sizes;
}

// The first element where `out` differs from the reference pieces laid end to end, described; or
// empty when equal. `what` names the reference; `pieces` names each piece for the message.
std::string first_difference(const std::vector<uint16_t>& out,
                             const std::vector<std::span<const uint16_t>>& ref,
                             const std::vector<std::string>& piece_names, const std::string& what) {
  std::size_t ref_n = 0;
  for (const auto& p : ref) ref_n += p.size();
  if (out.size() != ref_n) {
    return fmt::format("output has {} elements, {} has {}", out.size(), what, ref_n);
  }
  std::size_t at = 0, first = SIZE_MAX, n_diff = 0;
  uint16_t got = 0, want = 0;
  for (const auto& piece : ref) {
    for (std::size_t i = 0; i < piece.size(); ++i) {
      if (out[at + i] != piece[i]) {
        if (first == SIZE_MAX) {
          first = at + i;
          got = out[at + i];
          want = piece[i];
        }
        ++n_diff;
      }
    }
    at += piece.size();
  }
  if (first == SIZE_MAX) return {};
  return describe_difference(first, got, want, n_diff, out.size(), piece_sizes(ref), piece_names, what);
}

// The same description for a comparison the backend made where the data is
// (Backend::run_and_compare_with_weights); a comparison that did not cover the whole reference
// is a difference too, never a pass.
std::string comparison_difference(const WeightsComparison& c, const std::vector<std::span<const uint16_t>>& ref,
                                  const std::vector<std::string>& piece_names, const std::string& what) {
  std::size_t ref_n = 0;
  for (const auto& p : ref) ref_n += p.size();
  if (c.elements != ref_n) {
    return fmt::format("the backend compared {} elements of the output with {}, which has {}", c.elements, what,
                       ref_n);
  }
  if (c.differ == 0) return {};
  return describe_difference(c.first, c.got, c.want, c.differ, ref_n, piece_sizes(ref), piece_names, what);
}

struct Counts {
  SweepReport& r;
  void add(Disposition d) {
    switch (d) {
      case Disposition::passed:
        ++r.passed;
        break;
      case Disposition::incorrect:
        ++r.incorrect;
        break;
      case Disposition::not_supported:
        ++r.not_supported;
        break;
      case Disposition::not_run:
        ++r.not_run;
        break;
    }
  }
};

}  // namespace

// ---- the sweep ---------------------------------------------------------------------------------

SweepReport run_sweep(const Experiment& e, Backend& backend, const dec::Registry& registry,
                      const SweepOptions& options) {
  const std::string kind = backend.kind();
  const std::vector<MethodCase> methods = resolve_methods(e, kind, registry);
  const std::vector<int> batches = e.batches_for(kind);
  const Measurement meas = e.measurement_for(kind);
  const double row_fraction = e.row_fraction_for(kind);
  const std::vector<Layout> layouts = layouts_needed(methods);

  // Experiment errors surface before the results file exists.
  for (std::size_t i = 0; i < e.units.size(); ++i) {
    const UnitSpec& u = e.units[i];
    if (u.kind == UnitSpec::Kind::checkpoint &&
        !std::filesystem::is_directory(checkpoint_dir(u, e))) {
      throw Error(fmt::format("{}: key 'units[{}].path': checkpoint directory {} does not exist",
                              e.path, i, checkpoint_dir(u, e).string()));
    }
  }

  std::vector<const MethodCase*> zero_methods, gemm_methods;
  for (const auto& m : methods) (batch_zero(m.kind) ? zero_methods : gemm_methods).push_back(&m);
  const std::size_t per_unit = zero_methods.size() + batches.size() * gemm_methods.size();

  SweepReport report;
  Counts counts{report};
  const Line meta = meta_json(options.argv, kind, utc_now_iso8601());
  const Line device = device_json(backend.device_info());
  ResultsWriter writer(options.results_path);
  Progress progress(per_unit * e.units.size(), options.progress);

  // The wall time a passed case spent verifying and timing, for the progress line only (where a
  // sweep's time goes: on an H200 a decoder-alone case took ~2.6 s of which ~0.3 s were samples).
  std::string phase_times;
  auto write = [&](const CaseInfo& c, Disposition d, const std::optional<Summary>& s,
                   const std::string& reason, const std::optional<std::string>& verified = std::nullopt) {
    writer.write(result_line(meta, device, c, d, s, reason, verified));
    counts.add(d);
    std::string text = to_string(d);
    if (d == Disposition::passed && s)
      text += fmt::format(", median {}", format_seconds(s->median_s));
    if (d == Disposition::passed && !phase_times.empty()) text += "; " + phase_times;
    phase_times.clear();
    if (!reason.empty()) text += " (" + reason + ")";
    progress.end(text);
  };
  auto case_info = [&](const std::string& unit, const MethodCase& m, int batch) {
    return CaseInfo{e.name,
                    unit,
                    m.kind,
                    m.variant_name.empty() ? std::nullopt : std::optional<std::string>(m.variant_name),
                    batch,
                    e.seed,
                    // A sliced method's size: resolved where the backend runs it, else as asked.
                    m.sliced() ? std::optional<uint64_t>(backend.slice_bytes(m).value_or(m.chunk_bytes))
                               : std::nullopt};
  };
  auto case_label = [](const std::string& unit, const MethodCase& m, int batch) {
    return fmt::format("{} {} b={}", unit, m.label(), batch);
  };
  // Every case of a unit, not run, with the reason (interrupted, or the unit failed to load).
  auto skip_rest = [&](const std::string& unit, std::size_t first_zero, std::size_t first_batch,
                       std::size_t first_gemm, const std::string& reason) {
    for (std::size_t i = first_zero; i < zero_methods.size(); ++i) {
      progress.begin(case_label(unit, *zero_methods[i], 0));
      write(case_info(unit, *zero_methods[i], 0), Disposition::not_run, std::nullopt, reason);
    }
    for (std::size_t b = first_batch; b < batches.size(); ++b) {
      for (std::size_t i = (b == first_batch ? first_gemm : 0); i < gemm_methods.size(); ++i) {
        progress.begin(case_label(unit, *gemm_methods[i], batches[b]));
        write(case_info(unit, *gemm_methods[i], batches[b]), Disposition::not_run, std::nullopt,
              reason);
      }
    }
  };
  const auto interrupted_reason = [] { return fmt::format("interrupted ({}) before this case ran", interrupt_signal_name()); };

  for (const UnitSpec& spec : e.units) {
    const std::string uname = unit_name(spec);
    if (interrupt_requested()) {
      skip_rest(uname, 0, 0, 0, interrupted_reason());
      continue;
    }

    // Materialize and encode once per unit; a unit that cannot be had becomes not_run rows.
    MaterializedUnit mu;
    std::vector<EncodedUnit> encodings;
    std::map<std::string, std::string> encode_errors;  // layout name -> why encoding failed
    try {
      progress.note(fmt::format("{}: {} unit {} (row fraction {})",
                                spec.kind == UnitSpec::Kind::checkpoint ? "reading" : "generating",
                                e.name, uname, row_fraction));
      mu = materialize_unit(spec, e, row_fraction, options.threads);
      for (const Layout& l : layouts) {
        if (mu.df11 && l == Layout::df11()) {
          encodings.push_back(*mu.df11);
          continue;
        }
        progress.note(fmt::format("encoding {} ({} weights) in layout {}", uname,
                                  mu.unit.n_elements(), l.name()));
        try {
          encodings.push_back(encode(mu.unit.view(), l, options.threads));
        } catch (const Error& err) {
          encode_errors[l.name()] = err.what();
        }
      }
      mu.df11.reset();
      backend.load_unit(mu.unit, encodings, e.seed);
    } catch (const std::exception& err) {
      skip_rest(uname, 0, 0, 0, fmt::format("unit could not be prepared: {}", err.what()));
      continue;
    }

    // Whether a method can run on this unit at all: backend support, an encoding it can read.
    auto unit_status = [&](const MethodCase& m) -> dec::Status {
      if (const std::optional<Layout> layout = m.layout()) {
        const Layout& l = *layout;
        if (auto it = encode_errors.find(l.name()); it != encode_errors.end()) {
          return dec::Status::no(
              fmt::format("encoding in layout {} failed: {}", l.name(), it->second));
        }
        if (m.variant) {
          for (const auto& enc : encodings) {
            if (enc.layout == l) {
              if (dec::Status st = m.variant->can_implement(enc); !st.ok) return st;
            }
          }
        }
      }
      return backend.supports(m);
    };

    // Verifies, then times, then writes one case. `reference` are the pieces the output must
    // equal, `what` names them and `verified` is what a pass records (verified_against). A
    // GEMM method whose GEMMs are not bf16's (df11-chunked) that differs from bf16 passes when
    // it equals the BF16 weights through its own GEMMs (Backend::same_gemm_reference); the
    // reason then keeps the difference from whole-matrix bf16.
    auto run_case = [&](const MethodCase& m, int batch,
                        const std::vector<std::span<const uint16_t>>* reference,
                        const std::vector<std::string>& piece_names, const std::string& what,
                        const std::string& verified, const std::string& no_reference) {
      const CaseInfo ci = case_info(uname, m, batch);
      progress.begin(case_label(uname, m, batch));
      if (interrupt_requested())
        return write(ci, Disposition::not_run, std::nullopt, interrupted_reason());
      if (const dec::Status st = unit_status(m); !st.ok) {
        return write(ci, Disposition::not_supported, std::nullopt, st.reason);
      }
      if (const dec::Status st = backend.supports_batch(m, batch); !st.ok) {
        return write(ci, Disposition::not_supported, std::nullopt, st.reason);
      }
      if (!reference) return write(ci, Disposition::not_run, std::nullopt, no_reference);
      using Clock = std::chrono::steady_clock;
      const auto t_verify = Clock::now();
      std::vector<uint16_t> out;
      std::string diff;
      try {
        // Batch 0 (decode, copy): compared where the output is, when the backend can.
        std::optional<WeightsComparison> cmp;
        if (batch == 0) cmp = backend.run_and_compare_with_weights(m);
        if (cmp) {
          diff = comparison_difference(*cmp, *reference, piece_names, what);
        } else {
          out = backend.run_for_output(m, batch);
          diff = first_difference(out, *reference, piece_names, what);
        }
      } catch (const std::exception& err) {
        return write(ci, Disposition::incorrect, std::nullopt,
                     fmt::format("failed while verifying: {}", err.what()));
      }
      std::string verified_against = verified, note;
      if (!diff.empty()) {
        std::optional<std::vector<uint16_t>> same;
        if (batch > 0 && m.kind != "bf16") {
          try {
            same = backend.same_gemm_reference(m, batch);
          } catch (const std::exception& err) {
            return write(ci, Disposition::incorrect, std::nullopt,
                         fmt::format("{}; and its same-GEMM reference failed: {}", diff, err.what()));
          }
        }
        if (!same) return write(ci, Disposition::incorrect, std::nullopt, diff);
        const std::vector<std::span<const uint16_t>> pieces{std::span<const uint16_t>(*same)};
        if (const std::string diff2 =
                first_difference(out, pieces, {}, "the BF16 weights through the same GEMMs");
            !diff2.empty()) {
          return write(ci, Disposition::incorrect, std::nullopt, diff + "; " + diff2);
        }
        verified_against = "bf16-same-gemms";
        note = "bit-identical to the BF16 weights through the same GEMMs, which round differently "
               "from the whole-matrix bf16 GEMMs: " + diff;
      }
      out = {};
      const auto t_time = Clock::now();
      if (interrupt_requested())
        return write(ci, Disposition::not_run, std::nullopt, interrupted_reason());
      Samples samples;
      try {
        samples = backend.time(m, batch, meas);
      } catch (const OutputMismatch& err) {
        return write(ci, Disposition::incorrect, std::nullopt, err.what());
      } catch (const std::exception& err) {
        return write(ci, Disposition::not_run, std::nullopt,
                     fmt::format("failed while timing: {}", err.what()));
      }
      if (interrupt_requested()) {
        return write(ci, Disposition::not_run, std::nullopt,
                     fmt::format("interrupted ({}) while timing this case", interrupt_signal_name()));
      }
      if (samples.total_s.empty())
        return write(ci, Disposition::not_run, std::nullopt, "no sample was taken");
      const auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
      double sampled = 0;
      for (const double t : samples.total_s) sampled += t;
      phase_times = fmt::format("verify {:.2f} s, time {:.2f} s ({} samples, {:.2f} s of them)", secs(t_time - t_verify),
                                secs(Clock::now() - t_time), samples.total_s.size(), sampled);
      write(ci, Disposition::passed, summarize(samples), note, verified_against);
    };

    // decode and copy: once per unit, against the unit's own BF16 weights.
    std::vector<std::span<const uint16_t>> weights;
    std::vector<std::string> weight_names;
    for (const auto& t : mu.unit.tensors) {
      weights.emplace_back(t.data);
      weight_names.push_back(t.name);
    }
    std::size_t zi = 0;
    for (; zi < zero_methods.size() && !interrupt_requested(); ++zi) {
      run_case(*zero_methods[zi], 0, &weights, weight_names, "the unit's BF16 weights", "weights", "");
    }
    if (interrupt_requested()) {
      skip_rest(uname, zi, 0, 0, interrupted_reason());
      backend.unload_unit();
      continue;
    }

    // GEMM methods: per batch, against bf16's output at that batch.
    const MethodCase bf16{"bf16", nullptr, ""};
    bool stopped = false;
    for (std::size_t b = 0; b < batches.size() && !stopped; ++b) {
      const int batch = batches[b];
      std::vector<uint16_t> ref;
      std::string no_reference;
      bool have_ref = false;
      // Interrupted during the last batch's cases: stop before this batch's reference (a whole
      // forward pass, tens of seconds on the cpu at large batches, during which `timeout -k`
      // could kill the run before it writes the rest as not_run).
      if (!gemm_methods.empty() && interrupt_requested()) {
        skip_rest(uname, zero_methods.size(), b, 0, interrupted_reason());
        break;
      }
      if (!gemm_methods.empty()) {
        if (const dec::Status st = backend.supports(bf16); !st.ok) {
          no_reference = fmt::format("no bf16 reference to verify against: {}", st.reason);
        } else {
          try {
            progress.begin(fmt::format("{} bf16 reference b={}", uname, batch));
            ref = backend.run_for_output(bf16, batch);
            have_ref = true;
          } catch (const std::exception& err) {
            no_reference = fmt::format("the bf16 reference failed: {}", err.what());
          }
        }
      }
      const std::vector<std::span<const uint16_t>> ref_pieces{std::span<const uint16_t>(ref)};
      for (std::size_t i = 0; i < gemm_methods.size(); ++i) {
        if (interrupt_requested()) {
          skip_rest(uname, zero_methods.size(), b, i, interrupted_reason());
          stopped = true;
          break;
        }
        // For bf16 itself the check is that a second run gives the same bits: a nondeterministic
        // GEMM would make every other comparison meaningless.
        const bool is_bf16 = gemm_methods[i]->kind == "bf16";
        run_case(*gemm_methods[i], batch, have_ref ? &ref_pieces : nullptr, {},
                 is_bf16 ? "an earlier bf16 run (nondeterministic GEMM?)" : "bf16",
                 is_bf16 ? "bf16-rerun" : "bf16", no_reference);
      }
    }
    backend.unload_unit();
  }
  progress.finish();
  report.lines = writer.lines_written();
  report.interrupted = interrupt_requested();
  report.departures = backend.departures();
  return report;
}

}  // namespace df11::sweep
