// Results: the statistics helpers and the JSON Lines schema v1 (docs/RESULTS.md), written by
// ResultsWriter and parsed back.
#include <catch2/catch.hpp>
#include <random>
#include <cmath>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include <nlohmann/json.hpp>

#include "codec/common.hpp"
#include "result_schema.hpp"
#include "sweep/results.hpp"

namespace fs = std::filesystem;
using namespace df11::sweep;
using json = nlohmann::json;
using sweep_test::check_line_schema;

TEST_CASE("quantiles interpolate linearly between ranks", "[sweep][stats]") {
  // numpy.quantile([1, 2, 3, 4], [0, .25, .5, .75, 1]) = [1, 1.75, 2.5, 3.25, 4]
  const std::vector<double> v{4, 1, 3, 2};  // unsorted on purpose
  CHECK(quantile(v, 0.0) == 1.0);
  CHECK(quantile(v, 0.25) == Approx(1.75));
  CHECK(quantile(v, 0.5) == Approx(2.5));
  CHECK(quantile(v, 0.75) == Approx(3.25));
  CHECK(quantile(v, 1.0) == 4.0);
  CHECK(median({5, 1, 3}) == 3.0);
  CHECK(median({7}) == 7.0);
  const Spread s = spread({10, 30, 20, 40, 50});
  CHECK(s.min == 10);
  CHECK(s.q1 == 20);
  CHECK(s.median == 30);
  CHECK(s.q3 == 40);
  CHECK(s.max == 50);
  CHECK(relative_iqr({10, 30, 20, 40, 50}) == Approx(20.0 / 30.0));
  CHECK(std::isinf(relative_iqr({3})));  // one sample shows no noise
  CHECK(std::isinf(relative_iqr({0, 0, 0})));
  CHECK_THROWS_AS(median({}), df11::Error);
  CHECK_THROWS_AS(quantile({1.0}, 1.5), df11::Error);
}

TEST_CASE("summarize takes medians of the phases and derives GB/s", "[sweep][stats]") {
  Samples s;
  s.total_s = {0.004, 0.002, 0.003};
  s.decode_s = {0.001, 0.003, 0.002};
  s.gemm_s = {0.0011, 0.0012, 0.0013};
  s.bytes = 6'000'000;
  const Summary m = summarize(s);
  CHECK(m.samples == 3);
  CHECK(m.median_s == Approx(0.003));
  CHECK(m.min_s == Approx(0.002));
  CHECK(m.q1_s == Approx(0.0025));
  CHECK(m.q3_s == Approx(0.0035));
  REQUIRE(m.decode_s);
  CHECK(*m.decode_s == Approx(0.002));
  REQUIRE(m.gemm_s);
  CHECK(*m.gemm_s == Approx(0.0012));
  CHECK_FALSE(m.copy_s);
  REQUIRE(m.gbps);
  CHECK(*m.gbps == Approx(2.0));  // 6 MB / 3 ms
  s.bytes = 0;
  CHECK_FALSE(summarize(s).gbps);
  CHECK_THROWS_AS(summarize(Samples{}), df11::Error);
}

TEST_CASE("device objects are put in the documented key order", "[sweep][results]") {
  const json shuffled = {{"cpu_cores", 2}, {"extra", "kept"}, {"backend", "cpu"}, {"name", "x"}};
  const Line d = device_json(shuffled);
  std::vector<std::string> keys;
  for (const auto& [k, v] : d.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"backend", "name", "sm_version", "sm_count",
                                         "sm_clock_mhz", "memory_bandwidth_gbps", "l2_bytes",
                                         "cpu_model", "cpu_cores", "extra"});
  CHECK(d["sm_count"].is_null());  // missing keys become null, as the schema wants them present
  CHECK(d["cpu_cores"] == 2);
}

namespace {
Measurement measurement(int min_samples, int max_samples, double min_time_s, double max_time_s, double noise_target) {
  Measurement m;
  m.min_samples = min_samples;
  m.max_samples = max_samples;
  m.min_time_s = min_time_s;
  m.max_time_s = max_time_s;
  m.noise_target = noise_target;
  return m;
}
}  // namespace

TEST_CASE("stop_reason: one stop rule for every backend, times as sums of samples", "[sweep][results]") {
  const Measurement m = measurement(3, 6, 0.5, 2.0, 0.1);
  CHECK_FALSE(stop_reason(m, {0.2, 0.2}));             // fewer than min_samples
  CHECK_FALSE(stop_reason(m, {0.1, 0.1, 0.1}));        // min_samples, but 0.3 s < min_time_s
  CHECK(stop_reason(m, {0.2, 0.2, 0.2}) == "converged");  // 0.6 s, IQR 0
  CHECK_FALSE(stop_reason(m, {0.1, 0.3, 0.2, 0.1}));   // 0.7 s but noisy (IQR/median 0.67)
  CHECK(stop_reason(m, {0.01, 0.02, 0.03, 0.04, 0.05, 0.06}) == "max_samples");
  // The time cap wins over min_samples: one slow sample ends a case.
  CHECK(stop_reason(m, {2.5}) == "max_time");
  CHECK(stop_reason(m, {1.0, 1.0}) == "max_time");
  CHECK_FALSE(stop_reason(m, {1.0, 0.9}));
}

TEST_CASE("relative_iqr by selection equals the sorted quartiles' ratio", "[sweep][stats]") {
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<double> u(0.5, 3.0);
  for (const std::size_t n : {2, 3, 4, 5, 8, 13, 64, 101, 1000, 1001}) {
    std::vector<double> v(n);
    for (auto& x : v) x = u(rng);
    if (n > 10) v[3] = v[7];  // ties
    const Spread s = spread(v);
    INFO("n = " << n);
    CHECK(relative_iqr(v) == Approx((s.q3 - s.q1) / s.median).epsilon(1e-12));
  }
}

TEST_CASE("StopRule: one sample never converges, and many samples stop soon after they converge",
          "[sweep][results]") {
  Measurement m = measurement(1, 1000000, 0, 1e9, 0.1);
  CHECK_FALSE(stop_reason(m, {0.3}));  // min_samples 1 does not make one sample converged
  CHECK(stop_reason(m, {0.3, 0.3}) == "converged");
  // 3000 noisy samples (1 and 2 alternating), then 1.5 for ever: with noise_target 0 the case
  // converges once the quartiles are both 1.5. The rule measures the noise at spaced counts past
  // 64, so it stops at the first converged count or within its 1/64th after.
  m.noise_target = 0;
  std::vector<double> all;
  for (int i = 0; i < 3000; ++i) all.push_back(i % 2 ? 2.0 : 1.0);
  std::size_t first = 0;
  for (std::size_t n = 3000; first == 0; ++n) {
    all.push_back(1.5);
    const Spread s = spread(all);
    if (s.q3 - s.q1 == 0) first = all.size();
  }
  StopRule rule(m);
  std::size_t stopped = 0;
  std::vector<double> taken;
  for (std::size_t i = 0; stopped == 0; ++i) {
    taken.push_back(i < 3000 ? (i % 2 ? 2.0 : 1.0) : 1.5);
    const auto why = rule.after(taken);
    if (why) {
      CHECK(*why == "converged");
      stopped = i + 1;
    }
  }
  INFO("first converged at " << first << ", stopped at " << stopped);
  CHECK(stopped >= first);
  CHECK(stopped <= first + first / 64 + 1);
  // max_samples and max_time still end it at once.
  Measurement cap = m;
  cap.max_samples = 5;
  StopRule r5(cap);
  std::vector<double> five;
  for (int i = 0; i < 4; ++i) {
    five.push_back(i % 2 ? 2.0 : 1.0);
    CHECK_FALSE(r5.after(five));
  }
  five.push_back(1.0);
  CHECK(r5.after(five) == "max_samples");
}

TEST_CASE("result lines follow schema v1 and parse back", "[sweep][results]") {
  const fs::path dir = fs::temp_directory_path() / "df11_test_results_schema";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path file = dir / "results.jsonl";

  const Line meta = meta_json({"run_sweep", "x.toml"}, "cpu", utc_now_iso8601());
  CHECK(meta.at("cuda_runtime").is_null());  // cpu backends record no CUDA versions
  CHECK(meta.at("cuda_driver").is_null());
  const std::string sha = meta.at("git_sha");
  CHECK((sha == "unknown" || std::regex_match(sha, std::regex("[0-9a-f]{40}"))));
  const Line device = {
      {"backend", "cpu"},    {"name", "Test CPU"},      {"sm_version", nullptr},
      {"sm_count", nullptr}, {"sm_clock_mhz", nullptr}, {"memory_bandwidth_gbps", nullptr},
      {"l2_bytes", 1048576}, {"cpu_model", "Test CPU"}, {"cpu_cores", 2}};
  Samples s;
  s.total_s = {0.5, 0.25};
  s.gemm_s = {0.5, 0.25};
  s.bytes = 100;
  s.stopped_by = "converged";
  s.sm_clock_mhz = {1980, 1755, 1980};
  {
    ResultsWriter w(file);
    w.write(result_line(meta, device, CaseInfo{"exp", "u", "bf16", std::nullopt, 4, 7},
                        Disposition::passed, summarize(s), "", "bf16-rerun"));
    w.write(result_line(meta, device, CaseInfo{"exp", "u", "df11", "cpu", 4, 7},
                        Disposition::incorrect, summarize(s),
                        "differs", "bf16"));  // a summary (and verified_against) on a failed row is dropped
    w.write(result_line(meta, device, CaseInfo{"exp", "u", "decode", "cpu", 0, 7},
                        Disposition::not_supported, std::nullopt, "why", std::nullopt));
    w.write(result_line(meta, device, CaseInfo{"exp", "u", "copy", std::nullopt, 0, 7},
                        Disposition::not_run, std::nullopt, "interrupted", std::nullopt));
    CHECK(w.lines_written() == 4);
    // Results are never overwritten.
    CHECK_THROWS_WITH(ResultsWriter(file), Catch::Contains("already exists"));
  }
  std::ifstream in(file);
  std::string line;
  std::vector<json> rows;
  std::vector<std::string> texts;
  while (std::getline(in, line)) {
    texts.push_back(line);
    rows.push_back(json::parse(line));
  }
  // Keys in the order of docs/RESULTS.md, so a line reads like the documented example.
  REQUIRE(!texts.empty());
  CHECK(texts[0].rfind(R"({"schema_version":1,"meta":{"git_sha":)", 0) == 0);
  const auto pos = [&](const std::string& key) { return texts[0].find("\"" + key + "\":"); };
  CHECK(pos("meta") < pos("device"));
  CHECK(pos("device") < pos("case"));
  CHECK(pos("case") < pos("summary"));
  CHECK(pos("summary") < pos("disposition"));
  CHECK(pos("disposition") < pos("reason"));
  CHECK(pos("experiment") < pos("unit"));
  CHECK(pos("samples") < pos("median_s"));
  CHECK(pos("bytes") < pos("gbps"));
  REQUIRE(rows.size() == 4);
  for (const json& r : rows) check_line_schema(r);
  CHECK(rows[0]["case"]["variant"].is_null());
  CHECK(rows[0]["summary"]["median_s"] == Approx(0.375));
  CHECK(rows[0]["summary"]["gemm_s"] == Approx(0.375));
  CHECK(rows[0]["summary"]["decode_s"].is_null());
  CHECK(rows[0]["summary"]["stopped_by"] == "converged");
  CHECK(rows[0]["summary"]["sm_clock_mhz"] == json{{"min", 1755.0}, {"median", 1980.0}});
  CHECK(rows[1]["case"]["variant"] == "cpu");
  CHECK(rows[1]["summary"].is_null());
  CHECK(rows[1]["reason"] == "differs");
  CHECK(rows[2]["disposition"] == "not_supported");
  CHECK(rows[3]["disposition"] == "not_run");
  CHECK(rows[3]["case"]["batch"] == 0);
  fs::remove_all(dir);
}
