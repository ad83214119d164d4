// Files made by the official DFloat11 encoder (datasets/fixtures/official): the host emulation of
// every DF11-layout decoder variant decodes them bit-exactly, and our own encoding of the same
// weights is never larger in its exponent stream and decodes identically.
#include <catch2/catch.hpp>

#include <filesystem>

#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "codec/tables.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/safetensors.hpp"
#include "decoder.hpp"
#include "helpers.hpp"

using namespace df11;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(__FILE__).parent_path() / "../../datasets/fixtures/official";

// The unit's weights in order, read from the BF16 source file(s) of the fixture.
std::vector<uint16_t> source_of(const fs::path& bf16_dir, const ckpt::UnitSpec& unit) {
  std::vector<uint16_t> out;
  for (const auto& t : unit.tensors) {
    bool found = false;
    for (const auto& e : fs::directory_iterator(bf16_dir)) {
      if (e.path().extension() != ".safetensors") continue;
      const st::File f = st::File::open(e.path());
      if (const st::TensorInfo* info = f.find(t.name)) {
        const auto d = f.data<uint16_t>(*info, st::DType::BF16);
        out.insert(out.end(), d.begin(), d.end());
        found = true;
        break;
      }
    }
    INFO(t.name);
    REQUIRE(found);
  }
  return out;
}

}  // namespace

TEST_CASE("every DF11-layout variant decodes the official encoder's files bit-exactly", "[decoders][official]") {
  dec::Registry reg;
  dec::register_all(reg);
  int units_checked = 0;
  for (const char* c : {"tiny_mistral/df11", "tiny_mistral/df11_single_file", "tiny_llama_v020/df11",
                        "single_matrix/df11", "deep_codes/df11"}) {
    const fs::path dir = kFixtures / c;
    const fs::path bf16 = dir.parent_path() / "bf16";
    INFO(c);
    const ckpt::Df11Checkpoint ck = ckpt::Df11Checkpoint::open(dir);
    for (const auto& unit : ck.contents().units) {
      INFO(unit.name);
      const EncodedUnit e = ck.load(unit);
      const std::vector<uint16_t> expect = source_of(bf16, unit);
      REQUIRE(decode_reference(e) == expect);
      REQUIRE(decode_cpu(e, 2) == expect);
      for (const auto& d : reg.all()) {
        if (!(d->layout() == e.layout)) continue;
        INFO(d->name());
        std::vector<uint16_t> out(expect.size(), 0xFFFF);
        d->decode_host(e, out);
        REQUIRE(df11::test::word_diff(out, expect) == "");
      }
      // Ours, from the same weights: package-merge is optimal under the same 32-bit limit, so
      // our exponent stream is never longer than the official one (whose code also spends
      // space on an EOF symbol). The bytes differ (canonical codewords, tables without the
      // official carry-over), which is harmless: both decode to the same BF16 words, checked
      // here with the official kernel's algorithm (lut8x4 emulation) and the CPU decoder.
      Unit u;
      u.name = unit.name;
      u.tensors.push_back({"all", {static_cast<int64_t>(expect.size())}, expect});
      const EncodedUnit ours = encode(u.view(), Layout::df11());
      CHECK(ours.encoded_exponent.size() <= e.encoded_exponent.size());
      std::vector<uint16_t> out(expect.size(), 0xFFFF);
      reg.find("lut8x4.gap5-block.smem-out.t512.b8")->decode_host(ours, out);
      REQUIRE(df11::test::word_diff(out, expect) == "");
      ++units_checked;
    }
  }
  REQUIRE(units_checked >= 9);
}
