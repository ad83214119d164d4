// libFuzzer builds only: before fuzzing starts, DF11_FUZZ_WRITE_SEEDS=DIR writes the target's
// seeds into DIR (the corpus scripts/fuzz then hands to libFuzzer).
#include <cstdlib>

#include "fuzz.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("DF11_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == 0) return 0;
  df11::fuzz::write_seeds(dir);
  return 0;
}
