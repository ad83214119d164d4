// The registry of decoder variants and register_all, the one list of them.
#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "common/host_image.hpp"
#include "common/variant_decoder.hpp"
#include "common/variants.inc"
#include "decoder.hpp"
#include "official_ptx/official_ptx.hpp"

namespace df11::dec {

Status Decoder::can_implement(const EncodedUnit& unit) const {
  if (!(unit.layout == layout())) {
    return Status::no(fmt::format("unit {} is in layout {}; {} reads layout {}", unit.name, unit.layout.name(), name(),
                                  layout().name()));
  }
  return Status::yes();
}

uint64_t Decoder::workspace_bytes(const EncodedUnit&) const { return 0; }

Status VariantDecoder::can_implement(const EncodedUnit& unit) const { return spec_can_implement(spec_, unit); }

namespace {
void check_range(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi) {
  if (lo > hi || hi > unit.n_elements) {
    throw Error(fmt::format("unit {}: range [{}, {}) is outside its {} elements", unit.name, lo, hi, unit.n_elements));
  }
  if (out.size() != hi - lo) {
    throw Error(fmt::format("unit {}: output holds {} elements, the range has {}", unit.name, out.size(), hi - lo));
  }
}
}  // namespace

void Decoder::decode_simt(const EncodedUnit&, std::span<uint16_t>, uint64_t, uint64_t, Order) const {
  throw Error(name() + ": no host-compilable kernel body to run on the SIMT executor");
}

void VariantDecoder::decode_host(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi) const {
  check_range(unit, out, lo, hi);
  emulate_variant(spec_, unit, out.data(), lo, hi);
}

void VariantDecoder::decode_simt(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo, uint64_t hi,
                                 Order order) const {
  check_range(unit, out, lo, hi);
  simt_variant(spec_, unit, out.data(), lo, hi, order);
}

void Registry::add(std::unique_ptr<Decoder> d) {
  if (find(d->name())) throw Error("decoder registered twice: " + d->name());
  decoders_.push_back(std::move(d));
}

const Decoder* Registry::find(const std::string& name) const {
  for (const auto& d : decoders_)
    if (d->name() == name) return d.get();
  return nullptr;
}

std::vector<const Decoder*> Registry::select(const std::string& glob) const {
  std::vector<const Decoder*> out;
  for (const auto& d : decoders_)
    if (glob_match(glob, d->name())) out.push_back(d.get());
  return out;
}

std::vector<Layout> Registry::layouts() const {
  std::vector<Layout> out;
  for (const auto& d : decoders_) {
    const Layout l = d->layout();
    if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
  }
  return out;
}

bool glob_match(const std::string& pattern, const std::string& text) {
  // Iterative wildcard match with backtracking to the last '*'.
  std::size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

void register_all(Registry& r) {
#define DF11_REGISTER(T, P, S, TPB, BPT, M, PS) \
  r.add(std::make_unique<VariantDecoder>(VariantSpec{TableKind::T, Partition::P, Staging::S, TPB, BPT, M, Schedule::PS}));
  DF11_GAP_VARIANTS(DF11_REGISTER)
#undef DF11_REGISTER
  r.add(std::make_unique<OfficialPtxDecoder>());
}

const Registry& all_decoders() {
  static const Registry r = [] {
    Registry x;
    register_all(x);
    return x;
  }();
  return r;
}

}  // namespace df11::dec
