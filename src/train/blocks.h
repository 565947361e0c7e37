// Training blocks of one DeepSeek-V3 decoder layer, each with three entry points (DESIGN.md "Backward split"):
//   forward          saves what the backward needs (the activation policy below) and returns the output;
//   backward_input   dL/d(input) from dL/d(output); recomputes what was not saved and stashes, in the state,
//                    the activations and output gradients each weight gradient needs;
//   backward_weight  accumulates dL/dW into a gradient LayerWeights (same layout as the weights) from the stash,
//                    then frees the stash. It may run any time after backward_input (zero-bubble / DualPipe).
// The blocks are residual: attention block  y = x + MLA(RMSNorm(x))            (V3_SPEC.md §2, §4 naive form)
//                          FFN block        y = x + FFN(RMSNorm(x))  with FFN = dense SwiGLU (§2.2) or MoE (§3).
// Rows are B sequences × n positions (row b·n + i at position i), each sequence causal on its own.
//
// Activation policy (docs/training.md): forward saves the block input, the two MLA down-projection outputs
// (q_a_proj before q_a_layernorm, kv_a_proj_with_mqa before kv_a_layernorm/RoPE), the SwiGLU inputs (gate|up
// pre-activations) of the dense MLP, of every routed expert (dispatched rows) and of the shared expert, and the
// routing (experts, gate weights, affinities). backward_input recomputes every RMSNorm output, the MLA
// up-projections (q_b_proj / q_proj, kv_b_proj) with RoPE, the attention probabilities and output, and the
// SwiGLU outputs.
// With BlockContext::fp8_cache (run-config fp8_cache_activations, FP8 runs only; V3_SPEC.md §8, paper §3.3.3) the
// FFN blocks keep every SwiGLU input (dense, routed, shared) as E4M3 codes with 1×128 tile scales instead of F32
// (no F32 copy lives across the forward→backward gap); backward_input dequantizes them into a scratch buffer right
// before use (per expert for the routed ones). backward_input then stashes the FFN Linear input u (the
// post_attention_layernorm output, the gate|up input of the dense MLP and shared expert; each routed expert's
// input rows are rows of u) as E4M3 1×128 tiles too, instead of F32 u and the dispatched F32 copy xin [T·K, D];
// backward_weight decodes u, gathers each expert's rows from it, and the FP8 Wgrad re-tiles them 128×1. The
// router's weight gradient (F32 in every precision) is formed in backward_input from the exact u.
//
// Gradient rules: the gate weights are differentiated through the unbiased, normalised sigmoid affinities into the
// router weight; nothing flows through the top-k selection or the correction bias. Gradients into the router
// come from the gate weights and, for main-model layers with α > 0, from the sequence-wise balance loss
// (train/losses.h).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "train/linear.h"

namespace dsv3::train {

// Constants of one segment of rows (main model: B × S; MTP depth k: B × (S − k)).
struct BlockContext {
  const ModelConfig* cfg = nullptr;
  int64_t B = 0, n = 0;             // sequences, positions per sequence
  std::vector<int64_t> pos;         // [B·n] position of each row
  std::vector<double> inv_freq;     // [d_r/2] YaRN inverse frequencies f'_j
  double cs_scale = 1.0;            // RoPE cos/sin multiplier
  std::vector<float> rope_cos, rope_sin;  // [B·n, d_r/2] per-row tables (ops::rope_table)
  float softmax_scale = 1.0f;       // σ of §4.1
  double balance_alpha = 0.0;       // > 0: MoE blocks of this segment add the sequence-wise balance loss
  Linear* lin = nullptr;            // the Linear GEMMs' precision and weight cache (nullptr: F32)
  bool fp8_cache = false;           // FFN blocks cache SwiGLU inputs and Wgrad input u as E4M3 1×128 tiles

  BlockContext(const ModelConfig& c, int64_t B, int64_t n, double balance_alpha);
  int64_t T() const { return B * n; }
  Linear& linear() const { return lin ? *lin : default_linear(); }
};

// ---- SwiGLU MLP on rows (dense MLP, shared expert, each routed expert) ----------------------------------------
// gu [rows, 2I] = [x W_gate^T | x W_up^T];  act = silu(gate) ⊙ up;  y = act W_down^T (+ beta·y).
void swiglu_forward(Linear& lin, const MlpWeights& W, int64_t rows, const float* x, float* gu, float* act, float* y, float beta);
// Backward-input operands of swiglu_backward_input for `rows` rows.
struct SwigluGrad {
  const float* gu = nullptr;         // [rows, 2I] saved gate | up pre-activations
  const float* dy = nullptr;         // [rows, D] output gradient, row stride dy_ld
  int64_t dy_ld = 0;
  const float* row_scale = nullptr;  // optional [rows]: the output is row_scale[r]·y_r (MoE gate weights)
  float* row_dot = nullptr;          // optional out [rows]: dL/d row_scale[r] = act_r · (dy_r W_down)
  float* act = nullptr;              // out [rows, I]: silu(gate) ⊙ up, recomputed
  float* dgu = nullptr;              // out [rows, 2I]: gradient of the gate | up pre-activations
  float* dx = nullptr;               // out [rows, D]: dgu_g W_gate + dgu_u W_up (+ beta·dx)
  float beta = 0.0f;
};
// dA = dy W_down; row_dot = act·dA; dA *= row_scale; dgu = SwiGLU'ᵀ dA; dx = dgu_g W_gate + dgu_u W_up.
void swiglu_backward_input(Linear& lin, const MlpWeights& W, int64_t rows, const SwigluGrad& a);
// dW_down += dyᵀ act, dW_gate += dgu_gᵀ x, dW_up += dgu_uᵀ x (dy here already carries any row scale).
void swiglu_backward_weight(Linear& lin, MlpWeights& G, int64_t rows, const float* x, const float* dy, int64_t dy_ld,
                            const float* act, const float* dgu);

// ---- Attention block: y = x + MLA(input_layernorm(x)) -----------------------------------------------------------
struct AttnState {
  // saved by forward
  Tensor x;        // [T, D] block input
  Tensor cq_raw;   // [T, d_q] q_a_proj output before q_a_layernorm (q_lora_rank > 0)
  Tensor kv_raw;   // [T, d_c + d_r] kv_a_proj_with_mqa output before kv_a_layernorm / RoPE
  // stash of backward_input (freed by backward_weight)
  Tensor dy;       // [T, D] gradient of the block output (= of the o_proj output)
  Tensor a, da;    // [T, D] input_layernorm output (recomputed) and its gradient
  Tensor cq, dcq;  // [T, d_q] q_a_layernorm output and its gradient
  Tensor dcq_raw;  // [T, d_q]
  Tensor dq;       // [T, H·(d_n+d_r)] gradient of the q_b_proj / q_proj output (before RoPE)
  Tensor c, dc;    // [T, d_c] kv_a_layernorm output and its gradient
  Tensor dkv_raw;  // [T, d_c + d_r]
  Tensor dkvb;     // [T, H·(d_n+d_v)] gradient of the kv_b_proj output
  Tensor o;        // [T, H·d_v] attention output (o_proj input), recomputed
  void free_stash();
};
Tensor attn_forward(const BlockContext& ctx, const LayerWeights& W, const Tensor& x, AttnState& st);
Tensor attn_backward_input(const BlockContext& ctx, const LayerWeights& W, AttnState& st, const Tensor& dy);
void attn_backward_weight(const BlockContext& ctx, const LayerWeights& W, AttnState& st, LayerWeights& G);

// ---- FFN block: y = x + (DenseMLP | MoE)(post_attention_layernorm(x)) -----------------------------------------
// An activation kept for the backward as E4M3 codes with 1×128 tile scales (fp8/quantize.h, in the FP8 Linear's
// scale mode fp8::linear_scale_mode(), kAmax unless an Fp8ScaleScope says otherwise).
// Rows are independent (a tile never spans two rows), so a row range [r0, r1) dequantizes on its own.
struct Fp8Activation {
  int64_t rows = 0, cols = 0;
  Tensor codes;   // U8 [rows, cols] E4M3 codes
  Tensor scales;  // F32 [rows, ceil(cols/128)]
  bool defined() const { return codes.defined(); }
  static Fp8Activation quantize(const float* x, int64_t rows, int64_t cols);
  // out[r - r0, c] for rows r0 ≤ r < r1 (row stride cols).
  void dequantize_rows(int64_t r0, int64_t r1, float* out) const;
};

struct FfnState {
  // saved by forward (gu / shared_gu: F32, or, under BlockContext::fp8_cache, the *_fp8 codes instead)
  Tensor x;                      // [T, D] block input
  Tensor gu;                     // dense: [T, 2I]; MoE: [T·K, 2I] routed experts' SwiGLU inputs, dispatched order
  Tensor shared_gu;              // MoE with shared experts: [T, 2·I_shared]
  Fp8Activation gu_fp8;          // fp8_cache: gu as E4M3 codes + 1×128 scales
  Fp8Activation shared_gu_fp8;   // fp8_cache: shared_gu likewise
  Routing routing;               // MoE: idx / weight [T, K], affinity [T, N_r]
  std::vector<int64_t> offset;   // MoE: [N_r + 1] row range of each expert in the dispatched order
  std::vector<int64_t> slot_of;  // MoE: [T·K] dispatched row → flat (token, slot) index t·K + k
  std::vector<int64_t> count;    // MoE: [N_r] tokens routed to each expert
  Tensor balance_coeff;          // MoE with α > 0: [B, N_r] ∂L_bal/∂s' per sequence
  double balance_loss = 0.0;     // MoE with α > 0: this layer's α-weighted balance loss
  // stash of backward_input (freed by backward_weight)
  Tensor dy;                     // [T, D]
  Tensor u, du;                  // [T, D] post_attention_layernorm output (recomputed) and its gradient
  Tensor act, dgu;               // dense / routed experts: [rows, I], [rows, 2I]
  Tensor xin, dys;               // MoE: [T·K, D] dispatched expert inputs; gate-weighted output gradients
  Fp8Activation u_fp8;           // fp8_cache: u as E4M3 1×128 tiles (then u and xin are not stashed)
  Tensor router_dw;              // fp8_cache MoE: [N_r, D] dzᵀ·u, formed while the exact u is at hand
  Tensor shared_act, shared_dgu; // MoE shared expert
  Tensor dz;                     // MoE: [T, N_r] gradient of the router logits
  void free_stash();
};
Tensor ffn_forward(const BlockContext& ctx, const LayerWeights& W, const Tensor& x, FfnState& st);
Tensor ffn_backward_input(const BlockContext& ctx, const LayerWeights& W, FfnState& st, const Tensor& dy);
void ffn_backward_weight(const BlockContext& ctx, const LayerWeights& W, FfnState& st, LayerWeights& G);

// ---- Decoder layer = attention block then FFN block -------------------------------------------------------------
struct LayerState {
  AttnState attn;
  FfnState ffn;
};
Tensor layer_forward(const BlockContext& ctx, const LayerWeights& W, const Tensor& x, LayerState& st);
Tensor layer_backward_input(const BlockContext& ctx, const LayerWeights& W, LayerState& st, const Tensor& dy);
void layer_backward_weight(const BlockContext& ctx, const LayerWeights& W, LayerState& st, LayerWeights& G);

}  // namespace dsv3::train
