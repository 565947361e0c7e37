// Locates (and, on first use, generates) PyTorch reference fixtures in the build tree: the forward fixtures of
// reference/make_fixtures.py and (tests/train/grad_fixtures.h) the gradient fixtures of make_grad_fixtures.py.
// Generation runs once under a file lock; a stamp holding a hash of reference/**/*.py and configs/*.json makes
// the fixtures regenerate whenever the reference changes. Tests FAIL (not skip) if the reference cannot run.
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

// Hash of every reference script and config, salted so that different fixture kinds get different stamps.
inline std::string reference_source_hash(const std::string& salt) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const char* sub : {"/reference", "/configs"})
    for (auto& e : fs::recursive_directory_iterator(std::string(DSV3_SOURCE_DIR) + sub))
      if (e.path().extension() == ".py" || e.path().extension() == ".json") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string all = salt + "\n";
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += f + "\n" + ss.str();
  }
  return std::to_string(hash_name(all.c_str()));
}

// Runs `/usr/bin/python3 reference/<script> --out BUILD/fixtures/<name>` unless its stamp is current.
// Returns the fixture root, or "" if generation failed (the log is BUILD/fixtures/<name>.log).
inline std::string generate_fixtures(const std::string& script, const std::string& name) {
  namespace fs = std::filesystem;
  const std::string out = std::string(DSV3_BINARY_DIR) + "/fixtures/" + name;
  const std::string stamp = out + "/.stamp";
  const std::string want = reference_source_hash(name);
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
                          "/reference/" + script + " --out " + out + " > " + out + ".log 2>&1 && echo \"" + want +
                          "\" > " + stamp + "; fi'";
  if (std::system(cmd.c_str()) != 0 || !current()) return std::string();
  return out;
}

// The forward fixture root (…/fixtures/reference), or "" if generation failed.
inline std::string reference_fixtures() {
  static const std::string dir = generate_fixtures("make_fixtures.py", "reference");
  return dir;
}

}  // namespace dsv3::test
