// Decoder: the incremental DeepSeek-V3 forward pass over the paged latent cache (V3_SPEC.md §2–4, absorbed
// MLA of §4.2). One call runs a step of rows — any mix of prefill chunks (several consecutive positions of
// one sequence) and decode tokens (one position each of many sequences) — through all main layers at once:
// every projection / dense / shared-expert / lm_head GEMM runs over all rows of the step together, and the
// routed experts run as grouped GEMMs over the rows routed to each.
//
// Per layer:  a = RMSNorm(x) → q (q_a → norm → q_b, or q_proj), RoPE on q^R → kv_a → c = RMSNorm(kv[:d_c]),
//             RoPE on k^R → rows written to the cache at (seq, pos) → q̃_h = q^C_h W^UK_h → latent attention
//             over each row's cached prefix → o_h = ô_h W^UV_hᵀ → o_proj;  x += ·;  MLP/MoE on RMSNorm(x); x += ·.
//
// Batch invariance: every reduction that produces a row's numbers is independent of the other rows
// (rowwise_gemm.h for GEMMs, latent_attention.h for attention; RMSNorm, RoPE, SwiGLU, the router and the
// MoE combine are per row). Hence a row's logits are bitwise identical whatever else is in the step and in
// whatever order, and a prompt's cache is bitwise identical however it was chunked.
//
// Everything is allocated at construction for at most `max_rows` rows per step and `max_seq_len` positions;
// the exception is route_tokens (model/moe.cpp), which allocates its small per-call vectors.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "infer/infer_weights.h"
#include "infer/kv_cache.h"
#include "infer/rowwise_gemm.h"
#include "model/weights.h"

namespace dsv3::infer {

// One token of a step. Within a step, the rows of one sequence must have consecutive positions, in row
// order, starting at the sequence's current cache length; their blocks must already be reserved.
struct DecodeRow {
  int32_t seq = -1;      // KvCache sequence slot
  int64_t pos = 0;       // absolute position
  int32_t token = 0;     // input token id
  bool want_logits = false;
};

// What the last step touched, for the decode benchmark's bytes/s accounting.
struct StepStats {
  int64_t rows = 0, logit_rows = 0;
  double weight_bytes = 0;  // distinct weight bytes read by GEMMs (each routed expert used counted once)
  double kv_bytes = 0;      // cache rows read by attention (one pass), summed over rows and layers
  int64_t experts_run = 0;  // (layer, routed expert) pairs with at least one row
  double flops = 0;         // GEMM (2·M·N·K) + attention (2·(2 d_c + d_r) per head per cached row) FLOPs
};

// Precision of the latent attention (latent_attention.h): F32 operands over an F32 KV cache, or BF16 operands
// with F32 accumulation over a BF16 KV cache (KvCacheConfig::dtype; half the cache memory). Both are batch-
// and chunking-invariant; BF16 is about twice as fast in prefill and differs from F32 by BF16 rounding.
enum class AttnPrecision { kF32, kBF16 };

class Decoder {
 public:
  // F32 weights (shared, not copied), or weights in their resident format (BF16 / FP8: infer_weights.h).
  Decoder(const ModelWeights& w, int64_t max_rows, int64_t max_seq_len, AttnPrecision attn = AttnPrecision::kF32);
  Decoder(const InferWeights& w, int64_t max_rows, int64_t max_seq_len, AttnPrecision attn = AttnPrecision::kF32);
  AttnPrecision attn_precision() const { return attn_; }
  const InferWeights& weights() const { return w_; }
  const ModelConfig& config() const { return w_.cfg; }
  int64_t max_rows() const { return max_rows_; }
  int64_t max_seq_len() const { return max_seq_len_; }

  // Runs the rows, writes their latent KV rows into `cache` and advances the cache lengths. Logits of the rows
  // with want_logits go to logits [n_wanted, vocab] in row order.
  void forward(std::span<const DecodeRow> rows, KvCache& cache, float* logits);
  const StepStats& last_stats() const { return stats_; }

 private:
  void attention(const InferLayer& L, int64_t layer, int64_t R, KvCache& cache);
  void dense_mlp(const InferMlp& m, int64_t R);
  void moe(const InferLayer& L, int64_t R);
  void gemm(const GemmNT& p);
  void gemm_group(std::span<const GemmNT> p);

  InferWeights w_;  // tensors share storage with the caller's
  int64_t max_rows_, max_seq_len_;
  AttnPrecision attn_ = AttnPrecision::kF32;
  StepStats stats_;

  std::vector<double> inv_freq_;  // YaRN RoPE frequencies f'_j

  // Workspace, R = max_rows.
  Tensor x_, a_, f_;             // [R, D] residual, normed input, sublayer output
  Tensor cq_, q_, kv_;           // [R, d_q], [R, H(d_n+d_r)], [R, d_c+d_r]
  Tensor q_lat_, o_lat_, o_;     // [R, H, d_c + d_r] [q̃ ; q^R], [R, H, d_c] ô, [R, H d_v]
  Tensor gu_;                    // [R, 2 I] dense gate|up, or shared expert gate|up
  Tensor z_;                     // [R, N_r] router logits
  Tensor x_exp_, gu_exp_, y_exp_;  // [R K, D], [R K, 2 I_moe], [R K, D] routed rows
  Tensor h_;                     // [R, D] final-normed rows that want logits
  std::vector<uint16_t> q_bf16_;  // [R, H, padded d_c + d_r] queries rounded to BF16 (BF16 attention)
  Tensor attn_scratch_;          // per thread [head group, max_seq_len]
  int64_t scratch_per_thread_ = 0;
  std::vector<int64_t> pos_;     // [R]
  std::vector<int32_t> seq_;     // [R]
  std::vector<int64_t> next_pos_;  // per cache sequence: next position expected in this step
  std::vector<int64_t> count_, offset_, fill_, slot_of_, pos_of_;  // MoE dispatch
  std::vector<GemmNT> problems_;
};

}  // namespace dsv3::infer
