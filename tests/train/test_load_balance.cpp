// Auxiliary-loss-free balancing (train/load_balance.h) on hand-made counts: b_i += γ·sign(mean − load_i), sign 0
// for an exactly balanced expert, MaxVio = max/mean − 1; errors for dense layers and wrong sizes. Also the
// sequence-wise balance loss value on a hand-computed case, and the expert counts a training forward reports.
#include <gtest/gtest.h>

#include <numeric>

#include "dsv3/error.h"
#include "fd_util.h"
#include "train/losses.h"
#include "train/train_model.h"

using namespace dsv3;
using namespace dsv3::train;

namespace {

ModelConfig tiny() { return ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/tiny.json"); }

}  // namespace

TEST(LoadBalance, BiasUpdateFollowsTheSignRule) {
  ModelConfig cfg = tiny();  // 8 experts; layers 1..3 MoE, layer 4 = MTP (MoE)
  ModelWeights w = ModelWeights::random(cfg, 1);
  w.layers[1].router_bias.f32()[0] = 0.25f;
  const float gamma = 0.001f;
  std::vector<ExpertLoad> loads = {
      {1, {10, 2, 4, 0, 4, 4, 4, 4}},   // total 32, mean 4
      {4, {3, 3, 3, 3, 3, 3, 3, 3}},    // perfectly balanced
  };
  std::vector<double> vio = update_router_bias(w, loads, gamma);
  ASSERT_EQ(vio.size(), 2u);
  EXPECT_DOUBLE_EQ(vio[0], 10.0 / 4.0 - 1.0);
  EXPECT_DOUBLE_EQ(vio[1], 0.0);
  const float* b1 = w.layers[1].router_bias.f32();
  EXPECT_FLOAT_EQ(b1[0], 0.25f - gamma);  // overloaded: down
  EXPECT_FLOAT_EQ(b1[1], gamma);          // underloaded: up
  EXPECT_FLOAT_EQ(b1[2], 0.0f);           // exactly at the mean: unchanged
  EXPECT_FLOAT_EQ(b1[3], gamma);
  for (int i = 4; i < 8; ++i) EXPECT_FLOAT_EQ(b1[i], 0.0f);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(w.layers[4].router_bias.f32()[i], 0.0f);
  // The same storage is visible by name (what a checkpoint writes).
  EXPECT_FLOAT_EQ(w.by_name.at("model.layers.1.mlp.gate.e_score_correction_bias").f32()[1], gamma);
  // Untouched layers stay zero.
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(w.layers[2].router_bias.f32()[i], 0.0f);
}

TEST(LoadBalance, MaxVioAndErrors) {
  EXPECT_DOUBLE_EQ(max_violation({0, 0, 0}), 0.0);
  EXPECT_DOUBLE_EQ(max_violation({1, 2, 3}), 3.0 / 2.0 - 1.0);
  EXPECT_DOUBLE_EQ(max_violation({6, 0, 0}), 2.0);
  ModelConfig cfg = tiny();
  ModelWeights w = ModelWeights::random(cfg, 1);
  EXPECT_THROW(update_router_bias(w, {{0, std::vector<int64_t>(8, 1)}}, 0.1f), Error);  // dense layer
  EXPECT_THROW(update_router_bias(w, {{2, std::vector<int64_t>(7, 1)}}, 0.1f), Error);  // wrong size
  EXPECT_THROW(update_router_bias(w, {{9, std::vector<int64_t>(8, 1)}}, 0.1f), Error);  // no such layer
}

TEST(LoadBalance, SequenceBalanceLossByHand) {
  ModelConfig cfg = tiny();
  cfg.n_routed_experts = 4, cfg.num_experts_per_tok = 2, cfg.n_group = 1, cfg.topk_group = 1;
  // One sequence of 2 tokens. f = N/(K·n)·count = 4/4·count = count.
  const float s[8] = {0.5f, 0.5f, 0.5f, 0.5f,   // s' = 0.25 each
                      0.9f, 0.1f, 0.0f, 0.0f};  // s' = 0.9, 0.1, 0, 0
  const int32_t idx[4] = {0, 1, 0, 1};          // counts: expert 0: 2, expert 1: 2
  float coeff[4];
  const double alpha = 0.1;
  const double got = seq_balance_forward(cfg, 1, 2, s, idx, alpha, coeff);
  // P = (0.575, 0.175, 0.125, 0.125); Σ f P = 2·0.575 + 2·0.175 = 1.5.
  EXPECT_NEAR(got, alpha * 1.5, 1e-7);
  EXPECT_NEAR(coeff[0], alpha * 2 / 2, 1e-7);
  EXPECT_NEAR(coeff[2], 0.0, 1e-12);
  // Two identical sequences average to the same value.
  const float s2[16] = {0.5f, 0.5f, 0.5f, 0.5f, 0.9f, 0.1f, 0.0f, 0.0f, 0.5f, 0.5f, 0.5f, 0.5f, 0.9f, 0.1f, 0.0f, 0.0f};
  const int32_t idx2[8] = {0, 1, 0, 1, 0, 1, 0, 1};
  float coeff2[8];
  EXPECT_NEAR(seq_balance_forward(cfg, 2, 2, s2, idx2, alpha, coeff2), alpha * 1.5, 1e-7);
}

TEST(LoadBalance, TrainingForwardCountsEveryMoeLayer) {
  ModelConfig cfg = tiny();
  ModelWeights w = test::fd_weights(cfg, 5);
  TrainBatch batch;
  batch.B = 3, batch.S = 7;
  for (int64_t i = 0; i < batch.B * batch.S; ++i) batch.tokens.push_back(int32_t((i * 53 + 5) % cfg.vocab_size));
  TrainModel model(w);
  model.forward(batch, {});
  auto load = model.expert_load();
  ASSERT_EQ(load.size(), 4u);  // main MoE layers 1, 2, 3 and the MTP layer 4
  for (const ExpertLoad& l : load) {
    const int64_t rows = l.layer < cfg.num_hidden_layers ? batch.B * batch.S : batch.B * (batch.S - 1);
    EXPECT_EQ(std::accumulate(l.count.begin(), l.count.end(), int64_t(0)), rows * cfg.num_experts_per_tok)
        << "layer " << l.layer;
  }
  EXPECT_EQ(load.back().layer, cfg.num_hidden_layers);
  std::vector<double> vio = update_router_bias(w, load, 0.001f);
  for (size_t i = 0; i < vio.size(); ++i) EXPECT_DOUBLE_EQ(vio[i], max_violation(load[i].count));
}
