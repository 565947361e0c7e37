// Shared by the precision tests (test_precision.cpp, test_fp8_cache.cpp): one forward + backward of a TrainModel
// in a given precision, a random token batch, and the per-tensor comparison of two gradient lists.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "train/train_model.h"

namespace dsv3::test {

struct GradRun {
  train::LossValues loss;
  std::vector<train::ExpertLoad> load;
  std::vector<std::pair<std::string, Tensor>> grads;
};

// Loss (MTP λ 0.3, balance α 0.01), expert load and every parameter's gradient for one batch.
inline GradRun run_grads(const ModelWeights& w, const train::TrainBatch& b, train::Precision p,
                         bool fp8_cache_activations = false) {
  train::TrainModel m(w, p, fp8_cache_activations);
  train::LossOptions lo;
  lo.mtp_lambda = 0.3, lo.balance_alpha = 0.01;
  GradRun r;
  r.loss = m.forward(b, lo);
  r.load = m.expert_load();
  ModelWeights g = train::zero_gradients(w);
  m.backward(g);
  r.grads = train::gradient_list(g);
  return r;
}

inline train::TrainBatch random_batch(const ModelConfig& c, int64_t B, int64_t S, uint64_t seed) {
  train::TrainBatch b;
  b.B = B, b.S = S;
  for (int64_t i = 0; i < B * S; ++i)
    b.tokens.push_back(int32_t(rng_uniform(seed, 0, uint64_t(i)) * float(c.vocab_size)) % int32_t(c.vocab_size));
  return b;
}

struct GradDiff {
  double worst = 0, worst_l2 = 0, any_diff = 0;  // worst max|Δ|/max|g_ref|, worst ‖Δ‖/‖g_ref‖, largest |Δ|
  std::string worst_name;
};

// Per tensor (same names in the same order): max|Δ| ≤ max_tol · max|g_ref| and ‖Δ‖₂ ≤ l2_tol · ‖g_ref‖₂; a zero
// reference gradient must be matched exactly. `what` prefixes the failure messages.
inline GradDiff expect_grads_close(const std::vector<std::pair<std::string, Tensor>>& ref,
                                   const std::vector<std::pair<std::string, Tensor>>& got, double max_tol,
                                   double l2_tol, const std::string& what) {
  GradDiff r;
  if (ref.size() != got.size()) {
    ADD_FAILURE() << what << ": " << ref.size() << " vs " << got.size() << " gradient tensors";
    return r;
  }
  for (size_t t = 0; t < ref.size(); ++t) {
    const Tensor &a = ref[t].second, &g = got[t].second;
    if (ref[t].first != got[t].first || a.numel() != g.numel()) {
      ADD_FAILURE() << what << ": tensor " << t << " is " << ref[t].first << " vs " << got[t].first;
      return r;
    }
    double max_ref = 0, max_d = 0, ss_ref = 0, ss_d = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      max_ref = std::max(max_ref, std::fabs(double(a.f32()[i])));
      const double d = std::fabs(double(g.f32()[i]) - double(a.f32()[i]));
      max_d = std::isfinite(d) ? std::max(max_d, d) : INFINITY;
      ss_ref += double(a.f32()[i]) * double(a.f32()[i]), ss_d += d * d;
    }
    r.any_diff = std::max(r.any_diff, max_d);
    if (max_ref == 0) {
      EXPECT_EQ(max_d, 0.0) << what << " " << ref[t].first << ": the reference gradient is zero, the other is not";
      continue;
    }
    const double ratio = max_d / max_ref, l2 = std::sqrt(ss_d / ss_ref);
    EXPECT_LE(ratio, max_tol) << what << " " << ref[t].first;
    EXPECT_LE(l2, l2_tol) << what << " " << ref[t].first;
    r.worst_l2 = std::max(r.worst_l2, l2);
    if (ratio > r.worst) r.worst = ratio, r.worst_name = ref[t].first;
  }
  return r;
}

}  // namespace dsv3::test
