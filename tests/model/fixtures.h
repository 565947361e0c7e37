// Locates (and, on first use, generates) the PyTorch reference fixtures of reference/make_fixtures.py in the
// build tree. Generation runs once under a file lock; a stamp holding a hash of reference/*.py and configs/*.json makes the
// fixtures regenerate whenever the reference changes. Tests FAIL (not skip) if the reference cannot run.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"

namespace dsv3::test {

inline std::string reference_source_hash() {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const char* sub : {"/reference", "/configs"})
    for (auto& e : fs::recursive_directory_iterator(std::string(DSV3_SOURCE_DIR) + sub))
      if (e.path().extension() == ".py" || e.path().extension() == ".json") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string all;
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += f + "\n" + ss.str();
  }
  return std::to_string(hash_name(all.c_str()));
}

// Returns the fixture root (…/fixtures/reference) or "" if generation failed (the caller should FAIL).
inline std::string reference_fixtures() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const std::string out = std::string(DSV3_BINARY_DIR) + "/fixtures/reference";
    const std::string stamp = out + "/.stamp";
    const std::string want = reference_source_hash();
    auto current = [&] {
      std::ifstream s(stamp);
      std::string got;
      std::getline(s, got);
      return got == want;
    };
    if (current()) return out;
    fs::create_directories(std::string(DSV3_BINARY_DIR) + "/fixtures");
    const std::string cmd = "flock " + out + ".lock /bin/sh -c 'if [ \"$(head -n1 " + stamp + " 2>/dev/null)\" != \"" +
                            want + "\" ]; then rm -rf " + out + " && /usr/bin/python3 " + DSV3_SOURCE_DIR +
                            "/reference/make_fixtures.py --out " + out + " > " + out + ".log 2>&1 && echo \"" + want +
                            "\" > " + stamp + "; fi'";
    if (std::system(cmd.c_str()) != 0 || !current()) return std::string();
    return out;
  }();
  return dir;
}

}  // namespace dsv3::test
