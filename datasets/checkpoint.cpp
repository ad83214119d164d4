// Checkpoint directories (see checkpoint.hpp): config.json, pattern_dict, unit discovery, the
// shard index, the HF and DF11 readers and writers, and the directory-to-directory passes.
#include "datasets/checkpoint.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <future>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "codec/bf16.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "datasets/json_io.hpp"
#include "datasets/synthetic.hpp"

namespace df11::ckpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kIndexName = "model.safetensors.index.json";
constexpr std::string_view kSingleName = "model.safetensors";
constexpr std::string_view kConfigName = "config.json";

// The six tensors of a DF11 unit, as the official format names them.
constexpr std::array<std::string_view, 6> kDf11Suffixes{
    "luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps", "split_positions"};

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

std::string errno_text(int err) {
  return std::system_category().message(err);
}

// A positive integer field of at most `max`; `fallback` (when > 0) stands in for a missing or
// null one.
int64_t positive_int(const json& j, const char* key, const std::string& where, int64_t fallback, int64_t max) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback > 0 && fallback <= max) return fallback;
    if (fallback > 0) throw Error(fmt::format("{}: '{}' is missing, and its default {} is over {}", where, key, fallback, max));
    throw Error(fmt::format("{}: '{}' is missing", where, key));
  }
  if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(max)) ||
      it->get<int64_t>() <= 0 || it->get<int64_t>() > max) {
    throw Error(fmt::format("{}: '{}' must be a positive integer of at most {}, got {}", where, key, max,
                            brief(*it)));
  }
  return it->get<int64_t>();
}

double number_or(const json& j, const char* key, const std::string& where, double fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) {
    throw Error(fmt::format("{}: '{}' must be a number, got {}", where, key, brief(*it)));
  }
  return it->get<double>();
}

// Splits "model.layers.12.mlp.up_proj.weight" into its dotted components.
std::vector<std::string_view> components(std::string_view name) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "model.layers.N.<rest>" -> (N, rest); nullopt for other names. An N of more than 9 digits is
// past any model's layers: INT64_MAX, so that every check against num_hidden_layers refuses it.
std::optional<std::pair<int64_t, std::string_view>> layer_of(std::string_view name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (name.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const std::string_view tail = name.substr(kPrefix.size());
  const std::size_t dot = tail.find('.');
  const std::string_view number = tail.substr(0, dot);
  if (!all_digits(number)) return std::nullopt;
  return std::pair{number.size() > 9 ? std::numeric_limits<int64_t>::max() : std::stoll(std::string(number)),
                   dot == std::string_view::npos ? std::string_view{} : tail.substr(dot + 1)};
}

// The N of "model.layers.N..." as written, for messages (layer_of saturates long ones).
std::string_view layer_text(std::string_view name) {
  const std::string_view tail = name.substr(std::string_view("model.layers.").size());
  return tail.substr(0, tail.find('.'));
}

// The bytes of a BF16 tensor as uint16 words: in place when aligned, else copied into `copy`.
std::span<const uint16_t> bf16_words(std::span<const std::byte> raw, std::vector<uint16_t>& copy) {
  if (reinterpret_cast<std::uintptr_t>(raw.data()) % alignof(uint16_t) == 0) {
    return {reinterpret_cast<const uint16_t*>(raw.data()), raw.size() / 2};
  }
  copy.resize(raw.size() / 2);
  std::memcpy(copy.data(), raw.data(), raw.size());
  return copy;
}

// The marker file of an unfinished output directory (OutputDir), and who its writer is.
constexpr const char* kIncompleteMarker = ".df11-incomplete";
// This host's name and PID namespace ("host/pid:[inode]"): containers may share a host name and
// an output volume while each has its own PIDs, and a PID is only asked about in its namespace.
std::string writer_identity() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') std::strcpy(name, "unknown-host");
  std::error_code ec;
  std::string ns = fs::read_symlink("/proc/self/ns/pid", ec).string();
  if (ec || ns.empty()) ns = "unknown-ns";
  std::string id = std::string(name) + "/" + ns;
  for (char& c : id) {
    if (c == ' ' || c == '\n') c = '_';
  }
  return id;
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0)
    throw Error(fmt::format("{}: cannot open to sync: {}", path.string(), errno_text(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  // Some filesystems refuse fsync on directories; the files themselves are what matters.
  if (rc != 0 && !directory) {
    throw Error(fmt::format("{}: fsync failed: {}", path.string(), errno_text(errno)));
  }
}


}  // namespace

// ---------------------------------------------------------------------------------------------
// config.json

ModelConfig parse_config(const json& j, const std::string& where) {
  if (!j.is_object()) {
    throw Error(fmt::format("{}: must be a JSON object, got {}", where, j.type_name()));
  }
  ModelConfig config;
  config.json = j;
  config.where = where;
  if (!j.contains("hidden_size")) return config;  // a bare module: no architecture
  Architecture a;
  a.hidden_size = positive_int(j, "hidden_size", where, 0, kMaxHidden);
  a.intermediate_size = positive_int(j, "intermediate_size", where, 0, kMaxIntermediate);
  a.num_hidden_layers = positive_int(j, "num_hidden_layers", where, 0, kMaxLayers);
  a.num_attention_heads = positive_int(j, "num_attention_heads", where, 0, kMaxHeads);
  // Missing: transformers' MistralConfig defaults to 8 KV heads (an explicit null there, and
  // every other model type here, means one per query head, as Llama's).
  const bool mistral = j.contains("model_type") && j["model_type"] == "mistral";
  a.num_key_value_heads = positive_int(j, "num_key_value_heads", where,
                                       mistral && !j.contains("num_key_value_heads") ? 8 : a.num_attention_heads,
                                       kMaxHeads);
  a.head_dim = positive_int(j, "head_dim", where, a.hidden_size / a.num_attention_heads, kMaxHeadDim);
  a.vocab_size = positive_int(j, "vocab_size", where, 0, kMaxVocab);
  a.rope_theta = number_or(j, "rope_theta", where, a.rope_theta);
  // transformers 5 keeps it in rope_parameters (and reads it from there when both are given).
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
      j["rope_parameters"].contains("rope_theta")) {
    const double nested =
        number_or(j["rope_parameters"], "rope_theta", where + ": rope_parameters", a.rope_theta);
    if (j.contains("rope_theta") && !j["rope_theta"].is_null() && nested != a.rope_theta) {
      throw Error(fmt::format("{}: rope_theta {:g} and rope_parameters.rope_theta {:g} disagree", where,
                              a.rope_theta, nested));
    }
    a.rope_theta = nested;
  }
  a.rms_norm_eps = number_or(j, "rms_norm_eps", where, a.rms_norm_eps);
  if (const auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      throw Error(fmt::format("{}: 'tie_word_embeddings' must be true or false, got {}", where,
                              brief(*it)));
    }
    a.tie_word_embeddings = it->get<bool>();
  }
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (const auto it = j.find(key); it != j.end() && it->is_string()) {
      a.torch_dtype = it->get<std::string>();
      break;
    }
  }
  if (a.num_attention_heads % a.num_key_value_heads != 0) {
    throw Error(
        fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where,
                    a.num_attention_heads, a.num_key_value_heads));
  }
  config.arch = a;
  return config;
}

ModelConfig read_config(const fs::path& dir, bool required) {
  const fs::path path = dir / kConfigName;
  if (!fs::exists(path)) {
    if (required) throw Error(fmt::format("{}: no {}", dir.string(), kConfigName));
    ModelConfig none;
    none.where = path.string();
    return none;
  }
  return parse_config(read_json_file(path), path.string());
}

ModelConfig config_for(const synth::ModelShape& s) {
  json j = {
      {"architectures", {"MistralForCausalLM"}},
      {"attention_dropout", 0.0},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"head_dim", s.head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", s.hidden},
      {"initializer_range", 0.02},
      {"intermediate_size", s.intermediate},
      {"max_position_embeddings", 1024000},
      {"model_type", "mistral"},
      {"num_attention_heads", s.n_heads},
      {"num_hidden_layers", s.n_layers},
      {"num_key_value_heads", s.n_kv_heads},
      {"rms_norm_eps", s.rms_norm_eps},
      {"rope_theta", s.rope_theta},
      {"sliding_window", nullptr},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"use_cache", true},
      {"vocab_size", s.vocab},
  };
  return parse_config(j, "synthetic config");
}

synth::ModelShape shape_of_arch(std::string_view name) {
  if (name == "mistral-nemo") return synth::nemo_shape();
  if (name == "tiny") return tiny_shape();
  throw Error(fmt::format("unknown architecture '{}' (mistral-nemo or tiny)", name));
}

std::optional<std::vector<int64_t>> architecture_shape(const Architecture& a,
                                                       std::string_view name) {
  const int64_t h = a.hidden_size;
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight")
    return std::vector{a.vocab_size, h};
  if (name == "model.norm.weight") return std::vector{h};
  const auto layer = layer_of(name);
  if (!layer || layer->first >= a.num_hidden_layers) return std::nullopt;
  const std::string_view rest = layer->second;
  const int64_t q = a.num_attention_heads * a.head_dim;
  const int64_t kv = a.num_key_value_heads * a.head_dim;
  const int64_t inter = a.intermediate_size;
  if (rest == "input_layernorm.weight" || rest == "post_attention_layernorm.weight")
    return std::vector{h};
  if (rest == "self_attn.q_proj.weight") return std::vector{q, h};
  if (rest == "self_attn.k_proj.weight" || rest == "self_attn.v_proj.weight")
    return std::vector{kv, h};
  if (rest == "self_attn.o_proj.weight") return std::vector{h, q};
  if (rest == "mlp.gate_proj.weight" || rest == "mlp.up_proj.weight") return std::vector{inter, h};
  if (rest == "mlp.down_proj.weight") return std::vector{h, inter};
  return std::nullopt;
}

std::vector<std::string> architecture_tensors(const Architecture& a) {
  std::vector<std::string> names{"model.embed_tokens.weight", "model.norm.weight"};
  if (!a.tie_word_embeddings) names.emplace_back("lm_head.weight");
  for (int64_t i = 0; i < a.num_hidden_layers; ++i) {
    for (const char* rest : {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                             "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      names.push_back(fmt::format("model.layers.{}.{}.weight", i, rest));
    }
  }
  std::sort(names.begin(), names.end(), natural_less);
  return names;
}

// ---------------------------------------------------------------------------------------------
// pattern_dict

PatternDict PatternDict::mistral() {
  return from_json(json{{"lm_head", json::array()},
                        {"model\\.embed_tokens", json::array()},
                        {"model\\.layers\\.\\d+",
                         {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}}},
                   "built-in Mistral/Llama pattern_dict");
}

PatternDict PatternDict::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) {
    throw Error(
        fmt::format("{}: a pattern_dict must be a JSON object {{\"regex\": [submodules]}}, got {}",
                    where, j.type_name()));
  }
  if (j.empty()) throw Error(fmt::format("{}: the pattern_dict is empty", where));
  PatternDict dict;
  for (const auto& [regex, subs] : j.items()) {
    if (!subs.is_array()) {
      throw Error(fmt::format("{}: pattern '{}' must map to an array of submodule names, got {}",
                              where, regex, brief(subs)));
    }
    PatternRule rule{regex, {}};
    for (const json& sub : subs) {
      if (!sub.is_string() || sub.get<std::string>().empty()) {
        throw Error(
            fmt::format("{}: pattern '{}': submodule names must be non-empty strings, got {}",
                        where, regex, brief(sub)));
      }
      rule.submodules.push_back(sub.get<std::string>());
    }
    try {
      dict.regexes_.emplace_back(regex);
    } catch (const Error& e) {
      throw Error(fmt::format("{}: pattern '{}' is not a valid regular expression (Python's syntax, the part "
                              "module names need): {}",
                              where, regex, e.what()));
    }
    dict.rules_.push_back(std::move(rule));
  }
  return dict;
}

PatternDict PatternDict::from_argument(const std::string& arg) {
  json j;
  std::string where;
  std::error_code ec;
  if (fs::is_regular_file(arg, ec)) {
    where = arg;
    j = read_json_file(arg);
  } else {
    where = fmt::format("--pattern '{}'", arg);
    try {
      j = parse_json(arg, where);
    } catch (const Error& e) {
      throw Error(fmt::format("neither an existing file nor valid JSON: {}", e.what()));
    }
  }
  // Also accept a whole config.json or its dfloat11_config.
  if (j.is_object() && j.contains("dfloat11_config")) j = j["dfloat11_config"];
  if (j.is_object() && j.contains("pattern_dict")) j = j["pattern_dict"];
  return from_json(j, where);
}

std::vector<const PatternRule*> PatternDict::matches(std::string_view module) const {
  std::vector<const PatternRule*> found;
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    if (regexes_[i].full_match(module)) found.push_back(&rules_[i]);
  }
  return found;
}

json PatternDict::to_json() const {
  json j = json::object();
  for (const PatternRule& r : rules_) j[r.regex] = r.submodules;
  return j;
}

// ---------------------------------------------------------------------------------------------
// Contents and unit discovery

uint64_t UnitSpec::n_elements() const {
  uint64_t n = 0;
  for (const TensorSpec& t : tensors) n += element_count(t.shape);
  return n;
}

bool natural_less(std::string_view a, std::string_view b) {
  const auto pa = components(a);
  const auto pb = components(b);
  for (std::size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    const std::string_view x = pa[i], y = pb[i];
    if (x == y) continue;
    if (all_digits(x) && all_digits(y)) {
      const std::string_view xs = x.substr(std::min(x.find_first_not_of('0'), x.size()));
      const std::string_view ys = y.substr(std::min(y.find_first_not_of('0'), y.size()));
      if (xs.size() != ys.size()) return xs.size() < ys.size();
      if (xs != ys) return xs < ys;
      return x < y;  // same number, different zero padding
    }
    return x < y;
  }
  return pa.size() < pb.size();
}

std::vector<Contents::Item> Contents::items() const {
  std::vector<Item> out;
  out.reserve(units.size() + copied.size());
  for (std::size_t i = 0; i < units.size(); ++i) out.push_back({true, i});
  for (std::size_t i = 0; i < copied.size(); ++i) out.push_back({false, i});
  std::stable_sort(out.begin(), out.end(), [&](const Item& a, const Item& b) {
    const std::string& na = a.is_unit ? units[a.index].name : copied[a.index].name;
    const std::string& nb = b.is_unit ? units[b.index].name : copied[b.index].name;
    return natural_less(na, nb);
  });
  return out;
}

std::vector<TensorSpec> Contents::bf16_tensors() const {
  std::vector<TensorSpec> out;
  for (const Item& item : items()) {
    if (item.is_unit) {
      for (const TensorSpec& t : units[item.index].tensors) out.push_back(t);
    } else {
      out.push_back(copied[item.index]);
    }
  }
  return out;
}

Contents discover_units(const std::vector<TensorSpec>& tensors, const PatternDict& patterns,
                        const std::string& where) {
  std::map<std::string, const TensorSpec*, std::less<>> by_name;
  std::set<std::string> module_set;
  for (const TensorSpec& t : tensors) {
    by_name.emplace(t.name, &t);
    for (std::size_t dot = t.name.find('.'); dot != std::string::npos;
         dot = t.name.find('.', dot + 1)) {
      module_set.insert(t.name.substr(0, dot));
    }
  }
  std::vector<std::string> modules(module_set.begin(), module_set.end());
  std::sort(modules.begin(), modules.end(), natural_less);

  Contents contents;
  std::map<std::string, std::string, std::less<>> claimed_by;  // tensor -> unit
  for (const std::string& module : modules) {
    const std::vector<const PatternRule*> rules = patterns.matches(module);
    if (rules.empty()) continue;
    if (rules.size() > 1) {
      throw Error(fmt::format("{}: module '{}' matches both pattern '{}' and pattern '{}'", where,
                              module, rules[0]->regex, rules[1]->regex));
    }
    const PatternRule& rule = *rules[0];
    UnitSpec unit{module, {}};
    std::vector<std::string> names;
    if (rule.submodules.empty()) {
      names.push_back(module + ".weight");
    } else {
      for (const std::string& sub : rule.submodules)
        names.push_back(module + "." + sub + ".weight");
    }
    for (const std::string& name : names) {
      const auto it = by_name.find(name);
      if (it == by_name.end()) {
        throw Error(fmt::format("{}: unit '{}' (pattern '{}') needs tensor '{}', which is missing",
                                where, module, rule.regex, name));
      }
      const TensorSpec& t = *it->second;
      if (t.dtype != st::DType::BF16) {
        throw Error(fmt::format(
            "{}: tensor '{}' is {}, but unit '{}' (pattern '{}') compresses BF16 weights only",
            t.file.empty() ? where : t.file, name, st::dtype_name(t.dtype), module, rule.regex));
      }
      if (const auto [c, fresh] = claimed_by.emplace(name, module); !fresh) {
        throw Error(fmt::format("{}: tensor '{}' is claimed by unit '{}' and by unit '{}'", where,
                                name, c->second, module));
      }
      unit.tensors.push_back(t);
    }
    contents.units.push_back(std::move(unit));
  }
  if (contents.units.empty()) {
    std::vector<std::string> regexes;
    for (const PatternRule& r : patterns.rules()) regexes.push_back("'" + r.regex + "'");
    throw Error(fmt::format("{}: the pattern_dict ({}) matches no module of its {} tensors", where,
                            fmt::join(regexes, ", "), tensors.size()));
  }
  for (const TensorSpec& t : tensors) {
    if (!claimed_by.contains(t.name)) contents.copied.push_back(t);
  }
  std::sort(contents.copied.begin(), contents.copied.end(),
            [](const TensorSpec& a, const TensorSpec& b) { return natural_less(a.name, b.name); });
  return contents;
}

// ---------------------------------------------------------------------------------------------
// ShardSet

ShardSet ShardSet::open(const fs::path& dir, bool all_files) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw Error(fmt::format("{}: {}", dir.string(),
                            fs::exists(dir, ec) ? "not a directory" : "no such directory"));
  }
  ShardSet set;
  set.dir_ = dir;
  const fs::path index_path = dir / kIndexName;

  auto add_file = [&](const fs::path& path) -> const st::File& {
    set.files_.push_back(std::make_unique<st::File>(st::File::open(path)));
    return *set.files_.back();
  };
  auto add_tensor = [&](const st::File& file, const st::TensorInfo& info) {
    const auto [it, fresh] = set.index_.emplace(info.name, Ref{&file, &info});
    if (!fresh) {
      throw Error(fmt::format("{}: tensor '{}' is also in {}", file.path().string(), info.name,
                              it->second.file->path().string()));
    }
  };

  // A DF11 directory (all_files) is every *.safetensors in it, as the official loader reads it,
  // whatever an index there lists (save_pretrained may have written one for the uncompressed
  // tensors alone).
  if (!all_files && fs::exists(index_path, ec)) {
    const std::string where = index_path.string();
    const json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw Error(fmt::format("{}: no 'weight_map' object", where));
    }
    std::map<std::string, std::vector<std::string>> by_file;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) {
        throw Error(fmt::format("{}: tensor '{}' maps to {}, not to a file name", where, tensor,
                                brief(file)));
      }
      const std::string name = file.get<std::string>();
      if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
        throw Error(
            fmt::format("{}: tensor '{}' maps to '{}', which is not a file name in the directory",
                        where, tensor, name));
      }
      by_file[name].push_back(tensor);
    }
    if (by_file.empty()) throw Error(fmt::format("{}: the weight_map is empty", where));
    for (const auto& [name, listed] : by_file) {
      const fs::path path = dir / name;
      if (!fs::exists(path, ec)) {
        throw Error(fmt::format(
            "{}: shard '{}' (listed for tensor '{}'{}) does not exist", where, name, listed[0],
            listed.size() > 1 ? fmt::format(" and {} more", listed.size() - 1) : ""));
      }
      const st::File& file = add_file(path);
      for (const std::string& tensor : listed) {
        if (file.find(tensor) == nullptr) {
          throw Error(
              fmt::format("{}: tensor '{}' is listed in shard '{}', which has no such tensor",
                          where, tensor, path.string()));
        }
      }
      const std::set<std::string, std::less<>> listed_set(listed.begin(), listed.end());
      for (const st::TensorInfo& info : file.tensors()) {
        if (!listed_set.contains(info.name)) {
          throw Error(fmt::format("{}: tensor '{}' is not listed for this shard in {}",
                                  path.string(), info.name, where));
        }
        add_tensor(file, info);
      }
    }
    return set;
  }

  std::vector<fs::path> paths;
  if (!all_files && fs::exists(dir / kSingleName, ec)) {
    paths.push_back(dir / kSingleName);
  } else {
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.path().extension() != ".safetensors" || name[0] == '.') continue;
      // A shard that is a dangling link or a directory is refused, not passed over: the
      // checkpoint would otherwise read as complete without its tensors.
      if (!e.is_regular_file(ec)) {
        throw Error(fmt::format("{}: not a regular file{}", e.path().string(),
                                e.is_symlink(ec) && !fs::exists(e.path(), ec) ? " (a dangling link)" : ""));
      }
      paths.push_back(e.path());
    }
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) throw Error(fmt::format("{}: no *.safetensors file", dir.string()));
  for (const fs::path& path : paths) {
    const st::File& file = add_file(path);
    for (const st::TensorInfo& info : file.tensors()) add_tensor(file, info);
  }
  return set;
}

const ShardSet::Ref* ShardSet::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &it->second;
}

const ShardSet::Ref& ShardSet::at(std::string_view name) const {
  const Ref* ref = find(name);
  if (ref == nullptr) {
    throw Error(fmt::format("{}: no tensor '{}' in its {} safetensors file(s)", dir_.string(), name,
                            files_.size()));
  }
  return *ref;
}

std::vector<TensorSpec> ShardSet::tensors() const {
  std::vector<TensorSpec> out;
  out.reserve(index_.size());
  for (const auto& [name, ref] : index_) {
    out.push_back(TensorSpec{name, ref.info->dtype, ref.info->shape, ref.file->path().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const TensorSpec& a, const TensorSpec& b) { return natural_less(a.name, b.name); });
  return out;
}

void ShardSet::release(std::string_view name) const {
  if (const Ref* ref = find(name)) ref->file->release(*ref->info);
}

void ShardSet::prefetch(std::string_view name) const {
  if (const Ref* ref = find(name)) ref->file->prefetch(*ref->info);
}

// ---------------------------------------------------------------------------------------------
// HfCheckpoint

HfCheckpoint HfCheckpoint::open(const fs::path& dir) {
  HfCheckpoint ck;
  ck.config_ = read_config(dir, false);
  if (ck.config_.json.contains("dfloat11_config")) {
    throw Error(fmt::format("{}: has a dfloat11_config: this is a DF11 checkpoint, not a BF16 one",
                            (dir / kConfigName).string()));
  }
  ck.shards_ = ShardSet::open(dir, false);
  return ck;
}

Contents HfCheckpoint::contents(const PatternDict& patterns) const {
  const std::vector<TensorSpec> tensors = shards_.tensors();
  if (config_.arch) {
    const Architecture& a = *config_.arch;
    const std::string config_path = (dir() / kConfigName).string();
    for (const std::string& name : architecture_tensors(a)) {
      if (shards_.find(name) == nullptr) {
        throw Error(
            fmt::format("{}: tensor '{}', which {} requires (num_hidden_layers {}), is missing",
                        dir().string(), name, config_path, a.num_hidden_layers));
      }
    }
    for (const TensorSpec& t : tensors) {
      if (const auto layer = layer_of(t.name); layer && layer->first >= a.num_hidden_layers) {
        throw Error(
            fmt::format("{}: tensor '{}' belongs to layer {}, but {} has num_hidden_layers {}",
                        t.file, t.name, layer_text(t.name), config_path, a.num_hidden_layers));
      }
      if (const auto shape = architecture_shape(a, t.name); shape && *shape != t.shape) {
        throw Error(fmt::format("{}: tensor '{}' has shape {}, but {} implies {}", t.file, t.name,
                                shape_text(t.shape), config_path, shape_text(*shape)));
      }
    }
  }
  return discover_units(tensors, patterns, dir().string());
}

LoadedUnit HfCheckpoint::load(const UnitSpec& unit) const {
  LoadedUnit loaded;
  loaded.view.name = unit.name;
  loaded.copies.reserve(unit.tensors.size());
  for (const TensorSpec& spec : unit.tensors) {
    const ShardSet::Ref& ref = shards_.at(spec.name);
    if (ref.info->dtype != st::DType::BF16 || ref.info->shape != spec.shape) {
      throw Error(fmt::format("{}: tensor '{}' is {} {}, expected BF16 {}",
                              ref.file->path().string(), spec.name, st::dtype_name(ref.info->dtype),
                              shape_text(ref.info->shape), shape_text(spec.shape)));
    }
    loaded.copies.emplace_back();
    loaded.view.tensors.push_back(
        TensorView{spec.name, spec.shape, bf16_words(shards_.bytes(ref), loaded.copies.back())});
  }
  return loaded;
}

void HfCheckpoint::release(const UnitSpec& unit) const {
  for (const TensorSpec& t : unit.tensors) shards_.release(t.name);
}

void HfCheckpoint::prefetch(const UnitSpec& unit) const {
  for (const TensorSpec& t : unit.tensors) shards_.prefetch(t.name);
}

// ---------------------------------------------------------------------------------------------
// Df11Checkpoint

bool is_df11_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / kConfigName, ec)) return false;
  return read_config(dir, true).json.contains("dfloat11_config");
}

namespace {

Df11Config parse_df11_config(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(fmt::format("{}: dfloat11_config must be an object", where));
  Df11Config c;
  // The official loaders never read the version (datasets/fixtures/official/README.md), so any
  // is accepted, or none: the tensors are checked in full when a unit loads and decodes. Known:
  // 0.2.0 (the Mistral-Nemo release), 0.5.0 (the current tool, what compress writes).
  const auto version = j.find("version");
  if (version != j.end() && !version->is_null() && !version->is_string()) {
    throw Error(fmt::format("{}: dfloat11_config.version must be a string, got {}", where, brief(*version)));
  }
  c.version = version != j.end() && version->is_string() ? version->get<std::string>() : "";
  // threads_per_block is a list (one entry per device kind in the official tool); all must agree.
  const auto tpb = j.find("threads_per_block");
  if (tpb != j.end()) {
    const json list = tpb->is_array() ? *tpb : json::array({*tpb});
    for (const json& v : list) {
      if (!v.is_number_integer() || v.get<int64_t>() != 512) {
        throw Error(
            fmt::format("{}: dfloat11_config.threads_per_block {} is not the supported [512]",
                        where, brief(*tpb)));
      }
    }
  }
  const auto bpt = j.find("bytes_per_thread");
  if (bpt != j.end() && (!bpt->is_number_integer() || bpt->get<int64_t>() != 8)) {
    throw Error(fmt::format("{}: dfloat11_config.bytes_per_thread {} is not the supported 8", where,
                            brief(*bpt)));
  }
  const auto pd = j.find("pattern_dict");
  if (pd == j.end()) throw Error(fmt::format("{}: dfloat11_config.pattern_dict is missing", where));
  c.patterns = PatternDict::from_json(*pd, where + ": dfloat11_config.pattern_dict");
  return c;
}

std::vector<int64_t> read_i64_tensor(const ShardSet& shards, const ShardSet::Ref& ref) {
  const std::span<const std::byte> raw = shards.bytes(ref);
  std::vector<int64_t> out(raw.size() / sizeof(int64_t));
  if (!out.empty()) std::memcpy(out.data(), raw.data(), out.size() * sizeof(int64_t));
  return out;
}

// Checks a DF11 tensor's dtype and rank; `rank2_cols` > 0 asks for [rows, rank2_cols].
void check_df11_tensor(const ShardSet::Ref& ref, std::initializer_list<st::DType> dtypes,
                       int64_t rank2_cols) {
  const st::TensorInfo& info = *ref.info;
  const bool dtype_ok = std::find(dtypes.begin(), dtypes.end(), info.dtype) != dtypes.end();
  const bool rank_ok =
      rank2_cols > 0 ? info.shape.size() == 2 && info.shape[1] == rank2_cols && info.shape[0] >= 2
                     : info.shape.size() == 1;
  if (!dtype_ok || !rank_ok) {
    std::vector<std::string_view> names;
    for (const st::DType d : dtypes) names.push_back(st::dtype_name(d));
    throw Error(fmt::format(
        "{}: tensor '{}' is {} {}, expected {} {}", ref.file->path().string(), info.name,
        st::dtype_name(info.dtype), shape_text(info.shape), fmt::join(names, " or "),
        rank2_cols > 0 ? fmt::format("[rows>=2, {}]", rank2_cols) : std::string("[n]")));
  }
}

}  // namespace

Df11Checkpoint Df11Checkpoint::open(const fs::path& dir, const std::optional<fs::path>& architecture) {
  Df11Checkpoint ck;
  ck.config_ = read_config(dir, true);
  const std::string config_path = (dir / kConfigName).string();
  if (!ck.config_.json.contains("dfloat11_config")) {
    throw Error(fmt::format("{}: no dfloat11_config: not a DF11 checkpoint", config_path));
  }
  ck.df11_ = parse_df11_config(ck.config_.json["dfloat11_config"], config_path);
  if (architecture) {
    std::error_code ec;
    const fs::path file = fs::is_directory(*architecture, ec) ? *architecture / kConfigName : *architecture;
    ModelConfig given = parse_config(read_json_file(file), file.string());
    if (!given.arch) {
      throw Error(fmt::format("{}: no architecture (hidden_size, num_hidden_layers, ...) to take the shapes from",
                              file.string()));
    }
    given.json.erase("dfloat11_config");
    given.json["dfloat11_config"] = ck.config_.json["dfloat11_config"];
    ck.config_ = std::move(given);
    ck.architecture_file_ = file;
  } else {
    ck.architecture_file_ = dir / kConfigName;
  }
  ck.shards_ = ShardSet::open(dir, true);
  const ShardSet& shards = ck.shards_;

  // Units: every name with one of the three tensors no uncompressed checkpoint has.
  std::set<std::string> unit_names;
  for (const TensorSpec& t : shards.tensors()) {
    for (const std::string_view suffix : {"luts", "encoded_exponent", "sign_mantissa"}) {
      if (t.name.size() > suffix.size() + 1 && t.name.ends_with(suffix) &&
          t.name[t.name.size() - suffix.size() - 1] == '.') {
        unit_names.insert(t.name.substr(0, t.name.size() - suffix.size() - 1));
      }
    }
  }
  if (unit_names.empty()) {
    throw Error(fmt::format("{}: no DF11 unit (no '<unit>.luts' tensor in any safetensors file)",
                            dir.string()));
  }
  std::set<std::string, std::less<>> unit_tensors;
  for (const std::string& u : unit_names) {
    const ShardSet::Ref* present = nullptr;  // a tensor of the unit, to say where it is
    for (const std::string_view suffix : kDf11Suffixes) {
      if (present == nullptr) present = shards.find(fmt::format("{}.{}", u, suffix));
    }
    for (const std::string_view suffix : kDf11Suffixes) {
      const std::string name = fmt::format("{}.{}", u, suffix);
      if (shards.find(name) == nullptr) {
        throw Error(fmt::format("{}: DF11 unit '{}' has tensors in {} but no '{}' in any file",
                                dir.string(), u, present->file->path().string(), name));
      }
      unit_tensors.insert(name);
    }
    const std::vector<const PatternRule*> rules = ck.df11_.patterns.matches(u);
    const ShardSet::Ref& luts = shards.at(u + ".luts");
    if (rules.size() != 1) {
      throw Error(fmt::format(
          "{}: DF11 unit '{}' matches {} patterns of the pattern_dict in {} (needs exactly one)",
          luts.file->path().string(), u, rules.size(), config_path));
    }
    std::vector<std::string> weights;
    if (rules[0]->submodules.empty()) {
      weights.push_back(u + ".weight");
    } else {
      for (const std::string& sub : rules[0]->submodules)
        weights.push_back(u + "." + sub + ".weight");
    }
    // Shapes from the architecture; where it says nothing, 1-D counts from split_positions.
    const ShardSet::Ref& sm = shards.at(u + ".sign_mantissa");
    const ShardSet::Ref& sp = shards.at(u + ".split_positions");
    check_df11_tensor(sm, {st::DType::U8}, 0);
    check_df11_tensor(sp, {st::DType::I64}, 0);
    const std::vector<int64_t> splits = read_i64_tensor(shards, sp);
    if (splits.size() + 1 != weights.size()) {
      throw Error(fmt::format(
          "{}: tensor '{}' has {} entries, but the pattern_dict gives unit '{}' {} weights ({})",
          sp.file->path().string(), sp.info->name, splits.size(), u, weights.size(),
          fmt::join(weights, ", ")));
    }
    UnitSpec unit{u, {}};
    const auto n = static_cast<int64_t>(sm.info->n_elements());
    for (std::size_t i = 0; i < splits.size(); ++i) {
      const int64_t lo = i == 0 ? 0 : splits[i - 1];
      if (splits[i] < lo || splits[i] > n) {
        throw Error(fmt::format("{}: tensor '{}': entry {} is {}, outside [{}, {}] (the previous entry and the unit's "
                                "{} elements)",
                                sp.file->path().string(), sp.info->name, i, splits[i], lo, n, n));
      }
    }
    for (std::size_t i = 0; i < weights.size(); ++i) {
      std::optional<std::vector<int64_t>> shape;
      if (ck.config_.arch) shape = architecture_shape(*ck.config_.arch, weights[i]);
      if (!shape) {
        const int64_t begin = i == 0 ? 0 : splits[i - 1];
        const int64_t end = i + 1 == weights.size() ? n : splits[i];
        shape = std::vector<int64_t>{std::max<int64_t>(0, end - begin)};
        ck.unknown_shapes_.insert(weights[i]);
      }
      unit.tensors.push_back(
          TensorSpec{weights[i], st::DType::BF16, *shape, luts.file->path().string()});
    }
    ck.contents_.units.push_back(std::move(unit));
  }
  std::sort(ck.contents_.units.begin(), ck.contents_.units.end(),
            [](const UnitSpec& a, const UnitSpec& b) { return natural_less(a.name, b.name); });
  for (TensorSpec& t : shards.tensors()) {
    if (!unit_tensors.contains(t.name)) ck.contents_.copied.push_back(std::move(t));
  }
  ck.check_contents();
  return ck;
}

// Every weight once (a unit's or an uncompressed tensor's), and, with an architecture, every
// tensor it requires there with its shape and none past its layers: a directory missing a shard
// or a unit would otherwise decompress into a checkpoint that reads as complete.
void Df11Checkpoint::check_contents() const {
  const std::string config_path = architecture_file_.string();  // where the architecture came from
  std::map<std::string, const UnitSpec*, std::less<>> weight_unit;
  for (const UnitSpec& u : contents_.units) {
    for (const TensorSpec& t : u.tensors) {
      if (const auto [it, fresh] = weight_unit.emplace(t.name, &u); !fresh) {
        throw Error(fmt::format("{}: weight '{}' belongs to DF11 units '{}' and '{}' (pattern_dict of {})",
                                dir().string(), t.name, it->second->name, u.name, (dir() / kConfigName).string()));
      }
    }
  }
  for (const TensorSpec& t : contents_.copied) {
    if (const auto it = weight_unit.find(t.name); it != weight_unit.end()) {
      throw Error(fmt::format("{}: tensor '{}' is stored uncompressed, but is also a weight of DF11 unit '{}'",
                              t.file, t.name, it->second->name));
    }
  }
  if (!config_.arch) return;
  const Architecture& a = *config_.arch;
  for (const std::string& name : architecture_tensors(a)) {
    if (!weight_unit.contains(name) && shards_.find(name) == nullptr) {
      throw Error(fmt::format("{}: tensor '{}', which {} requires (num_hidden_layers {}), is in no DF11 unit "
                              "and no safetensors file",
                              dir().string(), name, config_path, a.num_hidden_layers));
    }
  }
  auto check = [&](const TensorSpec& t, const std::string& what) {
    if (const auto layer = layer_of(t.name); layer && layer->first >= a.num_hidden_layers) {
      throw Error(fmt::format("{}: {} '{}' belongs to layer {}, but {} has num_hidden_layers {}", t.file, what,
                              t.name, layer_text(t.name), config_path, a.num_hidden_layers));
    }
  };
  for (const UnitSpec& u : contents_.units) {
    for (const TensorSpec& t : u.tensors) check(t, fmt::format("weight of DF11 unit '{}'", u.name));
  }
  for (const TensorSpec& t : contents_.copied) {
    check(t, "tensor");
    if (const auto shape = architecture_shape(a, t.name); shape && *shape != t.shape) {
      throw Error(fmt::format("{}: tensor '{}' has shape {}, but {} implies {}", t.file, t.name,
                              shape_text(t.shape), config_path, shape_text(*shape)));
    }
  }
}

EncodedUnit Df11Checkpoint::load(const UnitSpec& unit) const {
  const std::string& u = unit.name;
  const ShardSet::Ref& luts = shards_.at(u + ".luts");
  const ShardSet::Ref& enc = shards_.at(u + ".encoded_exponent");
  const ShardSet::Ref& sm = shards_.at(u + ".sign_mantissa");
  const ShardSet::Ref& pos = shards_.at(u + ".output_positions");
  const ShardSet::Ref& gaps = shards_.at(u + ".gaps");
  const ShardSet::Ref& sp = shards_.at(u + ".split_positions");
  check_df11_tensor(luts, {st::DType::U8}, 256);
  check_df11_tensor(enc, {st::DType::U8}, 0);
  check_df11_tensor(sm, {st::DType::U8}, 0);
  // The positions are uint32 values; the official files store their bytes as U8.
  check_df11_tensor(pos, {st::DType::U8, st::DType::I32, st::DType::U32}, 0);
  check_df11_tensor(gaps, {st::DType::U8}, 0);
  check_df11_tensor(sp, {st::DType::I64}, 0);

  EncodedUnit e;
  e.name = u;
  e.layout = Layout::df11();
  e.n_elements = sm.info->n_elements();
  uint64_t sum = 0;
  std::vector<int64_t> expect;
  for (std::size_t i = 0; i < unit.tensors.size(); ++i) {
    e.tensor_names.push_back(unit.tensors[i].name);
    e.tensor_shapes.push_back(unit.tensors[i].shape);
    sum += element_count(unit.tensors[i].shape);
    if (i + 1 < unit.tensors.size()) expect.push_back(static_cast<int64_t>(sum));
  }
  std::vector<std::string> described;
  for (const TensorSpec& t : unit.tensors) described.push_back(t.name + " " + shape_text(t.shape));
  if (sum != e.n_elements) {
    throw Error(fmt::format("{}: tensor '{}' has {} elements, but the unit's weights ({}) hold {}",
                            sm.file->path().string(), sm.info->name, e.n_elements,
                            fmt::join(described, ", "), sum));
  }
  e.split_positions = read_i64_tensor(shards_, sp);
  if (e.split_positions != expect) {
    throw Error(
        fmt::format("{}: tensor '{}' is {}, but the weight shapes ({}) give split positions {}",
                    sp.file->path().string(), sp.info->name, shape_text(e.split_positions),
                    fmt::join(described, ", "), shape_text(expect)));
  }
  auto copy_u8 = [&](const ShardSet::Ref& ref) {
    const std::span<const std::byte> raw = shards_.bytes(ref);
    std::vector<uint8_t> out(raw.size());
    if (!raw.empty()) std::memcpy(out.data(), raw.data(), raw.size());
    return out;
  };
  e.luts = copy_u8(luts);
  e.encoded_exponent = copy_u8(enc);
  e.sign_mantissa = copy_u8(sm);
  e.output_positions = copy_u8(pos);
  e.gaps = copy_u8(gaps);
  // The official encoder omits the last block's entry when no code starts in that block (the
  // data ends on a byte boundary and the block holds only the tail of a code that started in
  // the previous one; see datasets/fixtures/official/README.md). That entry can only be
  // n_elements, so it is restored here; the official kernel reads it past the end.
  if (e.output_positions.size() == 4 * e.n_blocks() && e.n_blocks() > 0) {
    const uint32_t n = static_cast<uint32_t>(e.n_elements);
    for (int k = 0; k < 4; ++k) e.output_positions.push_back(static_cast<uint8_t>(n >> (8 * k)));
  }
  try {
    validate_encoded(e);
  } catch (const Error& err) {
    throw Error(fmt::format("{}: {}", luts.file->path().string(), err.what()));
  }
  return e;
}

std::filesystem::path Df11Checkpoint::stream_file(const UnitSpec& unit) const {
  return shards_.at(unit.name + ".encoded_exponent").file->path();
}

EncodedUnit Df11Checkpoint::load_checked(const UnitSpec& unit, int n_threads) const {
  EncodedUnit e = load(unit);
  try {
    check_stream(e, n_threads);
  } catch (const Error& err) {
    throw Error(fmt::format("{}: {}", stream_file(unit).string(), err.what()));
  }
  return e;
}

std::vector<uint16_t> Df11Checkpoint::decode(const UnitSpec& unit, int n_threads) const {
  const EncodedUnit e = load(unit);
  release(unit);
  return decode(unit, e, n_threads);
}

std::vector<uint16_t> Df11Checkpoint::decode(const UnitSpec& unit, const EncodedUnit& loaded, int n_threads) const {
  try {
    return decode_cpu(loaded, n_threads);
  } catch (const Error& err) {
    throw Error(fmt::format("{}: {}", stream_file(unit).string(), err.what()));
  }
}

void Df11Checkpoint::release(const UnitSpec& unit) const {
  for (const std::string_view suffix : kDf11Suffixes)
    shards_.release(fmt::format("{}.{}", unit.name, suffix));
}

// ---------------------------------------------------------------------------------------------
// OutputDir

OutputDir::OutputDir(fs::path out, const WriteOptions& options) : options_(options) {
  out_ = out.lexically_normal();
  if (out_.has_filename() == false) out_ = out_.parent_path();  // "dir/" -> "dir"
  if (out_.empty() || out_.filename() == "." || out_.filename() == "..") {
    throw Error(fmt::format("{}: not a usable output directory name", out.string()));
  }
  std::error_code ec;
  if (fs::exists(fs::symlink_status(out_, ec))) {
    if (!options_.force) {
      throw Error(fmt::format("{}: already exists (use --force to replace it)", out_.string()));
    }
    if (!fs::is_directory(fs::symlink_status(out_, ec))) {
      throw Error(
          fmt::format("{}: exists and is not a directory; not replacing it", out_.string()));
    }
  }
  fs::path parent = out_.parent_path();
  if (parent.empty()) parent = ".";
  if (!fs::is_directory(parent, ec)) {
    throw Error(fmt::format("{}: the parent directory {} {}", out_.string(), parent.string(),
                            fs::exists(parent, ec) ? "is not a directory" : "does not exist"));
  }
  remove_stale_temporaries(parent);
  tmp_ = out_;
  tmp_ += fmt::format(".tmp-{}", ::getpid());
  fs::remove_all(tmp_, ec);  // a leftover of an earlier process with our pid
  if (!fs::create_directory(tmp_, ec) || ec) {
    throw Error(fmt::format("{}: cannot create the temporary directory {}: {}", out_.string(),
                            tmp_.string(), ec ? ec.message() : "it exists"));
  }
  // Who is writing it: a later writer of the same OUT removes it if this process dies (killed
  // outright: a second Ctrl-C, SIGKILL) before it can.
  std::ofstream(tmp_ / kIncompleteMarker) << writer_identity() << ' ' << ::getpid() << '\n';
}

// OUT.tmp-PID directories beside OUT left by a process of this host and PID namespace that no
// longer runs (its marker says which): removed, and said on stderr. Another host's or namespace's,
// or a live process's, stay.
void OutputDir::remove_stale_temporaries(const fs::path& parent) const {
  std::error_code ec;
  const std::string prefix = out_.filename().string() + ".tmp-";
  const std::string me = writer_identity();
  for (const fs::directory_entry& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !all_digits(std::string_view(name).substr(prefix.size())) ||
        !e.is_directory(ec) || e.is_symlink(ec)) {
      continue;
    }
    std::ifstream marker(e.path() / kIncompleteMarker);
    std::string writer;
    long long pid = 0;
    if (!(marker >> writer >> pid) || writer != me || pid <= 0 ||
        std::to_string(pid) != name.substr(prefix.size())) {
      continue;
    }
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to ask)
    std::error_code removed;
    fs::remove_all(e.path(), removed);
    if (!removed) {
      fmt::print(stderr, "note: removed {}, left unfinished by process {}, which no longer runs\n",
                 e.path().string(), pid);
    }
  }
}

OutputDir::~OutputDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void OutputDir::write_json(const std::string& name, const json& j) const {
  // write(2) itself, so that a failure says why (a full disk, a file-size limit), which an
  // ofstream's failbit does not.
  const fs::path path = tmp_ / name;
  const std::string text = j.dump(2) + "\n";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(fmt::format("{}: cannot create: {}", path.string(), errno_text(errno)));
  if (const int err = write_fully(fd, text.data(), text.size()); err != 0) {
    ::close(fd);
    throw Error(fmt::format("{}: cannot write: {}", path.string(), errno_text(err)));
  }
  if (::close(fd) != 0) throw Error(fmt::format("{}: cannot write: {}", path.string(), errno_text(errno)));
}

void OutputDir::copy_side_files(const fs::path& dir) const {
  static const std::set<std::string> kWeightExtensions{".safetensors", ".bin", ".pt",      ".pth",
                                                       ".ckpt",        ".h5",  ".msgpack", ".gguf"};
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.empty() || name[0] == '.') continue;
    if (name == kConfigName || name.ends_with(".index.json")) continue;
    if (kWeightExtensions.contains(e.path().extension().string())) continue;
    std::error_code ec;
    fs::copy_file(e.path(), tmp_ / name, fs::copy_options::overwrite_existing, ec);
    if (ec)
      throw Error(fmt::format("{}: cannot copy into {}: {}", e.path().string(), tmp_.string(),
                              ec.message()));
  }
}

void OutputDir::commit() {
  if (committed_) throw Error(fmt::format("{}: committed twice", out_.string()));
  std::error_code ec;
  // (absent when it could not be written: the output is whole all the same)
  if (fs::remove(tmp_ / kIncompleteMarker, ec); ec) {
    throw Error(fmt::format("{}: cannot remove {}: {}", out_.string(), (tmp_ / kIncompleteMarker).string(),
                            ec.message()));
  }
  if (options_.sync) {
    for (const fs::directory_entry& e : fs::directory_iterator(tmp_)) {
      if (e.is_regular_file()) fsync_path(e.path(), false);
    }
    fsync_path(tmp_, true);
  }
  fs::path old;
  if (fs::exists(fs::symlink_status(out_, ec))) {
    if (!options_.force) {
      throw Error(
          fmt::format("{}: appeared while it was being written; not replacing it", out_.string()));
    }
    old = out_;
    old += fmt::format(".old-{}", ::getpid());
    fs::remove_all(old, ec);
    fs::rename(out_, old, ec);
    if (ec)
      throw Error(
          fmt::format("{}: cannot move the old directory aside: {}", out_.string(), ec.message()));
  }
  fs::rename(tmp_, out_, ec);
  if (ec) {
    std::error_code ignored;
    if (!old.empty()) fs::rename(old, out_, ignored);
    throw Error(fmt::format("{}: cannot rename {} into place: {}", out_.string(), tmp_.string(),
                            ec.message()));
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
  if (options_.sync) {
    const fs::path parent = out_.parent_path().empty() ? fs::path(".") : out_.parent_path();
    fsync_path(parent, true);
  }
}

// ---------------------------------------------------------------------------------------------
// Bf16DirWriter

Bf16DirWriter::Bf16DirWriter(const OutputDir& out, const std::vector<TensorSpec>& tensors,
                             uint64_t shard_bytes)
    : out_(out) {
  if (shard_bytes == 0) throw Error("the shard size must be positive");
  std::vector<std::vector<st::Planned>> plan(1);
  uint64_t filled = 0;
  for (const TensorSpec& t : tensors) {
    const uint64_t bytes = element_count(t.shape) * st::dtype_size(t.dtype);
    if (!plan.back().empty() && filled + bytes > shard_bytes) {
      plan.emplace_back();
      filled = 0;
    }
    plan.back().push_back(st::Planned{t.name, t.dtype, t.shape});
    filled += bytes;
    total_bytes_ += bytes;
  }
  const std::size_t n = plan.size();
  for (std::size_t i = 0; i < n; ++i) {
    shard_names_.push_back(n == 1 ? std::string(kSingleName)
                                  : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n));
    for (const st::Planned& p : plan[i]) shard_of_.emplace(p.name, i);
    st::sort_like_reference(plan[i]);
    shards_.push_back(
        std::make_unique<st::PlannedWriter>(out.tmp() / shard_names_[i], std::move(plan[i]),
                                            std::map<std::string, std::string>{{"format", "pt"}}));
  }
}

void Bf16DirWriter::write(std::string_view name, std::span<const std::byte> data) {
  const auto it = shard_of_.find(name);
  if (it == shard_of_.end()) {
    throw Error(fmt::format("{}: tensor '{}' is not part of the checkpoint being written",
                            out_.out().string(), name));
  }
  shards_[it->second]->write(name, data);
}

void Bf16DirWriter::finish() {
  for (const auto& shard : shards_) shard->finish(false);  // OutputDir::commit syncs with --fsync
  if (shards_.size() > 1) {
    json weight_map = json::object();
    for (const auto& [name, shard] : shard_of_) weight_map[name] = shard_names_[shard];
    out_.write_json(std::string(kIndexName),
                    json{{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map}});
  }
}

// ---------------------------------------------------------------------------------------------
// Df11DirWriter

std::string df11_unit_file_name(std::string_view unit) {
  std::string name(unit);
  std::replace(name.begin(), name.end(), '.', '_');
  return name + ".safetensors";
}

Df11DirWriter::Df11DirWriter(const OutputDir& out, const Contents& contents,
                             const ModelConfig& source, const PatternDict& patterns)
    : out_(out), config_(source.json) {
  config_["dfloat11_config"] = json{{"version", "0.5.0"},
                                    {"threads_per_block", {512}},
                                    {"bytes_per_thread", 8},
                                    {"pattern_dict", patterns.to_json()}};
  std::map<std::string, std::string, std::less<>> files;  // file -> unit
  for (const UnitSpec& u : contents.units) {
    // The name becomes a file name in OUT: nothing that could leave it or end it early.
    if (u.name.empty() || u.name.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos) {
      throw Error(fmt::format("{}: unit '{}' cannot name a file in it (a unit name is not empty and holds no '/', "
                              "'\\' or NUL)",
                              out.out().string(), u.name));
    }
    const std::string file = df11_unit_file_name(u.name);
    if (file == kSingleName) {
      throw Error(
          fmt::format("{}: unit '{}' would be written to {}, the file of the uncompressed tensors",
                      out.out().string(), u.name, file));
    }
    if (const auto [it, fresh] = files.emplace(file, u.name); !fresh) {
      throw Error(fmt::format("{}: units '{}' and '{}' would both be written to {}",
                              out.out().string(), it->second, u.name, file));
    }
    unit_copied_[u.name];
  }
  // An uncompressed tensor goes with the innermost unit whose module contains it, as officially.
  for (const TensorSpec& t : contents.copied) {
    // A reader takes NAME.luts (any of the six suffixes) for part of a unit NAME.
    for (const std::string_view suffix : kDf11Suffixes) {
      if (t.name.size() > suffix.size() && t.name.ends_with(suffix) && t.name[t.name.size() - suffix.size() - 1] == '.') {
        throw Error(fmt::format("{}: tensor '{}' (uncompressed, from {}) ends in '.{}', which a DF11 reader takes for "
                                "part of a unit '{}': the output could not be read back",
                                out.out().string(), t.name, t.file, suffix,
                                t.name.substr(0, t.name.size() - suffix.size() - 1)));
      }
    }
    std::string_view owner;
    for (std::size_t dot = t.name.find('.'); dot != std::string::npos;
         dot = t.name.find('.', dot + 1)) {
      if (unit_copied_.contains(std::string_view(t.name).substr(0, dot)))
        owner = std::string_view(t.name).substr(0, dot);
    }
    if (owner.empty()) {
      rest_.push_back(t);
    } else {
      unit_copied_.find(owner)->second.push_back(t);
    }
  }
}

void Df11DirWriter::write_unit(EncodedUnit e, const BytesFn& copied_bytes) {
  if (!e.layout.is_df11()) {
    throw Error(fmt::format("unit '{}': layout {} is not the official DF11 layout", e.name,
                            e.layout.name()));
  }
  const auto copied = unit_copied_.find(e.name);
  if (copied == unit_copied_.end()) {
    throw Error(fmt::format("{}: unit '{}' is not part of the checkpoint being written",
                            out_.out().string(), e.name));
  }
  const auto u8 = [](const std::vector<uint8_t>& v) {
    return std::as_bytes(std::span<const uint8_t>(v));
  };
  struct Piece {
    st::Planned plan;
    std::span<const std::byte> data;
  };
  std::vector<Piece> pieces{
      {{e.name + ".luts", st::DType::U8, {static_cast<int64_t>(e.luts.size() / 256), 256}},
       u8(e.luts)},
      {{e.name + ".encoded_exponent",
        st::DType::U8,
        {static_cast<int64_t>(e.encoded_exponent.size())}},
       u8(e.encoded_exponent)},
      {{e.name + ".sign_mantissa", st::DType::U8, {static_cast<int64_t>(e.sign_mantissa.size())}},
       u8(e.sign_mantissa)},
      {{e.name + ".output_positions",
        st::DType::U8,
        {static_cast<int64_t>(e.output_positions.size())}},
       u8(e.output_positions)},
      {{e.name + ".gaps", st::DType::U8, {static_cast<int64_t>(e.gaps.size())}}, u8(e.gaps)},
      {{e.name + ".split_positions",
        st::DType::I64,
        {static_cast<int64_t>(e.split_positions.size())}},
       std::as_bytes(std::span<const int64_t>(e.split_positions))},
  };
  for (const TensorSpec& t : copied->second)
    pieces.push_back({{t.name, t.dtype, t.shape}, copied_bytes(t)});
  std::vector<st::Planned> plan;
  for (const Piece& p : pieces) plan.push_back(p.plan);
  st::sort_like_reference(plan);
  // Unit files carry no metadata, as the official ones.
  st::PlannedWriter file(out_.tmp() / df11_unit_file_name(e.name), std::move(plan));
  // The two big buffers go first and are freed at once; the rest is small.
  file.write(pieces[2].plan.name, pieces[2].data);
  std::vector<uint8_t>().swap(e.sign_mantissa);
  file.write(pieces[1].plan.name, pieces[1].data);
  std::vector<uint8_t>().swap(e.encoded_exponent);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i != 1 && i != 2) file.write(pieces[i].plan.name, pieces[i].data);
  }
  file.finish(false);
}

void Df11DirWriter::finish(const BytesFn& copied_bytes) {
  if (!rest_.empty()) {
    std::vector<st::Planned> plan;
    for (const TensorSpec& t : rest_) plan.push_back({t.name, t.dtype, t.shape});
    st::sort_like_reference(plan);
    st::PlannedWriter file(out_.tmp() / kSingleName, std::move(plan), {{"format", "pt"}});
    for (const TensorSpec& t : rest_) file.write(t.name, copied_bytes(t));
    file.finish(false);
  }
  out_.write_json(std::string(kConfigName), config_);
}

// ---------------------------------------------------------------------------------------------
// Passes

namespace {

// Counts progress over the items of a checkpoint.
class Tracker {
 public:
  Tracker(const Contents& contents, const ProgressFn& fn) : fn_(fn) {
    p_.items_total = contents.units.size() + contents.copied.size();
    p_.units_total = contents.units.size();
    for (const UnitSpec& u : contents.units) p_.elements_total += u.n_elements();
    for (const TensorSpec& t : contents.copied) p_.elements_total += element_count(t.shape);
    p_.bytes_total = 2 * p_.elements_total;
  }
  void done(std::string_view name, uint64_t elements, bool is_unit) {
    ++p_.items_done;
    p_.units_done += is_unit ? 1 : 0;
    p_.elements_done += elements;
    p_.bytes_done = 2 * p_.elements_done;
    p_.current = name;
    if (fn_) fn_(p_);
  }

 private:
  const ProgressFn& fn_;
  Progress p_;
};

// OUT may be neither IN nor a directory holding it: --force replaces OUT as a whole, so IN would
// go with it (and with it what the new OUT was made from).
void refuse_same_dir(const fs::path& in, const fs::path& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec)) {
    throw Error(fmt::format("{}: the output directory is the input directory", out.string()));
  }
  const fs::path in_full = fs::weakly_canonical(fs::absolute(in, ec), ec);
  const fs::path out_full = fs::weakly_canonical(fs::absolute(out, ec), ec);
  if (ec) return;
  const auto [o, i] = std::mismatch(out_full.begin(), out_full.end(), in_full.begin(), in_full.end());
  if (o == out_full.end() || (std::next(o) == out_full.end() && o->empty())) {
    throw Error(fmt::format("{}: the output directory holds the input directory {}", out.string(), in.string()));
  }
}

}  // namespace

void synthesize(const fs::path& out, const SynthOptions& o, const ProgressFn& progress) {
  const synth::ModelShape& s = o.shape;
  if (s.n_layers <= 0 || s.vocab <= 0)
    throw Error("synth: the model needs at least one layer and one token");
  const ModelConfig config = config_for(s);
  std::vector<TensorSpec> tensors;
  for (const std::string& name : architecture_tensors(*config.arch)) {
    tensors.push_back(
        TensorSpec{name, st::DType::BF16, *architecture_shape(*config.arch, name), {}});
  }
  const Contents contents = discover_units(tensors, PatternDict::mistral(), out.string());

  OutputDir dir(out, o.write);
  Bf16DirWriter writer(dir, contents.bf16_tensors(), o.shard_bytes);
  Tracker tracker(contents, progress);
  for (const Contents::Item& item : contents.items()) {
    if (!item.is_unit) {
      const TensorSpec& t = contents.copied[item.index];
      std::vector<uint16_t> words(element_count(t.shape));
      synth::fill_norm(words, o.seed, t.name);
      writer.write(t.name, std::as_bytes(std::span<const uint16_t>(words)));
      tracker.done(t.name, words.size(), false);
      continue;
    }
    const UnitSpec& spec = contents.units[item.index];
    Unit unit;
    if (spec.name == "lm_head") {
      unit = synth::make_matrix_unit("lm_head", "lm_head", "lm_head", s.vocab, s.hidden, o.seed,
                                     o.threads);
    } else if (spec.name == "model.embed_tokens") {
      unit = synth::make_matrix_unit("model.embed_tokens", "model.embed_tokens", "embed_tokens",
                                     s.vocab, s.hidden, o.seed, o.threads);
    } else {
      const auto layer = layer_of(spec.name + ".");
      if (!layer) throw Error(fmt::format("synth: unexpected unit '{}'", spec.name));
      unit = synth::make_layer(s, static_cast<int>(layer->first), o.seed, 1.0, o.threads);
    }
    if (unit.tensors.size() != spec.tensors.size()) {
      throw Error(fmt::format("synth: unit '{}' generated {} tensors, expected {}", spec.name,
                              unit.tensors.size(), spec.tensors.size()));
    }
    for (std::size_t i = 0; i < spec.tensors.size(); ++i) {
      if (unit.tensors[i].shape != spec.tensors[i].shape) {
        throw Error(fmt::format("synth: tensor '{}' generated as {}, expected {}",
                                spec.tensors[i].name, shape_text(unit.tensors[i].shape),
                                shape_text(spec.tensors[i].shape)));
      }
      writer.write(spec.tensors[i].name,
                   std::as_bytes(std::span<const uint16_t>(unit.tensors[i].data)));
    }
    tracker.done(spec.name, spec.n_elements(), true);
  }
  writer.finish();
  dir.write_json(std::string(kConfigName), config.json);
  dir.commit();
}

namespace {

// The order in which compress() encodes units: largest, smallest, second largest, second
// smallest, ... Writing a unit overlaps the next one's encoding only when both fit in the memory
// of the largest unit alone, which a big unit after a small one's write mostly does. The order
// changes nothing in the output (a file per unit).
std::vector<std::size_t> encode_order(const std::vector<UnitSpec>& units) {
  std::vector<std::size_t> by_size(units.size());
  for (std::size_t i = 0; i < units.size(); ++i) by_size[i] = i;
  std::stable_sort(by_size.begin(), by_size.end(), [&](std::size_t a, std::size_t b) {
    return units[a].n_elements() > units[b].n_elements();
  });
  std::vector<std::size_t> order;
  for (std::size_t lo = 0, hi = by_size.size(); lo < hi;) {
    order.push_back(by_size[lo++]);
    if (lo < hi) order.push_back(by_size[--hi]);
  }
  return order;
}

}  // namespace

void compress(const fs::path& in, const fs::path& out, const CompressOptions& o,
              const ProgressFn& progress) {
  const HfCheckpoint ck = HfCheckpoint::open(in);
  const PatternDict patterns = o.patterns ? *o.patterns : PatternDict::mistral();
  const Contents contents = ck.contents(patterns);
  refuse_same_dir(in, out);

  OutputDir dir(out, o.write);
  Df11DirWriter writer(dir, contents, ck.config(), patterns);
  const Df11DirWriter::BytesFn bytes = [&](const TensorSpec& t) {
    const ShardSet::Ref& ref = ck.shards().at(t.name);
    return ck.shards().bytes(ref);
  };
  Tracker tracker(contents, progress);
  for (const TensorSpec& t : contents.copied) {
    // Written with its unit's file or at the end; nothing to encode.
    tracker.done(t.name, element_count(t.shape), false);
  }
  // Memory a unit needs while it is encoded: its mapped input plus the encoder's output, bounded
  // generously by the input size again.
  const auto footprint = [](const UnitSpec& u) { return 4 * u.n_elements(); };
  uint64_t budget = 0;
  for (const UnitSpec& u : contents.units) budget = std::max(budget, footprint(u));

  const std::vector<std::size_t> order = encode_order(contents.units);
  // The write in flight (declared after `dir`, so an error waits for it before the temporary
  // directory is removed) and the bytes it still holds.
  std::future<void> pending;
  uint64_t pending_bytes = 0;
  for (std::size_t k = 0; k < order.size(); ++k) {
    const UnitSpec& unit = contents.units[order[k]];
    if (k + 1 < order.size())
      ck.prefetch(contents.units[order[k + 1]]);  // read-ahead overlaps encoding
    if (pending.valid() && pending_bytes + footprint(unit) > budget) pending.get();
    EncodedUnit encoded;
    {
      const LoadedUnit loaded = ck.load(unit);
      try {
        encoded = encode(loaded.view, Layout::df11(), o.threads);
      } catch (const Error& e) {
        // The encoder names the unit, tensor and element; add the file of that tensor.
        const std::string_view what = e.what();
        std::set<std::string> files;
        for (const TensorSpec& t : unit.tensors) files.insert(t.file);
        for (const TensorSpec& t : unit.tensors) {
          if (what.find(t.name) != std::string_view::npos) files = {t.file};
        }
        throw Error(fmt::format("{}: {}", fmt::join(files, ", "), what));
      }
    }
    ck.release(unit);  // the input pages are no longer needed: keep memory near one unit
    if (pending.valid()) pending.get();  // rethrows the previous write's error
    pending_bytes = encoded.stored_bytes();
    pending = std::async(std::launch::async, [&writer, &bytes, e = std::move(encoded)]() mutable {
      writer.write_unit(std::move(e), bytes);
    });
    tracker.done(unit.name, unit.n_elements(), true);
  }
  if (pending.valid()) pending.get();
  writer.finish(bytes);
  dir.copy_side_files(in);
  dir.commit();
}

void decompress(const fs::path& in, const fs::path& out, const DecompressOptions& o,
                const ProgressFn& progress) {
  const Df11Checkpoint ck = Df11Checkpoint::open(in, o.architecture);
  const Contents& contents = ck.contents();
  for (const UnitSpec& u : contents.units) {
    for (const TensorSpec& t : u.tensors) {
      if (!ck.shape_known(t.name)) {
        throw Error(fmt::format(
            "{}: the shape of tensor '{}' (unit '{}') cannot be derived: {} describes no "
            "architecture that defines it (--config CONFIG.json gives one)",
            in.string(), t.name, u.name,
            o.architecture ? o.architecture->string() : (in / kConfigName).string()));
      }
    }
  }
  refuse_same_dir(in, out);

  OutputDir dir(out, o.write);
  Bf16DirWriter writer(dir, contents.bf16_tensors(), o.shard_bytes);
  Tracker tracker(contents, progress);
  for (const Contents::Item& item : contents.items()) {
    if (!item.is_unit) {
      const TensorSpec& t = contents.copied[item.index];
      writer.write(t.name, ck.shards().bytes(ck.shards().at(t.name)));
      ck.shards().release(t.name);
      tracker.done(t.name, element_count(t.shape), false);
      continue;
    }
    const UnitSpec& unit = contents.units[item.index];
    const std::vector<uint16_t> words = ck.decode(unit, o.threads);
    uint64_t offset = 0;
    for (const TensorSpec& t : unit.tensors) {
      const uint64_t n = element_count(t.shape);
      writer.write(t.name, std::as_bytes(std::span<const uint16_t>(words).subspan(offset, n)));
      offset += n;
    }
    tracker.done(unit.name, unit.n_elements(), true);
  }
  writer.finish();
  json config = ck.config().json;
  config.erase("dfloat11_config");
  if (!config.empty()) dir.write_json(std::string(kConfigName), config);
  dir.copy_side_files(in);
  dir.commit();
}

}  // namespace df11::ckpt
