// Experiment files: strict parsing (unknown keys, types, values, each named with file and key),
// backend overrides, --quick, and the shipped experiments/*.toml.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "codec/common.hpp"
#include "sweep/experiment.hpp"

namespace fs = std::filesystem;
using namespace df11::sweep;

namespace {

const fs::path kExperiments = fs::path(__FILE__).parent_path() / "../../experiments";

const std::string kMinimal = R"(
schema_version = 1
batches = [1, 2, 4]
methods = ["bf16", "df11:*"]
[[units]]
kind = "nemo_layer"
)";

// The message of the df11::Error that parsing `text` throws ("" when it parses).
std::string error_of(const std::string& text, const std::string& origin = "exp.toml") {
  try {
    (void)parse_experiment_text(text, origin);
  } catch (const df11::Error& e) {
    return e.what();
  }
  return "";
}

// kMinimal with `line` added at the top level (before any table).
std::string with_top(const std::string& line) {
  return "schema_version = 1\n" + line +
         "\nbatches = [1, 2, 4]\nmethods = [\"bf16\"]\n[[units]]\nkind = \"nemo_layer\"\n";
}

}  // namespace

TEST_CASE("a minimal experiment parses with the documented defaults", "[sweep][experiment]") {
  const Experiment e = parse_experiment_text(kMinimal, "dir/minimal.toml");
  CHECK(e.name == "minimal");  // from the file name when there is no name key
  CHECK(e.path == "dir/minimal.toml");
  CHECK(e.source_text == kMinimal);
  CHECK(e.batches == std::vector<int>{1, 2, 4});
  CHECK(e.methods == std::vector<std::string>{"bf16", "df11:*"});
  CHECK(e.row_fraction == 1.0);
  CHECK(e.seed == 0);
  CHECK(e.backend == "auto");
  REQUIRE(e.units.size() == 1);
  CHECK(e.units[0].kind == UnitSpec::Kind::nemo_layer);
  CHECK(e.units[0].layer == 1);
  CHECK(e.measurement.l2_policy == "flush");
  CHECK(e.slice_l2 == "persisting");
  CHECK(e.slice_start == "early");
  CHECK(e.measurement_for("cpu").min_samples == Measurement{}.min_samples);
}

TEST_CASE("every key of the schema is read", "[sweep][experiment]") {
  const Experiment e = parse_experiment_text(R"(
schema_version = 1
name = "full"
description = "all keys"
seed = 42
backend = "cpu"
batches = [8, 1]
row_fraction = 0.5
methods = ["bf16", "cpu-offload", "cpu-offload-sync", "copy", "df11:lut*", "df11-chunked:*", "decode:?x*", "df11-fused", "df11-pipelined:multi12*", "df11-overlap:multi12*"]
chunk_bytes = 1048576
slice_l2 = "normal"
slice_start = "serial"
[measurement]
warmup = 0
min_samples = 2
max_samples = 9
min_time_s = 0
max_time_s = 1
noise_target = 0.5
l2_policy = "none"
[[units]]
kind = "nemo_layer"
layer = 0
[[units]]
kind = "nemo_lm_head"
[[units]]
kind = "custom"
name = "mine"
matrices = [{name = "a", out = 3, in = 5}, {name = "b", out = 7, in = 1}]
[[units]]
kind = "checkpoint"
path = "../ckpt"
unit = "model.layers.1"
[cuda]
batches = [4096]
)",
                                             "full.toml");
  CHECK(e.name == "full");
  CHECK(e.description == "all keys");
  CHECK(e.seed == 42);
  CHECK(e.backend == "cpu");
  CHECK(e.batches == std::vector<int>{8, 1});
  CHECK(e.row_fraction == 0.5);
  CHECK(e.methods.size() == 10);
  CHECK(e.chunk_bytes == std::vector<uint64_t>{1048576});
  CHECK(e.slice_l2 == "normal");
  CHECK(e.slice_start == "serial");
  CHECK(e.measurement.warmup == 0);
  CHECK(e.measurement.min_samples == 2);
  CHECK(e.measurement.max_samples == 9);
  CHECK(e.measurement.min_time_s == 0.0);
  CHECK(e.measurement.max_time_s == 1.0);  // an integer where a float is wanted is fine
  CHECK(e.measurement.noise_target == 0.5);
  CHECK(e.measurement.l2_policy == "none");
  REQUIRE(e.units.size() == 4);
  CHECK(e.units[0].layer == 0);
  CHECK(e.units[1].kind == UnitSpec::Kind::nemo_lm_head);
  CHECK(e.units[2].kind == UnitSpec::Kind::custom);
  CHECK(e.units[2].name == "mine");
  REQUIRE(e.units[2].matrices.size() == 2);
  CHECK(e.units[2].matrices[1].first == "b");
  CHECK(e.units[2].matrices[1].second == std::pair<int64_t, int64_t>{7, 1});
  CHECK(e.units[3].kind == UnitSpec::Kind::checkpoint);
  CHECK(e.units[3].path == "../ckpt");
  CHECK(e.units[3].name == "model.layers.1");
  CHECK(e.batches_for("cuda") == std::vector<int>{4096});
  CHECK(e.batches_for("cpu") == std::vector<int>{8, 1});
}

TEST_CASE("unknown keys are errors naming the key and the file", "[sweep][experiment]") {
  SECTION("top level") {
    const std::string msg = error_of(with_top("colour = \"blue\""), "experiments/x.toml");
    CHECK_THAT(msg, Catch::Contains("experiments/x.toml") && Catch::Contains("'colour'") &&
                        Catch::Contains("unknown key"));
  }
  SECTION("in [measurement]") {
    const std::string msg = error_of(kMinimal + "[measurement]\nwarmup = 1\nwarm_up = 2\n");
    CHECK_THAT(msg, Catch::Contains("exp.toml") && Catch::Contains("'measurement.warm_up'"));
  }
  SECTION("in a [[units]] table") {
    const std::string msg = error_of(kMinimal + "[[units]]\nkind = \"nemo_lm_head\"\nlayer = 3\n");
    CHECK_THAT(msg, Catch::Contains("'units[1].layer'") && Catch::Contains("unknown key"));
  }
  SECTION("in a custom matrix") {
    const std::string msg = error_of(kMinimal +
                                     "[[units]]\nkind = \"custom\"\nname = \"c\"\nmatrices = "
                                     "[{name = \"a\", out = 1, in = 2, dtype = 3}]\n");
    CHECK_THAT(msg, Catch::Contains("'units[1].matrices[0].dtype'"));
  }
  SECTION("in [cpu] and [cpu.measurement]") {
    CHECK_THAT(error_of(kMinimal + "[cpu]\nbatch = [1]\n"), Catch::Contains("'cpu.batch'"));
    CHECK_THAT(error_of(kMinimal + "[cuda.measurement]\nsamples = 3\n"),
               Catch::Contains("'cuda.measurement.samples'"));
  }
  SECTION("a line number is given where toml++ knows it") {
    CHECK_THAT(error_of(with_top("colour = 1")), Catch::Contains("exp.toml:2:"));
  }
}

TEST_CASE("wrong types are errors naming the key", "[sweep][experiment]") {
  CHECK_THAT(error_of(with_top("seed = 1.5")),
             Catch::Contains("'seed'") && Catch::Contains("integer"));
  CHECK_THAT(error_of(with_top("name = 3")),
             Catch::Contains("'name'") && Catch::Contains("string"));
  CHECK_THAT(error_of(with_top("row_fraction = \"half\"")),
             Catch::Contains("'row_fraction'") && Catch::Contains("number"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = 4\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"nemo_layer\"\n"),
             Catch::Contains("'batches'") && Catch::Contains("array"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1, \"2\"]\nmethods = "
                      "[\"bf16\"]\n[[units]]\nkind = \"nemo_layer\"\n"),
             Catch::Contains("'batches[1]'"));
  CHECK_THAT(error_of(kMinimal + "[measurement]\nwarmup = true\n"),
             Catch::Contains("'measurement.warmup'"));
  CHECK_THAT(error_of(with_top("measurement = 3")),
             Catch::Contains("'measurement'") && Catch::Contains("table"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\nunits = 3\n"),
             Catch::Contains("'units'"));
}

TEST_CASE("impossible values are errors naming the key", "[sweep][experiment]") {
  const auto batches = [](const std::string& b) {
    return "schema_version = 1\nbatches = " + b +
           "\nmethods = [\"bf16\"]\n[[units]]\nkind = \"nemo_layer\"\n";
  };
  const auto methods = [](const std::string& m) {
    return "schema_version = 1\nbatches = [1]\nmethods = " + m +
           "\n[[units]]\nkind = \"nemo_layer\"\n";
  };
  CHECK_THAT(error_of(batches("[1, 0]")),
             Catch::Contains("'batches[1]'") && Catch::Contains("> 0"));
  CHECK_THAT(error_of(batches("[-4]")), Catch::Contains("'batches[0]'"));
  CHECK_THAT(error_of(batches("[]")), Catch::Contains("'batches'"));
  CHECK_THAT(error_of(batches("[2, 2]")), Catch::Contains("twice"));
  CHECK_THAT(error_of(with_top("row_fraction = 0.0")),
             Catch::Contains("'row_fraction'") && Catch::Contains("(0, 1]"));
  CHECK_THAT(error_of(with_top("row_fraction = 1.5")), Catch::Contains("'row_fraction'"));
  CHECK_THAT(error_of(with_top("row_fraction = -0.1")), Catch::Contains("'row_fraction'"));
  CHECK(error_of(with_top("row_fraction = 1")).empty());
  CHECK_THAT(error_of(methods("[\"gemm\"]")),
             Catch::Contains("'methods[0]'") && Catch::Contains("unknown method kind"));
  CHECK_THAT(error_of(methods("[\"bf16\", \"df11:\"]")),
             Catch::Contains("'methods[1]'") && Catch::Contains("glob"));
  CHECK_THAT(error_of(methods("[\"decode\"]")),
             Catch::Contains("'methods[0]'") && Catch::Contains("glob"));
  CHECK_THAT(error_of(methods("[\"df11-overlap\"]")),
             Catch::Contains("'methods[0]'") && Catch::Contains("glob"));
  CHECK_THAT(error_of(methods("[\"df11-rev\"]")),
             Catch::Contains("'methods[0]'") && Catch::Contains("glob"));
  CHECK(error_of(methods("[\"df11-rev:multi12n*\"]")).empty());
  CHECK_THAT(error_of(methods("[\"bf16:x\"]")), Catch::Contains("takes no decoder glob"));
  CHECK(error_of(methods("[\"df11-fused\", \"df11-fused:multi12.gap5-cnt*\"]")).empty());  // the glob is optional
  CHECK_THAT(error_of(methods("[\"df11-fused:\"]")), Catch::Contains("empty decoder glob"));
  CHECK(error_of(methods("[\"df11-fused-mma\"]")).empty());
  CHECK_THAT(error_of(methods("[\"df11-fused-mma:fix*\"]")), Catch::Contains("takes no decoder glob"));
  CHECK_THAT(error_of(methods("[]")), Catch::Contains("'methods'"));
  CHECK_THAT(error_of(kMinimal + "[measurement]\nl2_policy = \"cold\"\n"),
             Catch::Contains("'measurement.l2_policy'") && Catch::Contains("cold"));
  // Named in the spec, not built: refused at parse time rather than faked or failed case by case.
  CHECK_THAT(error_of(kMinimal + "[measurement]\nl2_policy = \"rotate\"\n"),
             Catch::Contains("'measurement.l2_policy'") && Catch::Contains("'rotate'") &&
                 Catch::Contains("not implemented"));
  CHECK_THAT(error_of(kMinimal + "[measurement]\nmin_samples = 0\n"),
             Catch::Contains("'measurement.min_samples'"));
  CHECK_THAT(error_of(kMinimal + "[measurement]\nmin_samples = 20\nmax_samples = 5\n"),
             Catch::Contains("'measurement.max_samples'"));
  CHECK_THAT(error_of(kMinimal + "[measurement]\nmax_time_s = 0\n"),
             Catch::Contains("'measurement.max_time_s'"));
  CHECK_THAT(
      error_of(
          "schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = \"moon\"\n"),
      Catch::Contains("'units[0].kind'") && Catch::Contains("unknown unit kind 'moon'"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"nemo_layer\"\nlayer = 40\n"),
             Catch::Contains("'units[0].layer'"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"custom\"\nname = \"c\"\n"
                      "matrices = [{name = \"a\", out = 0, in = 2}]\n"),
             Catch::Contains("'units[0].matrices[0].out'"));
  // Each dimension within 2^31, their product past a unit's 2^32-1 weights (ran as not_run, with a
  // library's message and no key, before).
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"custom\"\nname = \"c\"\n"
                      "matrices = [{name = \"a\", out = 65536, in = 65535}, {name = \"b\", out = 1, in = 65536}]\n"),
             Catch::Contains("exp.toml") && Catch::Contains("'units[0].matrices'") &&
                 Catch::Contains("through 'b'") && Catch::Contains("at most 2^32-1"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"custom\"\nname = \"c\"\n"
                      "matrices = [{name = \"a\", out = 2147483648, in = 2147483648}]\n"),
             Catch::Contains("'units[0].matrices'") && Catch::Contains("through 'a'"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"checkpoint\"\npath = \"x\"\n"),
             Catch::Contains("'units[0].unit'") && Catch::Contains("required"));
  CHECK_THAT(error_of(with_top("backend = \"tpu\"")), Catch::Contains("'backend'"));
  CHECK_THAT(error_of(with_top("slice_l2 = \"pinned\"")),
             Catch::Contains("'slice_l2'") && Catch::Contains("pinned") && Catch::Contains("persisting, normal"));
  CHECK_THAT(error_of(with_top("slice_l2 = true")), Catch::Contains("'slice_l2'"));
  CHECK_THAT(error_of(with_top("slice_start = \"later\"")),
             Catch::Contains("'slice_start'") && Catch::Contains("later") && Catch::Contains("early, serial"));
  CHECK_THAT(error_of(with_top("slice_start = 1")), Catch::Contains("'slice_start'"));
  // chunk_bytes: one slice size, or a list of distinct ones (0: the device's default).
  CHECK(parse_experiment_text(with_top("chunk_bytes = [0, 34603008]"), "exp.toml").chunk_bytes ==
        std::vector<uint64_t>{0, 34603008});
  CHECK(parse_experiment_text(kMinimal, "exp.toml").chunk_bytes == std::vector<uint64_t>{0});
  CHECK_THAT(error_of(with_top("chunk_bytes = -1")), Catch::Contains("'chunk_bytes'") && Catch::Contains(">= 0"));
  CHECK_THAT(error_of(with_top("chunk_bytes = [1, -1]")), Catch::Contains("'chunk_bytes[1]'"));
  CHECK_THAT(error_of(with_top("chunk_bytes = [5, 5]")), Catch::Contains("listed twice"));
  CHECK_THAT(error_of(with_top("chunk_bytes = []")), Catch::Contains("at least one"));
  CHECK_THAT(error_of(with_top("chunk_bytes = \"l2\"")), Catch::Contains("an integer or an array of integers"));
  CHECK_THAT(error_of(kMinimal + "[cpu]\nrow_fraction = 2.0\n"),
             Catch::Contains("'cpu.row_fraction'"));
  CHECK_THAT(error_of(kMinimal + "[cuda]\nmethods = [\"nope\"]\n"),
             Catch::Contains("'cuda.methods[0]'"));
}

TEST_CASE("schema_version is required and must be 1", "[sweep][experiment]") {
  CHECK_THAT(error_of("batches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = \"nemo_layer\"\n"),
             Catch::Contains("'schema_version'") && Catch::Contains("required"));
  CHECK_THAT(error_of("schema_version = 2\nbatches = [1]\nmethods = [\"bf16\"]\n[[units]]\nkind = "
                      "\"nemo_layer\"\n"),
             Catch::Contains("'schema_version'"));
  CHECK_THAT(error_of("schema_version = 1\nbatches = [1]\nmethods = [\"bf16\"]\n"),
             Catch::Contains("'units'"));
  CHECK_THAT(error_of("schema_version = = 1\n", "broken.toml"),
             Catch::Contains("broken.toml:1:") && Catch::Contains("syntax"));
  CHECK_THAT(
      [] {
        try {
          (void)parse_experiment_file("/nonexistent/exp.toml");
        } catch (const df11::Error& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      Catch::Contains("/nonexistent/exp.toml"));
}

TEST_CASE("backend overrides replace what they name and nothing else", "[sweep][experiment]") {
  const Experiment e = parse_experiment_text(kMinimal + R"(
[measurement]
warmup = 5
min_samples = 7
max_time_s = 9.0
[cpu]
batches = [1, 16]
row_fraction = 0.125
methods = ["bf16", "df11:cpu"]
[cpu.measurement]
warmup = 1
[cuda]
row_fraction = 0.5
)",
                                             "o.toml");
  CHECK(e.batches_for("cpu") == std::vector<int>{1, 16});
  CHECK(e.batches_for("cuda") == std::vector<int>{1, 2, 4});
  CHECK(e.row_fraction_for("cpu") == 0.125);
  CHECK(e.row_fraction_for("cuda") == 0.5);
  CHECK(e.methods_for("cpu") == std::vector<std::string>{"bf16", "df11:cpu"});
  CHECK(e.methods_for("cuda") == std::vector<std::string>{"bf16", "df11:*"});
  const Measurement cpu = e.measurement_for("cpu");
  CHECK(cpu.warmup == 1);       // overridden
  CHECK(cpu.min_samples == 7);  // from the common [measurement]
  CHECK(cpu.max_time_s == 9.0);
  CHECK(e.measurement_for("cuda").warmup == 5);
  CHECK_THROWS_AS(e.batches_for("tpu"), df11::Error);
}

TEST_CASE("make_quick keeps first, middle and last batch and shortens measurement",
          "[sweep][experiment]") {
  Experiment e = parse_experiment_text(R"(
schema_version = 1
batches = [1, 2, 4, 8, 16, 32]
row_fraction = 0.5
methods = ["bf16"]
[measurement]
warmup = 3
min_samples = 10
max_samples = 100
min_time_s = 2.0
max_time_s = 10.0
[[units]]
kind = "nemo_layer"
[cpu]
batches = [1, 4, 16, 64, 256]
[cpu.measurement]
min_samples = 20
[cuda]
batches = [7, 9]
)",
                                       "q.toml");
  make_quick(e);
  CHECK(e.batches_for("cuda") == std::vector<int>{7, 9});  // three or fewer: kept
  CHECK(e.batches == std::vector<int>{1, 8, 32});
  CHECK(e.batches_for("cpu") == std::vector<int>{1, 16, 256});
  for (const std::string b : {"cpu", "cuda"}) {
    const Measurement m = e.measurement_for(b);
    CHECK(m.min_samples == 3);
    CHECK(m.max_samples == 5);
    CHECK(m.max_time_s == 0.5);
    CHECK(m.min_time_s <= m.max_time_s);
  }
  CHECK(e.row_fraction_for("cpu") == 0.125);
  CHECK(e.row_fraction_for("cuda") == 0.5);

  Experiment one = parse_experiment_text(kMinimal, "m.toml");
  one.batches = {5};
  make_quick(one);
  CHECK(one.batches == std::vector<int>{5});
  CHECK(one.row_fraction_for("cpu") == 0.25);
}

TEST_CASE("the shipped experiments parse and describe themselves", "[sweep][experiment]") {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(kExperiments)) {
    if (entry.path().extension() != ".toml") continue;
    INFO(entry.path().string());
    const Experiment e = parse_experiment_file(entry.path().string());
    CHECK(e.name == entry.path().stem().string());
    CHECK(!e.description.empty());
    ++n;
  }
  CHECK(n >= 5);
  const Experiment d = parse_experiment_file((kExperiments / "nemo_layer.toml").string());
  CHECK(d.batches.front() == 1);
  CHECK(d.batches.back() == 4096);
  CHECK(d.batches.size() == 13);
  CHECK(d.methods_for("cpu") == std::vector<std::string>{"bf16", "df11:cpu", "decode:cpu", "copy"});
  CHECK(d.batches_for("cpu") == std::vector<int>{1, 4, 16, 64});
  CHECK(d.row_fraction_for("cpu") < 1.0);
}

TEST_CASE("a unit named twice is refused, naming both entries", "[sweep][experiment]") {
  // Two layers of one index, two custom units of one name, a custom unit named like a Nemo layer:
  // results are keyed by the unit's name, and the gate refuses a file with a key twice.
  const std::string two_layers = kMinimal + "[[units]]\nkind = \"nemo_layer\"\n";
  CHECK_THAT(error_of(two_layers), Catch::Contains("exp.toml") && Catch::Contains("units[1]") &&
                                       Catch::Contains("'model.layers.1'") && Catch::Contains("as units[0] does"));
  const std::string custom = R"(
schema_version = 1
batches = [1]
methods = ["bf16"]
[[units]]
kind = "nemo_layer"
layer = 3
[[units]]
kind = "custom"
name = "mine"
matrices = [{name = "a", out = 4, in = 8}]
[[units]]
kind = "custom"
name = "model.layers.3"
matrices = [{name = "a", out = 4, in = 8}]
)";
  CHECK_THAT(error_of(custom), Catch::Contains("units[2]") && Catch::Contains("'model.layers.3'") &&
                                   Catch::Contains("as units[0] does"));
  // Different layers, and a custom unit of another name: fine.
  CHECK(error_of(kMinimal + "[[units]]\nkind = \"nemo_layer\"\nlayer = 2\n") == "");
}
