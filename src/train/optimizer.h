// AdamW over the F32 master weights of a ModelWeights (V3_SPEC.md §7: β1 0.9, β2 0.95, weight decay 0.1),
// plus the global gradient norm used for clipping (1.0).
//
// One step, per trainable tensor p with gradient g (already averaged over micro-batches), step t = 1, 2, …:
//   g ← g·clip_scale                                  (clip_scale = min(1, max_norm / (‖g‖₂ + 1e-6)))
//   p ← p·(1 − lr·wd)                                 (decoupled decay, matrices only: ndim ≥ 2 —
//                                                      not norms, not biases; the embedding and head decay)
//   m ← β1·m + (1−β1)·g;   v ← β2·v + (1−β2)·g²
//   p ← p − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)
// This is PyTorch's torch.optim.AdamW. Moments are F32, or BF16 (option): loaded to F32, updated, and rounded
// to nearest-even once per step. e_score_correction_bias is never touched (it moves by update_router_bias).
// Everything is elementwise or a fixed-chunk reduction, so results do not depend on the thread count.
// Not here: the LR value (train/lr_schedule.h), the bias update, checkpointing of the state (train/checkpoint.h).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/weights.h"

namespace dsv3::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;           // not stated in the paper
  double weight_decay = 0.1;   // applied to matrices only
  bool bf16_moments = false;   // store m and v as BF16 (RNE each step)
};

// ‖g‖₂ over every trainable gradient (gradient_list order), accumulated in f64 over fixed 64K-element chunks
// summed in order: the same bits for any thread count. Non-finite gradients give a non-finite norm.
double global_grad_norm(const ModelWeights& grad);
// The clip multiplier min(1, max_norm / (norm + 1e-6)); max_norm ≤ 0 disables clipping.
double clip_scale(double norm, double max_norm);
// Whether AdamW applies weight decay to a parameter of this shape (matrices only).
inline bool decays(const Shape& s) { return s.size() >= 2; }

class AdamW {
 public:
  AdamW(const ModelWeights& w, const AdamWOptions& opt);

  // One step on every trainable parameter of w with gradients `grad` (zero_gradients layout) multiplied by
  // grad_scale (the clip multiplier, folded in here so the gradients are not rewritten).
  void step(ModelWeights& w, const ModelWeights& grad, double lr, double grad_scale);

  int64_t steps_taken() const { return t_; }
  const AdamWOptions& options() const { return opt_; }

  // Checkpoint state: ("exp_avg.<name>", m) and ("exp_avg_sq.<name>", v) in parameter order, F32 or BF16.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  // Restores from tensors by the names state_tensors() writes; checks names, shapes and moment dtype.
  void load_state(const std::map<std::string, Tensor>& tensors, int64_t steps_taken);

 private:
  struct Slot {
    std::string name;
    Tensor m, v;  // [same shape as the parameter], F32 or BF16
    bool decay = false;
  };
  AdamWOptions opt_;
  std::vector<Slot> slots_;
  int64_t t_ = 0;
};

}  // namespace dsv3::train
