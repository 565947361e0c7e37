// TrainModel: the DeepSeek-V3 training forward over a batch of B sequences × S tokens (each causal on its own,
// positions 0..S−1) with the full loss of train/losses.h, and its backward into a gradient ModelWeights.
//
//   x0 = E[t];  x_{l+1} = layer_l(x_l) (train/blocks.h);  h = RMSNorm(x_L);  logits = h W_headᵀ       (V3_SPEC §2)
//   MTP depth k = 1..D over rows i < S−k of each sequence:  u = W_eh [enorm(E[t_{i+k}]) ; hnorm(h^{k−1}_i)],
//   h^k = shared_head.norm(layer_{L+k−1}(u)), logits_k = h^k W_headᵀ                                      (§5.1)
//
// forward() returns the loss parts and keeps what backward() needs; backward() accumulates dL/dW of every
// parameter into `grad` (a zero_gradients() copy of the weights' layout). Per-block forward / backward-input /
// backward-weight entry points live in train/blocks.h; TrainModel strings them together in the plain order
// (each block's input gradient, then its weight gradient). The forward also counts tokens per expert for every
// MoE layer, MTP included (train/load_balance.h). The weights must outlive the TrainModel and stay unchanged
// between forward() and backward().
// Not here: optimizer, LR schedule, data loading, checkpoints, parallelism.
#pragma once
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "model/weights.h"
#include "train/blocks.h"
#include "train/linear.h"
#include "train/load_balance.h"
#include "train/losses.h"

namespace dsv3::train {

struct TrainBatch {
  int64_t B = 0, S = 0;
  std::vector<int32_t> tokens;  // [B, S]
};

// A gradient container with the weights' names, shapes and typed per-layer views, all zeros. It also holds a
// (never written, always zero) entry for each e_score_correction_bias so the typed views bind; gradient_list()
// leaves those out.
ModelWeights zero_gradients(const ModelWeights& w);
// (HF name, gradient) for every trainable parameter, in the checkpoint's tensor order; no correction biases.
std::vector<std::pair<std::string, Tensor>> gradient_list(const ModelWeights& grad);

class TrainModel {
 public:
  // `precision`: the Linear GEMMs (train/linear.h) — attention projections, MLPs/experts, eh_proj, lm_head.
  // `fp8_cache_activations` (kFP8 only, else an error): the FFN blocks keep their SwiGLU inputs as E4M3 1×128
  // tiles between forward and backward (BlockContext::fp8_cache, train/blocks.h).
  explicit TrainModel(const ModelWeights& w, Precision precision = Precision::kF32, bool fp8_cache_activations = false);
  Precision precision() const { return lin_.precision(); }
  bool fp8_cache_activations() const { return fp8_cache_; }

  LossValues forward(const TrainBatch& batch, const LossOptions& opt);
  // Accumulates into grad (see zero_gradients). Call once per forward.
  void backward(ModelWeights& grad);

  const Tensor& hidden() const { return h_; }               // [B·S, D] final-normed hidden
  const Tensor& logits() const { return logits_; }          // [B·S, V]
  const Tensor& mtp_logits(int depth) const;                // [B·(S−k), V]; row b·(S−k) + i predicts t[b, i+k+1]
  const LossValues& loss() const { return loss_; }
  std::vector<ExpertLoad> expert_load() const;              // every MoE layer that ran (main, then MTP)

 private:
  struct Mtp {
    explicit Mtp(BlockContext c) : ctx(std::move(c)) {}
    BlockContext ctx;
    const LayerWeights* W = nullptr;
    int64_t n = 0;            // rows per sequence (S − k)
    Tensor e, hp;             // [B·n, D] embedding rows E[t_{i+k}], previous depth's hidden rows
    Tensor cat;               // [B·n, 2D] [enorm(e) ; hnorm(hp)]
    LayerState layer;
    Tensor x_out;             // [B·n, D] decoder layer output
    Tensor h;                 // [B·n, D] shared_head.norm output (h^k)
    Tensor logits;            // [B·n, V]
    std::vector<int32_t> targets;
    int64_t n_valid = 0;
  };

  const ModelWeights& w_;
  Linear lin_;
  bool fp8_cache_ = false;
  Linear head_;  // lm_head: the run's precision, but BF16 under FP8 (the recipe keeps the output head in BF16)
  TrainBatch batch_;
  LossOptions opt_;
  LossValues loss_;
  std::optional<BlockContext> ctx_main_;  // shared by all main layers
  std::vector<const LayerWeights*> main_;
  std::vector<LayerState> states_;
  Tensor x_last_, h_, logits_;
  std::vector<int32_t> targets_;
  int64_t n_valid_ = 0;
  std::vector<Mtp> mtp_;
  bool have_forward_ = false;
};

}  // namespace dsv3::train
