// Checkpoint directories: Hugging Face BF16 ones (config.json + one or more safetensors shards)
// and official DFloat11 ones; units found from the architecture or a pattern_dict; atomic,
// streaming writers of both; and the whole-directory passes synthesize / compress / decompress.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "codec/layout.hpp"
#include "codec/unit.hpp"
#include "datasets/nemo.hpp"
#include "datasets/regex.hpp"
#include "datasets/safetensors.hpp"

namespace df11::ckpt {

// ---- config.json ----------------------------------------------------------------------------

// Bounds of a config.json's sizes (parse_config), far above any real model's (Mistral-Nemo: 5120,
// 14336, 40 layers, 32 / 8 heads of 128, vocab 131072), that keep every size computed from them
// (a matrix's elements, a layer count as an int) in range. Tools that take the same sizes as
// options (generate --layers, --vocab) bound them the same way.
inline constexpr int64_t kMaxHidden = int64_t{1} << 20;
inline constexpr int64_t kMaxIntermediate = int64_t{1} << 22;
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxHeads = 4096;
inline constexpr int64_t kMaxHeadDim = 65536;
inline constexpr int64_t kMaxVocab = int64_t{1} << 26;

// The Mistral/Llama architecture fields of a config.json.
struct Architecture {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // default: num_attention_heads
  int64_t head_dim = 0;             // default: hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  double rope_theta = 10000.0;  // top level, or rope_parameters.rope_theta (transformers 5)
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::string torch_dtype;  // "torch_dtype", or "dtype" (transformers 5); may be empty
};

struct ModelConfig {
  nlohmann::json json = nlohmann::json::object();  // the whole file; writers keep every key
  std::string where;  // the file it came from (parse_config's `where`), for messages
  // Present when the file describes a transformer (it has hidden_size); a config.json holding
  // only a dfloat11_config, as the official tool writes for a bare module, has none.
  std::optional<Architecture> arch;
};

// Parses a config.json document; `where` (the file) prefixes every message.
[[nodiscard]] ModelConfig parse_config(const nlohmann::json& json, const std::string& where);
// Reads dir/config.json; a directory without one gets an empty config when `required` is false.
[[nodiscard]] ModelConfig read_config(const std::filesystem::path& dir, bool required);
// The config.json of a Mistral-style model of this shape (what `df11 synth` writes).
[[nodiscard]] ModelConfig config_for(const synth::ModelShape& shape);

// The small test model: 2 layers, hidden 256, intermediate 768, 4 query heads, 2 KV heads,
// head_dim 64, vocab 1024.
[[nodiscard]] constexpr synth::ModelShape tiny_shape() {
  return synth::ModelShape{256, 768, 2, 4, 2, 64, 1024, 1.0e6, 1.0e-5};
}
// "mistral-nemo" or "tiny"; throws df11::Error for anything else.
[[nodiscard]] synth::ModelShape shape_of_arch(std::string_view name);

// The shape the architecture gives a tensor of a Mistral/Llama checkpoint (embed_tokens,
// lm_head, the 7 projections and the norms of layers 0..n-1, model.norm); nullopt for a name the
// architecture does not define.
[[nodiscard]] std::optional<std::vector<int64_t>> architecture_shape(const Architecture& arch,
                                                                     std::string_view tensor);
// Every tensor name the architecture requires, in natural order.
[[nodiscard]] std::vector<std::string> architecture_tensors(const Architecture& arch);

// ---- pattern_dict ---------------------------------------------------------------------------

// One rule of an official pattern_dict: modules whose full name the regex matches entirely form
// a unit of the weights of `submodules` (in that order), or of the module's own weight when the
// list is empty.
struct PatternRule {
  std::string regex;
  std::vector<std::string> submodules;
};

class PatternDict {
 public:
  // The pattern_dict of the official Mistral/Llama releases: lm_head, model.embed_tokens, and
  // model.layers.N with q, k, v, o, gate, up, down.
  [[nodiscard]] static PatternDict mistral();
  // {"regex": ["submodule", ...], ...}; throws df11::Error naming `where` on a bad regex or shape.
  [[nodiscard]] static PatternDict from_json(const nlohmann::json& json, const std::string& where);
  // A --pattern argument: the path of a JSON file, or the JSON text itself.
  [[nodiscard]] static PatternDict from_argument(const std::string& file_or_json);

  // The rules whose regex matches the whole module name.
  [[nodiscard]] std::vector<const PatternRule*> matches(std::string_view module) const;
  [[nodiscard]] const std::vector<PatternRule>& rules() const { return rules_; }
  [[nodiscard]] nlohmann::json to_json() const;

 private:
  std::vector<PatternRule> rules_;
  std::vector<LinearRegex> regexes_;  // rules_[i]'s, matched whole in linear time
};

// ---- what a checkpoint holds ----------------------------------------------------------------

struct TensorSpec {
  std::string name;
  st::DType dtype = st::DType::BF16;
  std::vector<int64_t> shape;
  std::string file;  // the file holding it, for messages; empty when not from a file
};

// A unit: BF16 weights sharing one code. Its tensors are full checkpoint names
// ("model.layers.0.self_attn.q_proj.weight") in the order they are concatenated.
struct UnitSpec {
  std::string name;
  std::vector<TensorSpec> tensors;
  [[nodiscard]] uint64_t n_elements() const;
};

// Natural order of dotted names: numeric components compare as numbers (layers.2 < layers.10).
[[nodiscard]] bool natural_less(std::string_view a, std::string_view b);

struct Contents {
  std::vector<UnitSpec> units;     // natural order of unit names
  std::vector<TensorSpec> copied;  // stored as they are (norms, biases, ...); natural order

  // Units and copied tensors merged in the natural order of their names: the order in which
  // every pass visits a checkpoint, so the same model is always written the same way.
  struct Item {
    bool is_unit;
    std::size_t index;  // into units or copied
  };
  [[nodiscard]] std::vector<Item> items() const;
  // All tensors as a BF16 checkpoint stores them (unit weights then copied ones, item order).
  [[nodiscard]] std::vector<TensorSpec> bf16_tensors() const;
};

// Applies a pattern_dict to the modules of a list of tensors (every dotted prefix of a tensor
// name is a module). Throws df11::Error naming `where`, the file and the tensor when a matched
// module lacks a weight, a unit weight is not BF16, a tensor is claimed by two units, a module
// matches two rules, or nothing matches at all.
[[nodiscard]] Contents discover_units(const std::vector<TensorSpec>& tensors,
                                      const PatternDict& patterns, const std::string& where);

// ---- reading --------------------------------------------------------------------------------

// The safetensors files of a directory and a name index over them: the files listed by
// model.safetensors.index.json when there is one; else, for a Hugging Face directory,
// model.safetensors alone when it exists (Mistral repositories also hold a consolidated.*
// copy); else every *.safetensors file (official DF11 directories: one file per unit). All
// memory-mapped.
class ShardSet {
 public:
  struct Ref {
    const st::File* file;
    const st::TensorInfo* info;
  };

  // Throws df11::Error naming the file (and tensor) for a broken index, a missing shard, a
  // tensor the index names but its shard lacks (or the reverse), a tensor in two files, or any
  // safetensors defect. all_files (a DF11 directory): every *.safetensors in dir, an index
  // ignored; else the index's shards, or model.safetensors alone, or every *.safetensors.
  [[nodiscard]] static ShardSet open(const std::filesystem::path& dir, bool all_files);

  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  [[nodiscard]] const Ref* find(std::string_view name) const;
  // Throws df11::Error naming the directory and the tensor when it is missing.
  [[nodiscard]] const Ref& at(std::string_view name) const;
  // Every tensor, natural order.
  [[nodiscard]] std::vector<TensorSpec> tensors() const;
  [[nodiscard]] std::size_t n_files() const { return files_.size(); }
  [[nodiscard]] std::span<const std::byte> bytes(const Ref& ref) const {
    return ref.file->bytes(*ref.info);
  }
  void release(std::string_view name) const;
  void prefetch(std::string_view name) const;

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<st::File>> files_;
  std::map<std::string, Ref, std::less<>> index_;
};

// A unit's BF16 tensors viewed in place in the mapped files (copied only when a file leaves a
// tensor misaligned for uint16).
struct LoadedUnit {
  UnitView view;
  std::vector<std::vector<uint16_t>> copies;
};

// A Hugging Face BF16 checkpoint directory.
class HfCheckpoint {
 public:
  // Reads config.json (optional) and opens the shards.
  [[nodiscard]] static HfCheckpoint open(const std::filesystem::path& dir);

  [[nodiscard]] const std::filesystem::path& dir() const { return shards_.dir(); }
  [[nodiscard]] const ModelConfig& config() const { return config_; }
  [[nodiscard]] const ShardSet& shards() const { return shards_; }
  // Units and copied tensors under `patterns`. With an architecture it also checks that every
  // tensor it requires is present with its shape, and that no layer lies beyond
  // num_hidden_layers; errors name the file and the tensor.
  [[nodiscard]] Contents contents(const PatternDict& patterns) const;
  // Checks that each tensor is BF16 with the spec's shape.
  [[nodiscard]] LoadedUnit load(const UnitSpec& unit) const;
  void release(const UnitSpec& unit) const;
  void prefetch(const UnitSpec& unit) const;

 private:
  ModelConfig config_;
  ShardSet shards_;
};

// The dfloat11_config object of an official DF11 config.json.
struct Df11Config {
  std::string version;  // "0.2.0" or "0.5.0"
  int threads_per_block = 512;
  int bytes_per_thread = 8;
  PatternDict patterns;
};

// True when dir/config.json has a dfloat11_config.
[[nodiscard]] bool is_df11_dir(const std::filesystem::path& dir);

// An official DFloat11 checkpoint directory: units as the six DF11 tensors each, anywhere in the
// directory's safetensors files, plus uncompressed tensors.
class Df11Checkpoint {
 public:
  // Reads config.json and its dfloat11_config, opens the shards and finds every unit (a name with
  // a .luts, .encoded_exponent or .sign_mantissa tensor). Each unit's weight names follow from the
  // pattern_dict and their shapes from the architecture; without an architecture (a bare module)
  // the shapes are 1-D element counts. Throws df11::Error naming the file and tensor.
  // architecture: a config.json (or a directory holding one) whose architecture gives the units'
  // shapes instead of dir's config.json (the official single-file layout's holds only
  // dfloat11_config, so its weights' shapes are otherwise unknown); config() is then that file's
  // with dir's dfloat11_config.
  [[nodiscard]] static Df11Checkpoint open(const std::filesystem::path& dir,
                                           const std::optional<std::filesystem::path>& architecture = {});

  [[nodiscard]] const std::filesystem::path& dir() const { return shards_.dir(); }
  [[nodiscard]] const ModelConfig& config() const { return config_; }
  [[nodiscard]] const Df11Config& df11() const { return df11_; }
  [[nodiscard]] const ShardSet& shards() const { return shards_; }
  [[nodiscard]] const Contents& contents() const { return contents_; }
  // Whether a unit weight's shape came from the architecture (else it is a 1-D element count).
  [[nodiscard]] bool shape_known(std::string_view tensor) const {
    return !unknown_shapes_.contains(tensor);
  }
  // Copies the unit's tensors out of the files into an EncodedUnit (Layout::df11()), checking
  // dtypes, ranks, sizes and split_positions against the shapes, then validate_encoded().
  [[nodiscard]] EncodedUnit load(const UnitSpec& unit) const;
  void release(const UnitSpec& unit) const;
  // The file that holds the unit's encoded exponents: what an error found while decoding the unit
  // names (load's own errors already name it).
  [[nodiscard]] std::filesystem::path stream_file(const UnitSpec& unit) const;
  // load, then check_stream: every code of the stream walked and checked as decode_cpu does,
  // for a reader that hands the unit to a decoder without those checks (a GPU kernel). A
  // corrupt stream is an error naming this file and the unit.
  [[nodiscard]] EncodedUnit load_checked(const UnitSpec& unit, int n_threads = 0) const;
  // load, release, decode_cpu: the unit's BF16 words (its tensors end to end), errors naming the
  // file.
  [[nodiscard]] std::vector<uint16_t> decode(const UnitSpec& unit, int n_threads = 0) const;
  // decode_cpu of `loaded` (the unit as load returned it), errors naming the file.
  [[nodiscard]] std::vector<uint16_t> decode(const UnitSpec& unit, const EncodedUnit& loaded, int n_threads) const;

 private:
  // Refuses a weight in two units or both in a unit and uncompressed, and (with an architecture)
  // a required tensor missing, an uncompressed one of another shape, or one past the layers.
  void check_contents() const;

  ModelConfig config_;
  std::filesystem::path architecture_file_;  // the config.json the architecture came from
  Df11Config df11_;
  ShardSet shards_;
  Contents contents_;
  std::set<std::string, std::less<>> unknown_shapes_;
};

// ---- writing --------------------------------------------------------------------------------

struct WriteOptions {
  bool force = false;  // replace an existing output directory
  bool sync = false;   // fsync every file before the directory is renamed into place
};

// An output directory that appears whole or not at all: files go to a temporary sibling
// OUT.tmp-<pid>, and commit() renames it to OUT (replacing an old OUT only with `force`). The
// destructor removes the temporary directory unless commit() succeeded.
class OutputDir {
 public:
  // Throws df11::Error when OUT exists and `force` is not set, or when the temporary directory
  // cannot be made.
  OutputDir(std::filesystem::path out, const WriteOptions& options);
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  ~OutputDir();

  [[nodiscard]] const std::filesystem::path& tmp() const { return tmp_; }
  [[nodiscard]] const std::filesystem::path& out() const { return out_; }
  [[nodiscard]] const WriteOptions& options() const { return options_; }
  // Writes `json` as tmp()/name, indented by 2 with sorted keys (as Hugging Face does).
  void write_json(const std::string& name, const nlohmann::json& json) const;
  // Copies the files of `dir` that are neither weights nor config.json nor an index (tokenizer,
  // generation config, ...), so a converted model keeps them.
  void copy_side_files(const std::filesystem::path& dir) const;
  void commit();

 private:
  void remove_stale_temporaries(const std::filesystem::path& parent) const;

  std::filesystem::path out_;
  std::filesystem::path tmp_;
  WriteOptions options_;
  bool committed_ = false;
};

// Writes BF16 (or other) tensors as a Hugging Face checkpoint: shards of at most `shard_bytes`
// of data (a larger tensor gets a shard alone) filled in the given order, named
// model.safetensors for one shard or model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json, every file laid out like the reference writer with
// {"format": "pt"} metadata. All files are created up front; write() accepts tensors in any order.
class Bf16DirWriter {
 public:
  Bf16DirWriter(const OutputDir& out, const std::vector<TensorSpec>& tensors, uint64_t shard_bytes);
  void write(std::string_view name, std::span<const std::byte> data);
  // Finishes every shard and writes the index.
  void finish();
  [[nodiscard]] std::size_t n_shards() const { return shards_.size(); }

 private:
  const OutputDir& out_;
  std::vector<std::unique_ptr<st::PlannedWriter>> shards_;
  std::map<std::string, std::size_t, std::less<>> shard_of_;
  std::vector<std::string> shard_names_;
  uint64_t total_bytes_ = 0;
};

// The official file of one DF11 unit: `<unit name with '.' -> '_'>.safetensors`.
[[nodiscard]] std::string df11_unit_file_name(std::string_view unit);

// Writes the files of a DF11 checkpoint in the official (0.5.0) layout: one file per unit holding
// its six DF11 tensors (official names, dtypes, shapes) and the uncompressed tensors of the unit's
// module; the remaining uncompressed tensors in model.safetensors; config.json = the source's
// plus dfloat11_config. Each unit is written as soon as it is encoded.
class Df11DirWriter {
 public:
  // Gives bytes of an uncompressed tensor.
  using BytesFn = std::function<std::span<const std::byte>(const TensorSpec&)>;

  Df11DirWriter(const OutputDir& out, const Contents& contents, const ModelConfig& source,
                const PatternDict& patterns);
  // Consumes the unit: each buffer is freed as soon as it is written, so a unit being written
  // (on another thread, while the next is encoded) holds less and less memory. Safe to call
  // from one thread while another encodes; calls must not overlap each other.
  void write_unit(EncodedUnit unit, const BytesFn& copied_bytes);
  // Writes model.safetensors (the uncompressed tensors of no unit) and config.json.
  void finish(const BytesFn& copied_bytes);

 private:
  const OutputDir& out_;
  nlohmann::json config_;
  std::map<std::string, std::vector<TensorSpec>, std::less<>> unit_copied_;  // by unit
  std::vector<TensorSpec> rest_;
};

// ---- whole-directory passes -----------------------------------------------------------------

struct Progress {
  std::size_t items_done = 0, items_total = 0;  // units and copied tensors
  std::size_t units_done = 0, units_total = 0;
  uint64_t elements_done = 0, elements_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // BF16 bytes
  std::string_view current;                  // the item just finished
};
using ProgressFn = std::function<void(const Progress&)>;

inline constexpr uint64_t kDefaultShardBytes = 5'000'000'000;  // Hugging Face's "5GB"

struct SynthOptions {
  synth::ModelShape shape = tiny_shape();
  uint64_t seed = 0;
  uint64_t shard_bytes = kDefaultShardBytes;
  int threads = 0;
  WriteOptions write;
};

// A Hugging Face BF16 checkpoint of synthetic weights from df11::synth (the calibrated
// generator: make_layer / make_matrix_unit), norms near 1.0.
void synthesize(const std::filesystem::path& out, const SynthOptions& options,
                const ProgressFn& progress = {});

struct CompressOptions {
  std::optional<PatternDict> patterns;  // default: PatternDict::mistral()
  int threads = 0;
  WriteOptions write;
};

// BF16 directory -> official DF11 directory, unit by unit: memory stays near one unit (each
// unit's input pages are released after it is encoded). A unit's file is written on a second
// thread while the next unit is encoded, when both fit in the memory the largest unit needs
// alone; the units are visited large and small alternately so that they mostly do.
void compress(const std::filesystem::path& in, const std::filesystem::path& out,
              const CompressOptions& options, const ProgressFn& progress = {});

struct DecompressOptions {
  uint64_t shard_bytes = kDefaultShardBytes;
  int threads = 0;
  WriteOptions write;
  // Shapes (and the output's config.json) from this config.json or directory (Df11Checkpoint::open).
  std::optional<std::filesystem::path> architecture;
};

// DF11 directory -> BF16 Hugging Face directory with bit-identical tensors.
void decompress(const std::filesystem::path& in, const std::filesystem::path& out,
                const DecompressOptions& options, const ProgressFn& progress = {});

}  // namespace df11::ckpt
