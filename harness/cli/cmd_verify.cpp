// `df11 verify`: decodes every unit of a DF11 directory (or reads a second BF16 directory) and
// compares every tensor bit for bit with a BF16 source; exit 0 only when all match.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"

namespace df11::cli {
namespace {

struct VerifyArgs {
  std::string bf16, other;
  int threads = 0;
  bool quiet = false;
};

struct Row {
  std::string tensor;
  uint64_t elements = 0;
  std::string status;  // "ok" or what is wrong
};

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

// First differing element of two byte ranges of equal size, in units of `elem` bytes.
std::string compare_bytes(std::span<const std::byte> a, std::span<const std::byte> b,
                          std::size_t elem) {
  if (a.size() != b.size()) return fmt::format("size differs: {} vs {} bytes", a.size(), b.size());
  if (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0) return "ok";
  const auto [pa, pb] = std::mismatch(a.begin(), a.end(), b.begin());
  const auto index = static_cast<uint64_t>(pa - a.begin()) / elem;
  uint64_t va = 0, vb = 0;
  std::memcpy(&va, a.data() + index * elem, std::min<std::size_t>(elem, 8));
  std::memcpy(&vb, b.data() + index * elem, std::min<std::size_t>(elem, 8));
  return fmt::format("MISMATCH at element {} (0x{:0{}x} vs 0x{:0{}x})", index, va, 2 * elem, vb,
                     2 * elem);
}

// A tensor stored as it is on both sides: dtype, shape and bytes must agree.
Row compare_plain(const ckpt::ShardSet& ref, const ckpt::ShardSet& other, const std::string& name) {
  const auto* a = ref.find(name);
  const auto* b = other.find(name);
  Row row{name, b ? b->info->n_elements() : 0, "ok"};
  if (a == nullptr) {
    row.status = "missing in the BF16 source";
  } else if (a->info->dtype != b->info->dtype || a->info->shape != b->info->shape) {
    row.status = fmt::format("differs: {} {} vs {} {}", st::dtype_name(a->info->dtype),
                             shape_text(a->info->shape), st::dtype_name(b->info->dtype),
                             shape_text(b->info->shape));
  } else {
    row.status = compare_bytes(ref.bytes(*a), other.bytes(*b), st::dtype_size(a->info->dtype));
  }
  ref.release(name);
  other.release(name);
  return row;
}

void compare_df11(const ckpt::HfCheckpoint& ref, const std::string& dir, int threads,
                  std::vector<Row>& rows, std::set<std::string>& covered) {
  const ckpt::Df11Checkpoint ck = ckpt::Df11Checkpoint::open(dir);
  for (const ckpt::UnitSpec& unit : ck.contents().units) {
    std::vector<uint16_t> words;
    std::string failure;
    try {
      words = ck.decode(unit, threads);
    } catch (const Error& e) {
      failure = fmt::format("unit {} does not decode: {}", unit.name, e.what());
    }
    uint64_t offset = 0;
    for (const ckpt::TensorSpec& t : unit.tensors) {
      covered.insert(t.name);
      const uint64_t n = element_count(t.shape);
      Row row{t.name, n, "ok"};
      const auto* r = ref.shards().find(t.name);
      if (!failure.empty()) {
        row.status = failure;
      } else if (r == nullptr) {
        row.status = "missing in the BF16 source";
      } else if (r->info->dtype != st::DType::BF16) {
        row.status = fmt::format("the BF16 source stores it as {}", st::dtype_name(r->info->dtype));
      } else if (r->info->n_elements() != n ||
                 (ck.shape_known(t.name) && r->info->shape != t.shape)) {
        row.status = fmt::format("shape differs: {} in the source, {} in DF11",
                                 shape_text(r->info->shape), shape_text(t.shape));
      } else {
        const auto decoded = std::as_bytes(std::span<const uint16_t>(words).subspan(offset, n));
        row.status = compare_bytes(ref.shards().bytes(*r), decoded, 2);
        ref.shards().release(t.name);
      }
      offset += n;
      rows.push_back(std::move(row));
    }
  }
  for (const ckpt::TensorSpec& t : ck.contents().copied) {
    covered.insert(t.name);
    rows.push_back(compare_plain(ref.shards(), ck.shards(), t.name));
  }
}

int run_verify(const VerifyArgs& a) {
  const ckpt::HfCheckpoint ref = ckpt::HfCheckpoint::open(a.bf16);
  std::vector<Row> rows;
  std::set<std::string> covered;
  const bool df11 = ckpt::is_df11_dir(a.other);
  if (df11) {
    compare_df11(ref, a.other, a.threads, rows, covered);
  } else {
    const ckpt::HfCheckpoint other = ckpt::HfCheckpoint::open(a.other);
    for (const ckpt::TensorSpec& t : other.shards().tensors()) {
      covered.insert(t.name);
      rows.push_back(compare_plain(ref.shards(), other.shards(), t.name));
    }
  }
  for (const ckpt::TensorSpec& t : ref.shards().tensors()) {
    if (!covered.contains(t.name)) {
      rows.push_back(Row{t.name, element_count(t.shape), fmt::format("missing in {}", a.other)});
    }
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& x, const Row& y) { return ckpt::natural_less(x.tensor, y.tensor); });

  std::size_t bad = 0;
  uint64_t elements = 0;
  std::size_t width = 6;
  for (const Row& r : rows) width = std::max(width, r.tensor.size());
  if (!a.quiet) fmt::print("{:<{}}  {:>12}  {}\n", "tensor", width, "elements", "status");
  for (const Row& r : rows) {
    const bool ok = r.status == "ok";
    bad += ok ? 0 : 1;
    elements += r.elements;
    if (!a.quiet || !ok) fmt::print("{:<{}}  {:>12}  {}\n", r.tensor, width, r.elements, r.status);
  }
  if (bad == 0) {
    fmt::print("verify: PASS: all {} tensors ({} elements) of {} are bit-identical to {}\n",
               rows.size(), elements, a.other, a.bf16);
    return 0;
  }
  fmt::print("verify: FAIL: {} of {} tensors of {} differ from {} or are missing\n", bad,
             rows.size(), a.other, a.bf16);
  return 1;
}

}  // namespace

void add_verify(CLI::App& app) {
  auto args = std::make_shared<VerifyArgs>();
  auto* cmd =
      app.add_subcommand("verify",
                         "Decode every unit of a DF11 directory and compare every tensor bit for "
                         "bit with its BF16 source (a second BF16 directory works too)");
  cmd->add_option("BF16_DIR", args->bf16, "The BF16 source checkpoint directory")->required();
  cmd->add_option("DF11_DIR", args->other,
                  "The DF11 directory to check (or another BF16 directory)")
      ->required();
  add_threads(*cmd, args->threads);
  cmd->add_flag("--quiet", args->quiet, "Print only the failing tensors and the verdict");
  cmd->callback([args] { exit_code() = run_verify(*args); });
}

}  // namespace df11::cli
