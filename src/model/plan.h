// Model arithmetic from a config alone: parameter counts (total, MTP, activated per token), FLOPs per token,
// latent KV-cache size vs the equivalent multi-head cache, and checkpoint bytes per storage dtype.
#pragma once
#include <nlohmann/json.hpp>

#include "model/config.h"

namespace dsv3 {

struct ModelPlan {
  int64_t total_params = 0;       // main model (embedding, layers 0..L-1, final norm, lm_head; router biases included)
  int64_t mtp_params = 0;         // MTP modules, excluding their copies of the shared embedding / head
  int64_t active_params = 0;      // per token in the main model, excluding the embedding table (a lookup)
  int64_t embedding_params = 0;
  int64_t routed_expert_params = 0;
  double flops_per_token_fwd = 0;    // 2 × active matmul params + attention at the given context
  double flops_per_token_train = 0;  // 3 × forward (backward = 2 × forward)
  int64_t seq_len = 0;               // context used for the attention FLOPs (average causal length seq/2)
  int64_t kv_cache_elems_per_token_per_layer = 0;      // d_c + d_r (MLA latent + rotary key)
  int64_t mha_cache_elems_per_token_per_layer = 0;     // H·(d_n + d_r) + H·d_v (materialised K and V)
  int64_t kv_cache_bytes_per_token_bf16 = 0;           // latent cache over the main layers, BF16
  int64_t mha_cache_bytes_per_token_bf16 = 0;
  int64_t bytes_f32 = 0, bytes_bf16 = 0, bytes_fp8 = 0;  // checkpoint bytes (main + MTP unique tensors)

  nlohmann::json to_json() const;
  std::string to_text() const;
};

ModelPlan make_plan(const ModelConfig& c, int64_t seq_len = 4096);

}  // namespace dsv3
