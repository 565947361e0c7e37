// The DeepSeek-V3 forward pass on CPU (V3_SPEC.md §2–5): embedding → L pre-norm decoder layers
// (MLA + dense SwiGLU or DeepSeekMoE) → final RMSNorm → lm_head, and the MTP modules on top.
// Computes in F32 over the F32 compute copies in ModelWeights. One sequence per call; tokens are ids < vocab.
#pragma once
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/weights.h"

namespace dsv3 {

// Named intermediates ("L3.kv_latent", "mtp.L4.out", ...), recorded when a Trace is passed (debug dumps, tests).
struct Trace {
  std::map<std::string, Tensor> tensors;
  void put(const std::string& name, const float* data, const Shape& shape, int64_t row_stride = -1);
  void put_i64(const std::string& name, const std::vector<int64_t>& data, const Shape& shape);
};

enum class MlaMode {
  kNaive,     // materialise per-head K/V from the latent (training form)
  kAbsorbed,  // fold W^UK into the query and W^UV after the sum, attend over the latent directly (§4.2)
};

struct ForwardOptions {
  MlaMode mla = MlaMode::kNaive;
  Trace* trace = nullptr;
};

// Router output for one MoE layer over T tokens.
struct Routing {
  int64_t T = 0, K = 0;
  std::vector<int32_t> idx;    // [T, K] selected experts (descending biased score)
  std::vector<float> weight;   // [T, K] gate weights (unbiased, normalised, × routed_scaling_factor)
  std::vector<float> affinity; // [T, N_r] sigmoid scores s_{t,i} (kept for the balance loss)
};

// Group-limited top-k selection (§3): logits z [T, N_r] → routing. Exposed for tests and the trainer.
Routing route_tokens(const ModelConfig& c, const float* logits, int64_t T, const float* bias);

class Transformer {
 public:
  explicit Transformer(const ModelWeights& w) : w_(w) {}
  const ModelConfig& config() const { return w_.cfg; }

  // Final-normed hidden states h [S, D] (the lm_head input; also the MTP input).
  Tensor hidden(std::span<const int32_t> tokens, const ForwardOptions& opt = {}) const;
  // logits [S, V] = h · lm_head^T.
  Tensor logits(const Tensor& h) const;
  // MTP depth `depth` (1-based, ≤ num_nextn_predict_layers) chained from h: logits [S - depth, V];
  // row i predicts token i + depth + 1.
  Tensor mtp_logits(const Tensor& h, std::span<const int32_t> tokens, int depth = 1,
                    const ForwardOptions& opt = {}) const;

  // One decoder layer in place on the residual stream x [S, D] at positions pos[S]; `name` prefixes traces.
  void decoder_layer(const LayerWeights& L, Tensor& x, const std::vector<int64_t>& pos, const ForwardOptions& opt,
                     const std::string& name) const;

 private:
  void mla(const LayerWeights& L, const float* a, int64_t S, const std::vector<int64_t>& pos, float* out,
           const ForwardOptions& opt, const std::string& name) const;
  void mlp(const MlpWeights& m, const float* u, int64_t T, float* out, bool accumulate) const;
  void moe(const LayerWeights& L, const float* u, int64_t T, float* out, const ForwardOptions& opt,
           const std::string& name) const;
  const LayerWeights& mtp_layer(int depth) const;

  const ModelWeights& w_;
};

}  // namespace dsv3
