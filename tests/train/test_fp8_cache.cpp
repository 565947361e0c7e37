// FP8 activation caching (run-config fp8_cache_activations, train/blocks.h Fp8Activation): the FFN blocks keep
// their SwiGLU inputs as E4M3 codes with 1×128 tile scales between forward and backward, and their Linear input u
// likewise between backward_input and backward_weight; the backward uses the decoded values.
//
// Tolerances. Caching changes no forward value (the loss is bitwise the uncached one). In the backward each
// element of gu and of the Wgrad input u is replaced by its E4M3 rounding: |Δ| ≤ 2^-4·|v| (half an ulp of 3
// mantissa bits) for normal codes, ≤ 2^-10·scale (half the subnormal quantum 2^-9·scale) below. That is one more
// rounding of the same size as those the FP8 run already applies to every GEMM operand of the same chain (act and
// dgu are quantized again by the Dgrad/Wgrad GEMMs; the Wgrad re-tiles u 128×1), so the gradient differences are
// at most of the order of the FP8-vs-F32 ones (test_precision.cpp: bound 0.5, measured worst 0.35 on small), and
// smaller because only two FFN tensors get the extra rounding. We require max|Δ| ≤ 0.25 × max|g| and
// ‖Δ‖ ≤ 0.25 × ‖g‖ per tensor (half the FP8-vs-F32 bound; measured worst 0.18 / 0.12 on small, in a routed
// expert's up_proj, whose few tokens average little) and at least one tensor not bitwise equal (the cache is used).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "../trainer/trainer_test_util.h"
#include "core/fp8_block.h"
#include "core/rng.h"
#include "dsv3/error.h"
#include "fp8/quantize.h"
#include "train/blocks.h"
#include "train/run_config.h"
#include "train/train_model.h"
#include "train/trainer.h"
#include "precision_test_util.h"

using namespace dsv3;

namespace {

constexpr double kCacheGradTol = 0.25;

ModelConfig load_config(const std::string& name) {
  return ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/" + name + ".json");
}

Tensor random_rows(int64_t T, int64_t D, uint64_t seed) {
  Tensor x = Tensor::empty({T, D});
  for (int64_t i = 0; i < T * D; ++i) x.f32()[i] = 2.0f * rng_uniform(seed, 0, uint64_t(i)) - 1.0f;
  return x;
}

// The cached codes are exactly the 1×128 tiles of the uncached F32 SwiGLU input, and decode within the E4M3
// rounding bound of it.
void expect_cache_of(const train::Fp8Activation& a, const Tensor& gu, const std::string& what) {
  ASSERT_TRUE(a.defined()) << what;
  ASSERT_TRUE(gu.defined()) << what;
  const int64_t rows = gu.dim(0), cols = gu.dim(1), nt = ceil_div(cols, fp8::kTile);
  EXPECT_EQ(a.codes.dtype, DType::U8) << what;
  EXPECT_EQ(a.codes.shape, Shape({rows, cols})) << what;
  EXPECT_EQ(a.scales.dtype, DType::F32) << what;
  EXPECT_EQ(a.scales.shape, Shape({rows, nt})) << what;
  std::vector<uint8_t> codes(size_t(rows * cols));
  std::vector<float> scales(size_t(rows * nt));
  fp8::quantize_tiles(gu.f32(), rows, cols, cols, 1, fp8::kTile, fp8::ScaleMode::kAmax, codes.data(),
                      scales.data());
  for (int64_t i = 0; i < rows * cols; ++i)
    ASSERT_EQ(a.codes.ptr<uint8_t>()[i], codes[size_t(i)]) << what << " code " << i;
  for (int64_t i = 0; i < rows * nt; ++i) ASSERT_EQ(a.scales.f32()[i], scales[size_t(i)]) << what << " scale " << i;
  std::vector<float> back(size_t(rows * cols));
  a.dequantize_rows(0, rows, back.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double g = gu.f32()[r * cols + c], s = a.scales.f32()[r * nt + c / fp8::kTile];
      ASSERT_LE(std::fabs(back[size_t(r * cols + c)] - g), std::ldexp(std::fabs(g), -4) + std::ldexp(s, -10))
          << what << " [" << r << ", " << c << "]";
    }
}

}  // namespace

// After the forward the FFN state holds the E4M3 codes + scales and no F32 SwiGLU input (dense layer 0, MoE
// layer 1 of tiny: routed and shared experts); after backward_input it holds u's codes and neither F32 u nor the
// dispatched xin; backward_weight runs on them, and the router's gradient (F32 in every precision) is dzᵀ·u with
// the exact u, not the decoded one.
TEST(Fp8ActivationCache, FfnStateHoldsCodesAndNoF32) {
  const ModelConfig c = load_config("tiny");
  const ModelWeights w = ModelWeights::random(c, 7, 0.02f);
  train::Linear lin(train::Precision::kFP8);
  for (int layer : {0, 1}) {
    const LayerWeights& L = w.layers[size_t(layer)];
    ASSERT_EQ(L.moe, layer == 1);
    const std::string what = layer == 0 ? "dense" : "moe";
    train::BlockContext plain(c, 2, 16, 0.0), cached(c, 2, 16, 0.0);
    plain.lin = cached.lin = &lin;
    cached.fp8_cache = true;
    const Tensor x = random_rows(plain.T(), c.hidden_size, 3 + uint64_t(layer));
    train::FfnState sp, sc;
    const Tensor yp = train::ffn_forward(plain, L, x, sp), yc = train::ffn_forward(cached, L, x, sc);
    for (int64_t i = 0; i < yp.numel(); ++i) ASSERT_EQ(yp.f32()[i], yc.f32()[i]) << what << ": forward changed";
    EXPECT_FALSE(sc.gu.defined()) << what << ": the F32 SwiGLU input is still kept";
    EXPECT_FALSE(sc.shared_gu.defined()) << what;
    expect_cache_of(sc.gu_fp8, sp.gu, what + " gu");
    if (L.moe) expect_cache_of(sc.shared_gu_fp8, sp.shared_gu, what + " shared_gu");

    const Tensor dy = random_rows(plain.T(), c.hidden_size, 9);
    const Tensor dxp = train::ffn_backward_input(plain, L, sp, dy), dxc = train::ffn_backward_input(cached, L, sc, dy);
    double max_ref = 0, max_d = 0;
    for (int64_t i = 0; i < dxp.numel(); ++i) {
      max_ref = std::max(max_ref, std::fabs(double(dxp.f32()[i])));
      max_d = std::max(max_d, std::fabs(double(dxc.f32()[i]) - double(dxp.f32()[i])));
    }
    EXPECT_GT(max_d, 0.0) << what << ": dx bitwise equal, the cache is not used";
    EXPECT_LE(max_d, kCacheGradTol * max_ref) << what;
    EXPECT_FALSE(sc.u.defined()) << what << ": the F32 Wgrad input u is still stashed";
    EXPECT_FALSE(sc.xin.defined()) << what << ": the dispatched F32 expert inputs are stashed";
    expect_cache_of(sc.u_fp8, sp.u, what + " u");
    const Tensor dz = L.moe ? sc.dz.clone() : Tensor(), u = sp.u.clone();
    ModelWeights gp = train::zero_gradients(w), gc = train::zero_gradients(w);
    train::ffn_backward_weight(plain, L, sp, gp.layers[size_t(layer)]);
    train::ffn_backward_weight(cached, L, sc, gc.layers[size_t(layer)]);
    EXPECT_FALSE(sc.dgu.defined() || sc.u_fp8.defined() || sc.router_dw.defined()) << what << ": stash not freed";
    if (L.moe) {
      const Tensor& rc = gc.layers[1].router;
      const int64_t T = plain.T(), N = c.n_routed_experts, D = c.hidden_size;
      double rd = 0, rsum = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t d = 0; d < D; ++d) {
          double ref = 0, mag = 0;
          for (int64_t t = 0; t < T; ++t) {
            ref += double(dz.f32()[t * N + n]) * double(u.f32()[t * D + d]);
            mag += std::fabs(double(dz.f32()[t * N + n]) * double(u.f32()[t * D + d]));
          }
          rd = std::max(rd, std::fabs(double(rc.f32()[n * D + d]) - ref) / std::max(mag, 1e-30));
          rsum += mag;
        }
      EXPECT_GT(rsum, 0.0);
      EXPECT_LE(rd, 1e-5) << "router gradient is not dzᵀ·u with the exact u";
      // The routed experts' gate|up gradients do see the cached u.
      double ed = 0;
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const Tensor &a = gp.layers[1].experts[size_t(e)].gate, &b = gc.layers[1].experts[size_t(e)].gate;
        for (int64_t i = 0; i < a.numel(); ++i) ed = std::max(ed, std::fabs(double(a.f32()[i]) - double(b.f32()[i])));
      }
      EXPECT_GT(ed, 0.0);
    }
  }
}

// Whole-model gradients of an FP8 run with and without the cache (tolerance: see the top of the file).
TEST(Fp8ActivationCache, GradientsMatchUncachedFp8) {
  for (const std::string config : {"tiny", "small"}) {
    const ModelConfig c = load_config(config);
    const ModelWeights w = ModelWeights::random(c, 7, 0.02f);
    const train::TrainBatch b = test::random_batch(c, 2, 24, 11);
    const test::GradRun p = test::run_grads(w, b, train::Precision::kFP8, false),
                        q = test::run_grads(w, b, train::Precision::kFP8, true);
    EXPECT_EQ(p.loss.total, q.loss.total) << config << ": caching changed the forward";
    EXPECT_EQ(p.loss.main_ce, q.loss.main_ce) << config;
    ASSERT_EQ(p.grads.size(), q.grads.size());
    const test::GradDiff d = test::expect_grads_close(p.grads, q.grads, kCacheGradTol, kCacheGradTol, config);
    EXPECT_GT(d.any_diff, 0.0) << config << ": gradients bitwise equal with and without the cache";
    std::printf("[ %s ] FP8 cached vs uncached: worst max|Δ|/max|g| %.3g (%s), worst ‖Δ‖/‖g‖ %.3g\n",
                config.c_str(), d.worst, d.worst_name.c_str(), d.worst_l2);
  }
}

TEST(Fp8ActivationCache, NeedsPrecisionFp8) {
  for (const char* p : {"bf16", "f32"}) {
    try {
      train::RunConfig::from_json({{"precision", p}, {"fp8_cache_activations", true}});
      FAIL() << "fp8_cache_activations accepted with precision " << p;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("fp8_cache_activations needs precision fp8, got precision " +
                                           std::string(p)),
                std::string::npos)
          << e.what();
    }
  }
  // The default precision (bf16) is rejected too; a non-boolean value is a type error.
  EXPECT_THROW(train::RunConfig::from_json({{"fp8_cache_activations", true}}), Error);
  EXPECT_THROW(train::RunConfig::from_json({{"precision", "fp8"}, {"fp8_cache_activations", 1}}), Error);
  const ModelWeights w = ModelWeights::random(load_config("tiny"), 7, 0.02f);
  EXPECT_THROW(train::TrainModel(w, train::Precision::kBF16, true), Error);
  const train::RunConfig on = train::RunConfig::from_json({{"precision", "fp8"}, {"fp8_cache_activations", true}});
  EXPECT_TRUE(on.fp8_cache_activations);
  EXPECT_TRUE(train::RunConfig::from_json(on.to_json()).fp8_cache_activations);
  EXPECT_FALSE(train::RunConfig::from_json({{"precision", "fp8"}}).fp8_cache_activations);
}

// The option changes no saved state: an FP8 run with the cache resumes bit-identically (N steps straight ==
// k steps + checkpoint + resume + N − k steps), and its checkpoint also resumes with the cache off.
TEST(Fp8ActivationCache, ResumeIsBitIdentical) {
  using namespace dsv3::train::testing;
  SingleThread one_thread;
  const int64_t N = 4, k = 2;
  const std::string straight = fresh_dir("fp8cache_straight"), split = fresh_dir("fp8cache_split");
  auto cfg = [&](const std::string& out, bool cache) {
    train::RunConfig c = tiny_run(out, N);
    c.precision = "fp8", c.fp8_cache_activations = cache;
    return c;
  };
  train::TrainerOptions o;
  o.config_dir = DSV3_SOURCE_DIR;
  o.quiet = true;
  train::Trainer a(cfg(straight, true), o);
  a.run();
  {
    train::Trainer b(cfg(split, true), o);
    for (int64_t i = 0; i < k; ++i) b.step();
    b.save_checkpoint();
  }
  train::TrainerOptions ro = o;
  ro.resume = split;
  {
    train::Trainer off(cfg(split, false), ro);
    EXPECT_EQ(off.steps_done(), k);
  }
  train::Trainer r(cfg(split, true), ro);
  ASSERT_EQ(r.steps_done(), k);
  r.run();
  ASSERT_EQ(r.history().size(), size_t(N - k));
  for (int64_t i = 0; i < N - k; ++i) {
    EXPECT_EQ(a.history()[size_t(k + i)].loss.total, r.history()[size_t(i)].loss.total) << "step " << k + i;
    EXPECT_EQ(a.history()[size_t(k + i)].grad_norm, r.history()[size_t(i)].grad_norm) << "step " << k + i;
  }
  expect_bitwise_equal(a.weights(), r.weights());
  std::filesystem::remove_all(straight), std::filesystem::remove_all(split);
}
