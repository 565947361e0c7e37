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
// FP8 activation cache (BlockContext::fp8_cache): each SwiGLU input is encoded to E4M3 1×128 tiles as soon as its
// forward GEMM has written it and the F32 tensor is dropped; the backward decodes it into a scratch buffer (the
// routed experts one expert at a time) just before swiglu_backward_input reads it. The Wgrad input u is stashed
// the same way at the end of backward_input; backward_weight gathers each routed expert's rows from the decoded u.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>

#include "core/fp8_block.h"
#include "dsv3/error.h"
#include "fp8/fp8_gemm.h"
#include "fp8/quantize.h"
#include "kernels/backward_ops.h"
#include "kernels/ops.h"
#include "train/blocks.h"
#include "train/losses.h"
#include "train/profile.h"

namespace dsv3::train {

Fp8Activation Fp8Activation::quantize(const float* x, int64_t rows, int64_t cols) {
  DSV3_CHECK(rows >= 0 && cols > 0, "Fp8Activation: bad shape [", rows, ", ", cols, "]");
  Fp8Activation a;
  a.rows = rows, a.cols = cols;
  a.codes = Tensor::empty({rows, cols}, DType::U8);
  a.scales = Tensor::empty({rows, ceil_div(cols, fp8::kTile)});
  if (rows > 0)
    fp8::quantize_tiles(x, rows, cols, cols, 1, fp8::kTile, fp8::linear_scale_mode(), a.codes.ptr<uint8_t>(),
                        a.scales.f32());
  return a;
}

void Fp8Activation::dequantize_rows(int64_t r0, int64_t r1, float* out) const {
  DSV3_CHECK(defined() && 0 <= r0 && r0 <= r1 && r1 <= rows, "Fp8Activation: rows [", r0, ", ", r1, ") of ", rows);
  if (r1 == r0) return;
  fp8::dequantize_tiles(codes.ptr<uint8_t>() + r0 * cols, scales.f32() + r0 * scales.dim(1), r1 - r0, cols, 1,
                        fp8::kTile, out);
}

void FfnState::free_stash() {
  dy = u = du = act = dgu = xin = dys = shared_act = shared_dgu = dz = router_dw = Tensor();
  u_fp8 = Fp8Activation();
}

namespace {

// Keeps a forward's SwiGLU input for the backward: the F32 tensor itself, or (fp8_cache) its E4M3 codes, letting
// the F32 one go when the caller's last reference does.
void save_gu(const BlockContext& ctx, const Tensor& gu, Tensor& keep_f32, Fp8Activation& keep_fp8) {
  keep_f32 = Tensor();
  keep_fp8 = Fp8Activation();
  if (ctx.fp8_cache)
    keep_fp8 = Fp8Activation::quantize(gu.f32(), gu.dim(0), gu.dim(1));
  else
    keep_f32 = gu;
}

// The saved SwiGLU input as F32 [rows, cols]: the F32 tensor, or the FP8 codes decoded into a new buffer.
Tensor load_gu(const Tensor& f32, const Fp8Activation& fp8) {
  if (!fp8.defined()) return f32;
  Tensor out = Tensor::empty({fp8.rows, fp8.cols});
  fp8.dequantize_rows(0, fp8.rows, out.f32());
  return out;
}

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
  Tensor gu = Tensor::empty({T * K, 2 * I});
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < T * K; ++j) std::memcpy(xin.f32() + j * D, u.f32() + (st.slot_of[j] / K) * D, size_t(D) * 4);
  for (int64_t e = 0; e < N; ++e) {
    const int64_t o = st.offset[e], n = st.offset[e + 1] - o;
    swiglu_forward(ctx.linear(), L.experts[e], n, xin.f32() + o * D, gu.f32() + o * 2 * I, act.f32() + o * I,
                   yout.f32() + o * D, 0.0f);
  }
  save_gu(ctx, gu, st.gu, st.gu_fp8);
  gu = Tensor();
  pexp.emplace("moe.fwd.shared");
  if (L.has_shared) {
    const int64_t Is = L.shared.gate.dim(0);
    Tensor sgu = Tensor::empty({T, 2 * Is});
    Tensor sact = Tensor::empty({T, Is});
    swiglu_forward(ctx.linear(), L.shared, T, u.f32(), sgu.f32(), sact.f32(), out, 0.0f);
    save_gu(ctx, sgu, st.shared_gu, st.shared_gu_fp8);
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
  // (fp8_cache: no F32 xin; backward_weight gathers the rows from the cached u.)
  if (!ctx.fp8_cache) st.xin = Tensor::empty({T * K, D});
  st.dys = Tensor::empty({T * K, D});
  std::vector<float> gsel(static_cast<size_t>(T * K)), dg_disp(static_cast<size_t>(T * K));
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < T * K; ++j) {
    const int64_t t = st.slot_of[j] / K;
    if (!ctx.fp8_cache) std::memcpy(st.xin.f32() + j * D, st.u.f32() + t * D, size_t(D) * 4);
    std::memcpy(st.dys.f32() + j * D, dy + t * D, size_t(D) * 4);
    gsel[j] = r.weight[st.slot_of[j]];
  }
  st.act = Tensor::empty({T * K, I});
  st.dgu = Tensor::empty({T * K, 2 * I});
  Tensor dxin = Tensor::empty({T * K, D});
  Tensor gu_scratch;  // fp8_cache: one expert's SwiGLU inputs decoded, [max rows per expert, 2I]
  if (st.gu_fp8.defined())
    gu_scratch = Tensor::empty({*std::max_element(st.count.begin(), st.count.end()), 2 * I});
  for (int64_t e = 0; e < N; ++e) {
    const int64_t o = st.offset[e], n = st.offset[e + 1] - o;
    const float* gu = st.gu_fp8.defined() ? gu_scratch.f32() : st.gu.f32() + o * 2 * I;
    if (st.gu_fp8.defined()) st.gu_fp8.dequantize_rows(o, o + n, gu_scratch.f32());
    SwigluGrad a;
    a.gu = gu, a.dy = st.dys.f32() + o * D, a.dy_ld = D;
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
    const Tensor sgu = load_gu(st.shared_gu, st.shared_gu_fp8);
    a.gu = sgu.f32(), a.dy = dy, a.dy_ld = D;
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
  if (ctx.fp8_cache) {  // the router's weight gradient stays F32: formed here, from the exact u
    st.router_dw = Tensor::empty({N, D});
    ops::gemm_tn(N, D, T, st.dz.f32(), N, st.u.f32(), D, st.router_dw.f32(), D, 1.0f, 0.0f);
  }
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
    Tensor gu = Tensor::empty({T, 2 * I});
    Tensor act = Tensor::empty({T, I});
    swiglu_forward(ctx.linear(), L.mlp, T, u.f32(), gu.f32(), act.f32(), y.f32(), 0.0f);
    save_gu(ctx, gu, st.gu, st.gu_fp8);
  }
  float* yp = y.f32();
  const float* xp = x.f32();
  for (int64_t i = 0; i < T * D; ++i) yp[i] += xp[i];
  return y;
}

Tensor ffn_backward_input(const BlockContext& ctx, const LayerWeights& L, FfnState& st, const Tensor& dy) {
  const ModelConfig& c = *ctx.cfg;
  const int64_t T = ctx.T(), D = c.hidden_size;
  DSV3_CHECK(st.x.defined() && (st.gu.defined() || st.gu_fp8.defined()), "FFN block: backward without a forward");
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
    const Tensor gu = load_gu(st.gu, st.gu_fp8);
    SwigluGrad a;
    a.gu = gu.f32(), a.dy = dy.f32(), a.dy_ld = D;
    a.act = st.act.f32(), a.dgu = st.dgu.f32(), a.dx = st.du.f32();
    swiglu_backward_input(ctx.linear(), L.mlp, T, a);
  }
  if (ctx.fp8_cache) {  // the Wgrad input waits for backward_weight as E4M3 1×128 tiles
    st.u_fp8 = Fp8Activation::quantize(st.u.f32(), T, D);
    st.u = Tensor();
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
  // The Linear input u: stashed F32, or decoded from the FP8 cache.
  Tensor u = st.u;
  if (st.u_fp8.defined()) {
    u = Tensor::empty({T, D});
    st.u_fp8.dequantize_rows(0, T, u.f32());
  }
  if (L.moe) {
    const int64_t N = c.n_routed_experts, K = c.num_experts_per_tok, I = c.moe_intermediate_size;
    Tensor xs;  // fp8_cache: one expert's input rows gathered from the decoded u, [max rows per expert, D]
    if (!st.xin.defined()) xs = Tensor::empty({*std::max_element(st.count.begin(), st.count.end()), D});
    for (int64_t e = 0; e < N; ++e) {
      const int64_t o = st.offset[e], n = st.offset[e + 1] - o;
      const float* xe = st.xin.defined() ? st.xin.f32() + o * D : xs.f32();
      if (!st.xin.defined()) {
#pragma omp parallel for schedule(static) if (n * D > 32768)
        for (int64_t j = 0; j < n; ++j)
          std::memcpy(xs.f32() + j * D, u.f32() + (st.slot_of[o + j] / K) * D, size_t(D) * 4);
      }
      swiglu_backward_weight(ctx.linear(), G.experts[e], n, xe, st.dys.f32() + o * D, D, st.act.f32() + o * I,
                             st.dgu.f32() + o * 2 * I);
    }
    if (L.has_shared)
      swiglu_backward_weight(ctx.linear(), G.shared, T, u.f32(), st.dy.f32(), D, st.shared_act.f32(),
                             st.shared_dgu.f32());
    if (st.router_dw.defined()) {
      float* g = G.router.f32();
      const float* r = st.router_dw.f32();
      for (int64_t i = 0; i < N * D; ++i) g[i] += r[i];
    } else {
      ops::gemm_tn(N, D, T, st.dz.f32(), N, st.u.f32(), D, G.router.f32(), D, 1.0f, 1.0f);
    }
  } else {
    swiglu_backward_weight(ctx.linear(), G.mlp, T, u.f32(), st.dy.f32(), D, st.act.f32(), st.dgu.f32());
  }
  ops::rmsnorm_backward_weight(T, D, st.x.f32(), D, st.du.f32(), D, float(c.rms_norm_eps), G.ffn_norm.f32());
  st.free_stash();
}

}  // namespace dsv3::train
