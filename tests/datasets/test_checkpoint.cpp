// Tests of checkpoint directories: config.json, unit discovery, pattern overrides, the DF11 and
// HF writers and readers (round trips bit-exact, official fixtures decoded bit-exact), and the
// errors a broken directory must raise, each naming its file and tensor.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/temp_dir.hpp"

#include "codec/cpu_decoder.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/safetensors.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using Catch::StartsWith;
using nlohmann::json;
using namespace df11;
using namespace df11::ckpt;

namespace {

// Each suite's directories carry its own prefix, so leftovers say where they came from.
class TempDir : public df11::test::TempDir {
 public:
  TempDir() : df11::test::TempDir("df11_ckpt_test") {}
};

const fs::path kFixtures = fs::path(__FILE__).parent_path() / "../../datasets/fixtures/official";

// A tiny model small enough for every case: 2 layers, hidden 256, vocab 96.
SynthOptions tiny_options(uint64_t shard_bytes = kDefaultShardBytes) {
  SynthOptions o;
  o.shape = tiny_shape();
  o.shape.vocab = 96;
  o.seed = 7;
  o.shard_bytes = shard_bytes;
  o.threads = 2;
  return o;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

// No OUT and no OUT.tmp-* beside it.
bool nothing_written(const fs::path& out) {
  if (fs::exists(out)) return false;
  for (const auto& e : fs::directory_iterator(out.parent_path())) {
    if (e.path().filename().string().rfind(out.filename().string() + ".tmp", 0) == 0) return false;
  }
  return true;
}

// Decodes every unit of a DF11 directory and compares every tensor (units and copied ones) with
// a BF16 directory, bit for bit; the two must hold the same tensor names.
void require_same_model(const fs::path& bf16_dir, const fs::path& df11_dir) {
  const HfCheckpoint ref = HfCheckpoint::open(bf16_dir);
  const Df11Checkpoint ck = Df11Checkpoint::open(df11_dir);
  std::size_t compared = 0;
  for (const UnitSpec& u : ck.contents().units) {
    const EncodedUnit e = ck.load(u);
    std::vector<uint16_t> words(e.n_elements, 0xFFFF);  // poisoned: unwritten elements show
    decode_cpu(e, words, 2);
    uint64_t offset = 0;
    for (const TensorSpec& t : u.tensors) {
      INFO(t.name);
      const auto& r = ref.shards().at(t.name);
      REQUIRE(r.info->dtype == st::DType::BF16);
      REQUIRE(r.info->n_elements() == element_count(t.shape));
      if (ck.shape_known(t.name)) REQUIRE(r.info->shape == t.shape);
      const auto src = ref.shards().bytes(r);
      REQUIRE(std::memcmp(src.data(), words.data() + offset, src.size()) == 0);
      offset += element_count(t.shape);
      ++compared;
    }
    REQUIRE(offset == e.n_elements);
  }
  for (const TensorSpec& t : ck.contents().copied) {
    INFO(t.name);
    const auto& a = ref.shards().at(t.name);
    const auto& b = ck.shards().at(t.name);
    REQUIRE(a.info->dtype == b.info->dtype);
    REQUIRE(a.info->shape == b.info->shape);
    const auto x = ref.shards().bytes(a);
    const auto y = ck.shards().bytes(b);
    REQUIRE((x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0));
    ++compared;
  }
  REQUIRE(compared == ref.shards().tensors().size());
}

}  // namespace

TEST_CASE("config.json is parsed into the architecture", "[checkpoint]") {
  const json nemo = {
      {"hidden_size", 5120},          {"intermediate_size", 14336}, {"num_hidden_layers", 40},
      {"num_attention_heads", 32},    {"num_key_value_heads", 8},   {"head_dim", 128},
      {"vocab_size", 131072},         {"rope_theta", 1000000.0},    {"rms_norm_eps", 1e-5},
      {"tie_word_embeddings", false}, {"torch_dtype", "bfloat16"}};
  const ModelConfig c = parse_config(nemo, "nemo/config.json");
  REQUIRE(c.arch);
  CHECK(c.arch->hidden_size == 5120);
  CHECK(c.arch->head_dim == 128);  // explicit: 32 x 128 != 5120
  CHECK(c.arch->num_key_value_heads == 8);
  CHECK(c.arch->vocab_size == 131072);
  CHECK(c.arch->rope_theta == 1e6);
  CHECK(c.arch->rms_norm_eps == 1e-5);
  CHECK(c.arch->torch_dtype == "bfloat16");
  CHECK(*architecture_shape(*c.arch, "model.layers.39.self_attn.q_proj.weight") ==
        std::vector<int64_t>{4096, 5120});
  CHECK(*architecture_shape(*c.arch, "model.layers.0.mlp.down_proj.weight") ==
        std::vector<int64_t>{5120, 14336});
  CHECK(*architecture_shape(*c.arch, "model.layers.3.self_attn.v_proj.weight") ==
        std::vector<int64_t>{1024, 5120});
  CHECK(*architecture_shape(*c.arch, "lm_head.weight") == std::vector<int64_t>{131072, 5120});
  CHECK(!architecture_shape(*c.arch,
                            "model.layers.40.self_attn.q_proj.weight"));  // beyond the layers
  CHECK(!architecture_shape(*c.arch, "model.layers.0.self_attn.q_proj.bias"));
  CHECK(architecture_tensors(*c.arch).size() == 3 + 40 * 9);

  SECTION("defaults and transformers 5 spellings") {
    json j = {{"hidden_size", 256},
              {"intermediate_size", 768},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"vocab_size", 1024},
              {"dtype", "bfloat16"},
              {"rope_parameters", {{"rope_theta", 500000.0}, {"rope_type", "default"}}},
              {"tie_word_embeddings", true}};
    const ModelConfig d = parse_config(j, "x/config.json");
    CHECK(d.arch->head_dim == 64);            // hidden / heads
    CHECK(d.arch->num_key_value_heads == 4);  // = heads (no model_type)
    CHECK(d.arch->rope_theta == 500000.0);
    // transformers' MistralConfig: 8 KV heads when the key is missing, = heads when null.
    json m = j;
    m["num_attention_heads"] = 16;
    m["hidden_size"] = 1024;
    m["model_type"] = "mistral";
    CHECK(parse_config(m, "m/config.json").arch->num_key_value_heads == 8);
    m["num_key_value_heads"] = nullptr;
    CHECK(parse_config(m, "m/config.json").arch->num_key_value_heads == 16);
    m["model_type"] = "llama";
    m.erase("num_key_value_heads");
    CHECK(parse_config(m, "m/config.json").arch->num_key_value_heads == 16);
    CHECK(d.arch->torch_dtype == "bfloat16");
    CHECK(d.arch->tie_word_embeddings);
    const auto names = architecture_tensors(*d.arch);
    CHECK(std::find(names.begin(), names.end(), "lm_head.weight") == names.end());  // tied
  }
  SECTION("a bare module has no architecture") {
    CHECK(!parse_config(json{{"dfloat11_config", json::object()}}, "c").arch);
  }
  SECTION("bad fields are named") {
    json j = nemo;
    j.erase("vocab_size");
    CHECK_THROWS_WITH(parse_config(j, "m/config.json"),
                      Contains("m/config.json") && Contains("'vocab_size'"));
    j = nemo;
    j["num_hidden_layers"] = -3;
    CHECK_THROWS_WITH(parse_config(j, "m/config.json"),
                      Contains("num_hidden_layers") && Contains("positive"));
    CHECK_THROWS_WITH(parse_config(json::array(), "m/config.json"), Contains("m/config.json"));
  }
  SECTION("the synthetic configs") {
    CHECK(config_for(synth::nemo_shape()).arch->head_dim == 128);
    CHECK(shape_of_arch("tiny").hidden == 256);
    CHECK_THROWS_WITH(shape_of_arch("gpt2"), Contains("gpt2"));
  }
}

TEST_CASE("natural order compares layer numbers as numbers", "[checkpoint]") {
  CHECK(natural_less("model.layers.2", "model.layers.10"));
  CHECK(!natural_less("model.layers.10", "model.layers.2"));
  CHECK(natural_less("model.layers.2", "model.layers.2.input_layernorm.weight"));
  CHECK(natural_less("lm_head", "model.embed_tokens"));
  CHECK(!natural_less("a.b", "a.b"));
}

TEST_CASE("units are found from the architecture of a tiny model", "[checkpoint]") {
  TempDir tmp;
  synthesize(tmp / "tiny", tiny_options());
  const HfCheckpoint ck = HfCheckpoint::open(tmp / "tiny");
  REQUIRE(ck.config().arch);
  CHECK(ck.config().arch->num_hidden_layers == 2);
  CHECK(ck.config().arch->vocab_size == 96);
  const Contents c = ck.contents(PatternDict::mistral());
  REQUIRE(c.units.size() == 4);
  CHECK(c.units[0].name == "lm_head");
  CHECK(c.units[1].name == "model.embed_tokens");
  CHECK(c.units[2].name == "model.layers.0");
  CHECK(c.units[3].name == "model.layers.1");
  REQUIRE(c.units[2].tensors.size() == 7);
  const std::vector<std::string> order{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
  for (std::size_t i = 0; i < order.size(); ++i) {
    CHECK(c.units[3].tensors[i].name == "model.layers.1." + order[i] + ".weight");
  }
  CHECK(c.units[2].tensors[0].shape == std::vector<int64_t>{256, 256});
  CHECK(c.units[2].tensors[1].shape == std::vector<int64_t>{128, 256});
  CHECK(c.units[2].tensors[6].shape == std::vector<int64_t>{256, 768});
  CHECK(c.units[0].tensors[0].shape == std::vector<int64_t>{96, 256});
  REQUIRE(c.copied.size() == 5);  // 2 norms per layer + model.norm
  CHECK(c.copied[0].name == "model.layers.0.input_layernorm.weight");
  CHECK(c.copied[4].name == "model.norm.weight");
  // Items interleave units and the copied tensors of their layers.
  const auto items = c.items();
  REQUIRE(items.size() == 9);
  CHECK((items[2].is_unit && c.units[items[2].index].name == "model.layers.0"));
  CHECK((!items[3].is_unit &&
         c.copied[items[3].index].name == "model.layers.0.input_layernorm.weight"));

  // Memory-mapped views, released and read again (released pages fault back in).
  const LoadedUnit loaded = ck.load(c.units[2]);
  REQUIRE(loaded.view.tensors.size() == 7);
  const uint16_t first = loaded.view.tensors[0].data[0];
  ck.release(c.units[2]);
  CHECK(loaded.view.tensors[0].data[0] == first);
  CHECK(loaded.view.n_elements() == c.units[2].n_elements());
}

TEST_CASE("a DF11 directory is written, read back and decoded bit-exactly", "[checkpoint]") {
  TempDir tmp;
  // Small shards force an index over several files.
  synthesize(tmp / "bf16", tiny_options(300'000));
  REQUIRE(fs::exists(tmp / "bf16" / "model.safetensors.index.json"));
  REQUIRE(HfCheckpoint::open(tmp / "bf16").shards().n_files() > 2);

  std::vector<Progress> seen;
  compress(tmp / "bf16", tmp / "df11", CompressOptions{},
           [&](const Progress& p) { seen.push_back(p); });
  REQUIRE(!seen.empty());
  CHECK(seen.back().units_done == 4);
  CHECK(seen.back().items_done == seen.back().items_total);

  // The official 0.5.0 layout: a file per unit, norms with their layer, the rest in
  // model.safetensors, config.json = source + dfloat11_config.
  for (const char* f :
       {"lm_head.safetensors", "model_embed_tokens.safetensors", "model_layers_0.safetensors",
        "model_layers_1.safetensors", "model.safetensors", "config.json"}) {
    CHECK(fs::exists(tmp / "df11" / f));
  }
  const st::File layer0 = st::File::open(tmp / "df11" / "model_layers_0.safetensors");
  CHECK(layer0.find("model.layers.0.input_layernorm.weight") != nullptr);
  CHECK(layer0.at("model.layers.0.luts").shape.at(1) == 256);
  CHECK(layer0.at("model.layers.0.split_positions").dtype == st::DType::I64);
  CHECK(layer0.at("model.layers.0.split_positions").shape == std::vector<int64_t>{6});
  CHECK(layer0.tensors().size() == 8);
  const json config = json::parse(read_text(tmp / "df11" / "config.json"));
  CHECK(config["dfloat11_config"]["version"] == "0.5.0");
  CHECK(config["dfloat11_config"]["threads_per_block"] == json::array({512}));
  CHECK(config["dfloat11_config"]["bytes_per_thread"] == 8);
  CHECK(config["hidden_size"] == 256);

  const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
  CHECK(ck.df11().version == "0.5.0");
  REQUIRE(ck.contents().units.size() == 4);
  CHECK(ck.contents().copied.size() == 5);
  require_same_model(tmp / "bf16", tmp / "df11");

  // And back: the decompressed directory is the synthesized one, file for file, since both are
  // planned the same way.
  DecompressOptions d;
  d.shard_bytes = 300'000;
  decompress(tmp / "df11", tmp / "back", d);
  for (const auto& e : fs::directory_iterator(tmp / "bf16")) {
    INFO(e.path().filename().string());
    CHECK(read_text(e.path()) == read_text(tmp / "back" / e.path().filename()));
  }
}

TEST_CASE("a DF11 directory is every safetensors file in it, whatever an index lists", "[checkpoint]") {
  // save_pretrained writes an index for the uncompressed tensors it shards; the official loader
  // reads every *.safetensors file regardless.
  TempDir tmp;
  synthesize(tmp / "bf16", tiny_options());
  compress(tmp / "bf16", tmp / "df11", {});
  write_text(tmp / "df11" / "model.safetensors.index.json",
             R"({"metadata": {}, "weight_map": {"model.norm.weight": "model.safetensors"}})");
  const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
  CHECK(ck.contents().units.size() == 4);
  require_same_model(tmp / "bf16", tmp / "df11");
}

TEST_CASE("the official single-file layout decompresses with shapes from a given config.json", "[checkpoint]") {
  // Its config.json holds only dfloat11_config: the weights' shapes come from elsewhere.
  TempDir tmp;
  const fs::path fixture = kFixtures / "tiny_mistral";
  CHECK_THROWS_WITH(decompress(fixture / "df11_single_file", tmp / "out", {}),
                    Contains("cannot be derived") && Contains("--config"));
  CHECK(nothing_written(tmp / "out"));
  DecompressOptions o;
  o.architecture = fixture / "bf16";  // a directory, or its config.json
  decompress(fixture / "df11_single_file", tmp / "out", o);
  const HfCheckpoint ref = HfCheckpoint::open(fixture / "bf16"), got = HfCheckpoint::open(tmp / "out");
  REQUIRE(got.shards().tensors().size() == ref.shards().tensors().size());
  for (const TensorSpec& t : ref.shards().tensors()) {
    INFO(t.name);
    const auto& a = ref.shards().at(t.name);
    const auto* b = got.shards().find(t.name);
    REQUIRE(b != nullptr);
    CHECK(b->info->shape == a.info->shape);
    const auto x = ref.shards().bytes(a), y = got.shards().bytes(*b);
    CHECK(std::equal(x.begin(), x.end(), y.begin(), y.end()));
  }
  CHECK(json::parse(read_text(tmp / "out" / "config.json")) == json::parse(read_text(fixture / "bf16" / "config.json")));
  // A config.json without an architecture gives nothing to derive shapes from.
  o.architecture = fixture / "df11_single_file" / "config.json";
  CHECK_THROWS_WITH(decompress(fixture / "df11_single_file", tmp / "out2", o), Contains("no architecture"));
  // One whose architecture has more layers than the directory holds: the error names that file.
  json big = json::parse(read_text(fixture / "bf16" / "config.json"));
  big["num_hidden_layers"] = big["num_hidden_layers"].get<int>() + 3;
  write_text(tmp / "big.json", big.dump());
  o.architecture = tmp / "big.json";
  CHECK_THROWS_WITH(decompress(fixture / "df11_single_file", tmp / "out3", o),
                    Contains("which " + (tmp / "big.json").string() + " requires") && Contains("is in no DF11 unit"));
  CHECK(nothing_written(tmp / "out3"));
}

TEST_CASE("official fixtures decode bit-exactly", "[checkpoint]") {
  // Made by the official Python encoder (datasets/fixtures/official/README.md): per-unit files
  // and the single-file layout, versions 0.5.0 and 0.2.0, codes through all four tables.
  for (const char* dir : {"tiny_mistral/df11", "tiny_mistral/df11_single_file", "tiny_llama_v020/df11",
                          "single_matrix/df11", "deep_codes/df11"}) {
    INFO(dir);
    const fs::path path = kFixtures / dir;
    REQUIRE(fs::exists(path / "config.json"));
    require_same_model(path.parent_path() / "bf16", path);
  }
  const Df11Checkpoint v020 = Df11Checkpoint::open(kFixtures / "tiny_llama_v020" / "df11");
  CHECK(v020.df11().version == "0.2.0");
  // single_matrix has no architecture: its weight's shape is only an element count.
  const Df11Checkpoint bare = Df11Checkpoint::open(kFixtures / "single_matrix" / "df11");
  CHECK(!bare.shape_known("lm_head.weight"));
  TempDir tmp;
  CHECK_THROWS_WITH(decompress(kFixtures / "single_matrix" / "df11", tmp / "out", {}),
                    Contains("lm_head.weight") && Contains("cannot be derived"));
  CHECK(nothing_written(tmp / "out"));
}

TEST_CASE("our DF11 files have the official layout", "[checkpoint]") {
  TempDir tmp;
  const fs::path src = kFixtures / "tiny_mistral";
  compress(src / "bf16", tmp / "df11", {});
  // Same files, same config, same tensor names, dtypes and order; only the Huffman codes differ
  // (ours are canonical package-merge codes, the official ones dahuffman's).
  CHECK(read_text(tmp / "df11" / "config.json") == read_text(src / "df11" / "config.json"));
  for (const auto& e : fs::directory_iterator(src / "df11")) {
    if (e.path().extension() != ".safetensors") continue;
    INFO(e.path().filename().string());
    const st::File ours = st::File::open(tmp / "df11" / e.path().filename());
    const st::File theirs = st::File::open(e.path());
    REQUIRE(ours.tensors().size() == theirs.tensors().size());
    for (std::size_t i = 0; i < ours.tensors().size(); ++i) {
      CHECK(ours.tensors()[i].name == theirs.tensors()[i].name);
      CHECK(ours.tensors()[i].dtype == theirs.tensors()[i].dtype);
    }
    CHECK(ours.metadata() == theirs.metadata());
  }
}

TEST_CASE("a pattern_dict overrides the architecture's units", "[checkpoint]") {
  TempDir tmp;
  synthesize(tmp / "bf16", tiny_options());
  const std::string text =
      R"({"model\\.layers\\.\\d+\\.mlp": ["gate_proj", "up_proj", "down_proj"], "lm_head": []})";
  write_text(tmp / "pattern.json", text);
  const PatternDict from_file = PatternDict::from_argument((tmp / "pattern.json").string());
  const PatternDict from_text = PatternDict::from_argument(text);
  CHECK(from_file.to_json() == from_text.to_json());

  const Contents c = HfCheckpoint::open(tmp / "bf16").contents(from_text);
  REQUIRE(c.units.size() == 3);
  CHECK(c.units[0].name == "lm_head");
  CHECK(c.units[1].name == "model.layers.0.mlp");
  CHECK(c.units[1].tensors[2].name == "model.layers.0.mlp.down_proj.weight");
  CHECK(c.copied.size() == 5 + 1 + 2 * 4);  // norms, embed_tokens, attention

  CompressOptions o;
  o.patterns = from_text;
  compress(tmp / "bf16", tmp / "df11", o);
  CHECK(fs::exists(tmp / "df11" / "model_layers_1_mlp.safetensors"));
  const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
  CHECK(ck.df11().patterns.to_json() == from_text.to_json());
  REQUIRE(ck.contents().units.size() == 3);
  require_same_model(tmp / "bf16", tmp / "df11");

  // A whole config.json is accepted as a --pattern too.
  const PatternDict official =
      PatternDict::from_argument((kFixtures / "tiny_mistral/df11/config.json").string());
  CHECK(official.to_json() == PatternDict::mistral().to_json());
}

TEST_CASE("broken directories fail naming the file and the tensor", "[checkpoint]") {
  TempDir tmp;
  const fs::path bf16 = tmp / "bf16";
  synthesize(bf16, tiny_options(300'000));
  const fs::path index = bf16 / "model.safetensors.index.json";
  const json index_json = json::parse(read_text(index));
  const std::string shard = index_json["weight_map"]["model.layers.1.mlp.up_proj.weight"];
  const fs::path out = tmp / "out";

  SECTION("missing shard") {
    fs::remove(bf16 / shard);
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(index.string()) && Contains(shard) &&
                                                   Contains("does not exist") &&
                                                   Contains("model.layers"));
  }
  SECTION("broken index JSON") {
    write_text(index, read_text(index).substr(0, 100));
    CHECK_THROWS_WITH(compress(bf16, out, {}),
                      Contains(index.string()) && Contains("not valid JSON"));
  }
  SECTION("index naming a missing tensor") {
    json j = index_json;
    j["weight_map"]["model.layers.1.mlp.ghost.weight"] = shard;
    write_text(index, j.dump(2));
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(index.string()) &&
                                                   Contains("model.layers.1.mlp.ghost.weight") &&
                                                   Contains(shard));
  }
  SECTION("index not naming a tensor of a shard") {
    // A norm shares its shard with a projection (a lone tensor would leave its file unlisted).
    const std::string norm = "model.layers.1.input_layernorm.weight";
    const std::string norm_shard = index_json["weight_map"][norm];
    json j = index_json;
    j["weight_map"].erase(norm);
    write_text(index, j.dump(2));
    CHECK_THROWS_WITH(compress(bf16, out, {}),
                      Contains(norm_shard) && Contains(norm) && Contains("not listed"));
  }
  SECTION("bad pattern regex") {
    CHECK_THROWS_WITH(PatternDict::from_argument(R"({"model\\.layers\\.(\\d+": []})"),
                      Contains("--pattern") && Contains("model\\.layers\\.(\\d+") &&
                          Contains("not a valid regular expression"));
    CHECK_THROWS_WITH(PatternDict::from_argument("{not json"),
                      Contains("neither an existing file nor valid JSON"));
    CHECK_THROWS_WITH(PatternDict::from_argument(R"({"lm_head": "x"})"), Contains("lm_head"));
  }
  SECTION("patterns that name missing weights, overlap, or match nothing") {
    CompressOptions o;
    o.patterns = PatternDict::from_argument(
        R"({"model\\.layers\\.\\d+": ["self_attn.q_proj", "mlp.ghost"]})");
    CHECK_THROWS_WITH(compress(bf16, out, o),
                      Contains("model.layers.0.mlp.ghost.weight") && Contains("missing"));
    o.patterns = PatternDict::from_argument(
        R"({"model\\.layers\\.\\d+": ["mlp.up_proj"], "model\\.layers\\.1\\.mlp": ["up_proj"]})");
    CHECK_THROWS_WITH(compress(bf16, out, o),
                      Contains("model.layers.1.mlp.up_proj.weight") && Contains("claimed"));
    o.patterns = PatternDict::from_argument(R"({"transformer\\.h\\.\\d+": []})");
    CHECK_THROWS_WITH(compress(bf16, out, o), Contains("matches no module"));
    o.patterns =
        PatternDict::from_argument(R"({"model\\.norm": []})");  // a norm is BF16 too: allowed
    compress(bf16, out, o);
    CHECK(fs::exists(out / "model_norm.safetensors"));
    fs::remove_all(out);
  }
  SECTION("a tensor whose shape contradicts config.json") {
    json config = json::parse(read_text(bf16 / "config.json"));
    config["intermediate_size"] = 512;
    write_text(bf16 / "config.json", config.dump());
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains("model.layers.0.mlp.down_proj.weight") &&
                                                   Contains("[256,768]") && Contains("[256,512]"));
  }
  SECTION("a layer config.json does not know of") {
    json config = json::parse(read_text(bf16 / "config.json"));
    config["num_hidden_layers"] = 1;
    write_text(bf16 / "config.json", config.dump());
    CHECK_THROWS_WITH(compress(bf16, out, {}),
                      Contains("model.layers.1.") && Contains("num_hidden_layers 1"));
  }
  SECTION("a truncated shard") {
    fs::resize_file(bf16 / shard, fs::file_size(bf16 / shard) - 100);
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(shard) && Contains("truncated"));
  }
  SECTION("config.json nested too deep, with an absurd layer count, or a FIFO") {
    const fs::path config = bf16 / "config.json";
    const std::string good = read_text(config);
    write_text(config, R"({"hidden_size": )" + std::string(100000, '[') + std::string(100000, ']') + "}");
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(config.string()) && Contains("nested deeper than 64"));
    json j = json::parse(good);
    j["num_hidden_layers"] = uint64_t{1} << 32;
    write_text(config, j.dump());
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(config.string()) && Contains("num_hidden_layers") &&
                                                   Contains("at most 4096") && Contains("4294967296"));
    j["num_hidden_layers"] = 2.5;
    write_text(config, j.dump());
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(config.string()) && Contains("num_hidden_layers"));
    fs::remove(config);
    REQUIRE(::mkfifo(config.c_str(), 0600) == 0);
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(config.string()) && Contains("not a regular file"));
  }
  SECTION("a unit name that cannot be a file name; an uncompressed tensor named like a DF11 part") {
    // One more shard, listed in the index: tensors "a/b.weight" and "extra.luts".
    std::vector<std::byte> four(8, std::byte{0x3F});
    st::Writer w;
    w.add("a/b.weight", st::DType::BF16, {4}, four);
    w.add("extra.luts", st::DType::BF16, {4}, four);
    w.write(bf16 / "extra.safetensors");
    json j = index_json;
    j["weight_map"]["a/b.weight"] = "extra.safetensors";
    j["weight_map"]["extra.luts"] = "extra.safetensors";
    write_text(index, j.dump(2));
    CompressOptions o;
    o.patterns = PatternDict::from_argument(R"({"a/b": []})");
    CHECK_THROWS_WITH(compress(bf16, out, o), Contains("unit 'a/b' cannot name a file"));
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains("'extra.luts'") && Contains("extra.safetensors") &&
                                                   Contains("could not be read back"));
  }
  SECTION("a layer index too long to be a number") {
    // Every tensor of layer 1 again as layer 9999999999, in a shard of its own, listed.
    const HfCheckpoint ck = HfCheckpoint::open(bf16);
    st::Writer w;
    json j = index_json;
    for (const TensorSpec& t : ck.shards().tensors()) {
      if (t.name.rfind("model.layers.1.", 0) != 0) continue;
      const std::string name = "model.layers.9999999999." + t.name.substr(15);
      const auto b = ck.shards().bytes(ck.shards().at(t.name));
      w.add_owned(name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end()));
      j["weight_map"][name] = "far.safetensors";
    }
    w.write(bf16 / "far.safetensors");
    write_text(index, j.dump(2));
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains("far.safetensors") && Contains("model.layers.9999999999.") &&
                                                   Contains("belongs to layer 9999999999") &&
                                                   Contains("num_hidden_layers 2"));
  }
  SECTION("an output directory that holds the input is refused, even with --force") {
    const fs::path outer = tmp / "outer";
    fs::create_directory(outer);
    fs::rename(bf16, outer / "bf16");
    CompressOptions o;
    o.write.force = true;
    for (const fs::path& target : {outer, outer / ".", fs::path(tmp / "outer" / "bf16" / "..")}) {
      CHECK_THROWS_WITH(compress(outer / "bf16", target, o), Contains("holds the input directory"));
      CHECK(fs::exists(outer / "bf16" / "config.json"));
    }
    // A sibling is fine.
    compress(outer / "bf16", outer / "df11", o);
    CHECK(fs::exists(outer / "df11" / "config.json"));
    CHECK_THROWS_WITH(decompress(outer / "df11", outer, {.write = {.force = true}}),
                      Contains("holds the input directory"));
    CHECK(fs::exists(outer / "df11" / "config.json"));
    CHECK(fs::exists(outer / "bf16" / "config.json"));
    fs::rename(outer / "bf16", bf16);
  }
  SECTION("a config.json too large to read") {
    fs::resize_file(bf16 / "config.json", (uintmax_t{1} << 30));  // sparse: no disk used
    CHECK_THROWS_WITH(compress(bf16, out, {}),
                      Contains((bf16 / "config.json").string()) && Contains("more than the 256 MiB"));
  }
  SECTION("an existing output needs --force") {
    fs::create_directory(out);
    write_text(out / "keep", "x");
    CHECK_THROWS_WITH(compress(bf16, out, {}), Contains(out.string()) && Contains("--force"));
    CHECK(fs::exists(out / "keep"));
    CompressOptions o;
    o.write.force = true;
    compress(bf16, out, o);
    CHECK(!fs::exists(out / "keep"));
    CHECK(fs::exists(out / "config.json"));
    fs::remove_all(out);
  }
  CHECK(nothing_written(out));
}

TEST_CASE("broken DF11 directories fail naming the file and the tensor", "[checkpoint]") {
  TempDir tmp;
  synthesize(tmp / "bf16", tiny_options());
  compress(tmp / "bf16", tmp / "df11", {});
  const fs::path layer0 = tmp / "df11" / "model_layers_0.safetensors";
  const fs::path out = tmp / "out";

  // Rewrites layer 0's file with `edit` applied to each tensor (dropping those it returns false
  // for).
  struct Entry {
    std::string name;
    st::DType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> bytes;
  };
  const auto rewrite_file = [&](const fs::path& file, const std::function<bool(Entry&)>& edit,
                                const std::vector<Entry>& more = {}) {
    std::vector<Entry> tensors = more;
    {
      const st::File f = st::File::open(file);
      for (const st::TensorInfo& t : f.tensors()) {
        const auto b = f.bytes(t);
        Entry e{t.name, t.dtype, t.shape, std::vector<std::byte>(b.begin(), b.end())};
        if (edit(e)) tensors.push_back(std::move(e));
      }
    }
    st::Writer w;
    for (Entry& e : tensors) w.add_owned(e.name, e.dtype, e.shape, std::move(e.bytes));
    w.write(file);
  };
  const auto rewrite = [&](const std::function<bool(Entry&)>& edit) { rewrite_file(layer0, edit); };
  const auto keep = [](Entry&) { return true; };

  SECTION("split_positions that contradict the shapes") {
    rewrite([](Entry& e) {
      if (e.name == "model.layers.0.split_positions") {
        int64_t v = 0;
        std::memcpy(&v, e.bytes.data(), 8);
        v += 1;
        std::memcpy(e.bytes.data(), &v, 8);
      }
      return true;
    });
    const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
    CHECK_THROWS_WITH(ck.load(ck.contents().units[2]),
                      Contains(layer0.string()) && Contains("model.layers.0.split_positions") &&
                          Contains("model.layers.0.self_attn.q_proj.weight"));
    CHECK_THROWS_WITH(decompress(tmp / "df11", out, {}),
                      Contains("model.layers.0.split_positions"));
  }
  SECTION("split_positions out of order or past the unit (a bare module's shapes come from them)") {
    for (const int64_t v : {std::numeric_limits<int64_t>::max(), int64_t{-1}}) {
      rewrite([v](Entry& e) {
        if (e.name == "model.layers.0.split_positions") std::memcpy(e.bytes.data() + 8, &v, 8);
        return true;
      });
      CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                        Contains(layer0.string()) && Contains("model.layers.0.split_positions") &&
                            Contains("entry 1 is " + std::to_string(v)) && Contains("outside"));
    }
  }
  SECTION("a unit missing one of its tensors") {
    rewrite([](Entry& e) { return e.name != "model.layers.0.gaps"; });
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains("model.layers.0.gaps") && Contains(layer0.string()));
  }
  SECTION("a DF11 tensor of the wrong dtype") {
    rewrite([](Entry& e) {
      if (e.name == "model.layers.0.luts") {
        e.dtype = st::DType::I16;
        e.shape = {e.shape[0], 128};
      }
      return true;
    });
    const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
    CHECK_THROWS_WITH(ck.load(ck.contents().units[2]), Contains(layer0.string()) &&
                                                           Contains("model.layers.0.luts") &&
                                                           Contains("I16"));
  }
  SECTION("a corrupted stream") {
    rewrite([](Entry& e) {
      if (e.name == "model.layers.0.output_positions") e.bytes[4] = std::byte{0xFF};
      return true;
    });
    CHECK_THROWS_WITH(decompress(tmp / "df11", out, {}),
                      Contains(layer0.string()) && Contains("model.layers.0"));
  }
  SECTION("a damaged stream that passes validation: found by load_checked and decode, not load") {
    rewrite([](Entry& e) {
      if (e.name == "model.layers.0.encoded_exponent") {
        for (std::size_t k = 0; k < 3; ++k) e.bytes[e.bytes.size() / 3 + k] ^= std::byte{0x5A};
      }
      return true;
    });
    const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
    const UnitSpec& unit = ck.contents().units[2];
    REQUIRE(unit.name == "model.layers.0");
    CHECK(ck.stream_file(unit) == layer0);
    // The metadata is intact: only walking the codes can tell.
    const EncodedUnit loaded = ck.load(unit);
    CHECK_THROWS_WITH(ck.load_checked(unit, 1),
                      StartsWith(layer0.string() + ": unit model.layers.0: "));
    CHECK_THROWS_WITH(ck.decode(unit, 1), StartsWith(layer0.string() + ": unit model.layers.0: "));
    CHECK_THROWS_WITH(ck.decode(unit, loaded, 1), StartsWith(layer0.string() + ": unit model.layers.0: "));
    CHECK_THROWS_WITH(decompress(tmp / "df11", out, {}), StartsWith(layer0.string() + ": unit model.layers.0: "));
    // Another unit is unaffected.
    CHECK_NOTHROW(ck.load_checked(ck.contents().units[3], 1));
  }
  SECTION("a unit's file missing, or a dangling link in its place: the checkpoint is incomplete") {
    const fs::path layer1 = tmp / "df11" / "model_layers_1.safetensors";
    fs::remove(layer1);
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains("model.layers.1.") && Contains("is in no DF11 unit and no safetensors file") &&
                          Contains((tmp / "df11" / "config.json").string()));
    CHECK_THROWS_WITH(decompress(tmp / "df11", out, {}), Contains("model.layers.1."));
    fs::create_symlink(tmp / "nowhere.safetensors", layer1);
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains(layer1.string()) && Contains("not a regular file (a dangling link)"));
  }
  SECTION("an uncompressed tensor that is also a unit's weight, of another shape, or past the layers") {
    const std::string q = "model.layers.0.self_attn.q_proj.weight";
    rewrite_file(layer0, keep, {Entry{q, st::DType::BF16, {4}, std::vector<std::byte>(8)}});
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains(layer0.string()) && Contains("'" + q + "' is stored uncompressed") &&
                          Contains("DF11 unit 'model.layers.0'"));
    rewrite([&](Entry& e) { return e.name != q; });
    CHECK_NOTHROW(Df11Checkpoint::open(tmp / "df11"));

    const fs::path plain = tmp / "df11" / "model.safetensors";
    const std::string norm = "model.norm.weight";
    const auto set_norm = [&](st::DType dtype, int64_t n, std::size_t bytes) {
      rewrite_file(plain, [&](Entry& e) {
        if (e.name == norm) {
          e.dtype = dtype;
          e.shape = {n};
          e.bytes.resize(bytes);
        }
        return true;
      });
    };
    set_norm(st::DType::F32, 7, 28);
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains(plain.string()) && Contains(norm) && Contains("[7]") && Contains("[256]"));
    CHECK_THROWS_WITH(decompress(tmp / "df11", out, {}), Contains(norm));
    set_norm(st::DType::BF16, 256, 512);
    CHECK_NOTHROW(Df11Checkpoint::open(tmp / "df11"));

    const std::string far = "model.layers.9999999999.input_layernorm.weight";
    rewrite_file(plain, keep, {Entry{far, st::DType::BF16, {256}, std::vector<std::byte>(512)}});
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains(plain.string()) && Contains(far) && Contains("belongs to layer 9999999999"));
  }
  SECTION("a config.json without dfloat11_config, or with a version that is not a string") {
    json config = json::parse(read_text(tmp / "df11" / "config.json"));
    // Any version string, or none, reads (the official loaders never look at it).
    for (const json& v : {json("9.0"), json("0.4.0"), json()}) {
      if (v.is_null()) {
        config["dfloat11_config"].erase("version");
      } else {
        config["dfloat11_config"]["version"] = v;
      }
      write_text(tmp / "df11" / "config.json", config.dump());
      const Df11Checkpoint ck = Df11Checkpoint::open(tmp / "df11");
      CHECK(ck.df11().version == (v.is_null() ? "" : v.get<std::string>()));
      CHECK_NOTHROW(ck.decode(ck.contents().units[2], 1));
    }
    config["dfloat11_config"]["version"] = 5;
    write_text(tmp / "df11" / "config.json", config.dump());
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"),
                      Contains("config.json") && Contains("version must be a string"));
    config.erase("dfloat11_config");
    write_text(tmp / "df11" / "config.json", config.dump());
    CHECK_THROWS_WITH(Df11Checkpoint::open(tmp / "df11"), Contains("no dfloat11_config"));
  }
  CHECK(nothing_written(out));
}

TEST_CASE("PlannedWriter writes tensors in any order into the reference layout", "[checkpoint]") {
  TempDir tmp;
  const std::vector<uint8_t> a{1, 2, 3};
  const std::vector<int64_t> b{-1, 5};
  const std::vector<uint16_t> c{0x3F80, 0x4000};
  std::vector<st::Planned> plan{{"z.u8", st::DType::U8, {3}},
                                {"a.bf16", st::DType::BF16, {2}},
                                {"m.i64", st::DType::I64, {2}}};
  st::sort_like_reference(plan);
  CHECK(plan[0].name == "m.i64");  // widest dtype first, then by name
  CHECK(plan[1].name == "a.bf16");
  CHECK(plan[2].name == "z.u8");
  {
    st::PlannedWriter w(tmp / "p.safetensors", plan, {{"format", "pt"}});
    w.write("z.u8", std::as_bytes(std::span(a)));
    w.write("a.bf16", std::as_bytes(std::span(c)));
    w.write("m.i64", std::as_bytes(std::span(b)));
    CHECK_THROWS_WITH(w.write("m.i64", std::as_bytes(std::span(b))), Contains("written twice"));
    w.finish(false);
  }
  // Byte for byte what the buffering Writer makes of the same tensors in the same order.
  st::Writer ref;
  ref.add("m.i64", st::DType::I64, {2}, std::as_bytes(std::span(b)));
  ref.add("a.bf16", st::DType::BF16, {2}, std::as_bytes(std::span(c)));
  ref.add("z.u8", st::DType::U8, {3}, std::as_bytes(std::span(a)));
  ref.set_metadata("format", "pt");
  ref.write(tmp / "r.safetensors");
  CHECK(read_text(tmp / "p.safetensors") == read_text(tmp / "r.safetensors"));

  {
    st::PlannedWriter w(tmp / "q.safetensors", plan);
    CHECK_THROWS_WITH(w.write("a.bf16", std::as_bytes(std::span(a))),
                      Contains("a.bf16") && Contains("needs 4"));
    CHECK_THROWS_WITH(w.finish(false), Contains("never written"));
  }
  CHECK(!fs::exists(tmp / "q.safetensors"));  // unfinished files are removed
}
