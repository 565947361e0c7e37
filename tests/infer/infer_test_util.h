// Shared helpers for the inference tests: random models of the built-in configs (made once per process),
// random token lists, the full-sequence reference logits (Transformer::hidden + logits), and the logits of a
// whole prompt run through the Decoder as one prefill chunk.
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "infer/decode.h"
#include "infer/infer_weights.h"
#include "infer/kv_cache.h"
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

// Logits [S, V] of every position of `tokens`, one Decoder step over a fresh cache (the prompt as one chunk).
inline std::vector<float> step_logits(const infer::InferWeights& w, const std::vector<int32_t>& tokens) {
  using namespace dsv3::infer;
  const int64_t S = int64_t(tokens.size()), V = w.cfg.vocab_size;
  Decoder dec(w, S, S);
  KvCache cache(KvCacheConfig::for_model(w.cfg, S, 1, S, 8));
  const int32_t seq = cache.acquire();
  EXPECT_TRUE(cache.reserve(seq, S));
  std::vector<DecodeRow> rows;
  for (int64_t i = 0; i < S; ++i) rows.push_back({seq, i, tokens[size_t(i)], true});
  std::vector<float> out(size_t(S * V));
  dec.forward(rows, cache, out.data());
  return out;
}

}  // namespace dsv3::test
