// FFN block for training: y = x + FFN(post_attention_layernorm(x)) with FFN the dense SwiGLU MLP (V3_SPEC.md §2.2)
// or DeepSeekMoE (§3), with input and weight gradients (train/blocks.h).
//
// MoE forward: z = u W_gᵀ, s = sigmoid(z), selection on s + b (group-limited top-k, model/moe.cpp's route_tokens),
// g_{t,k} = sf · s_{t,i_k} / Σ_k' s_{t,i_k'}; routed experts run as one GEMM chain per expert over the rows
// dispatched to it (token order); y_t = Shared(u_t) + Σ_k g_{t,k} E_{i_k}(u_t), summed in slot order like the
// inference forward.
// MoE backward: the expert output is never stored: with dA = dy_t W_down, dL/dg_{t,k} = act·dA and the expert's
// activation gradient is g·dA. Through the normalisation: ds_j = (sf/Σ)(dg_j − Σ_k dg_k s_k/Σ) for the selected j;
// plus the balance-loss term (train/losses.h); dz = ds ⊙ s(1 − s); du += dz W_g. No gradient through the selection.
#include <cstring>
#include <numeric>
#include <optional>

#include "dsv3/error.h"
#include "kernels/backward_ops.h"
#include "kernels/ops.h"
#include "train/blocks.h"
#include "train/losses.h"
#include "train/profile.h"

namespace dsv3::train {

void FfnState::free_stash() {
  dy = u = du = act = dgu = xin = dys = shared_act = shared_dgu = dz = Tensor();
}

namespace {

Tensor ffn_norm(const BlockContext& ctx, const LayerWeights& L, const Tensor& x) {
  const int64_t T = ctx.T(), D = ctx.cfg->hidden_size;
  Tensor u = Tensor::empty({T, D});
  ops::rmsnorm(T, D, x.f32(), D, L.ffn_norm.f32(), float(ctx.cfg->rms_norm_eps), u.f32(), D);
  return u;
}

// Routed-expert part of the MoE forward: fills st (routing, dispatch, gu, counts, balance) and writes out [T, D]
// = shared + Σ_k g·E(u).
void moe_forward(const BlockContext& ctx, const LayerWeights& L, const Tensor& u, FfnState& st, float* out) {
  const ModelConfig& c = *ctx.cfg;
  const int64_t T = ctx.T(), D = c.hidden_size, N = c.n_routed_experts, K = c.num_experts_per_tok;
  const int64_t I = c.moe_intermediate_size;
  Tensor z = Tensor::empty({T, N});
  {
    ProfileScope p("moe.fwd.router");
    ops::gemm_nt(T, N, D, u.f32(), D, L.router.f32(), D, z.f32(), N);
    st.routing = route_tokens(c, z.f32(), T, L.router_bias.f32());
  }
  const Routing& r = st.routing;

  // Dispatch: rows of each expert in token order.
  st.count.assign(size_t(N), 0);
  for (int64_t i = 0; i < T * K; ++i) ++st.count[r.idx[i]];
  st.offset.assign(size_t(N + 1), 0);
  for (int64_t e = 0; e < N; ++e) st.offset[e + 1] = st.offset[e] + st.count[e];
  st.slot_of.assign(size_t(T * K), 0);
  std::vector<int64_t> fill(st.offset.begin(), st.offset.end() - 1);
  for (int64_t i = 0; i < T * K; ++i) st.slot_of[fill[r.idx[i]]++] = i;

  std::optional<ProfileScope> pexp;
  pexp.emplace("moe.fwd.experts");
  Tensor xin = Tensor::empty({T * K, D}), yout = Tensor::empty({T * K, D}), act = Tensor::empty({T * K, I});
  st.gu = Tensor::empty({T * K, 2 * I});
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < T * K; ++j) std::memcpy(xin.f32() + j * D, u.f32() + (st.slot_of[j] / K) * D, size_t(D) * 4);
  for (int64_t e = 0; e < N; ++e) {
    const int64_t o = st.offset[e], n = st.offset[e + 1] - o;
    swiglu_forward(ctx.linear(), L.experts[e], n, xin.f32() + o * D, st.gu.f32() + o * 2 * I, act.f32() + o * I,
                   yout.f32() + o * D, 0.0f);
  }
  pexp.emplace("moe.fwd.shared");
  if (L.has_shared) {
    const int64_t Is = L.shared.gate.dim(0);
    st.shared_gu = Tensor::empty({T, 2 * Is});
    Tensor sact = Tensor::empty({T, Is});
    swiglu_forward(ctx.linear(), L.shared, T, u.f32(), st.shared_gu.f32(), sact.f32(), out, 0.0f);
  } else {
    std::memset(out, 0, size_t(T * D) * 4);
  }
  pexp.emplace("moe.fwd.combine");
  std::vector<int64_t> pos_of(static_cast<size_t>(T * K));
  for (int64_t j = 0; j < T * K; ++j) pos_of[st.slot_of[j]] = j;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const float g = r.weight[t * K + k];
      const float* y = yout.f32() + pos_of[t * K + k] * D;
      float* o = out + t * D;
      for (int64_t d = 0; d < D; ++d) o[d] += g * y[d];
    }

  st.balance_loss = 0.0;
  st.balance_coeff = Tensor();
  if (ctx.balance_alpha > 0.0) {
    st.balance_coeff = Tensor::empty({ctx.B, N});
    st.balance_loss =
        seq_balance_forward(c, ctx.B, ctx.n, r.affinity.data(), r.idx.data(), ctx.balance_alpha, st.balance_coeff.f32());
  }
}

void moe_backward_input(const BlockContext& ctx, const LayerWeights& L, FfnState& st) {
  const ModelConfig& c = *ctx.cfg;
  const int64_t T = ctx.T(), D = c.hidden_size, N = c.n_routed_experts, K = c.num_experts_per_tok;
  const int64_t I = c.moe_intermediate_size;
  const Routing& r = st.routing;
  const float* dy = st.dy.f32();

  std::optional<ProfileScope> prof;
  prof.emplace("moe.bwd_input.experts");
  // Dispatched inputs and output gradients; gate weight of each dispatched row.
  st.xin = Tensor::empty({T * K, D});
  st.dys = Tensor::empty({T * K, D});
  std::vector<float> gsel(static_cast<size_t>(T * K)), dg_disp(static_cast<size_t>(T * K));
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < T * K; ++j) {
    const int64_t t = st.slot_of[j] / K;
    std::memcpy(st.xin.f32() + j * D, st.u.f32() + t * D, size_t(D) * 4);
    std::memcpy(st.dys.f32() + j * D, dy + t * D, size_t(D) * 4);
    gsel[j] = r.weight[st.slot_of[j]];
  }
  st.act = Tensor::empty({T * K, I});
  st.dgu = Tensor::empty({T * K, 2 * I});
  Tensor dxin = Tensor::empty({T * K, D});
  for (int64_t e = 0; e < N; ++e) {
    const int64_t o = st.offset[e], n = st.offset[e + 1] - o;
    SwigluGrad a;
    a.gu = st.gu.f32() + o * 2 * I, a.dy = st.dys.f32() + o * D, a.dy_ld = D;
    a.row_scale = gsel.data() + o, a.row_dot = dg_disp.data() + o;
    a.act = st.act.f32() + o * I, a.dgu = st.dgu.f32() + o * 2 * I, a.dx = dxin.f32() + o * D;
    swiglu_backward_input(ctx.linear(), L.experts[e], n, a);
  }
  // The weight gradient of W_down sees the gate-weighted output gradient.
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < T * K; ++j) {
    float* row = st.dys.f32() + j * D;
    for (int64_t d = 0; d < D; ++d) row[d] *= gsel[j];
  }

  prof.emplace("moe.bwd_input.shared+combine");
  // du: shared expert, then each token's routed contributions in slot order (deterministic).
  st.du = Tensor::empty({T, D});
  if (L.has_shared) {
    const int64_t Is = L.shared.gate.dim(0);
    st.shared_act = Tensor::empty({T, Is});
    st.shared_dgu = Tensor::empty({T, 2 * Is});
    SwigluGrad a;
    a.gu = st.shared_gu.f32(), a.dy = dy, a.dy_ld = D;
    a.act = st.shared_act.f32(), a.dgu = st.shared_dgu.f32(), a.dx = st.du.f32();
    swiglu_backward_input(ctx.linear(), L.shared, T, a);
  } else {
    std::memset(st.du.f32(), 0, size_t(T * D) * 4);
  }
  std::vector<int64_t> pos_of(static_cast<size_t>(T * K));
  for (int64_t j = 0; j < T * K; ++j) pos_of[st.slot_of[j]] = j;
  std::vector<float> dgate(static_cast<size_t>(T * K));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = pos_of[t * K + k];
      dgate[t * K + k] = dg_disp[j];
      const float* src = dxin.f32() + j * D;
      float* dst = st.du.f32() + t * D;
      for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
    }

  prof.emplace("moe.bwd_input.router");
  // Router: gate weights → affinities → logits.
  Tensor ds = Tensor::zeros({T, N});
  const double sf = c.routed_scaling_factor;
  for (int64_t t = 0; t < T; ++t) {
    const float* s = r.affinity.data() + t * N;
    float* g = ds.f32() + t * N;
    if (c.norm_topk_prob) {
      double sum = 0.0, dot = 0.0;
      for (int64_t k = 0; k < K; ++k) sum += s[r.idx[t * K + k]];
      for (int64_t k = 0; k < K; ++k) dot += double(dgate[t * K + k]) * s[r.idx[t * K + k]];
      for (int64_t k = 0; k < K; ++k) g[r.idx[t * K + k]] += float(sf / sum * (dgate[t * K + k] - dot / sum));
    } else {
      for (int64_t k = 0; k < K; ++k) g[r.idx[t * K + k]] += float(sf * dgate[t * K + k]);
    }
  }
  if (st.balance_coeff.defined()) seq_balance_backward(ctx.B, ctx.n, N, r.affinity.data(), st.balance_coeff.f32(),
                                                       ds.f32());
  st.dz = Tensor::empty({T, N});
  for (int64_t i = 0; i < T * N; ++i) {
    const float s = r.affinity[i];
    st.dz.f32()[i] = ds.f32()[i] * s * (1.0f - s);
  }
  ops::gemm_nn(T, D, N, st.dz.f32(), N, L.router.f32(), D, st.du.f32(), D, 1.0f, 1.0f);
}

}  // namespace

Tensor ffn_forward(const BlockContext& ctx, const LayerWeights& L, const Tensor& x, FfnState& st) {
  const ModelConfig& c = *ctx.cfg;
  const int64_t T = ctx.T(), D = c.hidden_size;
  DSV3_CHECK(x.shape == Shape({T, D}), "FFN block: input ", shape_str(x.shape), ", expected [", T, ", ", D, "]");
  st.x = x;
  ProfileScope prof("ffn.fwd");
  Tensor u = ffn_norm(ctx, L, x);
  Tensor y = Tensor::empty({T, D});
  if (L.moe) {
    moe_forward(ctx, L, u, st, y.f32());
  } else {
    const int64_t I = L.mlp.gate.dim(0);
    st.gu = Tensor::empty({T, 2 * I});
    Tensor act = Tensor::empty({T, I});
    swiglu_forward(ctx.linear(), L.mlp, T, u.f32(), st.gu.f32(), act.f32(), y.f32(), 0.0f);
  }
  float* yp = y.f32();
  const float* xp = x.f32();
  for (int64_t i = 0; i < T * D; ++i) yp[i] += xp[i];
  return y;
}

Tensor ffn_backward_input(const BlockContext& ctx, const LayerWeights& L, FfnState& st, const Tensor& dy) {
  const ModelConfig& c = *ctx.cfg;
  const int64_t T = ctx.T(), D = c.hidden_size;
  DSV3_CHECK(st.x.defined() && st.gu.defined(), "FFN block: backward without a forward");
  DSV3_CHECK(dy.shape == Shape({T, D}), "FFN block: output gradient ", shape_str(dy.shape));
  st.dy = dy;
  ProfileScope prof("ffn.bwd_input");
  st.u = ffn_norm(ctx, L, st.x);
  if (L.moe) {
    moe_backward_input(ctx, L, st);
  } else {
    const int64_t I = L.mlp.gate.dim(0);
    st.act = Tensor::empty({T, I});
    st.dgu = Tensor::empty({T, 2 * I});
    st.du = Tensor::empty({T, D});
    SwigluGrad a;
    a.gu = st.gu.f32(), a.dy = dy.f32(), a.dy_ld = D;
    a.act = st.act.f32(), a.dgu = st.dgu.f32(), a.dx = st.du.f32();
    swiglu_backward_input(ctx.linear(), L.mlp, T, a);
  }
  Tensor dx = dy.clone();
  ops::rmsnorm_backward_input(T, D, st.x.f32(), D, L.ffn_norm.f32(), st.du.f32(), D, float(c.rms_norm_eps), dx.f32(),
                              D, true);
  return dx;
}

void ffn_backward_weight(const BlockContext& ctx, const LayerWeights& L, FfnState& st, LayerWeights& G) {
  const ModelConfig& c = *ctx.cfg;
  const int64_t T = ctx.T(), D = c.hidden_size;
  DSV3_CHECK(st.du.defined(), "FFN block: backward_weight before backward_input");
  ProfileScope prof("ffn.bwd_weight");
  if (L.moe) {
    const int64_t N = c.n_routed_experts, I = c.moe_intermediate_size;
    for (int64_t e = 0; e < N; ++e) {
      const int64_t o = st.offset[e], n = st.offset[e + 1] - o;
      swiglu_backward_weight(ctx.linear(), G.experts[e], n, st.xin.f32() + o * D, st.dys.f32() + o * D, D, st.act.f32() + o * I,
                             st.dgu.f32() + o * 2 * I);
    }
    if (L.has_shared)
      swiglu_backward_weight(ctx.linear(), G.shared, T, st.u.f32(), st.dy.f32(), D, st.shared_act.f32(), st.shared_dgu.f32());
    ops::gemm_tn(N, D, T, st.dz.f32(), N, st.u.f32(), D, G.router.f32(), D, 1.0f, 1.0f);
  } else {
    swiglu_backward_weight(ctx.linear(), G.mlp, T, st.u.f32(), st.dy.f32(), D, st.act.f32(), st.dgu.f32());
  }
  ops::rmsnorm_backward_weight(T, D, st.x.f32(), D, st.du.f32(), D, float(c.rms_norm_eps), G.ffn_norm.f32());
  st.free_stash();
}

}  // namespace dsv3::train
