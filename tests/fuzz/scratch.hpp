// A per-process scratch directory for fuzz targets that must hand files to the code under test.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include <unistd.h>

#include "fuzz.hpp"

namespace df11::fuzz {

inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* shm = "/dev/shm";
    std::error_code ec;
    const std::filesystem::path base = std::filesystem::is_directory(shm, ec) ? std::filesystem::path(shm)
                                                                               : std::filesystem::temp_directory_path();
    auto d = base / ("df11_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void write_bytes(const std::filesystem::path& p, const uint8_t* data, size_t size) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) finding("cannot write scratch file " + p.string());
}

// Removes the scratch directory when the process ends normally.
struct ScratchCleanup {
  ~ScratchCleanup() {
    std::error_code ec;
    std::filesystem::remove_all(scratch_dir(), ec);
  }
};

}  // namespace df11::fuzz
