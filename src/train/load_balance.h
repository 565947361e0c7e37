// Auxiliary-loss-free load balancing (V3_SPEC.md §7, paper §2.1.2): after each optimizer step, every MoE layer's
// e_score_correction_bias moves by b_i += γ·sign(mean_load − load_i) (overloaded experts down, underloaded up,
// exactly balanced ones unchanged), from the token counts of the whole step's batch. The bias only affects
// expert selection and is never touched by the optimizer. MaxVio = max_i load_i / mean_load − 1 measures the
// imbalance of the counts the update used.
// Every MoE layer that ran takes part, MTP layers included (the balance LOSS covers main-model layers only).
// Counts come from TrainModel::expert_load(); across data-parallel ranks they must be summed first.
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace dsv3::train {

// Tokens routed to each expert of one MoE layer (a token counts once per selected expert).
struct ExpertLoad {
  int64_t layer = 0;              // HF layer index (MTP layers are num_hidden_layers + k − 1)
  std::vector<int64_t> count;     // [N_r]
};

// MaxVio of one count vector (0 when no token was routed).
double max_violation(const std::vector<int64_t>& count);

// Applies the bias rule to w's router biases in place, layer by layer, and returns MaxVio per entry of `loads`
// (same order). Throws if a layer is not a loaded MoE layer or a count vector has the wrong size.
std::vector<double> update_router_bias(ModelWeights& w, const std::vector<ExpertLoad>& loads, float gamma);

}  // namespace dsv3::train
