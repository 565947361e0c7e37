// Shared by the tokenizer tests: where DeepSeek-V3's real tokenizer files are, and reading a file's lines.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace dsv3::tok::testing {

// ../shared/data/deepseek-v3 beside the source tree, unless DSV3_TOKENIZER_DIR (or DSV3_V3_TOKENIZER_DIR) names
// another directory holding tokenizer.json / tokenizer_config.json.
inline std::filesystem::path v3_dir() {
  for (const char* var : {"DSV3_TOKENIZER_DIR", "DSV3_V3_TOKENIZER_DIR"})
    if (const char* e = std::getenv(var)) return e;
  return std::filesystem::path(DSV3_SOURCE_DIR) / ".." / "shared" / "data" / "deepseek-v3";
}

// The file's lines without their '\n' (a last line without one included), bytes as they are.
inline std::vector<std::string> read_lines(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}

}  // namespace dsv3::tok::testing
