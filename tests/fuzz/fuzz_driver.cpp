// main() of a fuzz target without libFuzzer: replay inputs, write seeds, or a deterministic
// mutation run over the seeds (see fuzz.hpp).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>

#include "fuzz.hpp"

namespace {

using df11::fuzz::Bytes;

void run(const Bytes& b) { LLVMFuzzerTestOneInput(b.data(), b.size()); }

Bytes mutate(const Bytes& seed, const std::vector<Bytes>& all, std::mt19937_64& rng) {
  Bytes b = seed;
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const std::size_t n = b.size();
    switch (rng() % 6) {
      case 0:  // flip a bit
        if (n) b[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // overwrite a byte with an interesting value
        if (n) {
          static constexpr uint8_t kValues[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0xF0, 0x10, 0x20};
          b[rng() % n] = kValues[rng() % std::size(kValues)];
        }
        break;
      case 2:  // truncate
        if (n) b.resize(rng() % n);
        break;
      case 3:  // insert random bytes
        {
          const std::size_t at = n ? rng() % (n + 1) : 0;
          Bytes ins(1 + rng() % 8);
          for (auto& x : ins) x = static_cast<uint8_t>(rng());
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), ins.begin(), ins.end());
        }
        break;
      case 4:  // random byte
        if (n) b[rng() % n] = static_cast<uint8_t>(rng());
        break;
      default:  // splice the tail of another seed
        {
          const Bytes& o = all[rng() % all.size()];
          if (!o.empty() && n) {
            const std::size_t at = rng() % n, from = rng() % o.size();
            b.resize(at);
            b.insert(b.end(), o.begin() + static_cast<std::ptrdiff_t>(from), o.end());
          }
        }
        break;
    }
  }
  return b;
}

int usage() {
  std::cerr << "usage: fuzz_TARGET [--self-test N [--seed S]] [--write-seeds DIR] [FILE|DIR ...]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long self_test = -1;
  uint64_t seed = 1;
  std::string seeds_dir;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--self-test" && i + 1 < argc) {
      self_test = std::stol(argv[++i]);
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::stoull(argv[++i]);
    } else if (a == "--write-seeds" && i + 1 < argc) {
      seeds_dir = argv[++i];
    } else if (!a.empty() && a[0] == '-') {
      return usage();
    } else {
      inputs.push_back(a);
    }
  }
  if (self_test < 0 && seeds_dir.empty() && inputs.empty()) return usage();
  const std::vector<Bytes> seeds = df11::fuzz::fuzz_seeds();
  if (!seeds_dir.empty()) {
    std::cout << "wrote " << df11::fuzz::write_seeds(seeds_dir) << " seeds to " << seeds_dir << "\n";
  }
  std::size_t n_run = 0;
  for (const std::string& in : inputs) {
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(in)) {
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(in);
    }
    for (const auto& f : files) {
      if (!std::filesystem::is_regular_file(f)) throw std::runtime_error("cannot read " + f.string());
      run(df11::fuzz::read_bytes(f));
      ++n_run;
    }
  }
  if (self_test >= 0) {
    if (seeds.empty()) {
      std::cerr << "--self-test: the target has no seeds\n";
      return 1;
    }
    std::mt19937_64 rng(seed);
    for (std::size_t k = 0; k < seeds.size(); ++k) {
      const Bytes& s = seeds[k];
      const long before = df11::fuzz::accepted_count();
      run(s);
      ++n_run;
      if (df11::fuzz::accepted_count() == before) {
        std::cerr << "--self-test: seed " << k << " is refused (DF11_FUZZ_VERBOSE=1 says why); its mutations would "
                  << "test only the refusal\n";
        return 1;
      }
      for (long m = 0; m < self_test; ++m) {
        run(mutate(s, seeds, rng));
        ++n_run;
      }
    }
  }
  std::cout << "ran " << n_run << " inputs (" << seeds.size() << " seeds), no findings\n";
  return 0;
}
