// Fuzz targets: each fuzz_<name>.cpp defines LLVMFuzzerTestOneInput (libFuzzer's entry point)
// and fuzz_seeds(), a few valid inputs made with the project's own writers. Built two ways:
//  - always, with fuzz_driver.cpp as main: replays files and directories of inputs, writes the
//    seeds (--write-seeds DIR), and --self-test N runs the seeds and N deterministic mutations
//    of each (bit flips, byte overwrites, truncation, insertion, splices), what ctest runs in
//    CI (under ASan+UBSan in the ci-sanitize preset);
//  - with DF11_FUZZ=ON (clang): linked against libFuzzer for coverage-guided runs (scripts/fuzz).
// A target returns normally for every input a well-behaved program refuses with df11::Error;
// anything else (a crash, a sanitizer report, another exception, a broken promise such as two
// decoders disagreeing) ends the process: that is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace df11::fuzz {

using Bytes = std::vector<uint8_t>;

// The target's seed inputs (valid, small).
std::vector<Bytes> fuzz_seeds();

// A broken promise: prints and aborts (libFuzzer saves the input).
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A file's bytes (empty if it cannot be read).
inline Bytes read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes fuzz_seeds() as DIR/seed0, seed1, ... (a corpus for libFuzzer); returns how many.
inline std::size_t write_seeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const std::vector<Bytes> seeds = fuzz_seeds();
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    std::ofstream out(dir / ("seed" + std::to_string(i)), std::ios::binary);
    out.write(reinterpret_cast<const char*>(seeds[i].data()), static_cast<std::streamsize>(seeds[i].size()));
  }
  return seeds.size();
}

// An input refused as it should be; printed when DF11_FUZZ_VERBOSE is set (to see what a
// harness's inputs run into).
inline void refused(const char* where, const char* why) {
  static const bool verbose = std::getenv("DF11_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "refused (%s): %s\n", where, why);
}

// How many times a target got through to its deepest checks (an input accepted; a DF11 directory
// counts each unit that decoded). The driver's --self-test requires every unmutated seed to be
// accepted, so that a seed the code starts to refuse cannot leave the deeper promises untested.
inline long& accepted_count() {
  static long n = 0;
  return n;
}
inline void accepted(const char* what) {
  ++accepted_count();
  static const bool verbose = std::getenv("DF11_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "accepted: %s\n", what);
}

// Reads the input front to back; past the end every read gives zeros.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t u8() { return i_ < n_ ? p_[i_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(u8() | (u8() << 8)); }
  uint32_t u32() { return static_cast<uint32_t>(u16()) | (static_cast<uint32_t>(u16()) << 16); }
  [[nodiscard]] size_t left() const { return i_ < n_ ? n_ - i_ : 0; }
  [[nodiscard]] const uint8_t* here() const { return p_ + (i_ < n_ ? i_ : n_); }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
};

}  // namespace df11::fuzz
