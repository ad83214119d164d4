// Weight sources of the end-to-end model and the on-demand conversions of a unit between BF16
// and its encoded forms.
#include "e2e/weights.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codec/bf16.hpp"
#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "datasets/json_io.hpp"
#include "datasets/synthetic.hpp"

namespace df11::e2e {
namespace {

constexpr std::array<std::string_view, kRoles> kRoleNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

std::string shape_text(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// "model.layers.3.self_attn.q_proj.weight" -> "q_proj"
std::string_view last_component(std::string_view name) {
  if (name.ends_with(".weight")) name.remove_suffix(7);
  const auto dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

std::string layer_name(int i) {
  return fmt::format("model.layers.{}", i);
}

}  // namespace

bool UnitMap::qkv_fused() const {
  if (slices.size() != kRoles) return false;
  const Slice &q = slices[q_proj], &k = slices[k_proj], &v = slices[v_proj];
  return k.offset == q.offset + static_cast<uint64_t>(q.rows * q.cols) &&
         v.offset == k.offset + static_cast<uint64_t>(k.rows * k.cols);
}

bool UnitMap::gate_up_fused() const {
  if (slices.size() != kRoles) return false;
  const Slice &g = slices[gate_proj], &u = slices[up_proj];
  return u.offset == g.offset + static_cast<uint64_t>(g.rows * g.cols);
}

uint64_t UnitMap::largest_gemm_elements() const {
  const auto elems = [this](int r) {
    const Slice& sl = slices[static_cast<std::size_t>(r)];
    return static_cast<uint64_t>(sl.rows * sl.cols);
  };
  if (slices.size() != kRoles) return slices.empty() ? 0 : elems(0);
  const uint64_t q = elems(q_proj), k = elems(k_proj), v = elems(v_proj);
  const uint64_t g = elems(gate_proj), u = elems(up_proj);
  return std::max({elems(o_proj), elems(down_proj), qkv_fused() ? q + k + v : std::max({q, k, v}),
                   gate_up_fused() ? g + u : std::max(g, u)});
}

UnitMap map_unit(const ModelShape& s, int unit, const std::string& unit_name,
                 const std::vector<std::string>& names,
                 const std::vector<std::vector<int64_t>>& shapes) {
  UnitMap m;
  if (names.size() != shapes.size())
    throw Error(fmt::format("unit {}: names and shapes disagree", unit_name));
  std::vector<std::vector<int64_t>> expected;
  std::vector<std::string_view> roles;
  if (unit < s.n_layers) {
    for (const auto& spec : synth::layer_specs(s)) expected.push_back({spec.rows, spec.cols});
    roles.assign(kRoleNames.begin(), kRoleNames.end());
  } else {
    expected.push_back({s.vocab, s.hidden});
    roles.push_back({});
  }
  m.slices.assign(roles.size(), Slice{});
  std::vector<bool> seen(roles.size(), false);
  if (names.size() != roles.size()) {
    throw Error(fmt::format("unit {}: holds {} tensors ({}), the model needs {}", unit_name,
                            names.size(), fmt::join(names, ", "), roles.size()));
  }
  uint64_t offset = 0;
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::size_t r = 0;
    if (roles.size() > 1) {
      const auto it = std::find(roles.begin(), roles.end(), last_component(names[i]));
      if (it == roles.end())
        throw Error(fmt::format("unit {}: tensor '{}' is not a block matrix", unit_name, names[i]));
      r = static_cast<std::size_t>(it - roles.begin());
    }
    if (seen[r])
      throw Error(fmt::format("unit {}: tensor '{}' appears twice", unit_name, names[i]));
    seen[r] = true;
    if (shapes[i] != expected[r]) {
      throw Error(fmt::format("unit {}: tensor '{}' is {}, the model ({}) needs {}", unit_name,
                              names[i], shape_text(shapes[i]), describe(s),
                              shape_text(expected[r])));
    }
    m.slices[r] = Slice{offset, shapes[i][0], shapes[i][1]};
    offset += static_cast<uint64_t>(shapes[i][0] * shapes[i][1]);
  }
  m.n_elements = offset;
  return m;
}

// ---- UnitFeed --------------------------------------------------------------------------------

UnitFeed::UnitFeed(int unit, UnitMap map, Unit bf16, int threads)
    : unit_(unit), map_(std::move(map)), threads_(threads), unit_bf16_(std::move(bf16)) {}

UnitFeed::UnitFeed(int unit, UnitMap map, EncodedUnit encoded, int threads)
    : unit_(unit), map_(std::move(map)), threads_(threads) {
  encoded_.push_back(std::make_shared<const EncodedUnit>(std::move(encoded)));
}

UnitFeed::UnitFeed(int unit, UnitMap map, synth::UnitPlan plan, synth::MatrixFiller filler, bool device_fillable,
                   int threads)
    : unit_(unit),
      map_(std::move(map)),
      threads_(threads),
      plan_(std::move(plan)),
      filler_(std::move(filler)),
      device_fillable_(device_fillable) {
  if (plan_->n_elements() != map_.n_elements) {
    throw Error(fmt::format("unit {}: the plan holds {} elements, the map {}", plan_->name, plan_->n_elements(),
                            map_.n_elements));
  }
}

const std::string& UnitFeed::name() const {
  if (plan_) return plan_->name;
  return unit_bf16_ ? unit_bf16_->name : encoded_.front()->name;
}

HostPrepTimes& host_prep_times() {
  static HostPrepTimes t;
  return t;
}

std::shared_ptr<const std::vector<uint16_t>> UnitFeed::shared_bf16() {
  if (flat_) return flat_;
  const AddTime timed(host_prep_times().bits_s);
  if (plan_) {
    std::vector<uint16_t> flat;
    reserve_prefaulted(flat, map_.n_elements, threads_, Pages::huge);
    flat.resize(map_.n_elements);
    synth::fill_unit(flat, *plan_, threads_, filler_);
    flat_ = std::make_shared<const std::vector<uint16_t>>(std::move(flat));
  } else if (unit_bf16_) {
    uint64_t total = 0;
    for (const auto& t : unit_bf16_->tensors) total += t.data.size();
    std::vector<uint16_t> flat;
    reserve_prefaulted(flat, total, threads_, Pages::huge);
    flat.resize(total);
    uint64_t at = 0;  // laid end to end, each on all cores
    for (const auto& t : unit_bf16_->tensors) {
      parallel_copy(flat.data() + at, t.data.data(), t.data.size() * 2, threads_);
      at += t.data.size();
    }
    flat_ = std::make_shared<const std::vector<uint16_t>>(std::move(flat));
    unit_bf16_->tensors.clear();  // keep names only: the flat copy is the data now
  } else {
    flat_ = std::make_shared<const std::vector<uint16_t>>(reference_decode_ ? decode_reference(*encoded_.front())
                                                                            : decode_cpu(*encoded_.front(), threads_));
  }
  return flat_;
}

std::shared_ptr<const EncodedUnit> UnitFeed::shared_encoded(const Layout& layout) {
  for (const auto& e : encoded_)
    if (e->layout == layout) return e;
  const std::vector<uint16_t>& flat = bf16();
  UnitView view{name(), {}};
  // Tensor order of the source: the same concatenation the map describes.
  std::vector<std::pair<uint64_t, std::size_t>> order;
  for (std::size_t r = 0; r < map_.slices.size(); ++r) order.emplace_back(map_.slices[r].offset, r);
  std::sort(order.begin(), order.end());
  const bool block = map_.slices.size() == kRoles;
  for (const auto& [offset, r] : order) {
    const Slice& sl = map_.slices[r];
    const std::string tname = block ? std::string(kRoleNames[r]) : name();
    view.tensors.push_back(
        TensorView{tname,
                   {sl.rows, sl.cols},
                   std::span<const uint16_t>(flat.data() + sl.offset,
                                             static_cast<std::size_t>(sl.rows * sl.cols))});
  }
  const AddTime timed(host_prep_times().encode_s);
  encoded_.push_back(std::make_shared<const EncodedUnit>(encode(view, layout, threads_)));
  return encoded_.back();
}

// ---- sources ---------------------------------------------------------------------------------

void synthetic_norm(std::vector<uint16_t>& out, uint64_t seed, const std::string& name) {
  synth::fill_norm(out, seed, name);  // the recipe `df11 synth` uses, so both agree
}

namespace {

class SyntheticSource final : public WeightSource {
 public:
  SyntheticSource(const ModelShape& shape, uint64_t seed, int threads, const std::string& name,
                  SynthesisPlace where)
      : seed_(seed), threads_(threads), where_(std::move(where)) {
    validate(shape, "synthetic model");
    shape_ = shape;
    description_ = fmt::format("synthetic {}(seed {}{})", name.empty() ? "" : name + " ", seed,
                               where_.filler ? ", generated on " + where_.name : "");
    const auto h = static_cast<std::size_t>(shape.hidden);
    norms_.input.assign(static_cast<std::size_t>(shape.n_layers), std::vector<uint16_t>(h));
    norms_.post = norms_.input;
    norms_.final_norm.resize(h);
    for (int64_t i = 0; i < shape.n_layers; ++i) {
      synthetic_norm(norms_.input[static_cast<std::size_t>(i)], seed,
                     fmt::format("model.layers.{}.input_layernorm.weight", i));
      synthetic_norm(norms_.post[static_cast<std::size_t>(i)], seed,
                     fmt::format("model.layers.{}.post_attention_layernorm.weight", i));
    }
    synthetic_norm(norms_.final_norm, seed, "model.norm.weight");
  }

  // The unit's plan; its bits are made when a provider asks for them (on the host, or by the
  // filler), or by a device provider itself when the place says so.
  UnitFeed load(int unit) const override {
    const ModelShape& s = shape_;
    synth::UnitPlan plan;
    if (unit == lm_head_unit(s)) {
      plan = synth::plan_matrix_unit("lm_head", "lm_head", "lm_head", s.vocab, s.hidden, seed_);
    } else if (unit == embed_unit(s)) {
      plan = synth::plan_matrix_unit("model.embed_tokens", "model.embed_tokens", "embed_tokens", s.vocab,
                                     s.hidden, seed_);
    } else if (unit >= 0 && unit < s.n_layers) {
      plan = synth::plan_layer(s, unit, seed_, 1.0);
    } else {
      throw Error(fmt::format("synthetic model: no unit {}", unit));
    }
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& m : plan.matrices) {
      names.push_back(m.name);
      shapes.push_back(m.shape);
    }
    UnitMap map = map_unit(s, unit, plan.name, names, shapes);
    return UnitFeed(unit, std::move(map), std::move(plan), where_.filler, where_.device_fillable, threads_);
  }

 private:
  uint64_t seed_;
  int threads_;
  SynthesisPlace where_;
};

// Reads a [hidden] BF16 norm from a checkpoint's files.
std::vector<uint16_t> read_norm(const ckpt::ShardSet& shards, const std::string& name,
                                int64_t hidden) {
  const ckpt::ShardSet::Ref& ref = shards.at(name);
  if (ref.info->dtype != st::DType::BF16 || ref.info->shape != std::vector<int64_t>{hidden}) {
    throw Error(fmt::format("{}: tensor '{}' is {} {}, expected BF16 [{}]",
                            ref.file->path().string(), name, st::dtype_name(ref.info->dtype),
                            shape_text(ref.info->shape), hidden));
  }
  const auto bytes = shards.bytes(ref);
  std::vector<uint16_t> out(static_cast<std::size_t>(hidden));
  std::memcpy(out.data(), bytes.data(), bytes.size());  // safetensors does not align tensors
  return out;
}

// Unit specs of a checkpoint indexed like the model's units. tied (config.json's
// tie_word_embeddings): the output projection is the embedding matrix, as HF ties them (a stored
// lm_head is not used); untied, the checkpoint must hold an lm_head.
std::vector<const ckpt::UnitSpec*> index_units(const ModelShape& s, const ckpt::Contents& contents, bool tied,
                                               const std::string& where) {
  std::vector<const ckpt::UnitSpec*> by_unit(static_cast<std::size_t>(n_units(s)), nullptr);
  for (const auto& u : contents.units) {
    int idx = -1;
    if (u.name == "model.embed_tokens") {
      idx = embed_unit(s);
    } else if (u.name == "lm_head") {
      idx = lm_head_unit(s);
    } else {
      for (int i = 0; i < s.n_layers; ++i)
        if (u.name == layer_name(i)) idx = i;
    }
    if (idx < 0)
      throw Error(fmt::format("{}: unit '{}' is not part of the Mistral model", where, u.name));
    by_unit[static_cast<std::size_t>(idx)] = &u;
  }
  if (tied) by_unit[static_cast<std::size_t>(lm_head_unit(s))] = by_unit[static_cast<std::size_t>(embed_unit(s))];
  for (int i = 0; i < n_units(s); ++i) {
    if (!by_unit[static_cast<std::size_t>(i)]) {
      throw Error(fmt::format("{}: no unit {}{}", where,
                              i < s.n_layers       ? layer_name(i)
                              : i == embed_unit(s) ? "model.embed_tokens"
                                                   : "lm_head",
                              i == lm_head_unit(s) ? " (config.json's tie_word_embeddings is false)" : ""));
    }
  }
  return by_unit;
}

// Every tensor of the checkpoint (as a BF16 checkpoint stores it) must be one the forward pass
// reads: a bias or another model's tensor would otherwise be dropped without a word. Rotary
// inv_freq buffers, which some checkpoints carry, are what rope_theta gives.
void check_tensors(const ckpt::Architecture& a, const ckpt::Contents& contents, const std::string& where) {
  std::vector<std::string> known = ckpt::architecture_tensors(a);
  known.emplace_back("lm_head.weight");  // stored though tied: HF's tie replaces it
  std::sort(known.begin(), known.end());
  for (const ckpt::TensorSpec& t : contents.bf16_tensors()) {
    if (t.name.ends_with(".rotary_emb.inv_freq")) continue;
    if (!std::binary_search(known.begin(), known.end(), t.name)) {
      throw Error(fmt::format("{}: tensor '{}' is not one the Mistral forward pass reads (biases and other "
                              "architectures are not implemented)",
                              t.file.empty() ? where : t.file, t.name));
    }
  }
}

Norms read_norms(const ModelShape& s, const ckpt::ShardSet& shards) {
  Norms n;
  for (int64_t i = 0; i < s.n_layers; ++i) {
    n.input.push_back(
        read_norm(shards, fmt::format("model.layers.{}.input_layernorm.weight", i), s.hidden));
    n.post.push_back(read_norm(
        shards, fmt::format("model.layers.{}.post_attention_layernorm.weight", i), s.hidden));
  }
  n.final_norm = read_norm(shards, "model.norm.weight", s.hidden);
  return n;
}

ModelShape checked_shape(const ckpt::ModelConfig& config) {
  const std::string& where = config.where;  // the config.json the architecture came from
  if (!config.arch) throw Error(fmt::format("{}: no model architecture (hidden_size, ...)", where));
  // Variants of the architecture this forward pass does not implement are refused, not run wrong.
  const nlohmann::json& j = config.json;
  auto set = [&](const char* key) {
    return j.contains(key) && !j[key].is_null() && j[key] != false;
  };
  std::string model_type = "mistral";  // HF needs one; a hand-written config without it reads as Mistral
  if (const auto it = j.find("model_type"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || (*it != "mistral" && *it != "llama")) {
      throw Error(fmt::format("{}: model_type {} is not implemented (mistral and llama are)", where, brief(*it)));
    }
    model_type = it->get<std::string>();
  }
  if (set("rope_scaling")) throw Error(fmt::format("{}: rope_scaling is not implemented", where));
  // transformers 5 writes rope settings as rope_parameters (rope_scaling is its alias there).
  if (const auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    for (const char* key : {"rope_type", "type"}) {
      if (const auto t = it->find(key); t != it->end() && !t->is_null() && *t != "default") {
        throw Error(fmt::format("{}: rope_parameters.{} {} is not implemented (default is)", where, key, brief(*t)));
      }
    }
  }
  for (const nlohmann::json* o : {&j, j.contains("rope_parameters") ? &j["rope_parameters"] : nullptr}) {
    if (o == nullptr || !o->is_object()) continue;
    if (const auto f = o->find("partial_rotary_factor"); f != o->end() && !f->is_null() && *f != 1) {
      throw Error(fmt::format("{}: partial_rotary_factor {} is not implemented (rotary embeddings rotate whole heads)",
                              where, brief(*f)));
    }
  }
  if (set("attention_bias") || set("mlp_bias"))
    throw Error(fmt::format("{}: biases are not implemented", where));
  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    throw Error(fmt::format("{}: hidden_act {} is not implemented (silu is)", where,
                            brief(j["hidden_act"])));
  }
  ModelShape s = shape_of(*config.arch, where);
  // sliding_window: HF's Mistral default when the key is absent is 4096 (Llama has none); null
  // is none. Attention here is full causal, equal to the window while a row stays inside it
  // (the models refuse longer rows).
  if (const auto it = j.find("sliding_window"); it == j.end()) {
    s.sliding_window = model_type == "mistral" ? 4096 : 0;
  } else if (!it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1) {
      throw Error(fmt::format("{}: sliding_window must be a positive integer or null, got {}", where, brief(*it)));
    }
    s.sliding_window = it->get<int64_t>();
  }
  return s;
}

class HfSource final : public WeightSource {
 public:
  HfSource(const std::filesystem::path& dir, int threads)
      : ckpt_(ckpt::HfCheckpoint::open(dir)), threads_(threads) {
    shape_ = checked_shape(ckpt_.config());
    contents_ = ckpt_.contents(ckpt::PatternDict::mistral());
    check_tensors(*ckpt_.config().arch, contents_, dir.string());
    units_ = index_units(shape_, contents_, ckpt_.config().arch->tie_word_embeddings, dir.string());
    norms_ = read_norms(shape_, ckpt_.shards());
    description_ = fmt::format("HF checkpoint {}", dir.string());
  }

  UnitFeed load(int unit) const override {
    const ckpt::UnitSpec& spec = *units_.at(static_cast<std::size_t>(unit));
    const ckpt::LoadedUnit loaded = ckpt_.load(spec);
    Unit u;
    u.name = spec.name;
    std::vector<std::string> names;
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& t : loaded.view.tensors) {
      u.tensors.push_back(
          Bf16Tensor{t.name, t.shape, std::vector<uint16_t>(t.data.begin(), t.data.end())});
      names.push_back(t.name);
      shapes.push_back(t.shape);
    }
    ckpt_.release(spec);
    UnitMap map = map_unit(shape_, unit, spec.name, names, shapes);
    return UnitFeed(unit, std::move(map), std::move(u), threads_);
  }

 private:
  ckpt::HfCheckpoint ckpt_;
  ckpt::Contents contents_;
  std::vector<const ckpt::UnitSpec*> units_;
  int threads_;
};

class Df11Source final : public WeightSource {
 public:
  Df11Source(const std::filesystem::path& dir, int threads, const std::optional<std::filesystem::path>& config)
      : ckpt_(ckpt::Df11Checkpoint::open(dir, config)), threads_(threads) {
    shape_ = checked_shape(ckpt_.config());
    check_tensors(*ckpt_.config().arch, ckpt_.contents(), dir.string());
    units_ = index_units(shape_, ckpt_.contents(), ckpt_.config().arch->tie_word_embeddings, dir.string());
    norms_ = read_norms(shape_, ckpt_.shards());
    description_ = fmt::format("DF11 checkpoint {}", dir.string());
  }

  UnitFeed load(int unit) const override {
    const ckpt::UnitSpec& spec = *units_.at(static_cast<std::size_t>(unit));
    // Checked here: a GPU decoder reads the stream as it is and would turn damage into garbage.
    EncodedUnit e = ckpt_.load_checked(spec, threads_);
    ckpt_.release(spec);
    UnitMap map = map_unit(shape_, unit, spec.name, e.tensor_names, e.tensor_shapes);
    UnitFeed feed(unit, std::move(map), std::move(e), threads_);
    feed.set_reference_decode(reference_decode_);
    return feed;
  }

  void set_reference_decode(bool on) override {
    if (on && !reference_decode_) description_ += " (BF16 words by the serial reference decoder)";
    reference_decode_ = on;
  }

 private:
  bool reference_decode_ = false;
  ckpt::Df11Checkpoint ckpt_;
  std::vector<const ckpt::UnitSpec*> units_;
  int threads_;
};

}  // namespace

std::unique_ptr<WeightSource> synthetic_source(const ModelShape& shape, uint64_t seed, int threads,
                                               const std::string& name, SynthesisPlace where) {
  return std::make_unique<SyntheticSource>(shape, seed, threads, name, std::move(where));
}

std::unique_ptr<WeightSource> open_checkpoint(const std::filesystem::path& dir, int threads,
                                              const std::optional<std::filesystem::path>& config) {
  if (!std::filesystem::is_directory(dir))
    throw Error(fmt::format("{}: not a directory", dir.string()));
  if (ckpt::is_df11_dir(dir)) return std::make_unique<Df11Source>(dir, threads, config);
  if (config) {
    throw Error(fmt::format("{}: a BF16 checkpoint has its own config.json; --config is for a DF11 directory whose "
                            "config.json holds only dfloat11_config",
                            dir.string()));
  }
  return std::make_unique<HfSource>(dir, threads);
}

}  // namespace df11::e2e
