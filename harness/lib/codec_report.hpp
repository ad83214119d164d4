// Compress one unit, verify the round trip bit for bit, time both directions, and describe
// the result as JSON (shared by `df11 stats` and `run_sweep`).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "codec/layout.hpp"
#include "codec/stats.hpp"
#include "codec/unit.hpp"

namespace df11 {

struct CodecReport {
  std::string unit;
  std::string layout;
  UnitStats stats;
  bool roundtrip_ok = false;
  double encode_s = 0;  // wall seconds, median of the repetitions
  double decode_s = 0;
  int threads = 0;
};

// Encodes `unit` in `layout` and decodes it back with the CPU decoder `repeats` times each
// (median time kept), comparing every element.
[[nodiscard]] CodecReport run_codec_report(const UnitView& unit, const Layout& layout, int n_threads, int repeats);

[[nodiscard]] nlohmann::json to_json(const CodecReport& r);
[[nodiscard]] nlohmann::json to_json(const UnitStats& s);

// Parses "df11" or "canonical[:L]" into a layout; throws df11::Error on anything else.
[[nodiscard]] Layout parse_layout(const std::string& text);

}  // namespace df11
