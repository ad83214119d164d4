// Compress / verify / time one unit (see codec_report.hpp).
#include "lib/codec_report.hpp"

#include <algorithm>
#include <chrono>
#include <regex>
#include <vector>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"

namespace df11 {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace

CodecReport run_codec_report(const UnitView& unit, const Layout& layout, int n_threads, int repeats) {
  CodecReport r;
  r.unit = unit.name;
  r.layout = layout.name();
  r.threads = resolve_threads(n_threads);
  repeats = std::max(1, repeats);
  std::vector<double> enc_t, dec_t;
  EncodedUnit enc;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = now_s();
    enc = encode(unit, layout, n_threads);
    enc_t.push_back(now_s() - t0);
  }
  std::vector<uint16_t> out(unit.n_elements());
  for (int i = 0; i < repeats; ++i) {
    std::fill(out.begin(), out.end(), uint16_t{0xFFFF});  // poison: unwritten elements show
    const double t0 = now_s();
    decode_cpu(enc, out, n_threads);
    dec_t.push_back(now_s() - t0);
  }
  r.encode_s = median(enc_t);
  r.decode_s = median(dec_t);
  bool ok = true;
  std::size_t off = 0;
  for (const auto& t : unit.tensors) {
    ok = ok && std::equal(t.data.begin(), t.data.end(), out.begin() + static_cast<std::ptrdiff_t>(off));
    off += t.data.size();
  }
  r.roundtrip_ok = ok && off == out.size();
  r.stats = unit_stats(enc, exponent_histogram(unit, n_threads));
  return r;
}

nlohmann::json to_json(const UnitStats& s) {
  return {
      {"n_elements", s.n_elements},
      {"ratio", s.ratio},
      {"bits_per_weight", s.bits_per_weight},
      {"exponent_entropy_bits", s.exponent_entropy_bits},
      {"bound_ratio", s.bound_ratio},
      {"min_code_length", s.min_code_length},
      {"max_code_length", s.max_code_length},
      {"n_symbols", s.n_symbols},
      {"bits_per_weight_split",
       {{"exponent_stream", s.exponent_bits_per_weight},
        {"sign_mantissa", s.n_elements ? 8.0 : 0.0},
        {"gaps", s.gaps_bits_per_weight},
        {"positions", s.positions_bits_per_weight},
        {"tables", s.tables_bits_per_weight}}},
      {"bytes",
       {{"luts", s.luts_bytes},
        {"encoded_exponent", s.exponent_bytes},
        {"sign_mantissa", s.sign_mantissa_bytes},
        {"output_positions", s.positions_bytes},
        {"gaps", s.gaps_bytes},
        {"split_positions", s.split_bytes},
        {"stored", s.stored_bytes},
        {"bf16", s.bf16_bytes}}},
  };
}

nlohmann::json to_json(const CodecReport& r) {
  nlohmann::json j = to_json(r.stats);
  j["unit"] = r.unit;
  j["layout"] = r.layout;
  j["roundtrip"] = r.roundtrip_ok ? "bit-exact" : "mismatch";
  j["threads"] = r.threads;
  j["encode_s"] = r.encode_s;
  j["decode_s"] = r.decode_s;
  const double n = static_cast<double>(r.stats.n_elements);
  j["encode_weights_per_s"] = r.encode_s > 0 ? n / r.encode_s : 0.0;
  j["decode_weights_per_s"] = r.decode_s > 0 ? n / r.decode_s : 0.0;
  return j;
}

Layout parse_layout(const std::string& text) {
  if (text == "df11") return Layout::df11();
  if (text == "canonical") return Layout::canonical();
  if (text.rfind("canonical:", 0) == 0) {
    const std::string num = text.substr(10);
    int l = 0;
    try {
      l = std::stoi(num);
    } catch (...) {
      throw Error(fmt::format("layout '{}': '{}' is not a code length", text, num));
    }
    Layout layout = Layout::canonical(l);
    layout.validate();
    return layout;
  }
  // A full layout name, as Layout::name() spells it: chain32.t512.b8.g5.pcount.
  static const std::regex full(R"((chain|canon)(\d{1,2})\.t(\d{1,4})\.b(\d{1,2})\.g(\d)\.p(block|thread|count))");
  if (std::smatch m; std::regex_match(text, m, full)) {
    Layout layout;
    layout.tables = m[1] == "chain" ? TableScheme::df11_chained : TableScheme::canonical;
    layout.max_code_length = std::stoi(m[2]);
    layout.threads_per_block = std::stoi(m[3]);
    layout.bytes_per_thread = std::stoi(m[4]);
    layout.gap_bits = std::stoi(m[5]);
    layout.positions = m[6] == "block" ? PositionScheme::block
                       : m[6] == "thread" ? PositionScheme::thread
                                          : PositionScheme::count;
    layout.validate();
    return layout;
  }
  throw Error(fmt::format("unknown layout '{}' (expected df11, canonical, canonical:L or a full layout name such as "
                          "chain32.t512.b8.g5.pcount)",
                          text));
}

}  // namespace df11
