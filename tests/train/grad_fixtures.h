// Locates (and, on first use, generates) the PyTorch autograd gradient fixtures of reference/make_grad_fixtures.py
// in the build tree (build/fixtures/grad/<config>/). Generation runs once under a file lock; a stamp holding a
// hash of reference/**/*.py and configs/*.json regenerates them whenever the reference changes. Tests FAIL
// (not skip) when the reference cannot run. Also small helpers shared by the training tests.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/npy.h"
#include "train/train_model.h"

namespace dsv3::test {

inline std::string grad_reference_hash() {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const char* sub : {"/reference", "/configs"})
    for (auto& e : fs::recursive_directory_iterator(std::string(DSV3_SOURCE_DIR) + sub))
      if (e.path().extension() == ".py" || e.path().extension() == ".json") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string all = "grad-fixtures\n";
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    all += f + "\n" + ss.str();
  }
  return std::to_string(hash_name(all.c_str()));
}

// The fixture root (…/fixtures/grad), or "" if generation failed (the caller should FAIL; see grad.log).
inline std::string grad_fixtures() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const std::string out = std::string(DSV3_BINARY_DIR) + "/fixtures/grad";
    const std::string stamp = out + "/.stamp";
    const std::string want = grad_reference_hash();
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
                            "/reference/make_grad_fixtures.py --out " + out + " > " + out + ".log 2>&1 && echo \"" +
                            want + "\" > " + stamp + "; fi'";
    if (std::system(cmd.c_str()) != 0 || !current()) return std::string();
    return out;
  }();
  return dir;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// tokens.npy (int64 [B, S]) → a training batch.
inline train::TrainBatch load_batch(const std::string& dir) {
  Tensor t = io::read_npy(dir + "/tokens.npy");
  train::TrainBatch b;
  b.B = t.dim(0), b.S = t.dim(1);
  for (int64_t i = 0; i < t.numel(); ++i) b.tokens.push_back(int32_t(t.ptr<int64_t>()[i]));
  return b;
}

}  // namespace dsv3::test
