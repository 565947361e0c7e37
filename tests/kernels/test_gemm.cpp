// GEMM entry points (F32 OpenBLAS and BF16 oneDNN) against a plain double-precision loop, on strided and
// ragged shapes (odd M, N, K; K = 0; alpha/beta). In BF16 the reference uses the
// BF16-rounded operands, so the only difference left is F32 accumulation order.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/ops.h"

using namespace dsv3;

namespace {

enum class Form { kNT, kNN, kTN };

struct Case {
  Form form;
  int64_t M, N, K;
};

double max_rel_error(Form form, int64_t M, int64_t N, int64_t K, ops::GemmPrecision prec, float alpha, float beta) {
  const int64_t pad = 3;  // row strides wider than the rows
  const bool a_t = form == Form::kTN, b_t = form == Form::kNT;
  const int64_t a_rows = a_t ? K : M, a_cols = a_t ? M : K, b_rows = b_t ? N : K, b_cols = b_t ? K : N;
  const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldd = N + pad;
  std::vector<float> A(size_t(a_rows * lda)), B(size_t(b_rows * ldb)), D(size_t(M * ldd));
  rng_fill_normal(A.data(), A.size(), 1.0f, 3, 1);
  rng_fill_normal(B.data(), B.size(), 1.0f, 3, 2);
  rng_fill_normal(D.data(), D.size(), 1.0f, 3, 3);
  auto round = [&](float x) { return prec == ops::GemmPrecision::kBF16 ? bf16_to_f32(f32_to_bf16(x)) : x; };
  auto a = [&](int64_t m, int64_t k) { return double(round(a_t ? A[k * lda + m] : A[m * lda + k])); };
  auto b = [&](int64_t k, int64_t n) { return double(round(b_t ? B[n * ldb + k] : B[k * ldb + n])); };
  std::vector<double> ref(size_t(M * N));
  double scale = 1e-30;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) s += a(m, k) * b(k, n), mag += std::fabs(a(m, k) * b(k, n));
      ref[m * N + n] = alpha * s + beta * double(D[m * ldd + n]);
      scale = std::max(scale, std::fabs(alpha) * mag + std::fabs(beta * D[m * ldd + n]));
    }
  ops::GemmPrecisionScope scope(prec);
  switch (form) {
    case Form::kNT: ops::gemm_nt(M, N, K, A.data(), lda, B.data(), ldb, D.data(), ldd, alpha, beta); break;
    case Form::kNN: ops::gemm_nn(M, N, K, A.data(), lda, B.data(), ldb, D.data(), ldd, alpha, beta); break;
    case Form::kTN: ops::gemm_tn(M, N, K, A.data(), lda, B.data(), ldb, D.data(), ldd, alpha, beta); break;
  }
  double err = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) err = std::max(err, std::fabs(double(D[m * ldd + n]) - ref[m * N + n]));
  return err / scale;  // error relative to the sum of |terms| (the F32 accumulation bound's natural scale)
}

}  // namespace

TEST(Gemm, AllFormsBothPrecisions) {
  const Case cases[] = {{Form::kNT, 37, 45, 70}, {Form::kNN, 37, 45, 70}, {Form::kTN, 37, 45, 70},
                        {Form::kNT, 1, 300, 129}, {Form::kTN, 130, 17, 5}, {Form::kNN, 64, 64, 256},
                        {Form::kNT, 5, 7, 0}};
  for (auto prec : {ops::GemmPrecision::kF32, ops::GemmPrecision::kBF16})
    for (const Case& c : cases)
      for (auto [alpha, beta] : {std::pair{1.0f, 0.0f}, std::pair{0.5f, 1.0f}, std::pair{-2.0f, 0.25f}}) {
        double e = max_rel_error(c.form, c.M, c.N, c.K, prec, alpha, beta);
        EXPECT_LT(e, 1e-6) << "form " << int(c.form) << " M" << c.M << " N" << c.N << " K" << c.K << " prec "
                           << int(prec) << " alpha " << alpha << " beta " << beta;
      }
}

TEST(Gemm, Bf16ScopeIsThreadLocalAndRestores) {
  EXPECT_EQ(ops::gemm_precision(), ops::GemmPrecision::kF32);
  {
    ops::GemmPrecisionScope s(ops::GemmPrecision::kBF16);
    EXPECT_EQ(ops::gemm_precision(), ops::GemmPrecision::kBF16);
  }
  EXPECT_EQ(ops::gemm_precision(), ops::GemmPrecision::kF32);
}
