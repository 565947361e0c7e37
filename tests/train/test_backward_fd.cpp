// Finite-difference checks of every training block's backward (train/blocks.h) and of the whole loss
// (train/train_model.h) on tiny shapes in f32: attention block with and without q_lora (MLA, RoPE/YaRN, causal
// softmax over B=2 sequences), dense FFN block, MoE FFN block with the balance loss, and the full model
// (embedding, final norm, lm_head, MTP input/head norms, eh_proj, CE + MTP CE + balance). For each block the
// scalar is L = Σ r ⊙ y (+ the block's balance loss) with a fixed random r, so dL/dy = r.
// Each check also asserts that the largest analytic gradient of every tensor would FAIL with its sign flipped.
#include <gtest/gtest.h>

#include <filesystem>

#include "fd_util.h"
#include "train/blocks.h"
#include "train/train_model.h"

using namespace dsv3;
using namespace dsv3::train;

namespace {

ModelConfig load_config(const std::string& name) {
  return ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/" + name + ".json");
}

Tensor random_tensor(const Shape& s, uint64_t stream, float std = 1.0f) {
  Tensor t = Tensor::empty(s);
  rng_fill_normal(t.f32(), uint64_t(t.numel()), std, 4242, stream);
  return t;
}

double dot(const Tensor& a, const Tensor& b) {
  double s = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) s += double(a.f32()[i]) * double(b.f32()[i]);
  return s;
}

int64_t pos_of(const ModelWeights& w, int64_t layer) {
  for (size_t i = 0; i < w.layers.size(); ++i)
    if (w.layers[i].index == layer) return int64_t(i);
  return -1;
}

void add(std::vector<test::FdParam>& ps, const std::string& label, Tensor& w, const Tensor& g) {
  ASSERT_EQ(w.numel(), g.numel()) << label;
  ps.push_back({label, w.f32(), w.numel(), g.f32()});
}

void report(const char* what, const test::FdResult& r) {
  std::printf("[ fd ] %-28s checked %3d skipped %2d  worst err %.2e (%s)\n", what, r.checked, r.skipped, r.worst,
              r.worst_label.c_str());
  EXPECT_EQ(r.failed, 0) << what;
  EXPECT_GT(r.checked, 0) << what;
  EXPECT_TRUE(r.sign_flip_caught) << what << ": a flipped sign would pass this check";
}

void check_attention(const std::string& cfg_name) {
  ModelConfig cfg = load_config(cfg_name);
  ModelWeights w = test::fd_weights(cfg, 11);
  const int64_t B = 2, n = 5, D = cfg.hidden_size;
  BlockContext ctx(cfg, B, n, 0.0);
  LayerWeights& L = w.layers[0];
  Tensor x = random_tensor({B * n, D}, 1), r = random_tensor({B * n, D}, 2);

  AttnState st;
  attn_forward(ctx, L, x, st);
  Tensor dx = attn_backward_input(ctx, L, st, r);
  ModelWeights g = train::zero_gradients(w);
  LayerWeights& G = g.layers[0];
  attn_backward_weight(ctx, L, st, G);

  std::vector<test::FdParam> ps;
  add(ps, "x", x, dx);
  add(ps, "input_layernorm", L.attn_norm, G.attn_norm);
  if (cfg.q_lora_rank > 0) {
    add(ps, "q_a_proj", L.attn.q_a, G.attn.q_a);
    add(ps, "q_a_layernorm", L.attn.q_a_norm, G.attn.q_a_norm);
    add(ps, "q_b_proj", L.attn.q_b, G.attn.q_b);
  } else {
    add(ps, "q_proj", L.attn.q, G.attn.q);
  }
  add(ps, "kv_a_proj_with_mqa", L.attn.kv_a, G.attn.kv_a);
  add(ps, "kv_a_layernorm", L.attn.kv_a_norm, G.attn.kv_a_norm);
  add(ps, "kv_b_proj", L.attn.kv_b, G.attn.kv_b);
  add(ps, "o_proj", L.attn.o, G.attn.o);
  auto eval = [&] {
    AttnState s2;
    return dot(r, attn_forward(ctx, L, x, s2));
  };
  test::FdOptions o;
  o.n_random = 4;
  report(("attention " + cfg_name).c_str(), test::fd_check(ps, eval, o));
}

}  // namespace

TEST(BackwardFd, AttentionBlockWithQLora) { check_attention("tiny"); }
TEST(BackwardFd, AttentionBlockWithoutQLora) { check_attention("tiny_noqlora"); }

TEST(BackwardFd, DenseFfnBlock) {
  ModelConfig cfg = load_config("tiny");
  ModelWeights w = test::fd_weights(cfg, 12);
  const int64_t B = 2, n = 4, D = cfg.hidden_size;
  BlockContext ctx(cfg, B, n, 0.0);
  LayerWeights& L = w.layers[0];
  ASSERT_FALSE(L.moe);
  Tensor x = random_tensor({B * n, D}, 3), r = random_tensor({B * n, D}, 4);
  FfnState st;
  ffn_forward(ctx, L, x, st);
  Tensor dx = ffn_backward_input(ctx, L, st, r);
  ModelWeights g = train::zero_gradients(w);
  ffn_backward_weight(ctx, L, st, g.layers[0]);
  LayerWeights& G = g.layers[0];
  std::vector<test::FdParam> ps;
  add(ps, "x", x, dx);
  add(ps, "post_attention_layernorm", L.ffn_norm, G.ffn_norm);
  add(ps, "gate_proj", L.mlp.gate, G.mlp.gate);
  add(ps, "up_proj", L.mlp.up, G.mlp.up);
  add(ps, "down_proj", L.mlp.down, G.mlp.down);
  auto eval = [&] {
    FfnState s2;
    return dot(r, ffn_forward(ctx, L, x, s2));
  };
  report("dense ffn", test::fd_check(ps, eval));
}

TEST(BackwardFd, MoeFfnBlockWithBalanceLoss) {
  ModelConfig cfg = load_config("tiny");
  ModelWeights w = test::fd_weights(cfg, 13);
  const int64_t B = 2, n = 6, D = cfg.hidden_size;
  BlockContext ctx(cfg, B, n, /*balance_alpha=*/0.5);
  LayerWeights& L = w.layers[1];
  ASSERT_TRUE(L.moe);
  Tensor x = random_tensor({B * n, D}, 5), r = random_tensor({B * n, D}, 6);
  FfnState st;
  ffn_forward(ctx, L, x, st);
  const std::vector<int32_t> base_idx = st.routing.idx;
  EXPECT_GT(st.balance_loss, 0.0);
  Tensor dx = ffn_backward_input(ctx, L, st, r);
  ModelWeights g = train::zero_gradients(w);
  LayerWeights& G = g.layers[1];
  ffn_backward_weight(ctx, L, st, G);

  std::vector<test::FdParam> ps;
  add(ps, "x", x, dx);
  add(ps, "post_attention_layernorm", L.ffn_norm, G.ffn_norm);
  add(ps, "router", L.router, G.router);
  add(ps, "shared gate_proj", L.shared.gate, G.shared.gate);
  add(ps, "shared up_proj", L.shared.up, G.shared.up);
  add(ps, "shared down_proj", L.shared.down, G.shared.down);
  // Three experts that received tokens (their weights have non-zero gradients).
  int routed = 0;
  for (int64_t e = 0; e < cfg.n_routed_experts && routed < 3; ++e)
    if (st.count[e] > 0) {
      const std::string p = "expert " + std::to_string(e) + " ";
      add(ps, p + "gate_proj", L.experts[e].gate, G.experts[e].gate);
      add(ps, p + "up_proj", L.experts[e].up, G.experts[e].up);
      add(ps, p + "down_proj", L.experts[e].down, G.experts[e].down);
      ++routed;
    }
  ASSERT_EQ(routed, 3);
  auto eval = [&]() -> double {
    FfnState s2;
    Tensor y = ffn_forward(ctx, L, x, s2);
    if (s2.routing.idx != base_idx) return NAN;  // routing flipped: not differentiable here
    return dot(r, y) + s2.balance_loss;
  };
  test::FdOptions o;
  o.eps = 2e-3;
  report("moe ffn + balance", test::fd_check(ps, eval, o));

  // The balance loss alone reaches the router (and x): its gradient is not just the gate-weight path.
  FfnState sb;
  ffn_forward(ctx, L, x, sb);
  Tensor zero = Tensor::zeros({B * n, D});
  ffn_backward_input(ctx, L, sb, zero);
  ModelWeights gb = train::zero_gradients(w);
  ffn_backward_weight(ctx, L, sb, gb.layers[1]);
  std::vector<test::FdParam> pb;
  add(pb, "router (balance only)", L.router, gb.layers[1].router);
  auto eval_b = [&]() -> double {
    FfnState s2;
    ffn_forward(ctx, L, x, s2);
    if (s2.routing.idx != base_idx) return NAN;
    return s2.balance_loss;
  };
  o.eps = 2e-3;
  report("balance loss -> router", test::fd_check(pb, eval_b, o));
}

TEST(BackwardFd, WholeModelLoss) {
  ModelConfig cfg = load_config("tiny");
  ModelWeights w = test::fd_weights(cfg, 14);
  TrainBatch batch;
  batch.B = 2, batch.S = 6;
  for (int64_t i = 0; i < batch.B * batch.S; ++i) batch.tokens.push_back(int32_t((i * 37 + 11) % cfg.vocab_size));
  LossOptions lo;
  lo.mtp_lambda = 0.5;
  lo.balance_alpha = 0.05;
  TrainModel model(w);
  model.forward(batch, lo);
  auto base_load = model.expert_load();
  ModelWeights g = train::zero_gradients(w);
  model.backward(g);

  const int64_t mtp = pos_of(w, cfg.num_hidden_layers);
  ASSERT_GE(mtp, 0);
  LayerWeights &M = w.layers[mtp], &GM = g.layers[mtp];
  std::vector<test::FdParam> ps;
  add(ps, "embed_tokens", w.embed, g.embed);
  add(ps, "lm_head", w.lm_head, g.lm_head);
  add(ps, "model.norm", w.final_norm, g.final_norm);
  add(ps, "mtp enorm", M.enorm, GM.enorm);
  add(ps, "mtp hnorm", M.hnorm, GM.hnorm);
  add(ps, "mtp eh_proj", M.eh_proj, GM.eh_proj);
  add(ps, "mtp shared_head.norm", M.head_norm, GM.head_norm);
  add(ps, "mtp router", M.router, GM.router);
  add(ps, "L0 q_b_proj", w.layers[0].attn.q_b, g.layers[0].attn.q_b);
  add(ps, "L3 router", w.layers[3].router, g.layers[3].router);
  add(ps, "L2 kv_b_proj", w.layers[2].attn.kv_b, g.layers[2].attn.kv_b);
  auto eval = [&]() -> double {
    TrainModel m2(w);
    const double l = m2.forward(batch, lo).total;
    auto load = m2.expert_load();
    for (size_t i = 0; i < load.size(); ++i)
      if (load[i].count != base_load[i].count) return NAN;
    return l;
  };
  test::FdOptions o;
  o.eps = 4e-3;
  report("whole model loss", test::fd_check(ps, eval, o));
}
