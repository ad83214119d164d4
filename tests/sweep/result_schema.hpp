// The shape of one results line (docs/RESULTS.md, schema 1), checked key by key; shared by the
// results and end-to-end sweep tests.
#pragma once

#include <catch2/catch.hpp>

#include <regex>
#include <string>

#include <nlohmann/json.hpp>

namespace sweep_test {

using json = nlohmann::json;

inline void check_number_or_null(const json& j, const char* key) {
  INFO(key);
  REQUIRE(j.contains(key));
  CHECK((j[key].is_number() || j[key].is_null()));
}

// Every key docs/RESULTS.md requires, with its type.
inline void check_line_schema(const json& j) {
  REQUIRE(j.is_object());
  CHECK(j.at("schema_version") == 1);
  const json& meta = j.at("meta");
  CHECK(meta.at("git_sha").is_string());
  CHECK(meta.at("git_dirty").is_boolean());
  CHECK(meta.at("argv").is_array());
  CHECK(meta.at("compiler").is_string());
  CHECK((meta.at("cuda_runtime").is_string() || meta.at("cuda_runtime").is_null()));
  CHECK((meta.at("cuda_driver").is_string() || meta.at("cuda_driver").is_null()));
  CHECK(meta.at("build_type").is_string());
  CHECK(std::regex_match(meta.at("start_time").get<std::string>(),
                         std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  const json& dev = j.at("device");
  CHECK((dev.at("backend") == "cpu" || dev.at("backend") == "cuda"));
  CHECK(dev.at("name").is_string());
  for (const char* k :
       {"sm_count", "sm_clock_mhz", "memory_bandwidth_gbps", "l2_bytes", "cpu_cores"}) {
    check_number_or_null(dev, k);
  }
  CHECK((dev.at("sm_version").is_string() || dev.at("sm_version").is_null()));
  CHECK((dev.at("cpu_model").is_string() || dev.at("cpu_model").is_null()));
  const json& c = j.at("case");
  CHECK(c.at("experiment").is_string());
  CHECK(c.at("unit").is_string());
  CHECK(c.at("method").is_string());
  CHECK((c.at("variant").is_string() || c.at("variant").is_null()));
  // A sliced method's slice size (df11-chunked, df11-pipelined), else null.
  const std::string method = c.at("method");
  if (method == "df11-chunked" || method == "df11-pipelined") {
    CHECK(c.at("chunk_bytes").is_number_unsigned());
  } else {
    CHECK(c.at("chunk_bytes").is_null());
  }
  CHECK(c.at("batch").is_number_integer());
  CHECK(c.at("batch").get<int>() >= 0);
  CHECK(c.at("seed").is_number_integer());
  const std::string d = j.at("disposition");
  CHECK((d == "passed" || d == "incorrect" || d == "not_supported" || d == "not_run"));
  CHECK(j.at("reason").is_string());
  const json& s = j.at("summary");
  const json& va = j.at("verified_against");
  if (d == "passed") {
    REQUIRE(va.is_string());
    const std::string v = va;
    CHECK((v == "bf16" || v == "bf16-rerun" || v == "bf16-same-gemms" || v == "weights"));
  } else {
    CHECK(va.is_null());
  }
  if (d == "passed") {
    REQUIRE(s.is_object());
    CHECK(s.at("samples").is_number_integer());
    for (const char* k : {"median_s", "min_s", "q1_s", "q3_s"}) {
      INFO(k);
      CHECK(s.at(k).is_number());
      CHECK(s.at(k).get<double>() > 0);
    }
    for (const char* k : {"decode_s", "gemm_s", "copy_s", "gbps"}) check_number_or_null(s, k);
    CHECK((s.at("cuda_graph").is_boolean() || s.at("cuda_graph").is_null()));
    CHECK(s.at("bytes").is_number_unsigned());
    const json& clock = s.at("sm_clock_mhz");  // null, or the SM clock over the samples
    if (!clock.is_null()) {
      CHECK(clock.at("min").is_number());
      CHECK(clock.at("min").get<double>() <= clock.at("median").get<double>());
    }
    const json& why = s.at("stopped_by");
    CHECK((why == "converged" || why == "max_samples" || why == "max_time"));
  } else {
    CHECK(s.is_null());
  }
}

}  // namespace sweep_test
