// The vectorised exp behind softmax, SwiGLU and cross-entropy (kernels/cpu/vec_exp.h) against std::exp in
// double, and the table form of RoPE against the per-call one.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu/vec_exp.h"
#include "kernels/ops.h"

using namespace dsv3;

TEST(VecExp, WithinTwoUlpOfExactOverTheRange) {
  const int64_t n = 200003;  // not a multiple of 16: the scalar tail runs too
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = -87.0f + 175.0f * float(i) / float(n - 1);
  ops::detail::exp_shift(x.data(), y.data(), n, 0.0f);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double ref = std::exp(double(x[i]));
    worst = std::max(worst, std::fabs(double(y[i]) - ref) / ref);
  }
  EXPECT_LE(worst, 2.0 * std::ldexp(1.0, -23)) << "max relative error";
  // The sum as softmax uses it (arguments shifted to ≤ 0).
  const double sum = ops::detail::exp_shift(x.data(), y.data(), n, -88.0f);
  double ref_sum = 0;
  for (int64_t i = 0; i < n; ++i) ref_sum += std::exp(double(x[i]) - 88.0);
  EXPECT_NEAR(sum, ref_sum, 1e-6 * ref_sum);
}

TEST(VecExp, ShiftNanAndUnderflow) {
  std::vector<float> x = {0.0f, 1.0f, -200.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f, 3.0f, 4.0f, 5.0f,
                          6.0f, 7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f};
  std::vector<float> y(x.size());
  const double sum = ops::detail::exp_shift(x.data(), y.data(), int64_t(x.size()), -1.0f);
  EXPECT_NEAR(y[0], std::exp(-1.0), 2e-7 * std::exp(-1.0));
  EXPECT_NEAR(y[1], 1.0, 2e-7);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_TRUE(std::isnan(y[3])) << "NaN must propagate (the trainer's NaN guard relies on it)";
  EXPECT_TRUE(std::isnan(sum));
}

TEST(RopeTable, SameBitsAsPerCallRope) {
  const int64_t T = 37, n_vec = 3, d = 8;
  std::vector<int64_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = 1000 + 7 * t;
  const std::vector<double> inv_freq = {1.0, 0.1, 0.01, 0.001};
  std::vector<float> a(size_t(T * n_vec * d));
  rng_fill_normal(a.data(), a.size(), 1.0f, 5, 0);
  std::vector<float> b = a, c = a, e = a;
  std::vector<float> cs(size_t(T * d / 2)), sn(cs.size());
  ops::rope_table(T, d, pos.data(), inv_freq.data(), 1.3, cs.data(), sn.data());
  ops::rope_interleaved(T, n_vec, d, a.data(), n_vec * d, d, pos.data(), inv_freq.data(), 1.3);
  ops::rope_interleaved_table(T, n_vec, d, b.data(), n_vec * d, d, cs.data(), sn.data(), 1.0f);
  EXPECT_EQ(a, b);
  ops::rope_interleaved_signed(T, n_vec, d, c.data(), n_vec * d, d, pos.data(), inv_freq.data(), 1.3, -1.0f);
  ops::rope_interleaved_table(T, n_vec, d, e.data(), n_vec * d, d, cs.data(), sn.data(), -1.0f);
  EXPECT_EQ(c, e);
}
