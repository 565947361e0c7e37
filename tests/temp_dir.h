// TempDir: a fresh directory under the system temp dir, named after the running test (suite_name_pid_n),
// removed with everything in it at scope exit. Shared by the io, data and tokenizer tests.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace dsv3::test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string tag = info ? std::string(info->test_suite_name()) + "_" + info->name() : "test";
    path = std::filesystem::temp_directory_path() /
           ("dsv3_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace dsv3::test
