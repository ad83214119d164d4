// JSON Lines results (schema 1, docs/RESULTS.md): statistics, line objects, the line writer.
#include "sweep/results.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "datasets/json_io.hpp"
#include "sweep/build_info.hpp"

#if defined(DF11_HAVE_CUDA) && DF11_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace df11::sweep {

double quantile(std::vector<double> v, double q) {
  if (v.empty()) throw Error("quantile of no values");
  if (!(q >= 0.0 && q <= 1.0)) throw Error(fmt::format("quantile {} outside [0, 1]", q));
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * frac;
}

double median(std::vector<double> v) {
  return quantile(std::move(v), 0.5);
}

Spread spread(std::vector<double> v) {
  if (v.empty()) throw Error("spread of no values");
  std::sort(v.begin(), v.end());
  return Spread{v.front(), quantile(v, 0.25), quantile(v, 0.5), quantile(v, 0.75), v.back()};
}

namespace {
// The q quantile of v (numpy's linear interpolation) by selection; reorders v.
double select_quantile(std::vector<double>& v, double q) {
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const auto at = v.begin() + static_cast<std::ptrdiff_t>(lo);
  std::nth_element(v.begin(), at, v.end());
  const double a = *at;
  if (lo + 1 >= v.size()) return a;
  const double b = *std::min_element(at + 1, v.end());  // the next order statistic
  return a + (b - a) * (pos - static_cast<double>(lo));
}
}  // namespace

double relative_iqr(std::vector<double> v) {
  if (v.size() < 2) return std::numeric_limits<double>::infinity();
  const double q1 = select_quantile(v, 0.25), med = select_quantile(v, 0.5), q3 = select_quantile(v, 0.75);
  return med > 0 ? (q3 - q1) / med : std::numeric_limits<double>::infinity();
}

std::optional<std::string> StopRule::after(const std::vector<double>& samples_s) {
  sum_ += samples_s.back();
  const std::size_t n = samples_s.size();
  if (n >= static_cast<std::size_t>(m_.max_samples)) return "max_samples";
  if (sum_ >= m_.max_time_s) return "max_time";
  if (n < static_cast<std::size_t>(m_.min_samples) || sum_ < m_.min_time_s || n < next_check_) return std::nullopt;
  next_check_ = n + std::max<std::size_t>(1, n / 64);
  if (relative_iqr(samples_s) <= m_.noise_target) return "converged";
  return std::nullopt;
}

std::optional<std::string> stop_reason(const Measurement& m, const std::vector<double>& samples_s) {
  if (samples_s.empty()) return std::nullopt;
  StopRule rule(m);
  std::optional<std::string> why;
  std::vector<double> so_far;
  for (const double t : samples_s) {
    so_far.push_back(t);
    why = rule.after(so_far);
  }
  return why;
}

Summary summarize(const Samples& s) {
  if (s.total_s.empty()) throw Error("a passed case needs at least one sample");
  const Spread sp = spread(s.total_s);
  Summary out;
  out.samples = static_cast<int>(s.total_s.size());
  out.median_s = sp.median;
  out.min_s = sp.min;
  out.q1_s = sp.q1;
  out.q3_s = sp.q3;
  if (!s.decode_s.empty()) out.decode_s = median(s.decode_s);
  if (!s.gemm_s.empty()) out.gemm_s = median(s.gemm_s);
  if (!s.copy_s.empty()) out.copy_s = median(s.copy_s);
  out.bytes = s.bytes;
  if (s.bytes > 0 && sp.median > 0) out.gbps = static_cast<double>(s.bytes) / sp.median / 1e9;
  out.cuda_graph = s.cuda_graph;
  out.stopped_by = s.stopped_by;
  if (!s.sm_clock_mhz.empty()) {
    out.sm_clock_min_mhz = *std::min_element(s.sm_clock_mhz.begin(), s.sm_clock_mhz.end());
    out.sm_clock_median_mhz = median(s.sm_clock_mhz);
  }
  return out;
}

std::string utc_now_iso8601() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

Line optional_number(const std::optional<double>& v) {
  return v ? Line(*v) : Line();
}

#if defined(DF11_HAVE_CUDA) && DF11_HAVE_CUDA
// 13000 -> "13.0" (CUDA encodes versions as 1000 * major + 10 * minor).
Line cuda_version(int v) {
  if (v <= 0) return nullptr;
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}
#endif

}  // namespace

Line meta_json(const std::vector<std::string>& argv, const std::string& backend_kind,
               const std::string& start_time) {
  Line runtime = nullptr, driver = nullptr;
#if defined(DF11_HAVE_CUDA) && DF11_HAVE_CUDA
  // Versions describe the software the GPU results came from; a cpu run uses none of it.
  if (backend_kind == "cuda") {
    int v = 0;
    if (cudaRuntimeGetVersion(&v) == cudaSuccess) runtime = cuda_version(v);
    v = 0;
    if (cudaDriverGetVersion(&v) == cudaSuccess) driver = cuda_version(v);
  }
#else
  (void)backend_kind;
#endif
  Line j;
  j["git_sha"] = build::git_sha;
  j["git_dirty"] = build::git_dirty;
  j["argv"] = argv;
  j["compiler"] = build::compiler;
  j["cuda_runtime"] = runtime;
  j["cuda_driver"] = driver;
  j["build_type"] = build::build_type;
  j["start_time"] = start_time;
  return j;
}

Line device_json(const nlohmann::json& device) {
  static const char* const kOrder[] = {"backend",  "name",         "sm_version",
                                       "sm_count", "sm_clock_mhz", "memory_bandwidth_gbps",
                                       "l2_bytes", "cpu_model",    "cpu_cores"};
  Line j = Line::object();
  for (const char* k : kOrder) j[k] = device.contains(k) ? Line(device.at(k)) : Line();
  for (const auto& [k, v] : device.items()) {
    if (!j.contains(k)) j[k] = v;
  }
  return j;
}

Line case_json(const CaseInfo& c) {
  Line j;
  j["experiment"] = c.experiment;
  j["unit"] = c.unit;
  j["method"] = c.method;
  j["variant"] = c.variant ? Line(*c.variant) : Line();
  j["chunk_bytes"] = c.chunk_bytes ? Line(*c.chunk_bytes) : Line();
  j["batch"] = c.batch;
  j["seed"] = c.seed;
  return j;
}

Line summary_json(const Summary& s) {
  return Line{{"samples", s.samples},
              {"median_s", s.median_s},
              {"min_s", s.min_s},
              {"q1_s", s.q1_s},
              {"q3_s", s.q3_s},
              {"decode_s", optional_number(s.decode_s)},
              {"gemm_s", optional_number(s.gemm_s)},
              {"copy_s", optional_number(s.copy_s)},
              {"bytes", s.bytes},
              {"gbps", optional_number(s.gbps)},
              {"cuda_graph", s.cuda_graph ? Line(*s.cuda_graph) : Line()},
              {"stopped_by", s.stopped_by.empty() ? Line() : Line(s.stopped_by)},
              {"sm_clock_mhz", s.sm_clock_min_mhz ? Line{{"min", *s.sm_clock_min_mhz},
                                                         {"median", *s.sm_clock_median_mhz}}
                                                  : Line()}};
}

Line result_line(const Line& meta, const Line& device, const CaseInfo& c, Disposition d,
                 const std::optional<Summary>& summary, const std::string& reason,
                 const std::optional<std::string>& verified_against) {
  Line j;
  j["schema_version"] = kResultsSchemaVersion;
  j["meta"] = meta;
  j["device"] = device;
  j["case"] = case_json(c);
  j["summary"] = (d == Disposition::passed && summary) ? summary_json(*summary) : Line();
  j["disposition"] = to_string(d);
  j["reason"] = reason;
  j["verified_against"] = (d == Disposition::passed && verified_against) ? Line(*verified_against) : Line();
  return j;
}

ResultsWriter::ResultsWriter(const std::filesystem::path& path) : path_(path) {
  // O_EXCL: results of an earlier run are never overwritten or mixed with this one.
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    if (err == EEXIST)
      throw Error(fmt::format("{}: already exists; choose another run directory", path.string()));
    throw Error(fmt::format("{}: cannot create: {}", path.string(), std::strerror(err)));
  }
}

ResultsWriter::~ResultsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void ResultsWriter::write(const Line& line) {
  // error_handler replace: a stray invalid UTF-8 byte (an odd tensor name) must not lose a line.
  const std::string text = line.dump(-1, ' ', false, Line::error_handler_t::replace) + "\n";
  if (const int err = write_fully(fd_, text.data(), text.size()); err != 0) {
    // A full disk or a file-size limit may have taken part of the line: cut the file back to
    // its whole lines, so that it stays valid JSONL (and the offset with it, for a later line).
    const bool cut = ::ftruncate(fd_, static_cast<off_t>(bytes_)) == 0 &&
                     ::lseek(fd_, static_cast<off_t>(bytes_), SEEK_SET) == static_cast<off_t>(bytes_);
    throw Error(fmt::format("{}: write failed: {}; {}", path_.string(), std::strerror(err),
                            cut ? fmt::format("the file keeps its {} whole lines", lines_)
                                : fmt::format("its last line may be cut short (truncating failed: {})",
                                              std::strerror(errno))));
  }
  // fdatasync is not needed for validity (the kernel has the whole line); it would only slow runs.
  ++lines_;
  bytes_ += text.size();
}

}  // namespace df11::sweep
