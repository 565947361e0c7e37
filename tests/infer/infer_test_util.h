// Shared helpers for the inference tests: random models of the built-in configs (made once per process),
// random token lists, and the full-sequence reference logits (Transformer::hidden + logits).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/transformer.h"

namespace dsv3::test {

// Init std 0.05 (not the paper's 0.006) so attention and routing are far from uniform in these small models.
inline const ModelWeights& random_model(const std::string& config, float std = 0.05f, uint64_t seed = 7) {
  static std::map<std::string, std::unique_ptr<ModelWeights>> models;
  const std::string key = config + "/" + std::to_string(std) + "/" + std::to_string(seed);
  auto& slot = models[key];
  if (!slot) {
    ModelConfig c = ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/" + config + ".json");
    slot = std::make_unique<ModelWeights>(ModelWeights::random(c, seed, std));
  }
  return *slot;
}

inline std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    t[static_cast<size_t>(i)] = int32_t(rng_uniform(seed, 99, uint64_t(i)) * float(vocab)) % int32_t(vocab);
  return t;
}

// Full-forward logits [S, V] (naive MLA, OpenBLAS).
inline Tensor reference_logits(const ModelWeights& w, const std::vector<int32_t>& tokens) {
  Transformer model(w);
  return model.logits(model.hidden(tokens));
}

}  // namespace dsv3::test
