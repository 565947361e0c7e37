// AdamW (train/optimizer.h) against a hand-computed step on single values (bias correction, decoupled decay),
// matrices-only decay, the router bias left alone, BF16 moments, the global norm and the clip multiplier.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "dsv3/error.h"
#include "train/optimizer.h"
#include "train/train_model.h"
#include "trainer_test_util.h"

using namespace dsv3;
using namespace dsv3::train;
using dsv3::train::testing::SingleThread;

namespace {

ModelConfig tiny() { return ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/tiny.json"); }

// The reference update in f64 (PyTorch AdamW), t is 1-based.
struct Ref {
  double p, m = 0, v = 0;
  void step(double g, double lr, double wd, int t, double b1 = 0.9, double b2 = 0.95, double eps = 1e-8) {
    p *= 1 - lr * wd;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double mh = m / (1 - std::pow(b1, t)), vh = v / (1 - std::pow(b2, t));
    p -= lr * mh / (std::sqrt(vh) + eps);
  }
};

const char* kMatrix = "model.layers.0.self_attn.o_proj.weight";
const char* kNorm = "model.layers.0.input_layernorm.weight";
const char* kBias = "model.layers.1.mlp.gate.e_score_correction_bias";

}  // namespace

TEST(AdamW, HandComputedStepsWithBiasCorrection) {
  SingleThread one_thread;
  ModelWeights w = ModelWeights::random(tiny(), 3);
  ModelWeights g = zero_gradients(w);
  AdamWOptions o;  // 0.9 / 0.95 / 1e-8 / wd 0.1
  AdamW opt(w, o);
  w.by_name.at(kMatrix).f32()[0] = 1.0f;
  w.by_name.at(kNorm).f32()[0] = 1.0f;
  // Step 1 by hand: g = 0.5, lr = 0.1: m = 0.05, v = 0.0125, m̂ = 0.5, v̂ = 0.25 → update ≈ 1;
  // p = 1·(1 − 0.1·0.1) − 0.1·1 = 0.89 (matrix), 1 − 0.1 = 0.9 (norm: no decay).
  g.by_name.at(kMatrix).f32()[0] = 0.5f;
  g.by_name.at(kNorm).f32()[0] = 0.5f;
  opt.step(w, g, 0.1, 1.0);
  EXPECT_NEAR(w.by_name.at(kMatrix).f32()[0], 0.89, 1e-6);
  EXPECT_NEAR(w.by_name.at(kNorm).f32()[0], 0.9, 1e-6);
  // Step 2: g = −0.25: m = 0.02, v = 0.015, m̂ = 0.02/0.19, v̂ = 0.015/0.0975;
  // p = 0.89·0.99 − 0.1·0.105263/0.392232 = 0.8542627.
  g.by_name.at(kMatrix).f32()[0] = -0.25f;
  g.by_name.at(kNorm).f32()[0] = -0.25f;
  opt.step(w, g, 0.1, 1.0);
  EXPECT_NEAR(w.by_name.at(kMatrix).f32()[0], 0.8542627, 2e-6);
  Ref r{1.0};
  r.step(0.5, 0.1, 0.1, 1);
  r.step(-0.25, 0.1, 0.1, 2);
  EXPECT_NEAR(w.by_name.at(kMatrix).f32()[0], r.p, 1e-6);
  Ref rn{1.0};
  rn.step(0.5, 0.1, 0.0, 1);
  rn.step(-0.25, 0.1, 0.0, 2);
  EXPECT_NEAR(w.by_name.at(kNorm).f32()[0], rn.p, 1e-6);
  EXPECT_EQ(opt.steps_taken(), 2);
}

TEST(AdamW, ZeroGradientOnlyDecaysMatricesAndNeverTouchesRouterBias) {
  SingleThread one_thread;
  ModelWeights w = ModelWeights::random(tiny(), 4);
  w.by_name.at(kBias).f32()[2] = 0.125f;
  ModelWeights before = zero_gradients(w);
  for (auto& [n, t] : before.by_name) std::memcpy(t.data, w.by_name.at(n).data, t.nbytes());
  ModelWeights g = zero_gradients(w);
  AdamW opt(w, {});
  opt.step(w, g, 1e-2, 1.0);
  for (const auto& [n, t] : w.by_name) {
    const float* a = t.f32();
    const float* b = before.by_name.at(n).f32();
    const float f = decays(t.shape) && !n.ends_with("e_score_correction_bias") ? float(1.0 - 1e-2 * 0.1) : 1.0f;
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(a[i], b[i] * f) << n << "[" << i << "]";
  }
  EXPECT_EQ(w.by_name.at(kBias).f32()[2], 0.125f);
  EXPECT_FALSE(decays(w.by_name.at(kNorm).shape));
  EXPECT_TRUE(decays(w.by_name.at("model.embed_tokens.weight").shape));
}

TEST(AdamW, Bf16MomentsAreRoundedAndTrackF32) {
  SingleThread one_thread;
  ModelWeights w32 = ModelWeights::random(tiny(), 5), w16 = ModelWeights::random(tiny(), 5);
  ModelWeights g = zero_gradients(w32);
  for (auto& [n, t] : g.by_name)
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 1e-3f * float((i * 37 + n.size()) % 17) - 8e-3f;
  AdamWOptions o16;
  o16.bf16_moments = true;
  AdamW a32(w32, {}), a16(w16, o16);
  for (int s = 0; s < 3; ++s) {
    a32.step(w32, g, 1e-3, 1.0);
    a16.step(w16, g, 1e-3, 1.0);
  }
  for (const auto& [name, t] : a16.state_tensors()) ASSERT_EQ(t.dtype, DType::BF16) << name;
  const Tensor& p32 = w32.by_name.at(kMatrix);
  const Tensor& p16 = w16.by_name.at(kMatrix);
  double max_diff = 0;
  for (int64_t i = 0; i < p32.numel(); ++i) max_diff = std::max(max_diff, double(std::abs(p32.f32()[i] - p16.f32()[i])));
  EXPECT_GT(max_diff, 0.0);   // rounding does show
  EXPECT_LT(max_diff, 1e-4);  // but only at BF16 resolution of a 3e-3 total move
}

TEST(AdamW, StateRoundTripsAndRejectsWrongMomentDtype) {
  SingleThread one_thread;
  ModelWeights w = ModelWeights::random(tiny(), 6);
  ModelWeights g = zero_gradients(w);
  for (auto& [n, t] : g.by_name) t.f32()[0] = 0.01f;
  AdamW a(w, {});
  a.step(w, g, 1e-3, 1.0);
  std::map<std::string, Tensor> st;
  for (auto& [n, t] : a.state_tensors()) st.emplace(n, t.clone());
  AdamW b(w, {});
  b.load_state(st, 1);
  EXPECT_EQ(b.steps_taken(), 1);
  AdamWOptions o16;
  o16.bf16_moments = true;
  AdamW c(w, o16);
  EXPECT_THROW(c.load_state(st, 1), dsv3::Error);
}

TEST(GradNorm, GlobalNormAndClip) {
  SingleThread one_thread;
  ModelWeights w = ModelWeights::random(tiny(), 7);
  ModelWeights g = zero_gradients(w);
  g.by_name.at(kMatrix).f32()[3] = 3.0f;
  g.by_name.at(kNorm).f32()[1] = 4.0f;
  EXPECT_DOUBLE_EQ(global_grad_norm(g), 5.0);
  EXPECT_NEAR(clip_scale(5.0, 1.0), 1.0 / (5.0 + 1e-6), 1e-15);
  EXPECT_EQ(clip_scale(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_scale(5.0, 0.0), 1.0);
  g.by_name.at(kNorm).f32()[1] = NAN;
  EXPECT_FALSE(std::isfinite(global_grad_norm(g)));
}
