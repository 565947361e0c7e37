// ModelConfig: a DeepSeek-V3 config.json parsed once into typed, validated fields with the Hugging Face
// names (V3_SPEC.md §1). Nothing is inferred from sizes. Also accepts the transformers 5.x spellings
// (rope_parameters, num_local_experts, num_mtp_layers, rope_interleave).
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace dsv3 {

struct RopeScaling {
  std::string type = "yarn";
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct QuantizationConfig {
  std::string quant_method = "fp8";
  std::string fmt = "e4m3";
  std::string activation_scheme = "dynamic";
  int64_t block_out = 128, block_in = 128;  // weight_block_size
  std::optional<std::string> scale_fmt;      // "ue8m0" for V3.1 power-of-two scales
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;             // D
  int64_t intermediate_size = 0;       // dense MLP width
  int64_t moe_intermediate_size = 0;   // width of each routed expert and of each shared expert
  int64_t num_hidden_layers = 0;       // L
  int64_t num_nextn_predict_layers = 0;  // MTP depth
  int64_t num_attention_heads = 0;     // H
  int64_t num_key_value_heads = 0;     // unused by MLA math
  int64_t n_shared_experts = 0;
  int64_t n_routed_experts = 0;
  double routed_scaling_factor = 1.0;
  int64_t kv_lora_rank = 0;            // d_c
  int64_t q_lora_rank = 0;             // d_q; 0 = no query compression (HF null)
  int64_t qk_rope_head_dim = 0;        // d_r
  int64_t qk_nope_head_dim = 0;        // d_n
  int64_t v_head_dim = 0;              // d_v
  std::string topk_method = "noaux_tc";
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t num_experts_per_tok = 0;     // K_r
  int64_t moe_layer_freq = 1;
  int64_t first_k_dense_replace = 0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "bfloat16";
  std::optional<QuantizationConfig> quantization_config;
  nlohmann::json raw;  // the parsed file, kept so unknown keys survive a re-save

  // ---- derived ----
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const { return n_routed_experts > 0 && layer >= first_k_dense_replace; }
  int64_t n_layers_total() const { return num_hidden_layers + num_nextn_predict_layers; }
  int64_t experts_per_group() const { return n_routed_experts / n_group; }
  // σ = qk_head_dim^-1/2 · m², m = 0.1·mscale_all_dim·ln(factor) + 1 for YaRN with factor > 1 (§4.1).
  double softmax_scale() const;
  // Inverse frequencies f'_j (j < d_r/2) with the YaRN ramp (§4.3), and the cos/sin multiplier.
  std::vector<double> rope_inv_freq() const;
  double rope_cos_sin_scale() const;

  static ModelConfig from_json(const nlohmann::json& j);  // validates; throws dsv3::Error naming the field
  static ModelConfig load(const std::string& path);       // config.json file or a model directory
  nlohmann::json to_json() const;                         // HF config.json form
  void validate() const;
};

}  // namespace dsv3
