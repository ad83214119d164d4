// A fresh directory per test case under the system temp dir, removed with everything in it
// when the case ends (shared by the test suites that write files).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>

namespace df11::test {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "df11_test") {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace df11::test
