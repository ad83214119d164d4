// The CPU decoder's two ways through a block (CpuDecodePath): interleaved lanes that decode runs
// of chunks straight through their boundaries and check them afterwards, and the serial path
// that decodes each chunk from its gap. They must give the same words on every valid unit and,
// on a damaged one, the same words or the same error: a lane that accepted what the serial path
// rejects would be corruption passed off as data. Run under ASan and UBSan by scripts/test.
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "helpers.hpp"

using namespace df11;
using df11::test::fibonacci_words;
using df11::test::random_weights;
using df11::test::unit_of;
using df11::test::word_diff;

namespace {

struct Outcome {
  std::vector<uint16_t> words;
  std::string error;  // empty when the decode succeeded
  uint64_t lane_blocks = 0;
};

Outcome run(const EncodedUnit& e, CpuDecodePath path, int threads = 1) {
  Outcome o;
  o.words.assign(e.n_elements, 0xBEEF);
  CpuDecodeStats stats;
  try {
    decode_cpu(e, o.words, threads, path, &stats);
  } catch (const Error& err) {
    o.error = err.what();
    o.words.clear();
  }
  o.lane_blocks = stats.lane_blocks;
  return o;
}

// Layouts whose chunks are 64 bits or more (the lanes' domain), with thread counts that do and
// do not divide into four lanes (gap_bits 8 lets a block have any number of threads).
std::vector<Layout> lane_layouts() {
  std::vector<Layout> v{Layout::df11(), Layout::canonical(16),
                        Layout::canonical(12, 256, 16, PositionScheme::thread),
                        Layout::canonical(16, 128, 8, PositionScheme::count),
                        Layout::canonical(32, 64, 64, PositionScheme::block)};
  for (int tpb : {1, 2, 3, 5, 6, 7, 13}) {
    Layout l = Layout::canonical(16, tpb, 8, tpb % 2 ? PositionScheme::thread : PositionScheme::block);
    l.gap_bits = 8;
    v.push_back(l);
  }
  return v;
}

}  // namespace

TEST_CASE("lanes decode every block but the last two at most, bit for bit as the serial path", "[codec][lanes]") {
  const auto data = random_weights(60000, 5, 120, 0.7);
  for (const Layout& l : lane_layouts()) {
    INFO(l.name());
    const EncodedUnit e = encode(unit_of(data, "p").view(), l, 2);
    REQUIRE(e.n_blocks() >= 4);
    const Outcome lanes = run(e, CpuDecodePath::lanes);
    const Outcome serial = run(e, CpuDecodePath::serial);
    REQUIRE(lanes.error == "");
    REQUIRE(word_diff(lanes.words, data) == "");
    REQUIRE(word_diff(serial.words, data) == "");
    // The last block is always serial; the one before it too when its chunks' look-ahead reaches
    // the stream's last 8 bytes. Every other block goes through the lanes.
    REQUIRE(lanes.lane_blocks >= e.n_blocks() - 2);
    REQUIRE(lanes.lane_blocks < e.n_blocks());
    REQUIRE(serial.lane_blocks == 0);
    REQUIRE(word_diff(run(e, CpuDecodePath::lanes, 3).words, data) == "");
  }
}

TEST_CASE("lanes: codes longer than the multi-symbol table's 12 bits, and chunks too short for lanes", "[codec][lanes]") {
  // Fibonacci counts: a code chain 30 deep, cut to the length limit, so many codes need the
  // table's fallback lookup inside the lanes' loop.
  const auto data = fibonacci_words(26, 90, 3);
  for (const Layout& l : {Layout::df11(), Layout::canonical(24), Layout::canonical(32, 64, 16, PositionScheme::count)}) {
    INFO(l.name());
    const EncodedUnit e = encode(unit_of(data, "f").view(), l, 2);
    const Outcome lanes = run(e, CpuDecodePath::lanes);
    REQUIRE(lanes.error == "");
    REQUIRE(word_diff(lanes.words, data) == "");
    REQUIRE(lanes.lane_blocks >= e.n_blocks() - 2);
    REQUIRE(lanes.lane_blocks > 0);
  }
  // 32-bit chunks: a lookup may cross two boundaries, so every block goes the serial way.
  const Layout b4 = Layout::canonical(8, 32, 4, PositionScheme::thread);
  const EncodedUnit e = encode(unit_of(random_weights(20000, 9), "s").view(), b4, 2);
  REQUIRE(e.n_blocks() >= 4);
  const Outcome o = run(e, CpuDecodePath::lanes);
  REQUIRE(o.error == "");
  REQUIRE(o.lane_blocks == 0);
}

TEST_CASE("lanes and serial agree on damaged units: the same words or the same error", "[codec][lanes][corrupt]") {
  // Damage lands mostly in the blocks the lanes decode (all but the last); every field a block's
  // decode reads is hit. The promise is not detection (a flipped stream bit can turn one codeword
  // into another of the same length) but agreement: whatever the serial path says, the lanes say.
  const auto data = random_weights(40000, 17, 120, 0.8);
  const auto longs = fibonacci_words(22, 90, 8);
  struct Case {
    Layout layout;
    const std::vector<uint16_t>* words;
  };
  const std::vector<Case> cases{{Layout::df11(), &data},
                                {Layout::df11(), &longs},
                                {Layout::canonical(12, 256, 16, PositionScheme::thread), &data},
                                {Layout::canonical(16, 128, 8, PositionScheme::count), &data},
                                {Layout::canonical(16, 64, 8, PositionScheme::block), &longs}};
  int errors = 0;
  int silent = 0;
  for (const Case& c : cases) {
    const EncodedUnit good = encode(unit_of(*c.words, "d").view(), c.layout, 2);
    REQUIRE(good.n_blocks() >= 3);
    std::mt19937_64 rng(1234);
    for (int trial = 0; trial < 400; ++trial) {
      EncodedUnit bad = good;
      std::vector<uint8_t>* fields[] = {&bad.encoded_exponent, &bad.encoded_exponent, &bad.gaps,
                                        &bad.thread_counts, &bad.output_positions};
      auto& f = *fields[rng() % 5];
      if (f.empty()) continue;
      const uint64_t at = rng() % f.size();
      const int flips = 1 + static_cast<int>(rng() % 2);
      for (int k = 0; k < flips; ++k) f[(at + k) % f.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
      INFO(c.layout.name() << " trial " << trial);
      const Outcome lanes = run(bad, CpuDecodePath::lanes);
      const Outcome serial = run(bad, CpuDecodePath::serial);
      REQUIRE(lanes.error == serial.error);
      REQUIRE(word_diff(lanes.words, serial.words) == "");
      (lanes.error.empty() ? silent : errors) += 1;
    }
  }
  // Both kinds occur, so the comparison above saw both outcomes.
  REQUIRE(errors > 100);
  REQUIRE(silent > 10);
}
