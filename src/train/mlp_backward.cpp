// SwiGLU MLP forward / backward-input / backward-weight on rows (V3_SPEC.md §2.2; used by the dense MLP, the
// shared expert and every routed expert), the block context, and the decoder layer as attention block then FFN
// block (see train/blocks.h).
#include <cstring>

#include "dsv3/error.h"
#include "kernels/backward_ops.h"
#include "kernels/ops.h"
#include "train/blocks.h"

namespace dsv3::train {

BlockContext::BlockContext(const ModelConfig& c, int64_t B_, int64_t n_, double alpha)
    : cfg(&c), B(B_), n(n_), balance_alpha(alpha) {
  pos.resize(size_t(B * n));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n; ++i) pos[b * n + i] = i;
  inv_freq = c.rope_inv_freq();
  cs_scale = c.rope_cos_sin_scale();
  softmax_scale = float(c.softmax_scale());
  const int64_t half = c.qk_rope_head_dim / 2;
  rope_cos.resize(size_t(B * n * half));
  rope_sin.resize(size_t(B * n * half));
  ops::rope_table(B * n, c.qk_rope_head_dim, pos.data(), inv_freq.data(), cs_scale, rope_cos.data(), rope_sin.data());
}

void swiglu_forward(Linear& lin, const MlpWeights& W, int64_t rows, const float* x, float* gu, float* act, float* y,
                    float beta) {
  const int64_t I = W.gate.dim(0), D = W.gate.dim(1);
  if (rows == 0) return;
  DSV3_CHECK(beta == 0.0f || beta == 1.0f, "swiglu_forward: beta must be 0 or 1");
  lin.fprop2(rows, x, D, W.gate, W.up, gu, 2 * I);
  ops::silu_mul(rows, I, gu, gu + I, 2 * I, act, I);
  lin.fprop(rows, act, I, W.down, y, D, beta == 1.0f);
}

void swiglu_backward_input(Linear& lin, const MlpWeights& W, int64_t rows, const SwigluGrad& a) {
  const int64_t I = W.gate.dim(0), D = W.gate.dim(1);
  if (rows == 0) return;
  ops::silu_mul(rows, I, a.gu, a.gu + I, 2 * I, a.act, I);
  // dA [rows, I] = dy · W_down (W_down is [D, I]); kept in the up half of dgu until the activation backward.
  float* dA = a.dgu + I;
  lin.dgrad(rows, a.dy, a.dy_ld, W.down, dA, 2 * I);
  for (int64_t r = 0; r < rows; ++r) {
    float* g = dA + r * 2 * I;
    if (a.row_dot) {
      double s = 0.0;
      for (int64_t i = 0; i < I; ++i) s += double(a.act[r * I + i]) * double(g[i]);
      a.row_dot[r] = float(s);
    }
    if (a.row_scale)
      for (int64_t i = 0; i < I; ++i) g[i] *= a.row_scale[r];
  }
  // dgate, dup from dA (elementwise; dA is read before each write of the same element).
  ops::silu_mul_backward(rows, I, a.gu, a.gu + I, 2 * I, dA, 2 * I, a.dgu, a.dgu + I, 2 * I);
  DSV3_CHECK(a.beta == 0.0f || a.beta == 1.0f, "swiglu_backward_input: beta must be 0 or 1");
  lin.dgrad2(rows, a.dgu, 2 * I, W.gate, W.up, a.dx, D, a.beta == 1.0f);
}

void swiglu_backward_weight(Linear& lin, MlpWeights& G, int64_t rows, const float* x, const float* dy, int64_t dy_ld,
                            const float* act, const float* dgu) {
  const int64_t I = G.gate.dim(0);
  if (rows == 0) return;
  lin.wgrad(rows, dy, dy_ld, act, I, G.down);
  lin.wgrad2(rows, dgu, 2 * I, x, G.gate.dim(1), G.gate, G.up);
}

Tensor layer_forward(const BlockContext& ctx, const LayerWeights& W, const Tensor& x, LayerState& st) {
  Tensor mid = attn_forward(ctx, W, x, st.attn);
  return ffn_forward(ctx, W, mid, st.ffn);
}

Tensor layer_backward_input(const BlockContext& ctx, const LayerWeights& W, LayerState& st, const Tensor& dy) {
  Tensor dmid = ffn_backward_input(ctx, W, st.ffn, dy);
  return attn_backward_input(ctx, W, st.attn, dmid);
}

void layer_backward_weight(const BlockContext& ctx, const LayerWeights& W, LayerState& st, LayerWeights& G) {
  ffn_backward_weight(ctx, W, st.ffn, G);
  attn_backward_weight(ctx, W, st.attn, G);
}

}  // namespace dsv3::train
