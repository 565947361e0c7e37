// The one table of Hugging Face DeepSeek-V3 tensor names and shapes (V3_SPEC.md §6.1), derived from a
// ModelConfig. Init, loading, saving, conversion and `dsv3 plan` all walk this list.
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace dsv3 {

enum class TensorRole {
  kEmbedding,   // model.embed_tokens.weight
  kHead,        // lm_head.weight
  kNorm,        // every RMSNorm weight
  kLinear,      // projections V3 stores in FP8 (q_a, q_b/q, kv_a, kv_b, o, gate/up/down of dense, shared, routed)
  kRouter,      // mlp.gate.weight (BF16 in the real checkpoint)
  kRouterBias,  // mlp.gate.e_score_correction_bias (F32, not trained by the optimizer)
  kEhProj,      // MTP eh_proj (BF16 in the real checkpoint)
  kMtpCopy,     // MTP layer's copies of embed_tokens / lm_head (written for compatibility, never read)
};

struct TensorSpec {
  std::string name;
  Shape shape;
  TensorRole role;
  int64_t layer = -1;   // decoder layer index (MTP layers are num_hidden_layers + k - 1), -1 for top level
  int64_t expert = -1;  // routed expert index, -1 otherwise
};

// Every tensor of the checkpoint in a stable order (top level, then layers 0.., MTP layers last).
std::vector<TensorSpec> weight_specs(const ModelConfig& c);
// Whether a tensor of this role is stored as FP8 (+ weight_scale_inv) in the real V3 checkpoint format.
inline bool role_is_fp8(TensorRole r) { return r == TensorRole::kLinear; }
std::string layer_prefix(int64_t layer);  // "model.layers.{l}."

}  // namespace dsv3
