// The f32 E4M3 rounding rule of the CUDA quantizers (cuda/e4m3_rule.h) against the CPU rule
// (core/fp8_block.h e4m3_of_quotient, quotient in double), on the host — runs without a GPU. Random quotients
// over 60 binades of tile amax, and quotients constructed next to every E4M3 midpoint (x = T·scale and its f32
// neighbours, where the f32 quotient can land exactly on a midpoint that the exact quotient is not on), for
// random and power-of-two (exact) scales, both signs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "cuda/e4m3_rule.h"

using namespace dsv3;

TEST(E4m3Rule, F32RuleEqualsTheCpuRule) {
  std::mt19937_64 g(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  int64_t n = 0, bad = 0;
  auto check = [&](float x, float s) {
    ++n;
    const uint8_t want = e4m3_of_quotient(x, s), got = cuda::e4m3_of_quotient_f32(x, s);
    if (want != got && ++bad <= 5) ADD_FAILURE() << std::hexfloat << "x " << x << " scale " << s << ": cpu " << int(want) << " f32 rule " << int(got);
  };
  for (int i = 0; i < 400000; ++i) {
    const float amax = std::ldexp(1.0f + std::fabs(u(g)), int(g() % 60) - 30);
    const float s = i % 8 == 0 ? std::ldexp(1.0f, int(g() % 40) - 30) : std::fmax(amax, 1e-4f) / 448.0f;
    check(u(g) * amax * std::ldexp(1.0f, -int(g() % 12)), s);
    // next to a midpoint T between two neighbouring codes
    const int c = int(g() % 0x7e);
    const float T = (e4m3_to_f32(uint8_t(c)) + e4m3_to_f32(uint8_t(c + 1))) / 2.0f;
    float x = T * s;
    for (int d = 0; d < 3; ++d, x = std::nextafter(x, 0.0f)) check(x, s), check(-x, s);
    x = std::nextafter(T * s, INFINITY);
    check(x, s), check(-x, s);
  }
  // Saturation, zero, signed zero, tiny.
  for (float x : {448.0f, 449.0f, 464.0f, 1e30f, 0.0f, -0.0f, 1e-30f, -1e-30f}) check(x, 1.0f), check(-x, 1.0f);
  EXPECT_EQ(bad, 0) << "of " << n;
  EXPECT_GT(n, 2000000);
}
