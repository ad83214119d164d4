// Fuzz target: experiment files. parse_experiment_text either returns an experiment whose
// lists are usable (batches positive, methods resolvable by kind) or refuses with df11::Error
// naming the file; make_quick never fails on a parsed experiment.
#include <cstring>
#include <string>

#include "codec/common.hpp"
#include "fuzz.hpp"
#include "harness/sweep/experiment.hpp"

using namespace df11;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    sweep::Experiment e = sweep::parse_experiment_text(text, "fuzz.toml");
    for (const std::string b : {"cpu", "cuda"}) {
      for (int batch : e.batches_for(b))
        if (batch <= 0) fuzz::finding("a parsed experiment has batch " + std::to_string(batch));
      (void)e.methods_for(b);
      (void)e.measurement_for(b);
      (void)e.row_fraction_for(b);
    }
    sweep::make_quick(e);
    fuzz::accepted("parsed");
  } catch (const Error& e) {
    fuzz::refused("parse", e.what());
    if (std::string(e.what()).find("fuzz.toml") == std::string::npos)
      fuzz::finding(std::string("refused without naming the file: ") + e.what());
  }
  return 0;
}

namespace df11::fuzz {

std::vector<Bytes> fuzz_seeds() {
  std::vector<Bytes> seeds;
  const char* texts[] = {
      R"(schema_version = 1
name = "t"
seed = 3
batches = [1, 4]
methods = ["bf16", "df11:flat12*", "decode:*", "copy"]
[measurement]
warmup = 1
min_samples = 3
l2_policy = "flush"
[[units]]
kind = "nemo_layer"
layer = 1
[cpu]
row_fraction = 0.5
batches = [1]
)",
      R"(schema_version = 1
name = "c"
batches = [2]
methods = ["df11-chunked:*"]
chunk_bytes = 4096
[[units]]
kind = "custom"
name = "m"
matrices = [{ name = "a", out = 128, in = 256 }, { name = "b", out = 64, in = 256 }]
[[units]]
kind = "nemo_lm_head"
[cuda]
methods = ["bf16", "df11-fused"]
[cuda.measurement]
max_time_s = 0.5
)",
  };
  for (const char* t : texts) seeds.emplace_back(t, t + std::strlen(t));
  return seeds;
}

}  // namespace df11::fuzz
