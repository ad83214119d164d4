// The sweep driver end to end on the cpu backend: experiments/quick_smoke.toml into a temp dir,
// method resolution, verification that catches a wrong bit, interruption, checkpoint units.
#include <catch2/catch.hpp>

#include <csignal>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/temp_dir.hpp"
#include "codec/common.hpp"
#include "common/l2_window.hpp"
#include "decoder.hpp"
#include "fused/fused_gemv.hpp"
#include "result_schema.hpp"
#include "datasets/nemo.hpp"
#include "sweep/backend.hpp"
#include "sweep/experiment.hpp"
#include "sweep/slices.hpp"
#include "sweep/sweep.hpp"

namespace fs = std::filesystem;
using namespace df11::sweep;
using json = nlohmann::json;
namespace dec = df11::dec;

namespace {

const fs::path kRoot = fs::path(__FILE__).parent_path() / "../..";

// Under one directory of this process (its PID and a random part: suites running at once on
// one host do not share it), removed when the process exits.
fs::path fresh_dir(const std::string& name) {
  static const df11::test::TempDir root("df11_test_sweep");
  const fs::path p = root / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<json> read_rows(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::vector<json> rows;
  while (std::getline(in, line)) rows.push_back(json::parse(line));  // throws on a partial line
  return rows;
}

// quick_smoke with a measurement short enough for a unit test.
Experiment smoke() {
  Experiment e = parse_experiment_file((kRoot / "experiments/quick_smoke.toml").string());
  e.measurement.warmup = 1;
  e.measurement.min_samples = 2;
  e.measurement.max_samples = 3;
  e.measurement.min_time_s = 0;
  e.measurement.max_time_s = 0.05;
  e.measurement.l2_policy = "none";
  return e;
}

SweepOptions options_for(const fs::path& dir) {
  SweepOptions o;
  o.results_path = dir / "results.jsonl";
  o.argv = {"test_sweep"};
  o.threads = 2;
  o.progress = false;
  return o;
}

const dec::Registry& registry() { return dec::all_decoders(); }

std::string key_of(const json& r) {
  const json& c = r["case"];
  return c["method"].get<std::string>() +
         (c["variant"].is_null() ? "" : ":" + c["variant"].get<std::string>()) + "@" +
         std::to_string(c["batch"].get<int>());
}

// Delegates to the cpu backend, optionally flipping one output bit of a method or raising the
// interrupt flag while a method is being timed.
class TamperingBackend final : public Backend {
 public:
  std::string corrupt_kind;    // flip bit 0 of element 5 in this kind's output
  std::string interrupt_kind;  // request_interrupt() when this kind is timed
  std::string mismatch_kind;   // time() of this kind finds its output differ (a graph replay's)
  std::string timing_error_kind;  // time() of this kind fails otherwise
  // This kind acts as if its GEMMs rounded differently from bf16's: its output has bit 0 of
  // element 5 flipped, and its same-GEMM reference is bf16's output with element `ref_flip`
  // flipped (5: the same GEMMs agree, the case passes; another: a real difference).
  std::string regemm_kind;
  std::size_t ref_flip = 5;
  int max_df11_batch = 0;  // > 0: df11 is not supported above this batch
  // Batch-0 methods compared where the output is (run_and_compare_with_weights), as the cuda
  // backend does on the device: compare_flip flips bit 0 of element 5 before the comparison,
  // compare_short reports one element fewer compared than the unit has.
  bool compare_in_place = false, compare_flip = false, compare_short = false;
  int outputs_read_at_zero = 0;  // run_for_output calls at batch 0
  int references_after_interrupt = 0;  // bf16 run_for_output calls with the interrupt already requested

  [[nodiscard]] std::string kind() const override { return inner_->kind(); }
  [[nodiscard]] json device_info() const override { return inner_->device_info(); }
  void load_unit(const df11::Unit& u, const std::vector<df11::EncodedUnit>& enc,
                 uint64_t seed) override {
    inner_->load_unit(u, enc, seed);
    weights_.clear();
    for (const auto& t : u.tensors) weights_.insert(weights_.end(), t.data.begin(), t.data.end());
  }
  [[nodiscard]] dec::Status supports(const MethodCase& m) const override {
    return inner_->supports(m);
  }
  [[nodiscard]] std::vector<uint16_t> run_for_output(const MethodCase& m, int batch) override {
    if (batch == 0) ++outputs_read_at_zero;
    if (m.kind == "bf16" && interrupt_requested()) ++references_after_interrupt;
    auto out = inner_->run_for_output(m, batch);
    if ((m.kind == corrupt_kind || m.kind == regemm_kind) && out.size() > 5) out[5] ^= 1;
    return out;
  }
  [[nodiscard]] std::optional<WeightsComparison> run_and_compare_with_weights(const MethodCase& m) override {
    if (!compare_in_place) return std::nullopt;
    auto out = inner_->run_for_output(m, 0);
    if (compare_flip && out.size() > 5) out[5] ^= 1;
    WeightsComparison c;
    c.elements = std::min(out.size(), weights_.size()) - (compare_short ? 1 : 0);
    for (std::size_t i = 0; i < c.elements; ++i) {
      if (out[i] == weights_[i]) continue;
      if (c.differ++ == 0) {
        c.first = i;
        c.got = out[i];
        c.want = weights_[i];
      }
    }
    return c;
  }
  [[nodiscard]] dec::Status supports_batch(const MethodCase& m, int batch) const override {
    if (m.kind == "df11" && max_df11_batch > 0 && batch > max_df11_batch) return dec::Status::no("batch too large here");
    return dec::Status::yes();
  }
  [[nodiscard]] std::optional<std::vector<uint16_t>> same_gemm_reference(const MethodCase& m, int batch) override {
    if (m.kind != regemm_kind) return std::nullopt;
    auto ref = inner_->run_for_output(MethodCase{"bf16", nullptr, ""}, batch);
    ref.at(ref_flip) ^= 1;
    return ref;
  }
  [[nodiscard]] Samples time(const MethodCase& m, int batch, const Measurement& meas) override {
    if (m.kind == interrupt_kind) request_interrupt();
    if (m.kind == mismatch_kind) throw OutputMismatch(m.label() + ": the replay of its CUDA graph differs");
    if (m.kind == timing_error_kind) throw df11::Error(m.label() + ": out of device memory");
    return inner_->time(m, batch, meas);
  }
  void unload_unit() override { inner_->unload_unit(); }
  [[nodiscard]] std::vector<std::string> departures() const override { return departures_said; }
  std::vector<std::string> departures_said;

 private:
  std::unique_ptr<Backend> inner_ = make_cpu_backend(2);
  std::vector<uint16_t> weights_;  // the loaded unit's, end to end
};

}  // namespace

TEST_CASE("quick_smoke runs end to end on the cpu backend", "[sweep][e2e]") {
  clear_interrupt();
  const fs::path dir = fresh_dir("smoke");
  const Experiment e = smoke();
  auto backend = make_cpu_backend(2);
  const SweepReport r = run_sweep(e, *backend, registry(), options_for(dir));
  CHECK_FALSE(r.interrupted);

  const auto rows = read_rows(dir / "results.jsonl");
  // copy + decode once; bf16, cpu-offload, df11:cpu at each of the 4 batches.
  REQUIRE(rows.size() == 2 + 3 * e.batches.size());
  CHECK(r.lines == rows.size());
  CHECK(r.passed == 2 + 2 * e.batches.size());
  CHECK(r.not_supported == e.batches.size());
  CHECK(r.incorrect == 0);
  std::map<std::string, std::string> disposition;
  for (const json& row : rows) {
    sweep_test::check_line_schema(row);
    CHECK(row["case"]["experiment"] == "quick_smoke");
    CHECK(row["case"]["unit"] == "smoke");
    CHECK(row["case"]["seed"] == 7);
    CHECK(row["device"]["backend"] == "cpu");
    CHECK(row["meta"]["argv"] == json::array({"test_sweep"}));
    disposition[key_of(row)] = row["disposition"];
    if (row["disposition"] == "not_supported")
      CHECK_THAT(row["reason"].get<std::string>(), Catch::Contains("GPU"));
  }
  CHECK(disposition["copy@0"] == "passed");
  CHECK(disposition["decode:cpu@0"] == "passed");
  for (int b : e.batches) {
    INFO("batch " << b);
    CHECK(disposition["bf16@" + std::to_string(b)] == "passed");
    CHECK(disposition["df11:cpu@" + std::to_string(b)] == "passed");
    CHECK(disposition["cpu-offload@" + std::to_string(b)] == "not_supported");
  }
  // Phase times where the cpu backend measures them.
  for (const json& row : rows) {
    if (row["disposition"] != "passed") continue;
    const json& s = row["summary"];
    const std::string m = row["case"]["method"];
    if (m == "df11") {
      CHECK(s["decode_s"].is_number());
      CHECK(s["gemm_s"].is_number());
    }
    if (m == "copy") CHECK(s["copy_s"].is_number());
    CHECK(s["gbps"].is_number());
  }
  // Bytes as docs/RESULTS.md defines them, the same on both backends: df11 reads its encoding
  // (decode's input), writes and reads back the BF16 (decode's output, then bf16's weights), and
  // the same activations as bf16.
  std::map<std::string, uint64_t> bytes;
  for (const json& row : rows)
    if (row["disposition"] == "passed") bytes[key_of(row)] = row["summary"]["bytes"].get<uint64_t>();
  REQUIRE(bytes.contains("decode:cpu@0"));
  for (int b : e.batches) {
    INFO("batch " << b);
    // (Appended, not "..." + std::to_string(b): GCC 12's -Wrestrict false positive.)
    std::string df11_key = "df11:cpu@", bf16_key = "bf16@";
    df11_key += std::to_string(b);
    bf16_key += std::to_string(b);
    CHECK(bytes.at(df11_key) == bytes.at("decode:cpu@0") + bytes.at(bf16_key));
  }
  fs::remove_all(dir);
}

TEST_CASE("an output that differs while timing makes the case incorrect, other timing failures not run",
          "[sweep][e2e]") {
  clear_interrupt();
  const fs::path dir = fresh_dir("mismatch");
  Experiment e = smoke();
  e.batches = {3};
  TamperingBackend backend;
  backend.mismatch_kind = "df11";
  backend.timing_error_kind = "bf16";
  const SweepReport r = run_sweep(e, backend, registry(), options_for(dir));
  CHECK(r.incorrect == 1);
  std::map<std::string, json> by;
  for (const json& row : read_rows(dir / "results.jsonl")) by[key_of(row)] = row;
  REQUIRE(by.contains("df11:cpu@3"));
  CHECK(by["df11:cpu@3"]["disposition"] == "incorrect");
  CHECK_THAT(by["df11:cpu@3"]["reason"].get<std::string>(), Catch::Contains("CUDA graph differs"));
  CHECK(by["bf16@3"]["disposition"] == "not_run");
  CHECK_THAT(by["bf16@3"]["reason"].get<std::string>(), Catch::Contains("failed while timing") &&
                                                           Catch::Contains("out of device memory"));
  fs::remove_all(dir);
}

TEST_CASE("a wrong bit makes a case incorrect, naming the element", "[sweep][e2e]") {
  clear_interrupt();
  const fs::path dir = fresh_dir("corrupt");
  Experiment e = smoke();
  e.batches = {3};
  TamperingBackend backend;
  backend.corrupt_kind = "df11";
  const SweepReport r = run_sweep(e, backend, registry(), options_for(dir));
  CHECK(r.incorrect == 1);
  bool seen = false;
  for (const json& row : read_rows(dir / "results.jsonl")) {
    if (row["case"]["method"] != "df11") continue;
    seen = true;
    CHECK(row["disposition"] == "incorrect");
    CHECK(row["summary"].is_null());
    CHECK_THAT(row["reason"].get<std::string>(),
               Catch::Contains("element 5") && Catch::Contains("bf16"));
  }
  CHECK(seen);

  // The decode output is compared with the unit's weights, tensor by tensor.
  const fs::path dir2 = fresh_dir("corrupt_decode");
  backend.corrupt_kind = "decode";
  const SweepReport r2 = run_sweep(e, backend, registry(), options_for(dir2));
  CHECK(r2.incorrect == 1);
  bool seen_decode = false;
  for (const json& row : read_rows(dir2 / "results.jsonl")) {
    if (row["case"]["method"] == "decode") {
      seen_decode = true;
      CHECK(row["disposition"] == "incorrect");
      CHECK_THAT(row["reason"].get<std::string>(),
                 Catch::Contains("element 5") && Catch::Contains("self_attn.q_proj element 5"));
    }
  }
  CHECK(seen_decode);
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

TEST_CASE("a backend that compares decode outputs where they are: pass, a named difference, a short comparison",
          "[sweep][e2e]") {
  clear_interrupt();
  Experiment e = smoke();
  e.batches = {2};
  TamperingBackend backend;
  backend.compare_in_place = true;
  const fs::path dir = fresh_dir("in_place");
  const SweepReport r = run_sweep(e, backend, registry(), options_for(dir));
  CHECK(r.incorrect == 0);
  CHECK(backend.outputs_read_at_zero == 0);  // copy and decode: nothing read back
  std::map<std::string, json> rows;
  for (const json& row : read_rows(dir / "results.jsonl")) rows[key_of(row)] = row;
  CHECK(rows.at("decode:cpu@0")["disposition"] == "passed");
  CHECK(rows.at("decode:cpu@0")["verified_against"] == "weights");
  CHECK(rows.at("copy@0")["disposition"] == "passed");

  // A difference it reports: incorrect, with the tensor and element named as for a read-back.
  backend.compare_flip = true;
  const fs::path dir2 = fresh_dir("in_place_flip");
  const SweepReport r2 = run_sweep(e, backend, registry(), options_for(dir2));
  CHECK(r2.incorrect == 2);  // copy and decode
  for (const json& row : read_rows(dir2 / "results.jsonl")) {
    if (row["case"]["batch"] != 0) continue;
    CHECK(row["disposition"] == "incorrect");
    CHECK_THAT(row["reason"].get<std::string>(),
               Catch::Contains("self_attn.q_proj element 5") && Catch::Contains("1 of "));
  }

  // A comparison that did not cover the whole unit is never a pass.
  backend.compare_flip = false;
  backend.compare_short = true;
  const fs::path dir3 = fresh_dir("in_place_short");
  const SweepReport r3 = run_sweep(e, backend, registry(), options_for(dir3));
  CHECK(r3.incorrect == 2);
  for (const json& row : read_rows(dir3 / "results.jsonl")) {
    if (row["case"]["batch"] != 0) continue;
    CHECK(row["disposition"] == "incorrect");
    CHECK_THAT(row["reason"].get<std::string>(), Catch::Contains("the backend compared"));
  }
  CHECK(backend.outputs_read_at_zero == 0);
  fs::remove_all(dir);
  fs::remove_all(dir2);
  fs::remove_all(dir3);
}

TEST_CASE("a method with other GEMMs passes against the same GEMMs on BF16 weights, and says so",
          "[sweep][e2e]") {
  clear_interrupt();
  Experiment e = smoke();
  e.batches = {2};
  TamperingBackend backend;
  backend.regemm_kind = "df11";
  const fs::path dir = fresh_dir("regemm");
  const SweepReport r = run_sweep(e, backend, registry(), options_for(dir));
  CHECK(r.incorrect == 0);
  std::map<std::string, json> rows;
  for (const json& row : read_rows(dir / "results.jsonl")) {
    sweep_test::check_line_schema(row);
    rows[key_of(row)] = row;
  }
  const json& d = rows.at("df11:cpu@2");
  CHECK(d["disposition"] == "passed");
  CHECK(d["verified_against"] == "bf16-same-gemms");
  CHECK_THAT(d["reason"].get<std::string>(), Catch::Contains("same GEMMs") && Catch::Contains("element 5"));
  CHECK(rows.at("bf16@2")["verified_against"] == "bf16-rerun");
  CHECK(rows.at("decode:cpu@0")["verified_against"] == "weights");
  CHECK(rows.at("copy@0")["verified_against"] == "weights");
  CHECK(rows.at("cpu-offload@2")["verified_against"].is_null());

  // Its output differs from the same-GEMM reference too: incorrect, both differences named.
  backend.ref_flip = 9;
  const fs::path dir2 = fresh_dir("regemm_bad");
  const SweepReport r2 = run_sweep(e, backend, registry(), options_for(dir2));
  CHECK(r2.incorrect == 1);
  bool seen = false;
  for (const json& row : read_rows(dir2 / "results.jsonl")) {
    if (key_of(row) != "df11:cpu@2") continue;
    seen = true;
    CHECK(row["disposition"] == "incorrect");
    CHECK(row["verified_against"].is_null());
    CHECK_THAT(row["reason"].get<std::string>(),
               Catch::Contains("from bf16 at element 5") && Catch::Contains("same GEMMs at element 5"));
  }
  CHECK(seen);
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

TEST_CASE("a method the backend runs only at some batch sizes is not_supported at the others", "[sweep][e2e]") {
  clear_interrupt();
  Experiment e = smoke();
  e.batches = {1, 4};
  TamperingBackend backend;
  backend.max_df11_batch = 2;
  const fs::path dir = fresh_dir("batch_support");
  (void)run_sweep(e, backend, registry(), options_for(dir));
  std::map<std::string, json> rows;
  for (const json& row : read_rows(dir / "results.jsonl")) rows[key_of(row)] = row;
  CHECK(rows.at("df11:cpu@1")["disposition"] == "passed");
  CHECK(rows.at("df11:cpu@4")["disposition"] == "not_supported");
  CHECK(rows.at("df11:cpu@4")["reason"] == "batch too large here");
  CHECK(rows.at("bf16@4")["disposition"] == "passed");
  fs::remove_all(dir);
}

TEST_CASE("an interrupt stops the sweep between lines and marks the rest not_run", "[sweep][e2e]") {
  clear_interrupt();
  const fs::path dir = fresh_dir("interrupt");
  const Experiment e = smoke();
  TamperingBackend backend;
  backend.interrupt_kind = "df11";  // first df11 case: batch 1, after bf16 and cpu-offload
  const SweepReport r = run_sweep(e, backend, registry(), options_for(dir));
  clear_interrupt();
  CHECK(r.interrupted);
  // df11 is batch 1's last GEMM method: the sweep stops before batch 2's bf16 reference (a whole
  // forward pass) rather than after it.
  CHECK(backend.references_after_interrupt == 0);
  CHECK(r.departures.empty());
  // What a backend says it did not do as its device object promised reaches the report.
  TamperingBackend departing;
  departing.departures_said = {"the window was refused"};
  const SweepReport d = run_sweep(smoke(), departing, registry(), options_for(fresh_dir("departures")));
  CHECK(d.departures == std::vector<std::string>{"the window was refused"});
  const auto rows = read_rows(dir / "results.jsonl");
  // Every planned case has one line, the interrupted ones not_run with the reason.
  REQUIRE(rows.size() == 2 + 3 * e.batches.size());
  CHECK(r.passed == 3);  // copy, decode, bf16 at batch 1
  std::size_t not_run = 0;
  for (const json& row : rows) {
    sweep_test::check_line_schema(row);
    if (row["disposition"] == "not_run") {
      ++not_run;
      CHECK_THAT(row["reason"].get<std::string>(), Catch::Contains("interrupted"));
    }
  }
  CHECK(not_run == r.not_run);
  CHECK(not_run == rows.size() - 4);  // - passed - the cpu-offload at batch 1
  fs::remove_all(dir);
}

TEST_CASE("methods resolve over the backend's decoders, a glob matching nothing is an error",
          "[sweep]") {
  Experiment e = smoke();
  const auto cpu = resolve_methods(e, "cpu", registry());
  std::vector<std::string> labels;
  for (const auto& m : cpu) labels.push_back(m.label());
  CHECK(labels ==
        std::vector<std::string>{"bf16", "cpu-offload", "copy", "df11:cpu", "decode:cpu"});
  CHECK(layouts_needed(cpu) == std::vector<df11::Layout>{df11::Layout::df11()});

  // On cuda the globs expand over the registry (no GPU needed to resolve).
  const auto cuda = resolve_methods(e, "cuda", registry());
  std::size_t df11_cases = 0;
  for (const auto& m : cuda) {
    if (m.kind == "df11") {
      ++df11_cases;
      CHECK(m.variant != nullptr);
      CHECK(m.variant_name == m.variant->name());
    }
  }
  CHECK(df11_cases == registry().all().size());

  e.methods = {"bf16", "df11:no-such-variant*"};
  CHECK_THROWS_WITH(resolve_methods(e, "cuda", registry()),
                    Catch::Contains("quick_smoke.toml") && Catch::Contains("'methods'") &&
                        Catch::Contains("df11:no-such-variant*"));
  e.cpu.methods = std::vector<std::string>{"decode:lut*"};
  CHECK_THROWS_WITH(resolve_methods(e, "cpu", registry()),
                    Catch::Contains("'cpu.methods'") && Catch::Contains("decode:lut*"));
  // Duplicates from overlapping globs collapse.
  e.cpu.methods = std::vector<std::string>{"df11:*", "df11:cpu", "df11:c?u"};
  CHECK(resolve_methods(e, "cpu", registry()).size() == 1);

  // df11-fused reads DF11's layout; df11-fused:<glob> the layouts of its variants (the count
  // layout of multi12.gap5-cnt.*.t256.b16: the one-pass fused decode). On the cpu backend it is
  // one case, which the backend refuses (a GPU kernel).
  e.methods = {"df11-fused", "df11-fused:multi12.gap5-cnt.exp-smem-v16.t256.b16.persist",
               "df11-fused:multi12ng.gap5-fix64.exp-smem-v16.t512.b8.persist"};
  e.cpu.methods.reset();
  const auto fused = resolve_methods(e, "cuda", registry());
  REQUIRE(fused.size() == 3);
  CHECK(fused[0].layout() == df11::Layout::df11());
  // A fix64 variant: DF11's layout, the fused kernels over its units.
  CHECK(fused[2].layout() == df11::Layout::df11());
  CHECK(df11::dec::fused_decode_for(*fused[2].variant) == df11::dec::FusedDecode::fixed);
  CHECK(fused[1].label() == "df11-fused:multi12.gap5-cnt.exp-smem-v16.t256.b16.persist");
  CHECK(fused[1].layout() == df11::dec::fused_spec(df11::dec::FusedDecode::one_pass).layout());
  CHECK(layouts_needed(fused).size() == 2);
  {
    // On the cpu backend a df11-fused glob gives a row per variant it names on cuda (refused
    // there), never the glob itself; a glob naming none is an error, as for other methods.
    Experiment g = e;
    g.methods = {"df11-fused:multi12n.gap5-fix64.*"};
    const auto on_cuda = resolve_methods(g, "cuda", registry());
    const auto on_cpu = resolve_methods(g, "cpu", registry());
    REQUIRE(on_cuda.size() >= 2);
    REQUIRE(on_cpu.size() == on_cuda.size());
    for (std::size_t i = 0; i < on_cpu.size(); ++i) CHECK(on_cpu[i].label() == on_cuda[i].label());
    g.methods = {"df11-fused:no-such*"};
    CHECK_THROWS_WITH(resolve_methods(g, "cpu", registry()), Catch::Contains("matches no decoder variant"));
  }
  const auto fused_cpu = resolve_methods(e, "cpu", registry());
  REQUIRE(fused_cpu.size() == 3);
  CHECK(fused_cpu[1].variant == nullptr);
  CHECK(fused_cpu[1].kind == "df11-fused");
  // df11-fused-mma: no glob, DF11's layout (the tensor-core kernel over fix64's units); one case on
  // either backend, a fused method that decodes inside its kernel.
  e.methods = {"df11-fused-mma"};
  for (const char* backend : {"cuda", "cpu"}) {
    const auto mma = resolve_methods(e, backend, registry());
    REQUIRE(mma.size() == 1);
    CHECK(mma[0].label() == "df11-fused-mma");
    CHECK(mma[0].layout() == df11::Layout::df11());
    CHECK(mma[0].fused());
    CHECK_FALSE(mma[0].decodes());
  }
}

TEST_CASE("checkpoint units come from BF16 and DF11 directories", "[sweep][e2e]") {
  clear_interrupt();
  const fs::path fixtures = fs::absolute(kRoot / "datasets/fixtures/official/tiny_mistral");
  const fs::path dir = fresh_dir("checkpoint");
  // One experiment a directory: the same unit twice in one would give rows of one key.
  const auto experiment_on = [&](const std::string& path) {
    return parse_experiment_text(
        "schema_version = 1\nname = \"ckpt\"\nbatches = [2]\nmethods = [\"bf16\", \"df11:*\", "
        "\"decode:*\"]\n"
        "[measurement]\nwarmup = 0\nmin_samples = 1\nmax_samples = 2\nmin_time_s = 0\nmax_time_s = "
        "0.05\n"
        "l2_policy = \"none\"\n"
        "[[units]]\nkind = \"checkpoint\"\npath = \"" + path + "\"\nunit = \"model.layers.0\"\n",
        (fixtures / "virtual.toml").string());  // relative paths resolve from the file's folder
  };
  const Experiment e_hf = experiment_on("bf16");
  const Experiment e = experiment_on("df11");

  const MaterializedUnit hf = materialize_unit(e_hf.units[0], e_hf, 1.0, 2);
  const MaterializedUnit d = materialize_unit(e.units[0], e, 1.0, 2);
  REQUIRE(hf.unit.tensors.size() == 7);
  REQUIRE(d.unit.tensors.size() == 7);
  CHECK_FALSE(hf.df11);
  REQUIRE(d.df11);  // the file's own encoding is kept
  for (std::size_t i = 0; i < 7; ++i) {
    CHECK(hf.unit.tensors[i].data == d.unit.tensors[i].data);
    CHECK(hf.unit.tensors[i].shape == d.unit.tensors[i].shape);
  }
  const MaterializedUnit half = materialize_unit(e.units[0], e, 0.5, 2);
  CHECK_FALSE(half.df11);  // sliced: re-encoded by the sweep
  CHECK(half.unit.tensors[0].shape[0] == (hf.unit.tensors[0].shape[0] + 1) / 2);

  auto backend = make_cpu_backend(2);
  for (const Experiment* x : {&e_hf, &e}) {
    fs::create_directories(dir / x->units[0].path);
    const SweepReport r = run_sweep(*x, *backend, registry(), options_for(dir / x->units[0].path));
    CHECK(r.passed == 3);  // decode, bf16, df11
    CHECK(r.incorrect + r.not_run + r.not_supported == 0);
  }

  Experiment missing = e;
  missing.units[0].name = "model.layers.9";
  CHECK_THROWS_WITH(materialize_unit(missing.units[0], missing, 1.0, 2),
                    Catch::Contains("model.layers.9"));
  missing.units[0].path = "nowhere";
  CHECK_THROWS_WITH(
      run_sweep(missing, *backend, registry(), options_for(fresh_dir("checkpoint_missing"))),
      Catch::Contains("units[0].path") && Catch::Contains("nowhere"));
  fs::remove_all(dir);
}

TEST_CASE("the GPU-only slice, stream and fused methods are not_supported on the cpu backend, with the reason", "[sweep][e2e]") {
  clear_interrupt();
  Experiment e = smoke();
  e.batches = {1};
  e.methods = {"bf16", "df11-chunked:cpu", "df11-pipelined:cpu", "df11-overlap:cpu", "df11-rev:cpu", "df11-fused",
               "df11-fused-mma"};
  auto backend = make_cpu_backend(2);
  const fs::path dir = fresh_dir("slice_methods");
  (void)run_sweep(e, *backend, registry(), options_for(dir));
  std::map<std::string, json> rows;
  for (const json& row : read_rows(dir / "results.jsonl")) rows[key_of(row)] = row;
  CHECK(rows.at("bf16@1")["disposition"] == "passed");
  for (const char* k : {"df11-chunked:cpu@1", "df11-pipelined:cpu@1"}) {
    INFO(k);
    CHECK(rows.at(k)["disposition"] == "not_supported");
    CHECK_THAT(rows.at(k)["reason"].get<std::string>(), Catch::Contains("on the GPU"));
  }
  CHECK(rows.at("df11-overlap:cpu@1")["disposition"] == "not_supported");
  CHECK_THAT(rows.at("df11-overlap:cpu@1")["reason"].get<std::string>(), Catch::Contains("second CUDA stream"));
  CHECK(rows.at("df11-rev:cpu@1")["disposition"] == "not_supported");
  CHECK_THAT(rows.at("df11-rev:cpu@1")["reason"].get<std::string>(), Catch::Contains("GPU decoder's units"));
  for (const char* k : {"df11-fused@1", "df11-fused-mma@1"}) {
    INFO(k);
    CHECK(rows.at(k)["disposition"] == "not_supported");
    CHECK_THAT(rows.at(k)["reason"].get<std::string>(), Catch::Contains("is a GPU kernel"));
  }
  fs::remove_all(dir);
}

TEST_CASE("sliced methods run once per slice size, each a case of its own", "[sweep][e2e]") {
  clear_interrupt();
  Experiment e = smoke();
  e.batches = {1};
  e.methods = {"bf16", "df11-chunked:cpu", "df11-pipelined:cpu", "df11:cpu"};
  e.chunk_bytes = {0, 1048576};
  const auto methods = resolve_methods(e, "cpu", registry());
  std::vector<std::string> labels;
  for (const auto& m : methods) labels.push_back(m.label());
  CHECK(labels == std::vector<std::string>{"bf16", "df11-chunked:cpu", "df11-chunked:cpu@1048576B", "df11-pipelined:cpu",
                                           "df11-pipelined:cpu@1048576B", "df11:cpu"});
  auto backend = make_cpu_backend(2);
  const fs::path dir = fresh_dir("slice_sizes");
  (void)run_sweep(e, *backend, registry(), options_for(dir));
  std::map<std::string, int> seen;
  for (const json& row : read_rows(dir / "results.jsonl")) {
    const json& c = row["case"];
    const std::string method = c["method"];
    if (method == "df11-chunked" || method == "df11-pipelined") {
      // The cpu backend runs no slices: the size as asked, 0 the device default.
      REQUIRE(c["chunk_bytes"].is_number_unsigned());
      ++seen[method + "@" + std::to_string(c["chunk_bytes"].get<uint64_t>())];
    } else {
      CHECK(c["chunk_bytes"].is_null());
    }
  }
  CHECK(seen == std::map<std::string, int>{{"df11-chunked@0", 1},
                                           {"df11-chunked@1048576", 1},
                                           {"df11-pipelined@0", 1},
                                           {"df11-pipelined@1048576", 1}});
  fs::remove_all(dir);
}

TEST_CASE("every experiment file's methods resolve on both backends (a renamed variant fails here)",
          "[sweep]") {
  // The cuda sections name decoders one by one (nemo_layer's shortlist): a variant renamed or
  // dropped from the registry must fail in CI, not on a lent GPU.
  const fs::path dir = fs::path(__FILE__).parent_path() / "../../experiments";
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".toml") continue;
    INFO(entry.path().string());
    const Experiment e = parse_experiment_file(entry.path().string());
    for (const char* backend : {"cpu", "cuda"}) {
      INFO(backend);
      std::vector<MethodCase> methods;
      CHECK_NOTHROW(methods = resolve_methods(e, backend, registry()));
      CHECK(!methods.empty());
    }
    ++n;
  }
  CHECK(n >= 5);
  // nemo_layer on cuda: the shortlist, every df11 method naming one registered variant.
  const Experiment d = parse_experiment_file((dir / "nemo_layer.toml").string());
  std::size_t df11 = 0, overlap = 0, chunked = 0, rev = 0, pipelined = 0;
  for (const auto& m : resolve_methods(d, "cuda", registry())) {
    overlap += m.kind == "df11-overlap";
    pipelined += m.kind == "df11-pipelined";
    rev += m.kind == "df11-rev";
    chunked += m.kind == "df11-chunked";
    if (m.kind != "df11") continue;
    ++df11;
    REQUIRE(m.variant != nullptr);
  }
  CHECK(df11 == 16);
  CHECK(overlap == 3);  // fix64's dyn and grid twins, wcnt-reg's dyn one
  CHECK(chunked == 10);   // 5 decoders x the two slice sizes
  CHECK(pipelined == 2);  // 1 decoder x the two slice sizes
  CHECK(rev == 5);
  CHECK(d.slice_l2 == "persisting");
}

TEST_CASE("the slices' L2 window covers what the device allows and persists what its set-aside holds",
          "[sweep][l2]") {
  using df11::cuda::plan_l2_window;
  constexpr uint64_t MB = 1 << 20;
  SECTION("a slice within both limits: all of it, every line persisting") {
    const auto p = plan_l2_window(30 * MB, 45 * MB, 128 * MB);
    REQUIRE(p.on());
    CHECK(p.window_bytes == 30 * MB);
    CHECK(p.set_aside_bytes == 30 * MB);
    CHECK(p.hit_ratio == 1.0f);
  }
  SECTION("more than the set-aside: the window whole, a fraction of its lines persisting") {
    const auto p = plan_l2_window(60 * MB, 45 * MB, 128 * MB);
    REQUIRE(p.on());
    CHECK(p.window_bytes == 60 * MB);
    CHECK(p.set_aside_bytes == 45 * MB);
    CHECK(p.hit_ratio == Approx(0.75f));
  }
  SECTION("more than a window may span: the window's limit") {
    const auto p = plan_l2_window(300 * MB, 45 * MB, 128 * MB);
    REQUIRE(p.on());
    CHECK(p.window_bytes == 128 * MB);
    CHECK(p.set_aside_bytes == 45 * MB);
    CHECK(p.hit_ratio == Approx(45.0 / 128.0));
  }
  SECTION("no persisting L2 (before compute capability 8.0) or nothing to hold: no window, and why") {
    const auto old = plan_l2_window(30 * MB, 0, 0);
    CHECK_FALSE(old.on());
    CHECK_THAT(old.why_not, Catch::Contains("persisting"));
    CHECK(old.window_bytes == 0);
    CHECK_FALSE(plan_l2_window(0, 45 * MB, 128 * MB).on());
  }
}

namespace {

using df11::sweep::plan_slices;
using df11::sweep::Slice;
using df11::sweep::SliceMatrix;

// Matrices laid out one after the other, as the sweep's unit holds them.
std::vector<SliceMatrix> contiguous(const std::vector<std::pair<int64_t, int64_t>>& shapes) {
  std::vector<SliceMatrix> m;
  uint64_t off = 0;
  for (const auto& [out, in] : shapes) {
    m.push_back({off, out, in});
    off += static_cast<uint64_t>(out) * static_cast<uint64_t>(in);
  }
  return m;
}

// What every plan must be, whatever its budget: every row of every matrix in exactly one part,
// in the unit's order; a slice's parts back to back in the buffer, covering [lo, hi) of the unit;
// parts ending at whole quanta or their matrix's end; later parts aligned; a slice over budget
// only when it is one quantum of one matrix.
void check_plan(const std::vector<SliceMatrix>& mats, const std::vector<Slice>& plan, uint64_t budget, int64_t q,
                uint64_t align) {
  std::size_t mi = 0;
  int64_t row = 0;
  auto skip_done = [&] {
    while (mi < mats.size() && row == mats[mi].out) {
      ++mi;
      row = 0;
    }
  };
  skip_done();
  for (const Slice& s : plan) {
    REQUIRE_FALSE(s.parts.empty());
    REQUIRE(s.hi > s.lo);
    uint64_t at = 0;
    for (const auto& p : s.parts) {
      REQUIRE(p.matrix == mi);
      REQUIRE(p.r0 == row);
      REQUIRE(p.r1 > p.r0);
      REQUIRE(p.r1 <= mats[mi].out);
      CHECK((p.r1 % q == 0 || p.r1 == mats[mi].out));
      CHECK(p.at == at);
      if (at != 0) CHECK(at % align == 0);
      const uint64_t in = static_cast<uint64_t>(mats[mi].in);
      CHECK(s.lo + at == mats[mi].offset + static_cast<uint64_t>(p.r0) * in);
      at += static_cast<uint64_t>(p.r1 - p.r0) * in;
      row = p.r1;
      skip_done();
    }
    CHECK(s.hi - s.lo == at);
    if (at > budget) {
      CHECK(s.parts.size() == 1);
      CHECK(s.parts[0].r1 - s.parts[0].r0 <= q);
    }
  }
  CHECK(mi == mats.size());
}

}  // namespace

TEST_CASE("slice budgets: bytes / 2 elements, raised to the minimum, never past the unit", "[sweep][slices]") {
  using df11::sweep::slice_budgets;
  const uint64_t min_slice = 128 * 5120, unit = df11::synth::nemo_layer_elements;
  // The default (30 MiB): 15 Mi elements a slice, half that (in whole 128) a pipelined half.
  const auto d = slice_budgets(30ull << 20, min_slice, unit);
  CHECK(d.chunk_elems == (15ull << 20));
  CHECK(d.pipe_half == (15ull << 20) / 2 / 128 * 128);
  // Under the minimum: raised.
  CHECK(slice_budgets(1000, min_slice, unit).chunk_elems == min_slice);
  CHECK(slice_budgets(1000, min_slice, unit).pipe_half == min_slice);
  // Past the unit (chunk_bytes asked 200 GB): the unit, rounded up to 128; two such sizes plan alike.
  const uint64_t cap = (unit + 127) / 128 * 128;
  const auto huge = slice_budgets(200'000'000'000ull, min_slice, unit);
  CHECK(huge.chunk_elems == cap);
  CHECK(huge.pipe_half == cap / 2 / 128 * 128);
  CHECK(slice_budgets(2 * unit * 2, min_slice, unit).chunk_elems == cap);
  CHECK(std::max(huge.chunk_elems, 2 * huge.pipe_half) <= cap);  // the slice buffer
  // A unit smaller than the minimum: the minimum (a slice holds that many rows anyway).
  CHECK(slice_budgets(200'000'000'000ull, min_slice, 1000).chunk_elems == min_slice);
}

TEST_CASE("chunked slices cover every row once and fill their budget across matrices", "[sweep][slices]") {
  constexpr int64_t q = 128;
  constexpr uint64_t align = 128;
  SECTION("a Nemo layer at half an H200's L2: one decode per budget's worth of the layer") {
    std::vector<std::pair<int64_t, int64_t>> shapes;
    for (const auto& m : df11::synth::layer_specs(df11::synth::nemo_shape())) shapes.emplace_back(m.rows, m.cols);
    const auto mats = contiguous(shapes);
    uint64_t total = 0;
    for (const auto& m : mats) total += static_cast<uint64_t>(m.out) * static_cast<uint64_t>(m.in);
    REQUIRE(total == static_cast<uint64_t>(df11::synth::nemo_layer_elements));
    const uint64_t budget = 60ull * 1024 * 1024 / 2 / 2;  // 30 MiB of BF16
    const auto plan = plan_slices(mats, budget, q, align);
    check_plan(mats, plan, budget, q, align);
    // Each matrix sliced on its own: 21 decodes; across matrices: 18, all but the last full to
    // within a quantum of the widest rows.
    int64_t per_matrix = 0;
    for (const auto& m : mats) {
      const int64_t rows = static_cast<int64_t>(budget) / m.in / q * q;
      per_matrix += (m.out + rows - 1) / rows;
    }
    CHECK(per_matrix == 21);
    CHECK(plan.size() == 18);
    CHECK(plan.size() == (total + budget - 1) / budget);
    for (std::size_t i = 0; i + 1 < plan.size(); ++i) CHECK(plan[i].hi - plan[i].lo > budget - q * 14336);
    CHECK(df11::sweep::largest_slice(plan) <= budget);
  }
  SECTION("one matrix: equal slices of whole quanta, the last shorter") {
    const auto mats = contiguous({{1000, 256}});
    const auto plan = plan_slices(mats, 300 * 256, q, align);
    check_plan(mats, plan, 300 * 256, q, align);
    REQUIRE(plan.size() == 4);
    CHECK(plan[0].parts[0].r1 == 256);
    CHECK(plan[3].parts[0].r0 == 768);
    CHECK(plan[3].parts[0].r1 == 1000);
  }
  SECTION("a budget under one quantum of rows: a quantum a slice, alone") {
    const auto mats = contiguous({{300, 512}, {256, 512}});
    const auto plan = plan_slices(mats, 1000, q, align);
    check_plan(mats, plan, 1000, q, align);
    CHECK(plan.size() == 5);  // 128 + 128 + 44, then 128 + 128
    for (const auto& s : plan) CHECK(s.parts.size() == 1);
  }
  SECTION("a matrix that does not start where the last one ended begins a slice of its own") {
    std::vector<SliceMatrix> mats = contiguous({{128, 64}, {128, 64}});
    mats[1].offset += 4096;
    const auto plan = plan_slices(mats, 1 << 20, q, align);
    check_plan(mats, plan, 1 << 20, q, align);
    CHECK(plan.size() == 2);
  }
  SECTION("a part that would start off the alignment begins a slice of its own") {
    const auto mats = contiguous({{3, 100}, {128, 64}, {128, 64}});  // 300 elements: not a multiple of 128
    const auto plan = plan_slices(mats, 1 << 20, q, align);
    check_plan(mats, plan, 1 << 20, q, align);
    REQUIRE(plan.size() == 2);
    CHECK(plan[0].parts.size() == 1);
    CHECK(plan[1].parts.size() == 2);  // 128 x 64 is aligned: the third goes on in the second's slice
    CHECK(plan[1].parts[1].at == 128 * 64);
  }
  SECTION("random shapes and budgets (fixed seed): the invariants hold") {
    std::mt19937_64 rng(20261128);
    for (int t = 0; t < 300; ++t) {
      std::vector<std::pair<int64_t, int64_t>> shapes;
      const int n = 1 + static_cast<int>(rng() % 7);
      int64_t max_in = 1;
      for (int i = 0; i < n; ++i) {
        const int64_t out = 1 + static_cast<int64_t>(rng() % 700), in = 1 + static_cast<int64_t>(rng() % 300);
        shapes.emplace_back(out, in);
        max_in = std::max(max_in, in);
      }
      const auto mats = contiguous(shapes);
      const uint64_t budget = static_cast<uint64_t>(q * max_in) + rng() % 200000;  // the backend's floor
      const auto plan = plan_slices(mats, budget, q, align);
      check_plan(mats, plan, budget, q, align);
      CHECK(df11::sweep::largest_slice(plan) <= budget);
    }
  }
  SECTION("empty matrices are skipped, and no matrices give no slices") {
    CHECK(plan_slices({}, 1000, q, align).empty());
    const auto mats = contiguous({{0, 64}, {128, 64}});
    const auto plan = plan_slices(mats, 1 << 20, q, align);
    REQUIRE(plan.size() == 1);
    CHECK(plan[0].parts[0].matrix == 1);
  }
}

TEST_CASE("trace_shortfall: a traced run must hold every kind of work its method does", "[sweep][trace]") {
  using df11::trace::Kind;
  using df11::trace::Record;
  const auto trace_of = [](std::vector<Kind> kinds) {
    std::vector<Record> r;
    uint64_t t = 0;
    for (Kind k : kinds) r.push_back(Record{k, t, t + 10}), t += 10;
    return df11::trace::summarize(r);
  };
  const auto method = [](std::string kind) {
    MethodCase m;
    m.kind = std::move(kind);
    if (m.kind.starts_with("df11") || m.kind == "decode") m.variant_name = "v";
    return m;
  };
  const auto decode_gemm = trace_of({Kind::decode, Kind::gemm});
  for (const char* k : {"df11", "df11-rev", "df11-overlap", "df11-chunked", "df11-pipelined"}) {
    INFO(k);
    CHECK(trace_shortfall(method(k), decode_gemm).empty());
    // The 2026-11-28 .dyn rows: decoders classified as GEMMs, so a decode time of 0 reported as measured.
    CHECK_THAT(trace_shortfall(method(k), trace_of({Kind::gemm, Kind::gemm})),
               Catch::Contains("holds no decoder kernels"));
    CHECK_THAT(trace_shortfall(method(k), trace_of({Kind::decode})), Catch::Contains("holds no GEMM kernels"));
  }
  CHECK(trace_shortfall(method("decode"), trace_of({Kind::decode})).empty());
  CHECK(trace_shortfall(method("decode"), trace_of({})) == "the kernel trace of decode:v holds no decoder kernels");
  for (const char* k : {"df11-fused", "df11-fused-mma"}) {
    INFO(k);
    CHECK(trace_shortfall(method(k), trace_of({Kind::fused})).empty());
    CHECK_THAT(trace_shortfall(method(k), trace_of({Kind::gemm})), Catch::Contains("no fused decode + GEMM"));
  }
  CHECK(trace_shortfall(method("bf16"), trace_of({Kind::gemm})).empty());
  CHECK_THAT(trace_shortfall(method("bf16"), trace_of({})), Catch::Contains("bf16 holds no GEMM kernels"));
  CHECK(trace_shortfall(method("copy"), trace_of({Kind::copy})).empty());
  CHECK_THAT(trace_shortfall(method("copy"), trace_of({Kind::gemm})), Catch::Contains("holds no copies"));
  for (const char* k : {"cpu-offload", "cpu-offload-sync"}) {
    INFO(k);
    CHECK(trace_shortfall(method(k), trace_of({Kind::copy, Kind::gemm})).empty());
    CHECK_THAT(trace_shortfall(method(k), trace_of({})), Catch::Contains("no GEMM kernels and no copies"));
  }
}

TEST_CASE("signals: SIGTERM stays handled after the first (timeout sends two), a second Ctrl-C kills", "[sweep]") {
  struct sigaction old_int {}, old_term {}, now {};
  sigaction(SIGINT, nullptr, &old_int);
  sigaction(SIGTERM, nullptr, &old_term);
  clear_interrupt();
  install_sigint_handler();
  REQUIRE(std::raise(SIGTERM) == 0);
  CHECK(interrupt_requested());
  sigaction(SIGTERM, nullptr, &now);
  CHECK(now.sa_handler != SIG_DFL);  // with SA_RESETHAND the second would kill the run mid-line
  sigaction(SIGINT, nullptr, &now);
  CHECK(now.sa_handler != SIG_DFL);
  CHECK((now.sa_flags & SA_RESETHAND) != 0);
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  clear_interrupt();
}
