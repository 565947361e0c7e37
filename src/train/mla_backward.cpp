// Attention block for training: y = x + MLA(input_layernorm(x)) in the naive form (V3_SPEC.md §4.1) over
// B causal sequences, with its input and weight gradients (train/blocks.h).
//
// Forward (rows t = b·n + i):
//   a = RMSNorm(x);  q = W_qb RMSNorm(W_qa a)  (or W_q a);  kv = W_kva a;  c = RMSNorm(kv[:d_c]);  k^R = RoPE(kv[d_c:])
//   q^R_h = RoPE(q_h[d_n:]);  [k^C_h; v_h] = (W_kvb c)_h;  k_h = [k^C_h; k^R]
//   per sequence and head: P = causal_softmax(σ q_h k_hᵀ), o_h = P v_h;  y = x + W_o [o_0 … o_{H−1}]
// Backward per sequence and head (P recomputed): dP = do_h v_hᵀ, dv_h = Pᵀ do_h, dS = σ·P ⊙ (dP − rowsum(P ⊙ dP)),
//   dq_h = dS k_h, dk_h = dSᵀ q_h (k^R gets the sum over heads); RoPE backward = rotation by −angle.
#include <cstring>
#include <optional>
#include <vector>

#include "dsv3/error.h"
#include "kernels/backward_ops.h"
#include "kernels/ops.h"
#include "train/blocks.h"
#include "train/profile.h"

namespace dsv3::train {

namespace {

struct Dims {
  int64_t T, D, H, dn, dr, dv, dc, dq, dqk, n;
  Dims(const BlockContext& ctx) {
    const ModelConfig& c = *ctx.cfg;
    T = ctx.T(), D = c.hidden_size, H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
    dv = c.v_head_dim, dc = c.kv_lora_rank, dq = c.q_lora_rank, dqk = dn + dr, n = ctx.n;
  }
};

// The up-projected MLA operands, from a (and the saved down-projection outputs).
struct Projected {
  Tensor a;    // [T, D]
  Tensor cq;   // [T, d_q] (q_lora_rank > 0)
  Tensor q;    // [T, H·dqk] roped
  Tensor c;    // [T, d_c]
  Tensor kpe;  // [T, d_r] roped
  Tensor kvb;  // [T, H·(d_n+d_v)]
};

// Computes every operand. With recompute == false the down-projections cq_raw / kv_raw are computed and stored in
// st; with recompute == true they are taken from st (the backward's recomputation).
Projected project(const BlockContext& ctx, const LayerWeights& L, AttnState& st, bool recompute) {
  const ModelConfig& c = *ctx.cfg;
  const Dims d(ctx);
  const AttnWeights& W = L.attn;
  Linear& lin = ctx.linear();
  Projected p;
  p.a = Tensor::empty({d.T, d.D});
  ops::rmsnorm(d.T, d.D, st.x.f32(), d.D, L.attn_norm.f32(), float(c.rms_norm_eps), p.a.f32(), d.D);
  p.q = Tensor::empty({d.T, d.H * d.dqk});
  if (d.dq > 0) {
    if (!recompute) {
      st.cq_raw = Tensor::empty({d.T, d.dq});
      lin.fprop(d.T, p.a.f32(), d.D, W.q_a, st.cq_raw.f32(), d.dq);
    }
    p.cq = Tensor::empty({d.T, d.dq});
    ops::rmsnorm(d.T, d.dq, st.cq_raw.f32(), d.dq, W.q_a_norm.f32(), 1e-6f, p.cq.f32(), d.dq);
    lin.fprop(d.T, p.cq.f32(), d.dq, W.q_b, p.q.f32(), d.H * d.dqk);
  } else {
    lin.fprop(d.T, p.a.f32(), d.D, W.q, p.q.f32(), d.H * d.dqk);
  }
  ops::rope_interleaved_table(d.T, d.H, d.dr, p.q.f32() + d.dn, d.H * d.dqk, d.dqk, ctx.rope_cos.data(),
                              ctx.rope_sin.data(), 1.0f);
  if (!recompute) {
    st.kv_raw = Tensor::empty({d.T, d.dc + d.dr});
    lin.fprop(d.T, p.a.f32(), d.D, W.kv_a, st.kv_raw.f32(), d.dc + d.dr);
  }
  p.c = Tensor::empty({d.T, d.dc});
  ops::rmsnorm(d.T, d.dc, st.kv_raw.f32(), d.dc + d.dr, W.kv_a_norm.f32(), 1e-6f, p.c.f32(), d.dc);
  p.kpe = Tensor::empty({d.T, d.dr});
  for (int64_t t = 0; t < d.T; ++t)
    std::memcpy(p.kpe.f32() + t * d.dr, st.kv_raw.f32() + t * (d.dc + d.dr) + d.dc, size_t(d.dr) * 4);
  ops::rope_interleaved_table(d.T, 1, d.dr, p.kpe.f32(), d.dr, d.dr, ctx.rope_cos.data(), ctx.rope_sin.data(), 1.0f);
  p.kvb = Tensor::empty({d.T, d.H * (d.dn + d.dv)});
  lin.fprop(d.T, p.c.f32(), d.dc, W.kv_b, p.kvb.f32(), d.H * (d.dn + d.dv));
  return p;
}

// k_h of sequence b: [n, dqk] = [k^C_h ; k^R] into buf.
void gather_key(const Dims& d, const Projected& p, int64_t b, int64_t h, float* buf) {
  for (int64_t i = 0; i < d.n; ++i) {
    const int64_t t = b * d.n + i;
    std::memcpy(buf + i * d.dqk, p.kvb.f32() + t * d.H * (d.dn + d.dv) + h * (d.dn + d.dv), size_t(d.dn) * 4);
    std::memcpy(buf + i * d.dqk + d.dn, p.kpe.f32() + t * d.dr, size_t(d.dr) * 4);
  }
}

// P [n, n] of sequence b, head h (scores then causal softmax), into probs.
void attention_probs(const BlockContext& ctx, const Dims& d, const Projected& p, int64_t b, int64_t h,
                     const float* k, float* probs) {
  const float* q = p.q.f32() + b * d.n * d.H * d.dqk + h * d.dqk;
  ops::gemm_nt(d.n, d.n, d.dqk, q, d.H * d.dqk, k, d.dqk, probs, d.n, ctx.softmax_scale, 0.0f);
  ops::causal_softmax(d.n, d.n, probs, d.n, 0);
}

}  // namespace

void AttnState::free_stash() { dy = a = da = cq = dcq = dcq_raw = dq = c = dc = dkv_raw = dkvb = o = Tensor(); }

Tensor attn_forward(const BlockContext& ctx, const LayerWeights& L, const Tensor& x, AttnState& st) {
  const Dims d(ctx);
  DSV3_CHECK(x.shape == Shape({d.T, d.D}), "attention block: input ", shape_str(x.shape), ", expected [", d.T, ", ",
             d.D, "]");
  st.x = x;
  ProfileScope prof("attn.fwd");
  Projected p = [&] {
    ProfileScope pp("attn.fwd.project");
    return project(ctx, L, st, false);
  }();
  Tensor o = Tensor::empty({d.T, d.H * d.dv});
  std::optional<ProfileScope> pcore;
  pcore.emplace("attn.fwd.core");
  // One (sequence, head) per task: the small per-head GEMMs run single-threaded side by side, in F32.
#pragma omp parallel
  {
    ops::GemmPrecisionScope f32(ops::GemmPrecision::kF32);
    std::vector<float> k(size_t(d.n * d.dqk)), probs(size_t(d.n * d.n));
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < ctx.B * d.H; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H;
      gather_key(d, p, b, h, k.data());
      ops::HeadAttention ha;
      ha.S_q = d.n, ha.S_kv = d.n, ha.dk = d.dqk, ha.dv = d.dv;
      ha.q = p.q.f32() + b * d.n * d.H * d.dqk + h * d.dqk, ha.q_ld = d.H * d.dqk;
      ha.k = k.data(), ha.k_ld = d.dqk;
      ha.v = p.kvb.f32() + b * d.n * d.H * (d.dn + d.dv) + h * (d.dn + d.dv) + d.dn, ha.v_ld = d.H * (d.dn + d.dv);
      ha.out = o.f32() + b * d.n * d.H * d.dv + h * d.dv, ha.out_ld = d.H * d.dv;
      ha.scale = ctx.softmax_scale, ha.q_offset = 0, ha.scores = probs.data();
      ops::head_attention(ha);
    }
  }
  pcore.reset();
  Tensor y = Tensor::empty({d.T, d.D});
  ctx.linear().fprop(d.T, o.f32(), d.H * d.dv, L.attn.o, y.f32(), d.D);
  const float* xp = x.f32();
  float* yp = y.f32();
  for (int64_t i = 0; i < d.T * d.D; ++i) yp[i] += xp[i];
  return y;
}

Tensor attn_backward_input(const BlockContext& ctx, const LayerWeights& L, AttnState& st, const Tensor& dy) {
  const ModelConfig& c = *ctx.cfg;
  const Dims d(ctx);
  const AttnWeights& W = L.attn;
  DSV3_CHECK(st.x.defined() && st.kv_raw.defined(), "attention block: backward without a forward");
  DSV3_CHECK(dy.shape == Shape({d.T, d.D}), "attention block: output gradient ", shape_str(dy.shape));
  st.dy = dy;
  ProfileScope prof("attn.bwd_input");
  Projected p = [&] {
    ProfileScope pp("attn.bwd_input.recompute");
    return project(ctx, L, st, true);
  }();
  const int64_t ldq = d.H * d.dqk, ldkv = d.H * (d.dn + d.dv), ldo = d.H * d.dv;

  // do [T, H·d_v] = dy · W_o
  Tensor dO = Tensor::empty({d.T, ldo});
  Linear& lin = ctx.linear();
  lin.dgrad(d.T, dy.f32(), d.D, W.o, dO.f32(), ldo);

  st.o = Tensor::empty({d.T, ldo});
  st.dq = Tensor::zeros({d.T, ldq});
  st.dkvb = Tensor::zeros({d.T, ldkv});
  std::optional<ProfileScope> pcore;
  pcore.emplace("attn.bwd_input.core");
  // dk^R of each head separately (summed over heads in order below, so the result does not depend on threads).
  Tensor dkpe_h = Tensor::empty({d.H, d.T, d.dr});
#pragma omp parallel
  {
    ops::GemmPrecisionScope f32(ops::GemmPrecision::kF32);
    Tensor k = Tensor::empty({d.n, d.dqk}), dk = Tensor::empty({d.n, d.dqk});
    Tensor P = Tensor::empty({d.n, d.n}), dP = Tensor::empty({d.n, d.n});
#pragma omp for schedule(dynamic)
    for (int64_t bh = 0; bh < ctx.B * d.H; ++bh) {
      const int64_t b = bh / d.H, h = bh % d.H, r0 = b * d.n;
      gather_key(d, p, b, h, k.f32());
      attention_probs(ctx, d, p, b, h, k.f32(), P.f32());
      const float* v = p.kvb.f32() + r0 * ldkv + h * (d.dn + d.dv) + d.dn;
      const float* do_h = dO.f32() + r0 * ldo + h * d.dv;
      const float* q_h = p.q.f32() + r0 * ldq + h * d.dqk;
      // o_h = P v_h (the o_proj input, for its weight gradient)
      ops::gemm_nn(d.n, d.dv, d.n, P.f32(), d.n, v, ldkv, st.o.f32() + r0 * ldo + h * d.dv, ldo);
      // dP = do_h v_hᵀ;  dv_h = Pᵀ do_h
      ops::gemm_nt(d.n, d.n, d.dv, do_h, ldo, v, ldkv, dP.f32(), d.n);
      ops::gemm_tn(d.n, d.dv, d.n, P.f32(), d.n, do_h, ldo, st.dkvb.f32() + r0 * ldkv + h * (d.dn + d.dv) + d.dn,
                   ldkv);
      // dS = σ·softmax'(dP);  dq_h = dS k_h;  dk_h = dSᵀ q_h
      ops::softmax_backward(d.n, d.n, P.f32(), d.n, dP.f32(), d.n, ctx.softmax_scale);
      ops::gemm_nn(d.n, d.dqk, d.n, dP.f32(), d.n, k.f32(), d.dqk, st.dq.f32() + r0 * ldq + h * d.dqk, ldq);
      ops::gemm_tn(d.n, d.dqk, d.n, dP.f32(), d.n, q_h, ldq, dk.f32(), d.dqk);
      for (int64_t i = 0; i < d.n; ++i) {
        std::memcpy(st.dkvb.f32() + (r0 + i) * ldkv + h * (d.dn + d.dv), dk.f32() + i * d.dqk, size_t(d.dn) * 4);
        std::memcpy(dkpe_h.f32() + (h * d.T + r0 + i) * d.dr, dk.f32() + i * d.dqk + d.dn, size_t(d.dr) * 4);
      }
    }
  }
  Tensor dkpe = Tensor::zeros({d.T, d.dr});
  for (int64_t h = 0; h < d.H; ++h) {
    const float* s = dkpe_h.f32() + h * d.T * d.dr;
    float* g = dkpe.f32();
    for (int64_t i = 0; i < d.T * d.dr; ++i) g[i] += s[i];
  }
  pcore.reset();
  // RoPE backward on the rotary parts of dq and on dk^R.
  // (the transpose of a rotation by θ is the rotation by −θ)
  ops::rope_interleaved_table(d.T, d.H, d.dr, st.dq.f32() + d.dn, ldq, d.dqk, ctx.rope_cos.data(),
                              ctx.rope_sin.data(), -1.0f);
  ops::rope_interleaved_table(d.T, 1, d.dr, dkpe.f32(), d.dr, d.dr, ctx.rope_cos.data(), ctx.rope_sin.data(), -1.0f);

  // KV path: dc = dkvb · W_kvb; dkv_raw = [RMSNorm'(dc) ; dk^R].
  st.c = p.c;
  st.dc = Tensor::empty({d.T, d.dc});
  lin.dgrad(d.T, st.dkvb.f32(), ldkv, W.kv_b, st.dc.f32(), d.dc);
  st.dkv_raw = Tensor::empty({d.T, d.dc + d.dr});
  ops::rmsnorm_backward_input(d.T, d.dc, st.kv_raw.f32(), d.dc + d.dr, W.kv_a_norm.f32(), st.dc.f32(), d.dc, 1e-6f,
                              st.dkv_raw.f32(), d.dc + d.dr, false);
  for (int64_t t = 0; t < d.T; ++t)
    std::memcpy(st.dkv_raw.f32() + t * (d.dc + d.dr) + d.dc, dkpe.f32() + t * d.dr, size_t(d.dr) * 4);

  // Query path and da.
  st.a = p.a;
  st.da = Tensor::empty({d.T, d.D});
  if (d.dq > 0) {
    st.cq = p.cq;
    st.dcq = Tensor::empty({d.T, d.dq});
    lin.dgrad(d.T, st.dq.f32(), ldq, W.q_b, st.dcq.f32(), d.dq);
    st.dcq_raw = Tensor::empty({d.T, d.dq});
    ops::rmsnorm_backward_input(d.T, d.dq, st.cq_raw.f32(), d.dq, W.q_a_norm.f32(), st.dcq.f32(), d.dq, 1e-6f,
                                st.dcq_raw.f32(), d.dq, false);
    lin.dgrad(d.T, st.dcq_raw.f32(), d.dq, W.q_a, st.da.f32(), d.D);
  } else {
    lin.dgrad(d.T, st.dq.f32(), ldq, W.q, st.da.f32(), d.D);
  }
  lin.dgrad(d.T, st.dkv_raw.f32(), d.dc + d.dr, W.kv_a, st.da.f32(), d.D, true);

  // dx = dy + RMSNorm'(da)
  Tensor dx = dy.clone();
  ops::rmsnorm_backward_input(d.T, d.D, st.x.f32(), d.D, L.attn_norm.f32(), st.da.f32(), d.D, float(c.rms_norm_eps),
                              dx.f32(), d.D, true);
  return dx;
}

void attn_backward_weight(const BlockContext& ctx, const LayerWeights& L, AttnState& st, LayerWeights& G) {
  const ModelConfig& c = *ctx.cfg;
  const Dims d(ctx);
  DSV3_CHECK(st.dy.defined(), "attention block: backward_weight before backward_input");
  ProfileScope prof("attn.bwd_weight");
  const int64_t ldq = d.H * d.dqk, ldkv = d.H * (d.dn + d.dv), ldo = d.H * d.dv;
  AttnWeights& g = G.attn;
  Linear& lin = ctx.linear();
  lin.wgrad(d.T, st.dy.f32(), d.D, st.o.f32(), ldo, g.o);
  lin.wgrad(d.T, st.dkvb.f32(), ldkv, st.c.f32(), d.dc, g.kv_b);
  ops::rmsnorm_backward_weight(d.T, d.dc, st.kv_raw.f32(), d.dc + d.dr, st.dc.f32(), d.dc, 1e-6f, g.kv_a_norm.f32());
  lin.wgrad(d.T, st.dkv_raw.f32(), d.dc + d.dr, st.a.f32(), d.D, g.kv_a);
  if (d.dq > 0) {
    lin.wgrad(d.T, st.dq.f32(), ldq, st.cq.f32(), d.dq, g.q_b);
    ops::rmsnorm_backward_weight(d.T, d.dq, st.cq_raw.f32(), d.dq, st.dcq.f32(), d.dq, 1e-6f, g.q_a_norm.f32());
    lin.wgrad(d.T, st.dcq_raw.f32(), d.dq, st.a.f32(), d.D, g.q_a);
  } else {
    lin.wgrad(d.T, st.dq.f32(), ldq, st.a.f32(), d.D, g.q);
  }
  ops::rmsnorm_backward_weight(d.T, d.D, st.x.f32(), d.D, st.da.f32(), d.D, float(c.rms_norm_eps),
                               G.attn_norm.f32());
  st.free_stash();
}

}  // namespace dsv3::train
