// libFuzzer builds only: before fuzzing starts, DF11_FUZZ_WRITE_SEEDS=DIR writes the target's
// seeds into DIR (the corpus scripts/fuzz then hands to libFuzzer).
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("DF11_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == 0) return 0;
  std::filesystem::create_directories(dir);
  const auto seeds = df11::fuzz::fuzz_seeds();
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    std::ofstream out(std::filesystem::path(dir) / ("seed" + std::to_string(i)), std::ios::binary);
    out.write(reinterpret_cast<const char*>(seeds[i].data()), static_cast<std::streamsize>(seeds[i].size()));
  }
  return 0;
}
