// The ThreadSanitizer pass's canary (ci-tsan only): a kernel body on the SIMT executor where one
// warp writes shared memory and another reads it, with the block barrier between them
// (`tsan_canary barrier`, must be clean) or without it (`tsan_canary race`, must be reported:
// ctest expects that run to fail). The pass exists to report a missing barrier in the decoder
// and e2e kernel bodies as a data race; if the executor ever serialized the threads or
// synchronized them behind the kernel's back, every simt test would pass under TSan having
// checked nothing, and only this canary would say so.
#include <cstdio>
#include <cstring>
#include <vector>

#include "simt/simt.cuh"

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "race") != 0 && std::strcmp(argv[1], "barrier") != 0)) {
    std::fprintf(stderr, "usage: tsan_canary race|barrier\n");
    return 2;
  }
  const bool barrier = std::strcmp(argv[1], "barrier") == 0;
  constexpr unsigned kThreads = 64;  // two warps
  std::vector<unsigned> out(kThreads);
  df11::simt::launch({1}, {kThreads}, kThreads * sizeof(unsigned), [&](uint8_t* smem) {
    auto* s = reinterpret_cast<unsigned*>(smem);
    const unsigned t = df11::simt::tid_x();
    s[t] = 7 * t + 1;
    if (barrier) df11::simt::sync_block();
    out[t] = s[(t + 32) % kThreads];  // the other warp's word
  });
  if (barrier) {
    for (unsigned t = 0; t < kThreads; ++t) {
      if (out[t] != 7 * ((t + 32) % kThreads) + 1) {
        std::fprintf(stderr, "tsan_canary: thread %u read %u after the barrier\n", t, out[t]);
        return 1;
      }
    }
  }
  std::printf("tsan_canary %s: done\n", argv[1]);
  return 0;
}
