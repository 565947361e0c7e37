// The emulated block-scaled FP8 GEMM (src/fp8/fp8_gemm.h): the AVX-512 kernel and the scalar form against a
// float64 GEMM of the dequantized operands, for fprop / dgrad / wgrad with edge sizes, beta, strides and both
// scale modes; the limited-accumulator emulation's error at K = 4096 against the promoted one; NaN propagation.
//
// Error measure: per output, |C - C64| / Σ_k |a_k b_k| (the sum of absolute dequantized products), which bounds
// the rounding of any FP32 summation order; tolerance 1e-6.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "core/rng.h"
#include "dsv3/error.h"
#include "fp8/fp8_gemm.h"

using namespace dsv3;
using namespace dsv3::fp8;

namespace {

std::vector<float> randn(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  rng_fill_normal(v.data(), uint64_t(n), scale, seed, 0);
  return v;
}

// Dequantized copy (float64) of x[rows, cols] (stride ld) under tile shape tr×tc.
std::vector<double> dequant(const float* x, int64_t rows, int64_t cols, int64_t ld, int64_t tr, int64_t tc) {
  std::vector<uint8_t> c(size_t(rows * cols));
  std::vector<float> s(size_t(ceil_div(rows, tr) * ceil_div(cols, tc)));
  quantize_tiles(x, rows, cols, ld, tr, tc, linear_scale_mode(), c.data(), s.data());
  std::vector<double> out(size_t(rows * cols));
  const int64_t ntc = ceil_div(cols, tc);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      out[r * cols + j] = double(e4m3_to_f32(c[r * cols + j])) * double(s[(r / tr) * ntc + j / tc]);
  return out;
}

// Max over outputs of |got - Σ a·b| / Σ |a·b|, with a(m,k), b(n,k) given as accessors over float64 arrays.
template <typename A, typename B>
double max_rel_err(int64_t M, int64_t N, int64_t K, A a, B b, const float* got, int64_t ldc,
                   const std::vector<float>& c0, float beta) {
  double worst = 0.0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double sum = beta != 0.0f ? double(beta) * c0[m * ldc + n] : 0.0, mag = std::fabs(sum);
      for (int64_t k = 0; k < K; ++k) {
        const double p = a(m, k) * b(n, k);
        sum += p;
        mag += std::fabs(p);
      }
      const double err = std::fabs(double(got[m * ldc + n]) - sum);
      worst = std::max(worst, mag > 0 ? err / mag : err);
    }
  return worst;
}

struct Shape3 {
  int64_t M, N, K;
};
const Shape3 kShapes[] = {{1, 1, 1}, {7, 33, 129}, {129, 65, 300}, {37, 150, 256}, {9, 31, 128}, {64, 64, 1000}};

}  // namespace

TEST(Fp8Gemm, FpropMatchesFloat64) {
  for (ScaleMode mode : {ScaleMode::kAmax, ScaleMode::kPow2})
    for (const auto& s : kShapes)
      for (float beta : {0.0f, 0.5f}) {
        SCOPED_TRACE(::testing::Message() << s.M << "x" << s.N << "x" << s.K << " beta " << beta << " pow2 "
                                          << (mode == ScaleMode::kPow2));
        Fp8ScaleScope scope(mode);
        const int64_t ldx = s.K + 3, ldw = s.K + 1, ldy = s.N + 2;
        auto X = randn(s.M * ldx, 1 + s.K, 3.0f), W = randn(s.N * ldw, 2 + s.N, 0.02f);
        auto Y = randn(s.M * ldy, 3), Y0 = Y;
        linear_fprop(s.M, s.N, s.K, X.data(), ldx, W.data(), ldw, Y.data(), ldy, beta);
        auto xd = dequant(X.data(), s.M, s.K, ldx, 1, 128), wd = dequant(W.data(), s.N, s.K, ldw, 128, 128);
        const double e = max_rel_err(
            s.M, s.N, s.K, [&](int64_t m, int64_t k) { return xd[m * s.K + k]; },
            [&](int64_t n, int64_t k) { return wd[n * s.K + k]; }, Y.data(), ldy, Y0, beta);
        EXPECT_LE(e, 1e-6);
      }
}

TEST(Fp8Gemm, DgradMatchesFloat64) {
  for (const auto& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << s.M << "x" << s.N << "x" << s.K);
    const int64_t lddy = s.N + 1, ldw = s.K + 2, lddx = s.K + 5;
    auto dY = randn(s.M * lddy, 4 + s.N, 1e-3f), W = randn(s.N * ldw, 5, 0.05f);
    auto dX = randn(s.M * lddx, 6), dX0 = dX;
    linear_dgrad(s.M, s.N, s.K, dY.data(), lddy, W.data(), ldw, dX.data(), lddx, 1.0f);
    auto gd = dequant(dY.data(), s.M, s.N, lddy, 1, 128), wd = dequant(W.data(), s.N, s.K, ldw, 128, 128);
    const double e = max_rel_err(
        s.M, s.K, s.N, [&](int64_t m, int64_t n) { return gd[m * s.N + n]; },
        [&](int64_t k, int64_t n) { return wd[n * s.K + k]; }, dX.data(), lddx, dX0, 1.0f);
    EXPECT_LE(e, 1e-6);
  }
}

TEST(Fp8Gemm, WgradMatchesFloat64) {
  for (ScaleMode mode : {ScaleMode::kAmax, ScaleMode::kPow2})
    for (const auto& s : kShapes) {
      SCOPED_TRACE(::testing::Message() << s.M << "x" << s.N << "x" << s.K);
      Fp8ScaleScope scope(mode);
      const int64_t lddy = s.N + 3, ldx = s.K, lddw = s.K + 1;
      auto dY = randn(s.M * lddy, 7, 1e-2f), X = randn(s.M * ldx, 8 + s.M);
      auto dW = randn(s.N * lddw, 9), dW0 = dW;
      linear_wgrad(s.M, s.N, s.K, dY.data(), lddy, X.data(), ldx, dW.data(), lddw, 0.0f);
      auto gd = dequant(dY.data(), s.M, s.N, lddy, 128, 1), xd = dequant(X.data(), s.M, s.K, ldx, 128, 1);
      const double e = max_rel_err(
          s.N, s.K, s.M, [&](int64_t n, int64_t m) { return gd[m * s.N + n]; },
          [&](int64_t k, int64_t m) { return xd[m * s.K + k]; }, dW.data(), lddw, dW0, 0.0f);
      EXPECT_LE(e, 1e-6);
    }
}

// The AVX-512 kernel and the scalar form of the same arithmetic agree to FP32 summation-order noise on
// quantized operands with varied scales (also exercised: beta, K = 0).
TEST(Fp8Gemm, KernelMatchesScalarForm) {
  const int64_t M = 45, N = 70, K = 389, KB = ceil_div(K, 128);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::vector<uint8_t> a(size_t(M * K)), b(size_t(N * K));
  for (auto& c : a) c = uint8_t(rng()) & 0xF7;  // every sign and exponent, no NaN code (mantissa 7 excluded)
  for (auto& c : b) c = uint8_t(rng()) & 0x77;
  std::vector<float> sa(size_t(M * KB)), sb(size_t(KB * N));
  for (auto& s : sa) s = std::ldexp(1.0f + u01(rng), int(rng() % 9) - 4);
  for (auto& s : sb) s = 1e-3f * (1.0f + u01(rng));
  const BlockScaledOperands op{M, N, K, a.data(), K, sa.data(), b.data(), K, sb.data()};
  std::vector<float> c1(size_t(M * N), 1.0f), c2 = c1;
  block_scaled_gemm(op, c1.data(), N, 2.0f);
  block_scaled_gemm_reference(op, c2.data(), N, 2.0f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double mag = 2.0;  // |beta·C|
      for (int64_t k = 0; k < K; ++k)
        mag += std::fabs(double(e4m3_to_f32(a[m * K + k])) * sa[m * KB + k / 128] * e4m3_to_f32(b[n * K + k]) *
                         sb[(k / 128) * N + n]);
      ASSERT_LE(std::fabs(c1[m * N + n] - c2[m * N + n]), 1e-6 * mag) << m << "," << n;
    }
  // The same operands stored reduction-major (a as [K,M], b as [K,N]) give the same results, in both forms.
  std::vector<uint8_t> at(size_t(K * M)), bt(size_t(K * N));
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m = 0; m < M; ++m) at[k * M + m] = a[m * K + k];
    for (int64_t n = 0; n < N; ++n) bt[k * N + n] = b[n * K + k];
  }
  const BlockScaledOperands opt{M, N, K, at.data(), M, sa.data(), bt.data(), N, sb.data(), true, true};
  std::vector<float> c4(size_t(M * N), 1.0f), c5 = c4;
  block_scaled_gemm(opt, c4.data(), N, 2.0f);
  block_scaled_gemm_reference(opt, c5.data(), N, 2.0f);
  for (int64_t i = 0; i < M * N; ++i) {
    ASSERT_EQ(c4[i], c1[i]) << i;  // same packed panels, same arithmetic
    ASSERT_EQ(c5[i], c2[i]) << i;
  }
  std::vector<float> c3(size_t(M * N), 5.0f);
  block_scaled_gemm({M, N, 0, a.data(), K, sa.data(), b.data(), K, sb.data()}, c3.data(), N, 0.5f);
  for (float v : c3) ASSERT_EQ(v, 2.5f);
}

// Paper §3.3.2: without promotion, a ~14-bit accumulator loses about 2% at K = 4096; with promotion every
// 128 elements the error stays at FP32 rounding. Positive operands make the truncation errors add up instead
// of cancelling (the worst case the paper's "maximum relative error" describes).
TEST(Fp8Gemm, LimitedAccumulatorVsPromotion) {
  const int64_t M = 4, N = 4, K = 4096, KB = K / 128;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  std::vector<float> X(size_t(M * K)), W(size_t(N * K));
  for (auto& v : X) v = u01(rng);
  for (auto& v : W) v = u01(rng);
  std::vector<uint8_t> a(size_t(M * K)), b(size_t(N * K));
  std::vector<float> sa(size_t(M * KB)), sw(static_cast<size_t>(KB)), sb(size_t(KB * N));
  quantize_tiles(X.data(), M, K, K, 1, 128, ScaleMode::kAmax, a.data(), sa.data());
  quantize_tiles(W.data(), N, K, K, 128, 128, ScaleMode::kAmax, b.data(), sw.data());
  for (int64_t kb = 0; kb < KB; ++kb)
    for (int64_t n = 0; n < N; ++n) sb[kb * N + n] = sw[kb];
  const BlockScaledOperands op{M, N, K, a.data(), K, sa.data(), b.data(), K, sb.data()};
  std::vector<float> promoted(size_t(M * N)), limited(size_t(M * N)), limited1(size_t(M * N));
  block_scaled_gemm(op, promoted.data(), N);
  block_scaled_gemm_limited(op, limited.data(), N, 14, 4);
  block_scaled_gemm_limited(op, limited1.data(), N, 14, 1);
  double err_p = 0, err_l = 0, err_l1 = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double exact = 0;
      for (int64_t k = 0; k < K; ++k)
        exact += double(e4m3_to_f32(a[m * K + k])) * sa[m * KB + k / 128] * double(e4m3_to_f32(b[n * K + k])) *
                 sw[k / 128];
      err_p = std::max(err_p, std::fabs(promoted[m * N + n] - exact) / exact);
      err_l = std::max(err_l, std::fabs(limited[m * N + n] - exact) / exact);
      err_l1 = std::max(err_l1, std::fabs(limited1[m * N + n] - exact) / exact);
    }
  std::printf("K=4096 max relative error: promoted %.3g; 14-bit accumulator, 4-product groups %.3g, "
              "single products %.3g\n", err_p, err_l, err_l1);
  EXPECT_LE(err_p, 1e-6);
  EXPECT_GE(err_l, 0.015);
  EXPECT_LE(err_l, 0.03);
  EXPECT_GT(err_l1, err_l);
}

TEST(Fp8Gemm, NonFiniteInputPoisonsItsTileOnly) {
  const int64_t M = 3, N = 2, K = 256;
  auto X = randn(M * K, 1), W = randn(N * K, 2);
  X[1 * K + 130] = NAN;  // row 1, second K tile
  std::vector<float> Y(size_t(M * N));
  linear_fprop(M, N, K, X.data(), K, W.data(), K, Y.data(), N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) EXPECT_EQ(std::isnan(Y[m * N + n]), m == 1) << m << "," << n;
  X[1 * K + 130] = 0.0f;
  W[0] = INFINITY;  // W block (0, 0): every output column of block 0
  linear_fprop(M, N, K, X.data(), K, W.data(), K, Y.data(), N);
  for (float v : Y) EXPECT_TRUE(std::isnan(v));
}

TEST(Fp8Gemm, BadShapes) {
  float x[4] = {};
  EXPECT_THROW(linear_fprop(1, 1, 4, x, 3, x, 4, x, 1), Error);
  EXPECT_THROW(linear_dgrad(-1, 1, 1, x, 1, x, 1, x, 1), Error);
  EXPECT_THROW(linear_wgrad(1, 2, 1, x, 1, x, 1, x, 0), Error);
  const uint8_t c[1] = {0};
  EXPECT_THROW(block_scaled_gemm_limited({1, 1, 1, c, 1, x, c, 1, x}, x, 1, 30), Error);
}
