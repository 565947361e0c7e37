// Central finite differences for the training tests: O(1)-scaled random weights for a config, and a checker
// that compares analytic gradients with (L(θ+ε) − L(θ−ε)) / 2ε on a few coordinates of each tensor (always
// including the coordinate with the largest analytic gradient, so a sign or factor error cannot hide).
// f32 forward passes, so ε is ~5e-3 and the tolerance loose: |fd − an| ≤ rtol·max(|an|, 0.1·max|an of tensor|).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/weights.h"

namespace dsv3::test {

// Weights with unit-gain linears (N(0,1)/√in), norms 1 + 0.1·N, router N(0,1)·2/√D, correction bias 0.1·N, so
// every activation is O(1) and f32 finite differences are meaningful (the paper's 0.006 init is far too small).
inline ModelWeights fd_weights(const ModelConfig& cfg, uint64_t seed) {
  ModelWeights w = ModelWeights::random(cfg, seed, 1.0f);
  for (auto& [name, t] : w.by_name) {
    float* p = t.f32();
    const int64_t n = t.numel();
    std::vector<float> z(static_cast<size_t>(n));
    rng_fill_normal(z.data(), uint64_t(n), 1.0f, seed + 7, hash_name(name.c_str()));
    const bool is_norm = name.find("norm") != std::string::npos;
    if (name.ends_with("e_score_correction_bias")) {
      for (int64_t i = 0; i < n; ++i) p[i] = 0.1f * z[i];
    } else if (is_norm) {
      for (int64_t i = 0; i < n; ++i) p[i] = 1.0f + 0.1f * z[i];
    } else if (name.ends_with("mlp.gate.weight") || name == "lm_head.weight") {
      for (int64_t i = 0; i < n; ++i) p[i] = z[i] * 2.0f / std::sqrt(float(cfg.hidden_size));
    } else if (name == "model.embed_tokens.weight") {
      for (int64_t i = 0; i < n; ++i) p[i] = z[i];
    } else {
      const float s = 1.0f / std::sqrt(float(t.dim(1)));
      for (int64_t i = 0; i < n; ++i) p[i] = z[i] * s;
    }
  }
  return w;
}

struct FdParam {
  std::string label;
  float* data;         // perturbed in place (restored afterwards)
  int64_t numel;
  const float* grad;   // analytic gradient, same layout
};

struct FdOptions {
  double eps = 5e-3;
  double rtol = 2e-2;
  int n_random = 3;      // random coordinates per tensor, besides the argmax
  uint64_t seed = 99;
};

struct FdResult {
  int checked = 0, skipped = 0, failed = 0;
  double worst = 0.0;  // worst |fd − an| / max(|an|, 0.1·gmax)
  std::string worst_label;
  bool sign_flip_caught = true;  // the argmax coordinate would fail with −an
};

// eval() returns the loss at the current parameter values, or NaN when the perturbation changed a discrete
// decision (expert routing): such coordinates are skipped, not failed.
inline FdResult fd_check(const std::vector<FdParam>& params, const std::function<double()>& eval,
                         const FdOptions& o = {}) {
  FdResult res;
  for (const FdParam& p : params) {
    double gmax = 0.0;
    int64_t arg = 0;
    for (int64_t i = 0; i < p.numel; ++i)
      if (std::fabs(p.grad[i]) > gmax) gmax = std::fabs(p.grad[i]), arg = i;
    std::vector<int64_t> coords = {arg};
    for (int r = 0; r < o.n_random; ++r)
      coords.push_back(int64_t(rng_uniform(o.seed, hash_name(p.label.c_str()), uint64_t(r)) * double(p.numel)) %
                       p.numel);
    for (int64_t i : coords) {
      const float v = p.data[i];
      const float up = float(v + o.eps), dn = float(v - o.eps);
      p.data[i] = up;
      const double lp = eval();
      p.data[i] = dn;
      const double lm = eval();
      p.data[i] = v;
      if (std::isnan(lp) || std::isnan(lm)) {
        ++res.skipped;
        continue;
      }
      const double fd = (lp - lm) / (double(up) - double(dn));
      const double an = p.grad[i];
      const double scale = std::max({std::fabs(an), 0.1 * gmax, 1e-6});
      const double err = std::fabs(fd - an) / scale;
      ++res.checked;
      if (err > res.worst) res.worst = err, res.worst_label = p.label + "[" + std::to_string(i) + "]";
      if (err > o.rtol) {
        ++res.failed;
        ADD_FAILURE() << p.label << "[" << i << "]: finite difference " << fd << " vs analytic " << an
                      << " (max |grad| of tensor " << gmax << ")";
      }
      if (i == arg && gmax > 0 && std::fabs(fd + an) / scale <= o.rtol) res.sign_flip_caught = false;
    }
  }
  return res;
}

}  // namespace dsv3::test
