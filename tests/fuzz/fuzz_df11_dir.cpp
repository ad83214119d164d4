// Fuzz target: an official-layout DF11 checkpoint directory (config.json + model.safetensors).
// Input: u16 length of config.json, its bytes, then the safetensors file. Opening, loading each
// unit and decoding it (CPU decoder and the flat12 variant's emulation) refuse only with
// df11::Error naming the file (open, load) or the unit (decode); whenever both decoders accept
// a unit, they agree.
#include <string>

#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "datasets/checkpoint.hpp"
#include "datasets/safetensors.hpp"
#include "decoder.hpp"
#include "helpers.hpp"
#include "scratch.hpp"

using namespace df11;

namespace {

void check_names(const Error& e, const std::string& must, const char* who) {
  const std::string what = e.what();
  if (what.find(must) == std::string::npos)
    fuzz::finding(std::string(who) + " refused without naming " + must + ": " + what);
}

bool names_a_file(const std::string& what) {
  return what.find("config.json") != std::string::npos || what.find(".safetensors") != std::string::npos ||
         what.find(fuzz::scratch_dir().string()) != std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::ScratchCleanup cleanup;
  fuzz::Reader r(data, size);
  const std::size_t config_len = std::min<std::size_t>(r.u16(), r.left());
  const auto dir = fuzz::scratch_dir() / "ckpt";
  std::filesystem::create_directories(dir);
  fuzz::write_bytes(dir / "config.json", r.here(), config_len);
  for (std::size_t i = 0; i < config_len; ++i) (void)r.u8();
  fuzz::write_bytes(dir / "model.safetensors", r.here(), r.left());
  std::optional<ckpt::Df11Checkpoint> c;
  try {
    c.emplace(ckpt::Df11Checkpoint::open(dir));
  } catch (const Error& e) {
    fuzz::refused("open", e.what());
    if (!names_a_file(e.what())) fuzz::finding(std::string("open refused without naming a file: ") + e.what());
    return 0;
  }
  const dec::Decoder* flat = dec::all_decoders().find("flat12.gap5-warp.smem-out.t512.b8");
  if (flat == nullptr) fuzz::finding("flat12.gap5-warp.smem-out.t512.b8 is not registered");
  for (const ckpt::UnitSpec& u : c->contents().units) {
    EncodedUnit enc;
    try {
      enc = c->load(u);
    } catch (const Error& e) {
      fuzz::refused("load", e.what());
      if (!names_a_file(e.what())) fuzz::finding(std::string("load refused without naming a file: ") + e.what());
      continue;
    }
    std::vector<uint16_t> ref(enc.n_elements), out(enc.n_elements, 0xFFFF);
    bool cpu_ok = true, flat_ok = true;
    try {
      decode_cpu(enc, ref, 1);
    } catch (const Error& e) {
      fuzz::refused("decode_cpu", e.what());
      check_names(e, u.name, "decode_cpu");
      cpu_ok = false;
    }
    try {
      flat->decode_host(enc, out);
    } catch (const Error& e) {
      check_names(e, u.name, "flat12 emulation");
      flat_ok = false;
    }
    if (cpu_ok) fuzz::accepted(("decoded " + u.name).c_str());
    if (cpu_ok && flat_ok) {
      const std::string diff = test::word_diff(out, ref);
      if (!diff.empty()) fuzz::finding("unit " + u.name + ": flat12 emulation and CPU decoder disagree: " + diff);
    }
  }
  return 0;
}

namespace df11::fuzz {

std::vector<Bytes> fuzz_seeds() {
  std::vector<Bytes> seeds;
  const std::string config =
      R"({"dfloat11_config": {"version": "0.5.0", "threads_per_block": [512], "bytes_per_thread": 8, )"
      R"("pattern_dict": {"lm_head": []}}})";
  for (int variant = 0; variant < 2; ++variant) {
    const std::vector<uint16_t> words =
        variant == 0 ? test::random_weights(700, 5, 120, 0.4) : test::fibonacci_words(12, 90, 3);
    const EncodedUnit enc = encode(test::unit_of(words, "lm_head").view(), Layout::df11(), 1);
    st::Writer w;
    auto add = [&](const char* suffix, st::DType dt, std::vector<int64_t> shape, std::span<const uint8_t> b) {
      w.add_owned(std::string("lm_head.") + suffix, dt, std::move(shape),
                  std::vector<std::byte>(reinterpret_cast<const std::byte*>(b.data()),
                                         reinterpret_cast<const std::byte*>(b.data()) + b.size()));
    };
    const auto n = [](const std::vector<uint8_t>& v) { return static_cast<int64_t>(v.size()); };
    add("split_positions", st::DType::I64, {0}, {});
    add("encoded_exponent", st::DType::U8, {n(enc.encoded_exponent)}, enc.encoded_exponent);
    add("gaps", st::DType::U8, {n(enc.gaps)}, enc.gaps);
    add("luts", st::DType::U8, {n(enc.luts) / 256, 256}, enc.luts);
    add("output_positions", st::DType::U8, {n(enc.output_positions)}, enc.output_positions);
    add("sign_mantissa", st::DType::U8, {n(enc.sign_mantissa)}, enc.sign_mantissa);
    const auto path = scratch_dir() / "seed.safetensors";
    w.write(path);
    const Bytes file = read_bytes(path);
    std::filesystem::remove(path);
    Bytes seed{static_cast<uint8_t>(config.size() & 0xFF), static_cast<uint8_t>(config.size() >> 8)};
    seed.insert(seed.end(), config.begin(), config.end());
    seed.insert(seed.end(), file.begin(), file.end());
    seeds.push_back(std::move(seed));
  }
  return seeds;
}

}  // namespace df11::fuzz
