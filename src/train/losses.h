// The DeepSeek-V3 training loss (V3_SPEC.md §5.2, §7), in pieces the trainer and the tests share:
//
//   L = CE_main + λ · (1/D) Σ_{k=1..D} CE_k + L_bal
//
// * CE_main: mean over the B·(S−1) predicted positions; position i of a sequence predicts token i+1.
// * CE_k (MTP depth k): depth k row i predicts token i+k+1; a mean over its own B·(S−k−1) valid positions
//   (Megatron-style, not the paper's 1/T).
// * L_bal, the complementary sequence-wise balance loss, per MAIN-model MoE layer and per sequence b of n tokens:
//     α Σ_i f_i P_i,  f_i = N_r/(K_r·n) · #{t in b : i ∈ selected experts of t}   (a constant: no gradient)
//                     P_i = (1/n) Σ_{t in b} s_{i,t} / Σ_j s_{j,t}                 (s = sigmoid affinities)
//   The selected set is the one the router actually used (bias-corrected, group-limited); L_bal is averaged
//   over the batch's sequences and summed over main-model MoE layers (MTP layers do not take part).
// What is not here: the forward/backward of the model (train/train_model.h) and the bias update for the
// auxiliary-loss-free balancing (train/load_balance.h).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"

namespace dsv3::train {

struct LossOptions {
  double mtp_lambda = 0.3;       // λ (paper: 0.3 for the first 10T tokens, then 0.1)
  double balance_alpha = 1e-4;   // α (paper: 0.0001)
};

struct LossValues {
  double total = 0.0;
  double main_ce = 0.0;
  std::vector<double> mtp_ce;  // one per MTP depth k = 1..D
  double balance = 0.0;        // α-weighted, summed over main-model MoE layers
};

// Targets of the rows of a depth-k prediction over tokens [B, S] (k = 0: main model): rows [B, S−k], row (b, i)
// → tokens[b, i+k+1], or −1 where i+k+1 ≥ S. Returns the targets; `n_valid` gets the count of non-negative ones.
std::vector<int32_t> shifted_targets(std::span<const int32_t> tokens, int64_t B, int64_t S, int64_t k,
                                     int64_t* n_valid);

// Sequence-wise balance loss of one MoE layer over B sequences of n tokens (rows b·n + i).
// affinity [B·n, N_r] sigmoid scores; idx [B·n, K_r] selected experts. Returns the loss value (α included,
// averaged over the B sequences) and writes coeff [B, N_r] = ∂L/∂s'_{i,t} for every token t of sequence b
// (= α·f_{b,i}/(B·n)), which seq_balance_backward turns into the affinity gradient.
double seq_balance_forward(const ModelConfig& c, int64_t B, int64_t n, const float* affinity, const int32_t* idx,
                           double alpha, float* coeff);
// ds [B·n, N_r] += ∂L_bal/∂s through s'_{i,t} = s_{i,t}/Σ_j s_{j,t}:  (coeff_i − Σ_j coeff_j s'_{j,t}) / Σ_j s_{j,t}.
void seq_balance_backward(int64_t B, int64_t n, int64_t N, const float* affinity, const float* coeff, float* ds);

}  // namespace dsv3::train
