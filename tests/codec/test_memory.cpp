// The large-buffer hints of codec/common.hpp: prefault maps a vector's reserved capacity in
// before anything writes it (mincore says which pages are resident), and neither hint changes
// what the buffer holds or refuses anything.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "codec/common.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {

#if defined(__linux__)
// Resident pages among the whole pages of [p, p + bytes), or -1 where mincore fails.
long resident_pages(const void* p, std::size_t bytes) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto first = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const auto last = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  std::vector<unsigned char> in((last - first) / page);
  if (::mincore(reinterpret_cast<void*>(first), last - first, in.data()) != 0) return -1;
  long n = 0;
  for (const unsigned char c : in) n += c & 1;
  return n;
}
#endif

}  // namespace

TEST_CASE("prefault maps a reserved buffer in on all threads, the hints keep its contents", "[codec][memory]") {
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  std::vector<uint8_t> v;
  v.reserve(kBytes);  // fresh memory from mmap: nothing resident yet
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  const long pages = static_cast<long>(kBytes / static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))) - 1;
  const long before = resident_pages(v.data(), kBytes);
  REQUIRE(before >= 0);
  CHECK(before < pages / 2);
  df11::prefault(v.data(), kBytes, 2);
  const long after = resident_pages(v.data(), kBytes);
  // Whether this kernel populates at all (5.14 and later), asked of a page of our own.
  void* probe = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(probe != MAP_FAILED);
  const bool kernel_populates = ::madvise(probe, 4096, MADV_POPULATE_WRITE) == 0;
  ::munmap(probe, 4096);
  if (kernel_populates) {
    CHECK(after >= pages);
  } else {
    WARN("this kernel does not prefault (MADV_POPULATE_WRITE): the mapping is not tested");
    CHECK(after == before);
  }
#endif

  // Both hints on memory that already holds data (the pages written, some at the range's ends
  // partial) keep every byte: a hint that dropped or replaced pages would read zeros.
  const auto pattern = [](std::size_t i) { return static_cast<uint8_t>((i * 131 + 7) ^ (i >> 12)); };
  std::vector<uint8_t> filled(kBytes + 100);
  for (std::size_t i = 0; i < filled.size(); ++i) filled[i] = pattern(i);
  df11::prefault(filled.data() + 50, kBytes, 2);
  df11::advise_huge_pages(filled.data() + 50, kBytes);
  std::size_t changed = 0;
  for (std::size_t i = 0; i < filled.size(); ++i) changed += filled[i] != pattern(i);
  CHECK(changed == 0);

  // reserve_prefaulted reserves the capacity asked for (with and without huge pages) and keeps
  // what a non-empty vector holds; small or null ranges are left alone.
  std::vector<uint16_t> w;
  df11::reserve_prefaulted(w, kBytes / 2, 0);
  CHECK(w.capacity() >= kBytes / 2);
  std::vector<uint32_t> h{1u, 2u, 3u};
  df11::reserve_prefaulted(h, kBytes / 4, 2, df11::Pages::huge);
  CHECK(h.capacity() >= kBytes / 4);
  CHECK(h == std::vector<uint32_t>{1u, 2u, 3u});
  df11::prefault(nullptr, kBytes, 2);
  df11::advise_huge_pages(nullptr, kBytes);
  uint8_t small[64] = {1};
  df11::prefault(small, sizeof small, 2);
  df11::advise_huge_pages(small, sizeof small);
  CHECK(small[0] == 1);
}

TEST_CASE("parallel_copy copies every byte, a last partial piece included", "[codec][memory]") {
  const std::size_t n = (std::size_t{40} << 20) + 12345;  // 16 MB pieces: two whole, one partial
  std::vector<uint8_t> src(n), dst(n, 0);
  for (std::size_t i = 0; i < n; ++i) src[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  df11::parallel_copy(dst.data(), src.data(), n, 2);
  CHECK(dst == src);
  df11::parallel_copy(dst.data(), src.data(), 0, 2);  // nothing to copy
  CHECK(dst == src);
}
