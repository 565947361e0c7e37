// Multi-head Latent Attention (V3_SPEC.md §4): low-rank query and joint KV compression, decoupled RoPE
// (interleaved pairs, YaRN frequencies), causal softmax with the YaRN scale correction. Two equivalent forms:
// naive (per-head K/V materialised from the latent) and absorbed (attention over the latent itself).
#include <cstring>

#include "dsv3/error.h"
#include "kernels/ops.h"
#include "model/transformer.h"

namespace dsv3 {

void Transformer::mla(const LayerWeights& L, const float* a, int64_t S, const std::vector<int64_t>& pos, float* out,
                      const ForwardOptions& opt, const std::string& name) const {
  const ModelConfig& c = w_.cfg;
  const int64_t D = c.hidden_size, H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dc = c.kv_lora_rank, dqk = dn + dr;
  const AttnWeights& W = L.attn;
  const std::vector<double> inv_freq = c.rope_inv_freq();
  const double cs_scale = c.rope_cos_sin_scale();
  const float scale = float(c.softmax_scale());

  // Query: q [S, H, dn + dr].
  Tensor q = Tensor::empty({S, H * dqk});
  if (c.q_lora_rank > 0) {
    const int64_t dq = c.q_lora_rank;
    Tensor cq = Tensor::empty({S, dq});
    ops::gemm_nt(S, dq, D, a, D, W.q_a.f32(), D, cq.f32(), dq);
    ops::rmsnorm(S, dq, cq.f32(), dq, W.q_a_norm.f32(), 1e-6f, cq.f32(), dq);
    ops::gemm_nt(S, H * dqk, dq, cq.f32(), dq, W.q_b.f32(), dq, q.f32(), H * dqk);
  } else {
    ops::gemm_nt(S, H * dqk, D, a, D, W.q.f32(), D, q.f32(), H * dqk);
  }
  ops::rope_interleaved(S, H, dr, q.f32() + dn, H * dqk, dqk, pos.data(), inv_freq.data(), cs_scale);

  // Joint KV: latent c [S, dc] (normalised) and the shared rotary key k_pe [S, dr], stored side by side.
  Tensor kv = Tensor::empty({S, dc + dr});
  ops::gemm_nt(S, dc + dr, D, a, D, W.kv_a.f32(), D, kv.f32(), dc + dr);
  ops::rmsnorm(S, dc, kv.f32(), dc + dr, W.kv_a_norm.f32(), 1e-6f, kv.f32(), dc + dr);
  ops::rope_interleaved(S, 1, dr, kv.f32() + dc, dc + dr, dr, pos.data(), inv_freq.data(), cs_scale);
  if (opt.trace) {
    opt.trace->put(name + "kv_latent", kv.f32(), {S, dc}, dc + dr);
    opt.trace->put(name + "k_pe", kv.f32() + dc, {S, dr}, dc + dr);
  }

  Tensor o = Tensor::empty({S, H * dv});  // per-head outputs, head-major
  Tensor scores = Tensor::empty({S, S});
  const int64_t q_offset = 0;  // queries and keys are the same positions
  if (opt.mla == MlaMode::kNaive) {
    // k^C and v per head from the latent: kvb [S, H, dn + dv]; full key per head = [k^C_h ; k_pe].
    Tensor kvb = Tensor::empty({S, H * (dn + dv)});
    ops::gemm_nt(S, H * (dn + dv), dc, kv.f32(), dc + dr, W.kv_b.f32(), dc, kvb.f32(), H * (dn + dv));
    Tensor k = Tensor::empty({S, dqk});
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < S; ++t) {
        std::memcpy(k.f32() + t * dqk, kvb.f32() + t * H * (dn + dv) + h * (dn + dv), size_t(dn) * 4);
        std::memcpy(k.f32() + t * dqk + dn, kv.f32() + t * (dc + dr) + dc, size_t(dr) * 4);
      }
      ops::HeadAttention ha;
      ha.S_q = S, ha.S_kv = S, ha.dk = dqk, ha.dv = dv;
      ha.q = q.f32() + h * dqk, ha.q_ld = H * dqk;
      ha.k = k.f32(), ha.k_ld = dqk;
      ha.v = kvb.f32() + h * (dn + dv) + dn, ha.v_ld = H * (dn + dv);
      ha.out = o.f32() + h * dv, ha.out_ld = H * dv;
      ha.scale = scale, ha.q_offset = q_offset, ha.scores = scores.f32();
      ops::head_attention(ha);
    }
  } else {
    // Absorbed: q̃_h = q^C_h · W^UK_h  [S, dc];  scores = σ(q̃_h·c_t + q^R_h·k^R_t);  ô = P·c;  o_h = ô·W^UV_h^T.
    Tensor qt = Tensor::empty({S, dc}), ohat = Tensor::empty({S, dc});
    for (int64_t h = 0; h < H; ++h) {
      const float* w_uk = W.kv_b.f32() + h * (dn + dv) * dc;  // [dn, dc]
      const float* w_uv = w_uk + dn * dc;                     // [dv, dc]
      ops::gemm_nn(S, dc, dn, q.f32() + h * dqk, H * dqk, w_uk, dc, qt.f32(), dc);
      ops::gemm_nt(S, S, dc, qt.f32(), dc, kv.f32(), dc + dr, scores.f32(), S, scale, 0.0f);
      ops::gemm_nt(S, S, dr, q.f32() + h * dqk + dn, H * dqk, kv.f32() + dc, dc + dr, scores.f32(), S, scale, 1.0f);
      ops::causal_softmax(S, S, scores.f32(), S, q_offset);
      ops::gemm_nn(S, dc, S, scores.f32(), S, kv.f32(), dc + dr, ohat.f32(), dc);
      ops::gemm_nt(S, dv, dc, ohat.f32(), dc, w_uv, dc, o.f32() + h * dv, H * dv);
    }
  }
  ops::gemm_nt(S, D, H * dv, o.f32(), H * dv, W.o.f32(), H * dv, out, D);
}

}  // namespace dsv3
