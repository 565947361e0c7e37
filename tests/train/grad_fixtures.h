// Locates (and, on first use, generates) the PyTorch autograd gradient fixtures of reference/make_grad_fixtures.py
// in the build tree (build/fixtures/grad/<config>/), through the generator of tests/model/fixtures.h. Also small
// helpers shared by the training tests.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../model/fixtures.h"
#include "io/npy.h"
#include "train/train_model.h"

namespace dsv3::test {

// The fixture root (…/fixtures/grad), or "" if generation failed (the caller should FAIL; see grad.log).
inline std::string grad_fixtures() {
  static const std::string dir = generate_fixtures("make_grad_fixtures.py", "grad");
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
