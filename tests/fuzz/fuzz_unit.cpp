// Fuzz target: damaged encodings through validation, the CPU decoder and every GPU variant's
// host emulation. The input picks a layout, makes weights (skewed, uniform over a few
// exponents, or with codes as long as the layout allows), encodes them (so every input starts
// from a valid unit), then applies the input's edits to the stored arrays. Promises checked:
//  - validate_encoded, decode_cpu and each variant refuse only with df11::Error naming the unit;
//  - decode_cpu's two paths (lanes, serial) agree: the same words or both refuse; check_stream
//    (no output) refuses exactly when decode_cpu does, with the same message;
//  - no variant reads or writes outside its buffers (ASan in the replay and libFuzzer builds),
//    and none hangs, whatever the stream, gaps or positions say, once validation let it run
//    (this is what keeps a kernel from faulting on a damaged file);
//  - whenever the CPU decoder accepts the unit (its consistency checks hold), every variant
//    decodes exactly its words, whole and per tensor range.
#include <algorithm>
#include <string>
#include <vector>

#include "codec/cpu_decoder.hpp"
#include "codec/encoder.hpp"
#include "decoder.hpp"
#include "fuzz.hpp"
#include "helpers.hpp"

using namespace df11;

namespace {

const std::vector<Layout>& layouts() {
  static const std::vector<Layout> l = dec::all_decoders().layouts();
  return l;
}

void check_error(const Error& e, const char* who) {
  const std::string what = e.what();
  if (what.find("unit fz") == std::string::npos && what.find("fz:") == std::string::npos &&
      what.find("fz ") == std::string::npos) {
    fuzz::finding(std::string(who) + " refused without naming the unit: " + what);
  }
}

std::vector<uint16_t> make_words(fuzz::Reader& r, bool df11_layout) {
  const unsigned kind = r.u8() % 3;
  const uint32_t seed = r.u32();
  const std::size_t n = 1 + r.u16() % 20000;
  if (kind == 0) {
    const int center = 100 + r.u8() % 40;
    const double spread = 0.05 * (r.u8() % 40);
    return test::random_weights(n, seed, center, spread, df11_layout ? 239 : 255);
  }
  if (kind == 1) {
    std::vector<int> exps(1 + r.u8() % 6);
    for (int& e : exps) e = r.u8() % (df11_layout ? 240 : 256);
    return test::words_with_exponents(n, seed, exps);
  }
  return test::fibonacci_words(8 + r.u8() % 14, 1 + r.u8() % 100, seed);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Reader r(data, size);
  const Layout layout = layouts()[r.u8() % layouts().size()];
  std::vector<uint16_t> words = make_words(r, layout.is_df11() || !layout.all_exponents());
  // One tensor, or two (split positions, per-tensor ranges).
  Unit unit;
  unit.name = "fz";
  const bool two = (r.u8() & 1) && words.size() >= 2;
  if (two) {
    const std::size_t cut = 1 + r.u16() % (words.size() - 1);
    unit.tensors.push_back({"a", {static_cast<int64_t>(cut)}, {words.begin(), words.begin() + static_cast<std::ptrdiff_t>(cut)}});
    unit.tensors.push_back({"b", {static_cast<int64_t>(words.size() - cut)}, {words.begin() + static_cast<std::ptrdiff_t>(cut), words.end()}});
  } else {
    unit.tensors.push_back({"w", {static_cast<int64_t>(words.size())}, words});
  }
  EncodedUnit enc;
  try {
    enc = encode(unit.view(), layout, 1);
  } catch (const Error& e) {
    check_error(e, "encode");
    return 0;
  }
  // Encoded: every input from here on reaches the decoders (damaged ones to test their refusals).
  fuzz::accepted("encoded");
  // Edits: field, offset, then xor a byte, or (xor 0) truncate or extend the field there.
  bool edited = false;
  while (r.left() >= 6) {
    std::vector<uint8_t>* fields[] = {&enc.encoded_exponent, &enc.gaps, &enc.output_positions, &enc.luts,
                                      &enc.sign_mantissa, &enc.thread_counts};
    std::vector<uint8_t>& f = *fields[r.u8() % 6];
    const uint32_t off = r.u32();
    const uint8_t x = r.u8();
    edited = true;
    if (x == 0) {
      f.resize(f.empty() ? 0 : off % (f.size() + 8));
    } else if (!f.empty()) {
      f[off % f.size()] ^= x;
    }
  }
  // The CPU decoder: the reference for every variant when it accepts the unit.
  std::vector<uint16_t> ref(enc.n_elements, 0);
  bool cpu_ok = true;
  std::string cpu_error;
  try {
    decode_cpu(enc, ref, 1);
  } catch (const Error& e) {
    fuzz::refused("decode_cpu", e.what());
    check_error(e, "decode_cpu");
    cpu_ok = false;
    cpu_error = e.what();
  }
  // check_stream (the walk without output, what a file's unit passes before a GPU decoder gets
  // it) must give decode_cpu's verdict, word for word.
  {
    std::string check_err;
    try {
      check_stream(enc, 1);
    } catch (const Error& e) {
      check_err = e.what();
    }
    if (check_err != cpu_error)
      fuzz::finding("check_stream says '" + check_err + "', decode_cpu '" + cpu_error + "'");
  }
  if (cpu_ok) fuzz::refused("none", "decoded");
  if (!edited && (!cpu_ok || ref != words)) fuzz::finding("an undamaged unit did not decode to its words");
  // The CPU decoder's serial path (one chunk at a time from its gap) must say what its default
  // lanes said: the same words, or the same error.
  {
    std::vector<uint16_t> serial(enc.n_elements, 0);
    std::string serial_error;
    try {
      decode_cpu(enc, serial, 1, CpuDecodePath::serial);
    } catch (const Error& e) {
      serial_error = e.what();
    }
    if (serial_error.empty() != cpu_ok) {
      fuzz::finding(cpu_ok ? "decode_cpu's lanes accepted a unit its serial path refuses: " + serial_error
                           : "decode_cpu's serial path accepted a unit its lanes refuse");
    } else if (cpu_ok && serial != ref) {
      fuzz::finding("decode_cpu's lanes and serial path decode different words");
    }
  }
  for (const auto& d : dec::all_decoders().all()) {
    if (!(d->layout() == layout)) continue;
    std::vector<uint16_t> out(enc.n_elements, 0xFFFF);
    try {
      d->decode_host(enc, out);
    } catch (const Error& e) {
      check_error(e, d->name().c_str());
      if (cpu_ok && d->can_implement(enc).ok) {
        // A variant may refuse what it cannot hold (shared memory), never what decodes.
        const std::string what = e.what();
        if (what.find("shared memory") == std::string::npos)
          fuzz::finding(d->name() + " refused a unit the CPU decoder decodes: " + what);
      }
      continue;
    }
    if (!cpu_ok) continue;
    const std::string diff = test::word_diff(out, ref);
    if (!diff.empty()) fuzz::finding(d->name() + " disagrees with the CPU decoder: " + diff);
    if (d->name() == "official-ptx") continue;  // its emulation decodes whole units only
    uint64_t lo = 0;
    for (const auto& t : unit.tensors) {
      const uint64_t hi = lo + t.data.size();
      std::vector<uint16_t> part(hi - lo, 0xFFFF);
      d->decode_host(enc, part, lo, hi);
      if (!std::equal(part.begin(), part.end(), ref.begin() + static_cast<std::ptrdiff_t>(lo)))
        fuzz::finding(d->name() + " disagrees with the CPU decoder on tensor " + t.name);
      lo = hi;
    }
  }
  return 0;
}

namespace df11::fuzz {

std::vector<Bytes> fuzz_seeds() {
  std::vector<Bytes> seeds;
  for (uint8_t l = 0; l < layouts().size(); ++l) {
    // layout, kind 0 (skewed), seed, n, center, spread, one tensor
    seeds.push_back({l, 0, 7, 0, 0, 0, 0x10, 0x27, 20, 6, 0});
    // kind 1: four exponents, two tensors
    seeds.push_back({l, 1, 9, 0, 0, 0, 0x00, 0x08, 4, 120, 121, 122, 3, 1, 0x00, 0x04});
    // kind 2: long codes, one tensor, then one edit of the stream
    seeds.push_back({l, 2, 3, 0, 0, 0, 0, 0, 13, 40, 0, 0, 5, 0, 0, 0, 0x40});
  }
  return seeds;
}

}  // namespace df11::fuzz
