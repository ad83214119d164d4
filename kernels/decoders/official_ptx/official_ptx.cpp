// Host parts of the official-ptx baseline (see official_ptx.hpp).
#include "official_ptx/official_ptx.hpp"

#include <filesystem>

#include <fmt/format.h>

#include "common/variant.hpp"
#include "common/variant_decoder.hpp"

namespace df11::dec {
namespace {
std::string& path_storage() {
  static std::string p;
  return p;
}
}  // namespace

const VariantSpec& official_algorithm() {
  static const VariantSpec spec{TableKind::lut_global, Partition::gap_block, Staging::smem_out, 512, 8, false};
  return spec;
}

void OfficialPtxDecoder::set_ptx_path(std::string path) { path_storage() = std::move(path); }
const std::string& OfficialPtxDecoder::ptx_path() { return path_storage(); }

Traits OfficialPtxDecoder::traits() const {
  Traits t = official_algorithm().traits();
  t.table = "official decode.ptx (DF11 chained tables, read-only cache)";
  return t;
}

Status OfficialPtxDecoder::can_implement(const EncodedUnit& unit) const {
  const Status s = Decoder::can_implement(unit);
  if (!s.ok) return s;
  if (ptx_path().empty()) return Status::no("no official PTX given (--official-ptx PATH to the wheel's decode.ptx)");
  if (!std::filesystem::is_regular_file(ptx_path())) return Status::no("official PTX not found: " + ptx_path());
  return Status::yes();
}

void OfficialPtxDecoder::decode_host(const EncodedUnit& unit, std::span<uint16_t> out, uint64_t lo,
                                     uint64_t hi) const {
  VariantDecoder(official_algorithm()).decode_host(unit, out, lo, hi);
}

}  // namespace df11::dec
