// The cpu sweep backend: Eigen GEMMs of BF16 weights (resident, or decoded from DF11 by the CPU
// decoder), the CPU decoder alone, and memcpy, timed by wall clock. Runs where no GPU is.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <Eigen/Core>

#include "codec/bf16.hpp"
#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "sweep/backend.hpp"
#include "sweep/results.hpp"
#include "sweep/sweep.hpp"

namespace df11::sweep {
namespace {

using Clock = std::chrono::steady_clock;
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Exact: a BF16 pattern is the top half of the float with the same value.
inline float bf16_bits_to_float(uint16_t w) {
  return std::bit_cast<float>(static_cast<uint32_t>(w) << 16);
}

// splitmix64: a tiny, portable generator, so the activations are the same on every platform
// (std:: distributions are not specified bit for bit).
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "1024K" / "32M" (sysfs cache sizes) -> bytes; 0 when unreadable.
uint64_t parse_cache_size(const std::string& s) {
  if (s.empty()) return 0;
  std::size_t pos = 0;
  uint64_t v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    return 0;
  }
  if (pos < s.size()) {
    if (s[pos] == 'K')
      v <<= 10;
    else if (s[pos] == 'M')
      v <<= 20;
    else if (s[pos] == 'G')
      v <<= 30;
  }
  return v;
}

// Size of the largest data cache at `level` of cpu0 (0: not found).
uint64_t cache_bytes(int level) {
  uint64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/", i);
    const std::string lvl = read_first_line(dir + "level");
    if (lvl.empty()) continue;
    const std::string type = read_first_line(dir + "type");
    if (type == "Instruction") continue;
    if (std::atoi(lvl.c_str()) == level)
      best = std::max(best, parse_cache_size(read_first_line(dir + "size")));
  }
  if (best == 0) {
    const long v = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
    if (v > 0) best = static_cast<uint64_t>(v);
  }
  return best;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return "unknown CPU";
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : threads_(resolve_threads(n_threads)) {
    // Eigen's GEMMs run single-threaded inside the backend's own tasks (see gemm_all).
    Eigen::setNbThreads(1);
    l2_bytes_ = cache_bytes(2);
    // Evicting the largest cache is what makes a CPU sample cold (weights would otherwise sit
    // in L3 for small units); 32 MiB when sysfs says nothing.
    flush_bytes_ = std::max<uint64_t>({cache_bytes(3), l2_bytes_, uint64_t{32} << 20});
  }

  [[nodiscard]] std::string kind() const override { return "cpu"; }

  [[nodiscard]] nlohmann::json device_info() const override {
    const std::string model = cpu_model();
    return nlohmann::json{
        {"backend", "cpu"},
        {"name", model},
        {"sm_version", nullptr},
        {"sm_count", nullptr},
        {"sm_clock_mhz", nullptr},
        {"memory_bandwidth_gbps", nullptr},
        {"l2_bytes", l2_bytes_ ? nlohmann::json(l2_bytes_) : nlohmann::json()},
        {"cpu_model", model},
        {"cpu_cores", static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))}};
  }

  void load_unit(const Unit& unit, const std::vector<EncodedUnit>& encodings,
                 uint64_t seed) override {
    unload_unit();
    unit_ = &unit;
    seed_ = seed;
    // The CPU decoder reads any layout; the official one is what the sweep encodes for it.
    for (const auto& e : encodings) {
      if (e.layout == Layout::df11()) enc_ = &e;
    }
    if (!enc_ && !encodings.empty()) enc_ = &encodings.front();
    n_elements_ = 0;
    gemm_ok_ = dec::Status::yes();
    for (const auto& t : unit.tensors) {
      if (t.shape.size() != 2) {
        gemm_ok_ = dec::Status::no(
            fmt::format("tensor {} of unit {} has {} dimensions; GEMM methods need [out, in]",
                        t.name, unit.name, t.shape.size()));
      }
      n_elements_ += t.data.size();
    }
    tasks_.clear();
    out_offset_.clear();
    std::size_t out_rows = 0, max_cols = 0;
    if (gemm_ok_.ok) {
      for (std::size_t m = 0; m < unit.tensors.size(); ++m) {
        const int64_t rows = unit.tensors[m].shape[0];
        for (int64_t r = 0; r < rows; r += kRowsPerTask)
          tasks_.push_back({m, r, std::min(rows, r + kRowsPerTask)});
        out_offset_.push_back(out_rows);
        out_rows += static_cast<std::size_t>(rows);
        max_cols = std::max(max_cols, static_cast<std::size_t>(unit.tensors[m].shape[1]));
      }
    }
    wbuf_.assign(static_cast<std::size_t>(threads_), std::vector<float>(kRowsPerTask * max_cols));
    ybuf_.assign(static_cast<std::size_t>(threads_), {});
  }

  void unload_unit() override {
    unit_ = nullptr;
    enc_ = nullptr;
    act_batch_ = -1;
    acts_.clear();
    tasks_.clear();
    out_offset_.clear();
    wbuf_.clear();
    ybuf_.clear();
    decoded_.clear();
    decoded_.shrink_to_fit();
    copied_.clear();
    copied_.shrink_to_fit();
    out_.clear();
  }

  [[nodiscard]] dec::Status supports(const MethodCase& m) const override {
    if (!unit_) return dec::Status::no("no unit loaded");
    if (m.kind == "bf16") return gemm_ok_;
    if (m.kind == "copy") return dec::Status::yes();
    if (m.kind == "cpu-offload" || m.kind == "cpu-offload-sync") {
      return dec::Status::no(
          "offload streams weights from host to GPU memory; the cpu backend has no GPU");
    }
    if (m.sliced()) {
      return dec::Status::no(m.kind + " decodes L2-sized slices between GEMMs on the GPU; not on the cpu backend");
    }
    if (m.kind == "df11-overlap") {
      return dec::Status::no("df11-overlap decodes on a second CUDA stream beside the GEMMs; not on the cpu backend");
    }
    if (m.kind == "df11-rev") {
      return dec::Status::no("df11-rev orders a GPU decoder's units for the GPU's L2; not on the cpu backend");
    }
    if (m.fused()) {
      return dec::Status::no(m.kind + " is a GPU kernel (fused decode + GEMM); not on the cpu backend");
    }
    if (m.kind == "df11" || m.kind == "decode") {
      if (m.variant != nullptr || m.variant_name != "cpu") {
        return dec::Status::no(
            fmt::format("decoder variant '{}' runs on the cuda backend; the cpu backend has "
                        "only the CPU decoder (variant 'cpu')",
                        m.variant_name));
      }
      if (!enc_) return dec::Status::no("the unit has no encoding for the CPU decoder");
      if (m.kind == "df11") return gemm_ok_;
      return dec::Status::yes();
    }
    return dec::Status::no(fmt::format("unknown method kind '{}'", m.kind));
  }

  [[nodiscard]] std::vector<uint16_t> run_for_output(const MethodCase& m, int batch) override {
    require(m, batch);
    Phases ph;
    // The output buffers are poisoned first (as on cuda): they still hold the last run's output,
    // often bf16's reference itself, which an element the method failed to write would match.
    struct Poisoning {  // off again however run_once ends (a throw would leave every timed run filling)
      bool& on;
      explicit Poisoning(bool& b) : on(b) { on = true; }
      ~Poisoning() { on = false; }
    } poisoning(poison_);
    const std::span<const uint16_t> out = run_once(m, batch, ph);
    return {out.begin(), out.end()};
  }

  [[nodiscard]] Samples time(const MethodCase& m, int batch, const Measurement& meas) override {
    require(m, batch);
    Samples s;
    s.bytes = bytes_moved(m, batch);
    Phases ph;
    for (int i = 0; i < meas.warmup && !interrupt_requested(); ++i) (void)run_once(m, batch, ph);
    const bool flush = meas.l2_policy == "flush";
    StopRule stop(meas);
    while (!interrupt_requested()) {
      if (flush) flush_caches();
      const auto t0 = Clock::now();
      (void)run_once(m, batch, ph);
      const double t = seconds_since(t0);
      s.total_s.push_back(t);
      if (m.kind == "df11") {
        s.decode_s.push_back(ph.decode_s);
        s.gemm_s.push_back(ph.gemm_s);
      } else if (m.kind == "bf16") {
        s.gemm_s.push_back(t);
      } else if (m.kind == "decode") {
        s.decode_s.push_back(t);
      } else if (m.kind == "copy") {
        s.copy_s.push_back(t);
      }
      if (const auto why = stop.after(s.total_s)) {
        s.stopped_by = *why;
        break;
      }
    }
    return s;
  }

 private:
  struct Phases {
    double decode_s = 0, gemm_s = 0;
  };

  void require(const MethodCase& m, int batch) const {
    const dec::Status st = supports(m);
    if (!st.ok) throw Error(fmt::format("cpu backend: {} cannot run: {}", m.label(), st.reason));
    if (m.needs_gemm() ? batch <= 0 : batch != 0) {
      throw Error(
          fmt::format("cpu backend: {} at batch {}: {}", m.label(), batch,
                      m.needs_gemm() ? "batch must be > 0" : "decode and copy run at batch 0"));
    }
  }

  // Bytes a case must move: the weights as the method stores them (BF16, or DF11-encoded), the
  // activations read and the outputs written (both BF16); decode: encoded in + BF16 out; copy:
  // BF16 in + out.
  uint64_t bytes_moved(const MethodCase& m, int batch) const {
    const uint64_t bf16 = 2 * n_elements_;
    if (m.kind == "copy") return 2 * bf16;
    if (m.kind == "decode") return enc_->stored_bytes() + bf16;
    uint64_t io = 0;
    for (const auto& t : unit_->tensors) {
      io += 2 * static_cast<uint64_t>(batch) * static_cast<uint64_t>(t.shape[0] + t.shape[1]);
    }
    // df11: the encoded weights read, the BF16 decode written and read back (as on CUDA).
    return (m.kind == "df11" ? enc_->stored_bytes() + 2 * bf16 : bf16) + io;
  }

  // X_m [batch, in_m] for every matrix: BF16 values (held as float, exactly) drawn from the
  // seed, the matrix index and the batch, so every method sees the same activations.
  void ensure_activations(int batch) {
    if (act_batch_ == batch) return;
    acts_.clear();
    for (std::size_t m = 0; m < unit_->tensors.size(); ++m) {
      const int64_t in = unit_->tensors[m].shape[1];
      std::vector<float> x(static_cast<std::size_t>(batch) * static_cast<std::size_t>(in));
      uint64_t state = seed_ ^ (0xA5A5'0000'0000'0000ull + (static_cast<uint64_t>(m) << 32) +
                                static_cast<uint64_t>(batch));
      for (float& v : x) {
        // Uniform in [-1, 1), rounded to BF16 like a model's activations.
        const double u = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
        v = bf16_bits_to_float(float_to_bf16(static_cast<float>(u)));
      }
      acts_.push_back(std::move(x));
    }
    act_batch_ = batch;
  }

  // Y_m = X_m W_m^T for every matrix, W_m read from `weights` (BF16, the unit's tensors). The
  // work is cut into tasks of kRowsPerTask rows of one W_m; a task converts its rows to float in
  // its worker's reused buffer and multiplies them with a single-threaded Eigen GEMM. So:
  //  - the BF16 -> float conversion is part of every GEMM method's time (Eigen has no fast BF16
  //    GEMM with float accumulation); bf16 and df11 both pay it, so their difference stays the
  //    decode;
  //  - each output element comes from the same single-threaded GEMM of the same rows whatever the
  //    thread count, so outputs are bit-identical across methods and --threads values;
  //  - there is no barrier inside a GEMM. Eigen's own OpenMP GEMM spin-waits between its blocks:
  //    on this project's shared 2-core machine under other load it took 2.1 s for a batch-64
  //    pass that takes ~60 ms unloaded; here a descheduled worker just takes fewer tasks.
  void gemm_all(const std::function<std::span<const uint16_t>(std::size_t)>& weights, int batch) {
    ensure_activations(batch);
    const std::size_t nb = static_cast<std::size_t>(batch);
    std::size_t out_total = 0;
    for (const auto& t : unit_->tensors) out_total += nb * static_cast<std::size_t>(t.shape[0]);
    sized(out_, out_total);
    for (auto& y : ybuf_) y.resize(nb * kRowsPerTask);
    std::atomic<std::size_t> next{0};
    parallel_for(wbuf_.size(), static_cast<int>(wbuf_.size()), [&](std::size_t worker) {
      std::vector<float>& wb = wbuf_[worker];
      std::vector<float>& yb = ybuf_[worker];
      for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < tasks_.size();) {
        const Task& task = tasks_[i];
        const auto& t = unit_->tensors[task.matrix];
        const int64_t rows = t.shape[0], cols = t.shape[1], nr = task.row_end - task.row_begin;
        const uint16_t* src = weights(task.matrix).data() + task.row_begin * cols;
        const std::size_t n = static_cast<std::size_t>(nr * cols);
        for (std::size_t k = 0; k < n; ++k) wb[k] = bf16_bits_to_float(src[k]);
        Eigen::Map<const RowMajor> W(wb.data(), nr, cols);
        Eigen::Map<const RowMajor> X(acts_[task.matrix].data(), batch, cols);
        Eigen::Map<RowMajor> Y(yb.data(), batch, nr);
        Y.noalias() = X * W.transpose();
        uint16_t* out = out_.data() + out_offset_[task.matrix] * nb;
        for (int64_t b = 0; b < batch; ++b) {
          for (int64_t j = 0; j < nr; ++j) {
            out[b * rows + task.row_begin + j] =
                float_to_bf16(yb[static_cast<std::size_t>(b * nr + j)]);
          }
        }
      }
    });
  }

  // An output buffer of n words; all 0xFFFF (a NaN no method writes here) while poison_.
  void sized(std::vector<uint16_t>& v, std::size_t n) const {
    v.resize(n);
    if (poison_) std::fill(v.begin(), v.end(), uint16_t{0xFFFF});
  }

  std::span<const uint16_t> tensor_slice(const std::vector<uint16_t>& flat, std::size_t m) const {
    std::size_t off = 0;
    for (std::size_t i = 0; i < m; ++i) off += unit_->tensors[i].data.size();
    return std::span<const uint16_t>(flat).subspan(off, unit_->tensors[m].data.size());
  }

  std::span<const uint16_t> run_once(const MethodCase& m, int batch, Phases& ph) {
    if (m.kind == "bf16") {
      gemm_all([&](std::size_t i) { return std::span<const uint16_t>(unit_->tensors[i].data); },
               batch);
      return out_;
    }
    if (m.kind == "copy") {
      sized(copied_, n_elements_);
      std::size_t off = 0;
      for (const auto& t : unit_->tensors) {
        constexpr std::size_t kChunk = std::size_t{1} << 20;
        const std::size_t n = t.data.size();
        parallel_for((n + kChunk - 1) / kChunk, threads_, [&](std::size_t c) {
          const std::size_t b = c * kChunk, e = std::min(n, b + kChunk);
          std::memcpy(copied_.data() + off + b, t.data.data() + b, (e - b) * sizeof(uint16_t));
        });
        off += n;
      }
      return copied_;
    }
    // df11 and decode
    sized(decoded_, n_elements_);
    const auto t0 = Clock::now();
    decode_cpu(*enc_, decoded_, threads_);
    ph.decode_s = seconds_since(t0);
    if (m.kind == "decode") return decoded_;
    const auto t1 = Clock::now();
    gemm_all([&](std::size_t i) { return tensor_slice(decoded_, i); }, batch);
    ph.gemm_s = seconds_since(t1);
    return out_;
  }

  void flush_caches() {
    flush_.resize(flush_bytes_);
    std::memset(flush_.data(), static_cast<int>(++flush_round_ & 0xFF), flush_.size());
    // Keeps the stores from being dropped as dead.
    volatile unsigned char sink = flush_[flush_.size() / 2];
    (void)sink;
  }

  int threads_;
  uint64_t l2_bytes_ = 0;
  uint64_t flush_bytes_ = 0;
  const Unit* unit_ = nullptr;
  const EncodedUnit* enc_ = nullptr;
  uint64_t seed_ = 0;
  uint64_t n_elements_ = 0;
  dec::Status gemm_ok_;
  int act_batch_ = -1;
  std::vector<std::vector<float>> acts_;
  struct Task {
    std::size_t matrix;
    int64_t row_begin, row_end;
  };
  // Rows of W per GEMM task: fixed (not derived from the thread count) so results are too; 64
  // rows of the widest matrix (14336 floats) keep a worker's buffer at 3.7 MB.
  static constexpr int64_t kRowsPerTask = 64;
  std::vector<Task> tasks_;
  std::vector<std::size_t> out_offset_;  // first output row of each matrix (times batch: element)
  std::vector<std::vector<float>> wbuf_, ybuf_;  // per worker: converted W rows, Y block
  std::vector<uint16_t> decoded_, copied_, out_;
  bool poison_ = false;  // run_for_output: outputs start as 0xFFFF (sized)
  std::vector<unsigned char> flush_;
  unsigned flush_round_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace df11::sweep
