// Strict parser of experiment files (schema version 1, experiment.hpp): every key is known, every
// value checked, and every error names the file and the full key path (units[1].matrices[0].out).
#include "sweep/experiment.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string_view>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "codec/common.hpp"

namespace df11::sweep {
namespace {

constexpr int64_t kSchemaVersion = 1;
// Layers of Mistral-Nemo (synthetic units are calibrated to them).
constexpr int64_t kNemoLayers = 40;

// Reads one table: each getter marks its key as known, so finish() can name any key left over.
// Keys are reported with their full path so a message points at one place in the file.
class Reader {
 public:
  Reader(const toml::table& table, std::string origin, std::string prefix)
      : table_(table), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

  [[nodiscard]] std::string key_path(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    throw Error(fmt::format("{}: key '{}': {}", origin_, key_path(key), what));
  }
  [[noreturn]] void fail_at(const toml::node& node, std::string_view key,
                            const std::string& what) const {
    const auto& src = node.source();
    if (src.begin.line > 0) {
      throw Error(fmt::format("{}:{}:{}: key '{}': {}", origin_, src.begin.line, src.begin.column,
                              key_path(key), what));
    }
    fail(key, what);
  }

  const toml::node* get(std::string_view key) {
    known_.emplace_back(key);
    return table_.get(key);
  }

  const toml::node& require(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) fail(key, "is required");
    return *n;
  }

  std::optional<int64_t> integer(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_integer())
      fail_at(*n, key, fmt::format("must be an integer, got {}", type_name(*n)));
    return n->as_integer()->get();
  }

  // Integers are accepted where a number is wanted: `max_time_s = 1` means 1.0.
  std::optional<double> number(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (n->is_integer()) return static_cast<double>(n->as_integer()->get());
    if (!n->is_floating_point())
      fail_at(*n, key, fmt::format("must be a number, got {}", type_name(*n)));
    const double v = n->as_floating_point()->get();
    if (!std::isfinite(v)) fail_at(*n, key, "must be finite");
    return v;
  }

  std::optional<std::string> string(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    if (!n->is_string()) fail_at(*n, key, fmt::format("must be a string, got {}", type_name(*n)));
    return n->as_string()->get();
  }

  const toml::array* array(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) return nullptr;
    if (!n->is_array()) fail_at(*n, key, fmt::format("must be an array, got {}", type_name(*n)));
    return n->as_array();
  }

  const toml::table* table(std::string_view key) {
    const toml::node* n = get(key);
    if (!n) return nullptr;
    if (!n->is_table()) fail_at(*n, key, fmt::format("must be a table, got {}", type_name(*n)));
    return n->as_table();
  }

  // Every key of the table must have been asked for by now.
  void finish() const {
    for (auto&& [k, v] : table_) {
      if (std::find(known_.begin(), known_.end(), k.str()) == known_.end()) {
        fail_at(v, k.str(), "unknown key");
      }
    }
  }

  [[nodiscard]] const std::string& origin() const { return origin_; }

  static std::string type_name(const toml::node& n) {
    switch (n.type()) {
      case toml::node_type::table:
        return "a table";
      case toml::node_type::array:
        return "an array";
      case toml::node_type::string:
        return "a string";
      case toml::node_type::integer:
        return "an integer";
      case toml::node_type::floating_point:
        return "a float";
      case toml::node_type::boolean:
        return "a boolean";
      case toml::node_type::date:
        return "a date";
      case toml::node_type::time:
        return "a time";
      case toml::node_type::date_time:
        return "a date-time";
      default:
        return "nothing";
    }
  }

 private:
  const toml::table& table_;
  std::string origin_;
  std::string prefix_;
  std::vector<std::string> known_;
};

// chunk_bytes: one slice size or a list of them (each >= 0; 0: from the device's L2), distinct.
std::vector<uint64_t> parse_chunk_bytes(Reader& r, std::string_view key, const toml::node& n) {
  std::vector<const toml::node*> items;
  if (n.is_array()) {
    for (std::size_t i = 0; i < n.as_array()->size(); ++i) items.push_back(n.as_array()->get(i));
    if (items.empty()) r.fail_at(n, key, "must list at least one slice size");
  } else {
    items.push_back(&n);
  }
  std::vector<uint64_t> out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const toml::node& v = *items[i];
    const std::string item = n.is_array() ? fmt::format("{}[{}]", key, i) : std::string(key);
    if (!v.is_integer()) {
      r.fail_at(v, item, fmt::format("must be an integer or an array of integers, got {}", Reader::type_name(v)));
    }
    const int64_t b = v.as_integer()->get();
    if (b < 0) r.fail_at(v, item, fmt::format("must be >= 0 (0: from the device's L2), got {}", b));
    if (std::find(out.begin(), out.end(), static_cast<uint64_t>(b)) != out.end()) {
      r.fail_at(v, item, fmt::format("slice size {} is listed twice", b));
    }
    out.push_back(static_cast<uint64_t>(b));
  }
  return out;
}

std::vector<int> parse_batches(Reader& r, std::string_view key, const toml::array& a) {
  std::vector<int> out;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const toml::node& n = *a.get(i);
    const std::string item = fmt::format("{}[{}]", key, i);
    if (!n.is_integer())
      r.fail_at(n, item, fmt::format("must be an integer, got {}", Reader::type_name(n)));
    const int64_t b = n.as_integer()->get();
    if (b <= 0) r.fail_at(n, item, fmt::format("batch must be > 0, got {}", b));
    if (b > (int64_t{1} << 20))
      r.fail_at(n, item, fmt::format("batch {} is absurdly large (limit 1048576)", b));
    if (std::find(out.begin(), out.end(), static_cast<int>(b)) != out.end()) {
      r.fail_at(n, item, fmt::format("batch {} is listed twice", b));
    }
    out.push_back(static_cast<int>(b));
  }
  if (out.empty()) r.fail(key, "must list at least one batch");
  return out;
}

// Kinds of methods that take a decoder glob, those that must not, and df11-fused, which may
// (df11-fused: DF11's layout; df11-fused:<glob>: the layouts of the matching variants).
constexpr std::string_view kGlobKinds[] = {"df11", "df11-rev", "df11-overlap", "df11-chunked", "df11-pipelined", "decode"};
constexpr std::string_view kPlainKinds[] = {"bf16", "cpu-offload", "cpu-offload-sync", "copy", "df11-fused-mma"};
constexpr std::string_view kOptionalGlobKind = "df11-fused";

void check_method(Reader& r, const toml::node& n, const std::string& item, const std::string& m) {
  const auto colon = m.find(':');
  const std::string kind = m.substr(0, colon);
  const bool glob_kind =
      std::find(std::begin(kGlobKinds), std::end(kGlobKinds), kind) != std::end(kGlobKinds);
  const bool plain_kind =
      std::find(std::begin(kPlainKinds), std::end(kPlainKinds), kind) != std::end(kPlainKinds);
  const bool optional_glob = kind == kOptionalGlobKind;
  if (!glob_kind && !plain_kind && !optional_glob) {
    r.fail_at(
        n, item,
        fmt::format("unknown method kind '{}' in '{}' (bf16, cpu-offload, cpu-offload-sync, copy, "
                    "df11-fused[:<glob>], df11-fused-mma, df11:<glob>, df11-rev:<glob>, df11-overlap:<glob>, df11-chunked:<glob>, "
                    "df11-pipelined:<glob>, "
                    "decode:<glob>)",
                    kind, m));
  }
  if (plain_kind && colon != std::string::npos) {
    r.fail_at(n, item, fmt::format("method '{}' takes no decoder glob (write '{}')", m, kind));
  }
  if (glob_kind && (colon == std::string::npos || colon + 1 == m.size())) {
    r.fail_at(n, item, fmt::format("method '{}' needs a decoder glob, e.g. '{}:*'", m, kind));
  }
  if (optional_glob && colon + 1 == m.size()) {
    r.fail_at(n, item, fmt::format("method '{}': an empty decoder glob (write '{}' or '{}:<glob>')", m, kind, kind));
  }
}

std::vector<std::string> parse_methods(Reader& r, std::string_view key, const toml::array& a) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const toml::node& n = *a.get(i);
    const std::string item = fmt::format("{}[{}]", key, i);
    if (!n.is_string())
      r.fail_at(n, item, fmt::format("must be a string, got {}", Reader::type_name(n)));
    const std::string m = n.as_string()->get();
    check_method(r, n, item, m);
    if (std::find(out.begin(), out.end(), m) != out.end())
      r.fail_at(n, item, fmt::format("'{}' is listed twice", m));
    out.push_back(m);
  }
  if (out.empty()) r.fail(key, "must list at least one method");
  return out;
}

std::optional<double> parse_row_fraction(Reader& r, std::string_view key) {
  const std::optional<double> f = r.number(key);
  if (f && !(*f > 0.0 && *f <= 1.0)) r.fail(key, fmt::format("must be in (0, 1], got {}", *f));
  return f;
}

// Reads [measurement] over `base` (the common settings, or the defaults), so an override table
// only names what differs.
Measurement parse_measurement(const toml::table& t, const std::string& origin,
                              const std::string& prefix, Measurement m) {
  Reader r(t, origin, prefix);
  if (auto v = r.integer("warmup")) {
    if (*v < 0 || *v > 1000) r.fail("warmup", fmt::format("must be in [0, 1000], got {}", *v));
    m.warmup = static_cast<int>(*v);
  }
  if (auto v = r.integer("min_samples")) {
    if (*v < 1 || *v > 1'000'000)
      r.fail("min_samples", fmt::format("must be in [1, 1000000], got {}", *v));
    m.min_samples = static_cast<int>(*v);
  }
  if (auto v = r.integer("max_samples")) {
    if (*v < 1 || *v > 1'000'000)
      r.fail("max_samples", fmt::format("must be in [1, 1000000], got {}", *v));
    m.max_samples = static_cast<int>(*v);
  }
  if (auto v = r.number("min_time_s")) {
    if (*v < 0) r.fail("min_time_s", fmt::format("must be >= 0, got {}", *v));
    m.min_time_s = *v;
  }
  if (auto v = r.number("max_time_s")) {
    if (!(*v > 0)) r.fail("max_time_s", fmt::format("must be > 0, got {}", *v));
    m.max_time_s = *v;
  }
  if (auto v = r.number("noise_target")) {
    if (*v < 0) r.fail("noise_target", fmt::format("must be >= 0, got {}", *v));
    m.noise_target = *v;
  }
  if (auto v = r.string("l2_policy")) {
    if (*v == "rotate") {
      r.fail("l2_policy", "l2_policy 'rotate' (buffers rotated between samples) is not implemented: use flush or none");
    } else if (*v != "flush" && *v != "none") {
      r.fail("l2_policy", fmt::format("unknown l2_policy '{}' (flush, none)", *v));
    }
    m.l2_policy = *v;
  }
  r.finish();
  // Checked on the merged settings: an override may raise min_samples above the common maximum.
  if (m.max_samples < m.min_samples) {
    r.fail("max_samples", fmt::format("{} is below min_samples {}", m.max_samples, m.min_samples));
  }
  if (m.max_time_s < m.min_time_s) {
    r.fail("max_time_s", fmt::format("{} is below min_time_s {}", m.max_time_s, m.min_time_s));
  }
  return m;
}

int64_t positive_dim(Reader& r, std::string_view key) {
  const toml::node& n = r.require(key);
  if (!n.is_integer())
    r.fail_at(n, key, fmt::format("must be an integer, got {}", Reader::type_name(n)));
  const int64_t v = n.as_integer()->get();
  if (v <= 0 || v > (int64_t{1} << 31))
    r.fail_at(n, key, fmt::format("must be in [1, 2^31], got {}", v));
  return v;
}

std::string nonempty_string(Reader& r, std::string_view key) {
  const toml::node& n = r.require(key);
  if (!n.is_string())
    r.fail_at(n, key, fmt::format("must be a string, got {}", Reader::type_name(n)));
  std::string s = n.as_string()->get();
  if (s.empty()) r.fail_at(n, key, "must not be empty");
  return s;
}

UnitSpec parse_unit(const toml::table& t, const std::string& origin, const std::string& prefix) {
  Reader r(t, origin, prefix);
  UnitSpec u;
  const toml::node& kind_node = r.require("kind");
  if (!kind_node.is_string()) {
    r.fail_at(kind_node, "kind",
              fmt::format("must be a string, got {}", Reader::type_name(kind_node)));
  }
  const std::string kind = kind_node.as_string()->get();
  if (kind == "nemo_layer") {
    u.kind = UnitSpec::Kind::nemo_layer;
    if (auto v = r.integer("layer")) {
      if (*v < 0 || *v >= kNemoLayers)
        r.fail("layer", fmt::format("must be in [0, {}), got {}", kNemoLayers, *v));
      u.layer = static_cast<int>(*v);
    }
  } else if (kind == "nemo_lm_head") {
    u.kind = UnitSpec::Kind::nemo_lm_head;
  } else if (kind == "custom") {
    u.kind = UnitSpec::Kind::custom;
    u.name = nonempty_string(r, "name");
    const toml::array* ms = r.array("matrices");
    if (!ms || ms->empty())
      r.fail("matrices", "a custom unit needs at least one matrix {name, out, in}");
    for (std::size_t i = 0; i < ms->size(); ++i) {
      const toml::node& n = *ms->get(i);
      const std::string item = fmt::format("matrices[{}]", i);
      if (!n.is_table())
        r.fail_at(n, item,
                  fmt::format("must be a table {{name, out, in}}, got {}", Reader::type_name(n)));
      Reader mr(*n.as_table(), origin, r.key_path(item));
      std::string name = nonempty_string(mr, "name");
      const int64_t out = positive_dim(mr, "out");
      const int64_t in = positive_dim(mr, "in");
      mr.finish();
      for (const auto& m : u.matrices) {
        if (m.first == name) mr.fail("name", fmt::format("matrix '{}' is listed twice", name));
      }
      u.matrices.push_back({std::move(name), {out, in}});
    }
    // DF11 positions are 32-bit: a unit holds at most 2^32-1 weights (each dimension is bounded,
    // their products are not).
    uint64_t total = 0;
    for (const auto& m : u.matrices) {
      total += static_cast<uint64_t>(m.second.first) * static_cast<uint64_t>(m.second.second);  // each <= 2^62
      if (total > 0xFFFFFFFFull)
        r.fail("matrices", fmt::format("the unit's matrices hold more than 2^32-1 weights (through '{}': {}); a "
                                       "unit holds at most 2^32-1",
                                       m.first, total));
    }
  } else if (kind == "checkpoint") {
    u.kind = UnitSpec::Kind::checkpoint;
    u.path = nonempty_string(r, "path");
    u.name = nonempty_string(r, "unit");
  } else {
    r.fail_at(
        kind_node, "kind",
        fmt::format("unknown unit kind '{}' (nemo_layer, nemo_lm_head, custom, checkpoint)", kind));
  }
  r.finish();
  return u;
}

BackendOverride parse_override(const toml::table& t, const std::string& origin,
                               const std::string& prefix, const Measurement& common) {
  Reader r(t, origin, prefix);
  BackendOverride o;
  if (const toml::array* a = r.array("batches")) o.batches = parse_batches(r, "batches", *a);
  o.row_fraction = parse_row_fraction(r, "row_fraction");
  if (const toml::array* a = r.array("methods")) o.methods = parse_methods(r, "methods", *a);
  if (const toml::table* m = r.table("measurement")) {
    o.measurement = parse_measurement(*m, origin, r.key_path("measurement"), common);
  }
  r.finish();
  return o;
}

}  // namespace

std::vector<int> Experiment::batches_for(const std::string& b) const {
  if (b == "cpu" && cpu.batches) return *cpu.batches;
  if (b == "cuda" && cuda.batches) return *cuda.batches;
  if (b != "cpu" && b != "cuda")
    throw Error(fmt::format("{}: unknown backend '{}' (cpu, cuda)", path, b));
  return batches;
}

double Experiment::row_fraction_for(const std::string& b) const {
  if (b == "cpu" && cpu.row_fraction) return *cpu.row_fraction;
  if (b == "cuda" && cuda.row_fraction) return *cuda.row_fraction;
  if (b != "cpu" && b != "cuda")
    throw Error(fmt::format("{}: unknown backend '{}' (cpu, cuda)", path, b));
  return row_fraction;
}

std::vector<std::string> Experiment::methods_for(const std::string& b) const {
  if (b == "cpu" && cpu.methods) return *cpu.methods;
  if (b == "cuda" && cuda.methods) return *cuda.methods;
  if (b != "cpu" && b != "cuda")
    throw Error(fmt::format("{}: unknown backend '{}' (cpu, cuda)", path, b));
  return methods;
}

Measurement Experiment::measurement_for(const std::string& b) const {
  if (b == "cpu" && cpu.measurement) return *cpu.measurement;
  if (b == "cuda" && cuda.measurement) return *cuda.measurement;
  if (b != "cpu" && b != "cuda")
    throw Error(fmt::format("{}: unknown backend '{}' (cpu, cuda)", path, b));
  return measurement;
}

Experiment parse_experiment_text(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    throw Error(fmt::format("{}:{}:{}: TOML syntax error: {}", origin, src.begin.line,
                            src.begin.column, e.description()));
  }
  Experiment e;
  e.path = origin;
  e.source_text = text;
  Reader r(root, origin, "");

  const toml::node& sv = r.require("schema_version");
  if (!sv.is_integer()) r.fail_at(sv, "schema_version", "must be an integer");
  if (sv.as_integer()->get() != kSchemaVersion) {
    r.fail_at(sv, "schema_version",
              fmt::format("is {}; this run_sweep reads schema version {}", sv.as_integer()->get(),
                          kSchemaVersion));
  }
  e.schema_version = static_cast<int>(kSchemaVersion);

  if (auto v = r.string("name")) {
    if (v->empty()) r.fail("name", "must not be empty");
    if (v->find_first_of("/\\ \t\n") != std::string::npos) {
      r.fail("name",
             fmt::format("'{}' must not contain slashes or spaces (it names run directories)", *v));
    }
    e.name = *v;
  } else {
    // The file's stem names an experiment that does not name itself.
    std::string stem = origin;
    if (auto slash = stem.find_last_of('/'); slash != std::string::npos)
      stem = stem.substr(slash + 1);
    if (auto dot = stem.rfind(".toml"); dot != std::string::npos && dot + 5 == stem.size())
      stem.resize(dot);
    e.name = stem.empty() ? "experiment" : stem;
  }
  if (auto v = r.string("description")) e.description = *v;
  if (auto v = r.integer("seed")) {
    if (*v < 0) r.fail("seed", fmt::format("must be >= 0, got {}", *v));
    e.seed = static_cast<uint64_t>(*v);
  }
  if (auto v = r.string("backend")) {
    if (*v != "auto" && *v != "cpu" && *v != "cuda")
      r.fail("backend", fmt::format("unknown backend '{}' (auto, cpu, cuda)", *v));
    e.backend = *v;
  }
  if (const toml::array* a = r.array("batches")) {
    e.batches = parse_batches(r, "batches", *a);
  } else {
    r.fail("batches", "is required");
  }
  if (auto f = parse_row_fraction(r, "row_fraction")) e.row_fraction = *f;
  if (const toml::array* a = r.array("methods")) {
    e.methods = parse_methods(r, "methods", *a);
  } else {
    r.fail("methods", "is required");
  }
  if (const toml::node* n = r.get("chunk_bytes")) e.chunk_bytes = parse_chunk_bytes(r, "chunk_bytes", *n);
  if (auto v = r.string("slice_l2")) {
    if (*v != "persisting" && *v != "normal")
      r.fail("slice_l2", fmt::format("unknown policy '{}' (persisting, normal)", *v));
    e.slice_l2 = *v;
  }
  if (auto v = r.string("slice_start")) {
    if (*v != "early" && *v != "serial") r.fail("slice_start", fmt::format("unknown start '{}' (early, serial)", *v));
    e.slice_start = *v;
  }
  if (const toml::table* m = r.table("measurement")) {
    e.measurement = parse_measurement(*m, origin, "measurement", Measurement{});
  }
  const toml::node* units = r.get("units");
  if (!units) r.fail("units", "is required: at least one [[units]] table");
  if (!units->is_array_of_tables() || units->as_array()->empty()) {
    r.fail_at(*units, "units", "must be an array of tables ([[units]])");
  }
  const toml::array& ua = *units->as_array();
  for (std::size_t i = 0; i < ua.size(); ++i) {
    e.units.push_back(parse_unit(*ua.get(i)->as_table(), origin, fmt::format("units[{}]", i)));
    // Rows are keyed by the unit's name: a unit twice would give rows of one key, which the
    // gate refuses (and a reader could not tell apart).
    const std::string name = unit_name(e.units.back());
    for (std::size_t j = 0; j < i; ++j) {
      if (unit_name(e.units[j]) == name) {
        r.fail_at(*ua.get(i), fmt::format("units[{}]", i),
                  fmt::format("names unit '{}', as units[{}] does: each unit once (results are keyed by the unit's "
                              "name)",
                              name, j));
      }
    }
  }
  if (const toml::table* t = r.table("cpu"))
    e.cpu = parse_override(*t, origin, "cpu", e.measurement);
  if (const toml::table* t = r.table("cuda"))
    e.cuda = parse_override(*t, origin, "cuda", e.measurement);
  r.finish();
  return e;
}

std::string unit_name(const UnitSpec& spec) {
  switch (spec.kind) {
    case UnitSpec::Kind::nemo_layer:
      return "model.layers." + std::to_string(spec.layer);
    case UnitSpec::Kind::nemo_lm_head:
      return "lm_head";
    case UnitSpec::Kind::custom:
    case UnitSpec::Kind::checkpoint:
      return spec.name;
  }
  return spec.name;
}

Experiment parse_experiment_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open the experiment file", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(fmt::format("{}: cannot read the experiment file", path));
  return parse_experiment_text(ss.str(), path);
}

namespace {

std::vector<int> first_middle_last(const std::vector<int>& b) {
  if (b.size() <= 3) return b;
  return {b.front(), b[b.size() / 2], b.back()};
}

// Short runs: a few samples, half a second at most per case; warm-up kept to one run because a
// cold first run is what warm-up exists to hide and one is enough for that.
void quicken(Measurement& m) {
  m.min_samples = 3;
  m.max_samples = 5;
  m.max_time_s = 0.5;
  m.min_time_s = std::min(m.min_time_s, m.max_time_s);
  m.warmup = std::min(m.warmup, 1);
}

}  // namespace

void make_quick(Experiment& e) {
  e.batches = first_middle_last(e.batches);
  quicken(e.measurement);
  for (BackendOverride* o : {&e.cpu, &e.cuda}) {
    if (o->batches) o->batches = first_middle_last(*o->batches);
    if (o->measurement) quicken(*o->measurement);
  }
  e.cpu.row_fraction = e.row_fraction_for("cpu") * 0.25;
}

}  // namespace df11::sweep
