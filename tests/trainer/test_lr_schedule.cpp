// LR / λ / γ schedules (train/lr_schedule.h): warm-up, cosine, the paper's warm-up–constant–cosine–constants in
// tokens, piecewise constants, JSON round trips and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "dsv3/error.h"
#include "train/lr_schedule.h"

using namespace dsv3::train;
using nlohmann::json;

TEST(LrSchedule, WarmupThenCosineToFloor) {
  LrSchedule s = LrSchedule::from_json({{"kind", "cosine"}, {"peak", 1e-3}, {"min", 1e-4}, {"warmup_steps", 10}});
  EXPECT_DOUBLE_EQ(s.at(0, 0, 110), 1e-4);      // 1/10 of peak
  EXPECT_DOUBLE_EQ(s.at(4, 0, 110), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9, 0, 110), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10, 0, 110), 1e-3);     // cosine start
  EXPECT_NEAR(s.at(60, 0, 110), 5.5e-4, 1e-15);  // half way: (peak + min) / 2
  EXPECT_NEAR(s.at(35, 0, 110), 1e-4 + 0.5 * 9e-4 * (1 + std::cos(std::numbers::pi * 0.25)), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110, 0, 110), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(500, 0, 110), 1e-4);
  LrSchedule c = LrSchedule::from_json({{"kind", "constant"}, {"peak", 2e-3}});
  EXPECT_DOUBLE_EQ(c.at(0, 0, 10), 2e-3);
  EXPECT_DOUBLE_EQ(c.at(1000, 0, 10), 2e-3);
}

TEST(LrSchedule, PaperWarmupConstantCosineConstantsInTokens) {
  // V3_SPEC §7: 0 → 2.2e-4 over 2K steps; 2.2e-4 until 10T; cosine to 2.2e-5 by 14.3T; 2.2e-5 for 333B;
  // 7.3e-6 for the final 167B.
  LrSchedule s = LrSchedule::from_json({{"kind", "wsd"}, {"peak", 2.2e-4}, {"min", 2.2e-5}, {"warmup_steps", 2000},
                                        {"unit", "tokens"}, {"constant_end", 10e12}, {"decay_end", 14.3e12},
                                        {"tail", {{14.633e12, 7.3e-6}}}});
  EXPECT_DOUBLE_EQ(s.at(999, 1e9, 0), 2.2e-4 * 1000 / 2000);
  EXPECT_DOUBLE_EQ(s.at(5000, 5e12, 0), 2.2e-4);
  EXPECT_NEAR(s.at(600000, 12.15e12, 0), (2.2e-4 + 2.2e-5) / 2, 1e-12);
  EXPECT_DOUBLE_EQ(s.at(700000, 14.4e12, 0), 2.2e-5);
  EXPECT_DOUBLE_EQ(s.at(800000, 14.7e12, 0), 7.3e-6);
  LrSchedule back = LrSchedule::from_json(s.to_json());
  for (double t : {0.0, 9e12, 11e12, 14.5e12, 14.7e12}) EXPECT_DOUBLE_EQ(back.at(3000, t, 0), s.at(3000, t, 0));
}

TEST(Schedules, PiecewiseConstantLambdaAndGamma) {
  PiecewiseConstant lambda = PiecewiseConstant::from_json(
      {{"unit", "tokens"}, {"points", {{0, 0.3}, {10e12, 0.1}}}}, "mtp_lambda");
  EXPECT_DOUBLE_EQ(lambda.at(5, 0), 0.3);
  EXPECT_DOUBLE_EQ(lambda.at(5, 9.99e12), 0.3);
  EXPECT_DOUBLE_EQ(lambda.at(5, 10e12), 0.1);
  PiecewiseConstant gamma = PiecewiseConstant::from_json({{"points", {{0, 0.001}, {100, 0.0}}}}, "bias_gamma");
  EXPECT_DOUBLE_EQ(gamma.at(99, 1e20), 0.001);
  EXPECT_DOUBLE_EQ(gamma.at(100, 0), 0.0);
  EXPECT_DOUBLE_EQ(PiecewiseConstant::from_json(0.25, "x").at(7, 7), 0.25);
  EXPECT_EQ(PiecewiseConstant::from_json(0.25, "x").to_json(), json(0.25));
  EXPECT_DOUBLE_EQ(PiecewiseConstant::from_json(gamma.to_json(), "g").at(150, 0), 0.0);
}

TEST(Schedules, BadJsonIsAnErrorNamingTheField) {
  EXPECT_THROW(LrSchedule::from_json({{"kind", "linear"}}), dsv3::Error);
  EXPECT_THROW(LrSchedule::from_json({{"peek", 1.0}}), dsv3::Error);
  EXPECT_THROW(LrSchedule::from_json({{"unit", "epochs"}}), dsv3::Error);
  EXPECT_THROW(PiecewiseConstant::from_json({{"points", {{10, 0.1}, {5, 0.2}}}}, "mtp_lambda"), dsv3::Error);
  try {
    PiecewiseConstant::from_json("x", "bias_gamma");
    FAIL();
  } catch (const dsv3::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bias_gamma"), std::string::npos);
  }
}
