// The backward kernels (kernels/backward_ops.h) against plain double-precision loops: gemm_tn (incl. strides, K = 0,
// accumulation), RMSNorm input/weight gradients vs the analytic formula evaluated in f64, RoPE backward as the exact
// transpose of the forward (⟨R x, y⟩ = ⟨x, Rᵀ y⟩), SwiGLU and softmax backward vs closed forms, and the fused
// cross-entropy (value and gradient, ignored rows).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "kernels/backward_ops.h"
#include "kernels/ops.h"

using namespace dsv3;

namespace {

std::vector<float> randn(int64_t n, uint64_t stream, float std = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  rng_fill_normal(v.data(), uint64_t(n), std, 777, stream);
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

TEST(BackwardOps, GemmTnMatchesLoops) {
  const int64_t M = 7, N = 5, K = 9, lda = 10, ldb = 6, ldd = 8;
  auto A = randn(K * lda, 1), B = randn(K * ldb, 2), Dm = randn(M * ldd, 3);
  auto D0 = Dm;
  ops::gemm_tn(M, N, K, A.data(), lda, B.data(), ldb, Dm.data(), ldd, 0.5f, 1.0f);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += double(A[k * lda + i]) * double(B[k * ldb + j]);
      EXPECT_NEAR(Dm[i * ldd + j], 0.5 * s + D0[i * ldd + j], 1e-5) << i << "," << j;
    }
  // K = 0: D = beta·D.
  auto E = randn(M * N, 4);
  auto E0 = E;
  ops::gemm_tn(M, N, 0, A.data(), lda, B.data(), ldb, E.data(), N, 1.0f, 0.0f);
  for (float v : E) EXPECT_EQ(v, 0.0f);
  E = E0;
  ops::gemm_tn(M, N, 0, A.data(), lda, B.data(), ldb, E.data(), N, 1.0f, 1.0f);
  EXPECT_EQ(E, E0);
}

TEST(BackwardOps, RmsNormGradients) {
  const int64_t T = 5, D = 24;
  const float eps = 1e-6f;
  auto x = randn(T * D, 5), w = randn(D, 6), dy = randn(T * D, 7);
  for (auto& v : w) v = 1.0f + 0.1f * v;
  std::vector<float> dx(T * D, 1.0f), dw(D, 0.5f);
  ops::rmsnorm_backward_input(T, D, x.data(), D, w.data(), dy.data(), D, eps, dx.data(), D, /*accumulate=*/true);
  ops::rmsnorm_backward_weight(T, D, x.data(), D, dy.data(), D, eps, dw.data());
  std::vector<double> dw_ref(D, 0.5);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(x[t * D + i]) * x[t * D + i];
    const double r = 1.0 / std::sqrt(ss / D + eps);
    // dx_j = Σ_i dy_i w_i ∂(x_i r)/∂x_j = Σ_i dy_i w_i (δ_ij r − x_i x_j r³ / D)
    for (int64_t j = 0; j < D; ++j) {
      double g = 0;
      for (int64_t i = 0; i < D; ++i)
        g += double(dy[t * D + i]) * w[i] * ((i == j ? r : 0.0) - double(x[t * D + i]) * x[t * D + j] * r * r * r / D);
      EXPECT_NEAR(dx[t * D + j], 1.0 + g, 2e-5 * (1.0 + std::fabs(g))) << t << "," << j;
    }
    for (int64_t i = 0; i < D; ++i) dw_ref[i] += double(dy[t * D + i]) * x[t * D + i] * r;
  }
  for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(dw[i], dw_ref[i], 1e-5 * (1.0 + std::fabs(dw_ref[i])));
}

TEST(BackwardOps, RopeBackwardIsTheTranspose) {
  const int64_t T = 6, nv = 3, d = 8;
  std::vector<int64_t> pos = {0, 1, 5, 17, 63, 1000};
  std::vector<double> inv = {1.0, 0.1, 0.005125, 2.5e-5};
  const double cs = 1.07;
  auto x = randn(T * nv * d, 8), y = randn(T * nv * d, 9);
  auto rx = x, rty = y;
  ops::rope_interleaved(T, nv, d, rx.data(), nv * d, d, pos.data(), inv.data(), cs);
  ops::rope_interleaved_backward(T, nv, d, rty.data(), nv * d, d, pos.data(), inv.data(), cs);
  double a = 0, b = 0;
  for (size_t i = 0; i < x.size(); ++i) a += double(rx[i]) * y[i], b += double(x[i]) * rty[i];
  EXPECT_NEAR(a, b, 1e-5 * (std::fabs(a) + 1));
  // With cs = 1 the backward inverts the forward.
  auto z = x;
  ops::rope_interleaved(T, nv, d, z.data(), nv * d, d, pos.data(), inv.data(), 1.0);
  ops::rope_interleaved_backward(T, nv, d, z.data(), nv * d, d, pos.data(), inv.data(), 1.0);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(z[i], x[i], 1e-5);
}

TEST(BackwardOps, SiluMulBackward) {
  const int64_t T = 3, I = 10;
  auto gu = randn(T * 2 * I, 10, 2.0f), dout = randn(T * I, 11);
  std::vector<float> d(T * 2 * I);
  ops::silu_mul_backward(T, I, gu.data(), gu.data() + I, 2 * I, dout.data(), I, d.data(), d.data() + I, 2 * I);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const double g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i], s = 1.0 / (1.0 + std::exp(-g));
      EXPECT_NEAR(d[t * 2 * I + i], dout[t * I + i] * u * (s + g * s * (1 - s)), 1e-5);
      EXPECT_NEAR(d[t * 2 * I + I + i], dout[t * I + i] * g * s, 1e-5);
    }
}

TEST(BackwardOps, SoftmaxBackwardCausal) {
  const int64_t S = 6;
  auto sc = randn(S * S, 12), dp = randn(S * S, 13);
  ops::causal_softmax(S, S, sc.data(), S, 0);
  auto g = dp;
  ops::softmax_backward(S, S, sc.data(), S, g.data(), S, 0.5f);
  for (int64_t s = 0; s < S; ++s) {
    double dot = 0;
    for (int64_t t = 0; t <= s; ++t) dot += double(sc[s * S + t]) * dp[s * S + t];
    for (int64_t t = 0; t < S; ++t) {
      const double want = t <= s ? 0.5 * sc[s * S + t] * (dp[s * S + t] - dot) : 0.0;
      EXPECT_NEAR(g[s * S + t], want, 1e-6);
    }
  }
}

TEST(BackwardOps, CrossEntropyValueAndGradient) {
  const int64_t T = 4, V = 11;
  auto lg = randn(T * V, 14, 3.0f);
  std::vector<int32_t> tgt = {3, -1, 10, 0};
  double want = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (tgt[t] < 0) continue;
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(lg[t * V + v]));
    want += std::log(z) - lg[t * V + tgt[t]];
  }
  EXPECT_NEAR(ops::cross_entropy_sum(T, V, lg.data(), V, tgt.data()), want, 1e-9 * std::fabs(want));
  std::vector<float> g(T * V, 7.0f);
  ops::cross_entropy_backward(T, V, lg.data(), V, tgt.data(), 0.25f, g.data(), V);
  for (int64_t t = 0; t < T; ++t) {
    double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(double(lg[t * V + v]));
    for (int64_t v = 0; v < V; ++v) {
      const double p = std::exp(double(lg[t * V + v])) / z;
      const double w = tgt[t] < 0 ? 0.0 : 0.25 * (p - (v == tgt[t] ? 1.0 : 0.0));
      EXPECT_NEAR(g[t * V + v], w, 1e-7) << t << "," << v;
    }
  }
  EXPECT_GT(max_abs(g), 0.0);
}
