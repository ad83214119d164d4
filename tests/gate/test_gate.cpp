// Tests of the regression gate (harness/lib/gate.hpp) on made-up result rows: each verdict of
// the rule, the exit code it implies, device refusal, and the parser's errors.
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "codec/common.hpp"
#include "lib/gate.hpp"

namespace {

using namespace df11::gate;
using nlohmann::json;

struct FakeCase {
  std::string method = "df11";
  std::string variant = "flat12.gap5-warp.smem-out.t512.b8";
  int batch = 16;
  std::string disposition = "passed";
  double median = 1e-3;
  double rel_spread = 0.01;  // (q3 - q1) / median, symmetric around the median
};

json fake_row(const FakeCase& c, const std::string& device = "NVIDIA H100 80GB HBM3") {
  json j;
  j["schema_version"] = 1;
  j["meta"] = {{"git_sha", "3f28be7"}, {"git_dirty", false}};
  j["device"] = {{"backend", "cuda"}, {"name", device}, {"sm_version", "9.0"}};
  j["case"] = {{"experiment", "nemo_layer"},
               {"unit", "model.layers.1"},
               {"method", c.method},
               {"variant", c.method == "bf16" ? json(nullptr) : json(c.variant)},
               {"batch", c.batch},
               {"seed", 0}};
  if (c.disposition == "passed") {
    const double half = c.median * c.rel_spread / 2;
    j["summary"] = {{"samples", 41},
                    {"median_s", c.median},
                    {"min_s", c.median - 2 * half},
                    {"q1_s", c.median - half},
                    {"q3_s", c.median + half},
                    {"decode_s", nullptr},
                    {"gemm_s", nullptr},
                    {"copy_s", nullptr},
                    {"bytes", 1000},
                    {"gbps", 1000 / c.median / 1e9}};
    j["reason"] = "";
  } else {
    j["summary"] = nullptr;
    j["reason"] = "made up";
  }
  j["disposition"] = c.disposition;
  return j;
}

ResultFile file_of(const std::vector<json>& rows, const std::string& path) {
  std::ostringstream text;
  for (const json& r : rows) text << r.dump() << "\n";
  std::istringstream in(text.str());
  return parse_results(in, path);
}

// A small run: bf16 and two df11 variants at three batches, scaled by `scale`, with spread.
std::vector<json> fake_run(double scale, double rel_spread,
                           const std::string& device = "NVIDIA H100 80GB HBM3") {
  std::vector<json> rows;
  for (const int batch : {1, 16, 256}) {
    rows.push_back(
        fake_row({"bf16", "", batch, "passed", 1e-4 * batch * scale, rel_spread}, device));
    rows.push_back(
        fake_row({"df11", "a", batch, "passed", 2e-4 * batch * scale, rel_spread}, device));
    rows.push_back(
        fake_row({"df11", "b", batch, "passed", 3e-4 * batch * scale, rel_spread}, device));
  }
  return rows;
}

GateReport gate(const std::vector<json>& base, const std::vector<json>& cand, GateOptions o = {}) {
  return run_gate(file_of(base, "base.jsonl"), file_of(cand, "cand.jsonl"), o);
}

// The report as print_report writes it.
std::string printed(const GateReport& r) {
  std::ostringstream out;
  print_report(out, r);
  return out.str();
}

}  // namespace

TEST_CASE("identical results are all SAME and pass", "[gate]") {
  const auto run = fake_run(1.0, 0.01);
  const GateReport r = gate(run, run);
  CHECK(r.count(Verdict::same) == 9);
  CHECK(r.rows.size() == 9);
  CHECK_FALSE(r.failed());
  CHECK(r.exit_code() == 0);
  for (const Comparison& c : r.rows) CHECK(*c.change == 0.0);
}

TEST_CASE("10% slower with tight spreads is SLOW and fails", "[gate]") {
  const GateReport r = gate(fake_run(1.0, 0.01), fake_run(1.10, 0.01));
  CHECK(r.count(Verdict::slow) == 9);
  CHECK(r.exit_code() == 1);
  CHECK(r.rows.front().change.value() == Approx(0.10));
  std::ostringstream out;
  print_report(out, r);
  CHECK(out.str().find("+10.0%") != std::string::npos);
  CHECK(out.str().find("gate: FAIL") != std::string::npos);
}

TEST_CASE("10% faster with tight spreads is FAST and passes", "[gate]") {
  const GateReport r = gate(fake_run(1.0, 0.01), fake_run(0.90, 0.01));
  CHECK(r.count(Verdict::fast) == 9);
  CHECK(r.exit_code() == 0);
}

TEST_CASE("overlapping noisy results are not SLOW", "[gate]") {
  // Medians 6% apart, each middle half 30% wide: the intervals overlap.
  const GateReport r = gate(fake_run(1.0, 0.30), fake_run(1.06, 0.30));
  CHECK(r.count(Verdict::slow) == 0);
  CHECK(r.count(Verdict::ambiguous) == 9);
  CHECK(r.exit_code() == 0);
}

TEST_CASE("a change below the threshold is SAME even with disjoint intervals", "[gate]") {
  // 2% slower, spreads 0.5%: clearly different, but under the 3% that counts.
  const GateReport r = gate(fake_run(1.0, 0.005), fake_run(1.02, 0.005));
  CHECK(r.count(Verdict::same) == 9);
  CHECK(r.exit_code() == 0);
  // The same pair fails with a 1% threshold.
  CHECK(gate(fake_run(1.0, 0.005), fake_run(1.02, 0.005), {0.01, false}).count(Verdict::slow) == 9);
}

TEST_CASE("compare_timings follows the documented rule at its edges", "[gate]") {
  const Timing base{1.0, 0.99, 1.01};
  CHECK(compare_timings(base, {1.025, 1.02, 1.03}, 0.03) == Verdict::same);  // under t, disjoint
  CHECK(compare_timings(base, {1.05, 1.02, 1.06}, 0.03) == Verdict::slow);   // disjoint
  CHECK(compare_timings(base, {1.05, 1.01, 1.06}, 0.03) ==
        Verdict::ambiguous);  // touching counts as overlap
  CHECK(compare_timings(base, {0.95, 0.94, 0.98}, 0.03) == Verdict::fast);
  CHECK(compare_timings(base, {0.95, 0.90, 1.00}, 0.03) == Verdict::ambiguous);
  // Exactly t, as decimals give it (1.03e-3 / 1.0e-3 - 1 is 0.03000000000000008): at most t, SAME.
  CHECK(compare_timings({1.0e-3, 0.995e-3, 1.005e-3}, {1.03e-3, 1.025e-3, 1.035e-3}, 0.03) == Verdict::same);
  CHECK(compare_timings({1.0e-3, 0.995e-3, 1.005e-3}, {0.97e-3, 0.965e-3, 0.975e-3}, 0.03) == Verdict::same);
  CHECK(compare_timings({1.0e-3, 0.995e-3, 1.005e-3}, {1.031e-3, 1.026e-3, 1.036e-3}, 0.03) == Verdict::slow);
}

TEST_CASE("a different device is refused unless ignored", "[gate]") {
  const auto base = fake_run(1.0, 0.01);
  const auto cand = fake_run(1.0, 0.01, "NVIDIA H200");
  const GateReport refused = gate(base, cand);
  REQUIRE(refused.refusal.has_value());
  CHECK(refused.refusal->find("NVIDIA H200") != std::string::npos);
  CHECK(refused.rows.empty());
  CHECK(refused.exit_code() == 2);

  const GateReport compared = gate(base, cand, {0.03, true});
  CHECK_FALSE(compared.refusal.has_value());
  CHECK(compared.count(Verdict::same) == 9);
  CHECK(compared.exit_code() == 0);
}

TEST_CASE("disposition changes: passed -> incorrect is WORSE, -> passed is BETTER", "[gate]") {
  auto base = fake_run(1.0, 0.01);
  auto cand = base;
  cand[1] = fake_row({"df11", "a", 1, "incorrect"});
  base[2] = fake_row({"df11", "b", 1, "not_supported"});
  const GateReport r = gate(base, cand);
  CHECK(r.count(Verdict::worse) == 1);
  CHECK(r.count(Verdict::better) == 1);
  CHECK(r.exit_code() == 1);
  std::ostringstream out;
  print_report(out, r);
  CHECK(out.str().find("WORSE (passed -> incorrect): made up") != std::string::npos);
}

TEST_CASE("neither passed: an incorrect candidate is WORSE, whatever the baseline said", "[gate]") {
  const std::vector<json> base{fake_row({"df11", "a", 1, "not_supported"}),
                               fake_row({"df11", "b", 1, "not_run"})};
  const std::vector<json> same{fake_row({"df11", "a", 1, "not_run"}),
                               fake_row({"df11", "b", 1, "not_supported"})};
  CHECK(gate(base, same).exit_code() == 0);
  const std::vector<json> worse{fake_row({"df11", "a", 1, "incorrect"}),
                                fake_row({"df11", "b", 1, "not_run"})};
  CHECK(gate(base, worse).count(Verdict::worse) == 1);
  // Wrong bits in the baseline too (promoted with them) do not make them pass.
  const std::vector<json> both_wrong_base{fake_row({"df11", "b", 1, "incorrect"})};
  const GateReport r = gate(both_wrong_base, both_wrong_base);
  CHECK(r.count(Verdict::worse) == 1);
  CHECK(r.exit_code() == 1);
  CHECK_THAT(printed(r), Catch::Contains("WORSE (incorrect -> incorrect)"));
}

TEST_CASE("cases in one file only: NEW passes, MISSING fails unless allowed", "[gate]") {
  auto base = fake_run(1.0, 0.01);
  auto cand = base;
  base.push_back(fake_row({"df11", "gone", 16}));
  cand.push_back(fake_row({"df11", "fresh", 16}));
  const GateReport r = gate(base, cand);
  CHECK(r.count(Verdict::missing) == 1);
  CHECK(r.count(Verdict::new_case) == 1);
  CHECK(r.count(Verdict::same) == 9);
  CHECK(r.matched() == 9);
  // A candidate that lost a case of the baseline fails (a run cut short, a key that changed),
  // as the same case written as not_run would (WORSE); --allow-missing lets a subset pass.
  CHECK(r.exit_code() == 1);
  CHECK_THAT(printed(r), Catch::Contains("FAIL: 1 case(s) of the baseline are missing") &&
                            Catch::Contains("--allow-missing") && Catch::Contains("gate: FAIL"));
  GateOptions allow;
  allow.allow_missing = true;
  const GateReport a = gate(base, cand, allow);
  CHECK(a.exit_code() == 0);
  CHECK_THAT(printed(a), Catch::Contains("note: 1 case(s)") && Catch::Contains("gate: PASS"));
  // Only NEW cases: a pass.
  auto more = base;
  more.push_back(fake_row({"df11", "fresh", 16}));
  CHECK(gate(base, more).exit_code() == 0);
  // A new case that produces wrong bits fails: lossless is never new. It is not a match, and its
  // row says it is new (no baseline to read).
  auto wrong = more;
  FakeCase bad{"df11", "broken", 16};
  bad.disposition = "incorrect";
  wrong.push_back(fake_row(bad));
  const GateReport w = gate(base, wrong);
  CHECK(w.count(Verdict::worse) == 1);
  CHECK(w.count(Verdict::new_case) == 1);
  CHECK(w.matched() == 10);
  CHECK(w.exit_code() == 1);
  CHECK_THAT(printed(w), Catch::Contains("WORSE (new -> incorrect)"));
}

TEST_CASE("a case timed from graphs in one file and eagerly in the other is PROTOCOL, which fails", "[gate]") {
  auto base = fake_run(1.0, 0.01);
  for (auto& row : base) row["summary"]["cuda_graph"] = true;
  auto cand = base;
  cand[0]["summary"]["cuda_graph"] = false;  // a capture that failed: eager launches
  const GateReport r = gate(base, cand);
  CHECK(r.count(Verdict::protocol) == 1);
  CHECK(r.exit_code() == 1);
  CHECK_THAT(printed(r), Catch::Contains("PROTOCOL (cuda_graph true -> false"));
  // null (cpu rows, or rows that predate the field) on either side: compared as before.
  cand[0]["summary"]["cuda_graph"] = nullptr;
  CHECK(gate(base, cand).exit_code() == 0);
  cand[0]["summary"].erase("cuda_graph");
  CHECK(gate(base, cand).exit_code() == 0);
}

TEST_CASE("a candidate with no case of the baseline fails: nothing was compared", "[gate]") {
  auto base = fake_run(1.0, 0.01);
  std::vector<json> cand;
  for (json row : base) {
    row["case"]["experiment"] = "renamed";
    cand.push_back(row);
  }
  GateOptions allow;
  allow.allow_missing = true;  // so that only "nothing was compared" fails it
  const GateReport r = gate(base, cand, allow);
  CHECK(r.matched() == 0);
  CHECK(r.count(Verdict::new_case) == static_cast<int>(cand.size()));
  CHECK(r.count(Verdict::missing) == static_cast<int>(base.size()));
  CHECK(r.exit_code() == 1);
  CHECK_THAT(printed(r), Catch::Contains("nothing was compared"));
  CHECK_THAT(printed(r), Catch::Contains("gate: FAIL"));
  // One case in both files is a comparison: the rest are NEW and MISSING (allowed), which pass.
  cand.push_back(base.front());
  CHECK(gate(base, cand, allow).matched() == 1);
  CHECK(gate(base, cand, allow).exit_code() == 0);
}

TEST_CASE("the host-bound offload methods are SLOW-HOST, which does not fail, unless gated", "[gate]") {
  auto base = fake_run(1.0, 0.01);
  auto cand = base;
  for (const std::string method : {"cpu-offload", "cpu-offload-sync", "copy"}) {
    base.push_back(fake_row({method, "", 1, "passed", 1e-2, 0.01}));
    cand.push_back(fake_row({method, "", 1, "passed", 1.1e-2, 0.01}));
  }
  const GateReport r = gate(base, cand);
  CHECK(r.count(Verdict::slow_host) == 2);
  CHECK(r.count(Verdict::slow) == 1);  // copy is the device's own
  for (const Comparison& c : r.rows) {
    if (c.verdict == Verdict::slow_host) CHECK(host_bound(c.key.method));
  }
  CHECK(r.exit_code() == 1);
  CHECK_THAT(printed(r), Catch::Contains("SLOW-HOST"));
  // Without the device-bound slower case the gate passes; gated, the host-bound ones fail.
  base.pop_back();
  cand.pop_back();
  CHECK(gate(base, cand).exit_code() == 0);
  CHECK(gate(base, cand).count(Verdict::slow_host) == 2);
  GateOptions o;
  o.gate_host_bound = true;
  const GateReport g = gate(base, cand, o);
  CHECK(g.count(Verdict::slow) == 2);
  CHECK(g.count(Verdict::slow_host) == 0);
  CHECK(g.exit_code() == 1);
  // Faster is FAST for them as for any method.
  CHECK(gate(cand, base).count(Verdict::fast) == 2);
}

TEST_CASE("the parser names file and line for bad input", "[gate]") {
  const auto check_error = [](const std::string& text, const std::string& needle) {
    std::istringstream in(text);
    try {
      (void)parse_results(in, "x.jsonl");
      FAIL("no error for: " << text);
    } catch (const df11::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  const std::string good = fake_row({}).dump() + "\n";
  check_error(good + "{\"schema_version\": 1,", "x.jsonl:2: malformed JSON");
  // A value nested 100000 deep where a field's error message would print it: refused at the parse.
  check_error(good + "{\"schema_version\": " + std::string(100000, '[') + std::string(100000, ']') + "}",
              "x.jsonl:2: malformed JSON (the line: JSON nested deeper than 64 levels)");
  json v0 = fake_row({});
  v0["schema_version"] = 0;
  check_error(good + "\n" + v0.dump() + "\n", "x.jsonl:3: schema_version 0 is not supported");
  json no_version = fake_row({});
  no_version.erase("schema_version");
  check_error(no_version.dump(), "x.jsonl:1: missing field schema_version");
  json no_summary = fake_row({});
  no_summary["summary"] = nullptr;
  check_error(no_summary.dump(), "x.jsonl:1: a passed row needs a summary object");
  json no_unit = fake_row({});
  no_unit["case"].erase("unit");
  check_error(no_unit.dump(), "x.jsonl:1: missing field case.unit");
  json bad_q = fake_row({});
  bad_q["summary"]["q1_s"] = 2.0;
  check_error(bad_q.dump(), "q1_s <= median_s <= q3_s");
  json bad_disp = fake_row({});
  bad_disp["disposition"] = "maybe";
  check_error(bad_disp.dump(), "unknown disposition 'maybe'");
  check_error(good + good, "x.jsonl:2: case 'nemo_layer model.layers.1 df11[");
  check_error(good + fake_row({"df11", "b"}, "NVIDIA H200").dump(),
              "x.jsonl:2: device 'cuda: NVIDIA H200' differs");
  check_error("\n\n", "x.jsonl: no result rows");
  CHECK_THROWS_AS(load_results("/nonexistent/results.jsonl"), df11::Error);
}

TEST_CASE("rows that did not pass carry no timing, blank lines are skipped", "[gate]") {
  std::istringstream in(fake_row({"df11", "a", 1, "not_run"}).dump() + "\n\n" +
                        fake_row({"bf16"}).dump() + "\n");
  const ResultFile f = parse_results(in, "y.jsonl");
  REQUIRE(f.rows.size() == 2);
  CHECK_FALSE(f.rows[0].timing.has_value());
  CHECK(f.rows[0].reason == "made up");
  CHECK(f.rows[1].line == 3);
  CHECK_FALSE(f.rows[1].key.variant.has_value());
  CHECK(to_string(f.device) == "cuda: NVIDIA H100 80GB HBM3");
}

TEST_CASE("sliced cases of different slice sizes are different cases", "[gate]") {
  json a = fake_row({"df11-chunked", "a", 1});
  json b = a;
  a["case"]["chunk_bytes"] = 31457280;
  b["case"]["chunk_bytes"] = 34603008;
  std::istringstream in(a.dump() + "\n" + b.dump() + "\n");
  const ResultFile f = parse_results(in, "z.jsonl");
  REQUIRE(f.rows.size() == 2);
  CHECK(f.rows[0].key.chunk_bytes == 31457280u);
  CHECK(to_string(f.rows[1].key) == "nemo_layer model.layers.1 df11-chunked[a]@34603008B b=1");
  json bad = a;
  bad["case"]["chunk_bytes"] = "big";
  std::istringstream in2(bad.dump() + "\n");
  CHECK_THROWS_WITH(parse_results(in2, "z.jsonl"), Catch::Contains("case.chunk_bytes must be an integer"));
  // The same size twice is the same case listed twice.
  std::istringstream in3(a.dump() + "\n" + a.dump() + "\n");
  CHECK_THROWS_WITH(parse_results(in3, "z.jsonl"), Catch::Contains("z.jsonl:2: case"));
}

TEST_CASE("a threshold outside [0, 1] is an error", "[gate]") {
  const auto run = fake_run(1.0, 0.01);
  CHECK_THROWS_AS(gate(run, run, {-0.1, false}), df11::Error);
  CHECK_THROWS_AS(gate(run, run, {1.5, false}), df11::Error);
}
