// Builds the tensor-name table from a config (see tensor_names.h).
#include "model/tensor_names.h"

namespace dsv3 {

std::string layer_prefix(int64_t layer) { return "model.layers." + std::to_string(layer) + "."; }

std::vector<TensorSpec> weight_specs(const ModelConfig& c) {
  std::vector<TensorSpec> s;
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, D}, TensorRole::kEmbedding});
  s.push_back({"model.norm.weight", {D}, TensorRole::kNorm});
  s.push_back({"lm_head.weight", {c.vocab_size, D}, TensorRole::kHead});
  for (int64_t l = 0; l < c.n_layers_total(); ++l) {
    const std::string p = layer_prefix(l);
    const bool mtp = l >= c.num_hidden_layers;
    auto add = [&](const std::string& n, Shape sh, TensorRole r, int64_t e = -1) {
      s.push_back({p + n, std::move(sh), r, l, e});
    };
    if (mtp) {
      add("enorm.weight", {D}, TensorRole::kNorm);
      add("hnorm.weight", {D}, TensorRole::kNorm);
      add("eh_proj.weight", {D, 2 * D}, TensorRole::kEhProj);
      add("shared_head.norm.weight", {D}, TensorRole::kNorm);
      add("embed_tokens.weight", {c.vocab_size, D}, TensorRole::kMtpCopy);
      add("shared_head.head.weight", {c.vocab_size, D}, TensorRole::kMtpCopy);
    }
    add("input_layernorm.weight", {D}, TensorRole::kNorm);
    if (c.q_lora_rank > 0) {
      add("self_attn.q_a_proj.weight", {c.q_lora_rank, D}, TensorRole::kLinear);
      add("self_attn.q_a_layernorm.weight", {c.q_lora_rank}, TensorRole::kNorm);
      add("self_attn.q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank}, TensorRole::kLinear);
    } else {
      add("self_attn.q_proj.weight", {H * c.qk_head_dim(), D}, TensorRole::kLinear);
    }
    add("self_attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, D}, TensorRole::kLinear);
    add("self_attn.kv_a_layernorm.weight", {c.kv_lora_rank}, TensorRole::kNorm);
    add("self_attn.kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, TensorRole::kLinear);
    add("self_attn.o_proj.weight", {D, H * c.v_head_dim}, TensorRole::kLinear);
    add("post_attention_layernorm.weight", {D}, TensorRole::kNorm);
    if (c.is_moe_layer(l)) {
      const int64_t I = c.moe_intermediate_size;
      add("mlp.gate.weight", {c.n_routed_experts, D}, TensorRole::kRouter);
      add("mlp.gate.e_score_correction_bias", {c.n_routed_experts}, TensorRole::kRouterBias);
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const std::string ep = "mlp.experts." + std::to_string(e) + ".";
        add(ep + "gate_proj.weight", {I, D}, TensorRole::kLinear, e);
        add(ep + "up_proj.weight", {I, D}, TensorRole::kLinear, e);
        add(ep + "down_proj.weight", {D, I}, TensorRole::kLinear, e);
      }
      if (c.n_shared_experts > 0) {
        const int64_t Is = I * c.n_shared_experts;
        add("mlp.shared_experts.gate_proj.weight", {Is, D}, TensorRole::kLinear);
        add("mlp.shared_experts.up_proj.weight", {Is, D}, TensorRole::kLinear);
        add("mlp.shared_experts.down_proj.weight", {D, Is}, TensorRole::kLinear);
      }
    } else {
      const int64_t I = c.intermediate_size;
      add("mlp.gate_proj.weight", {I, D}, TensorRole::kLinear);
      add("mlp.up_proj.weight", {I, D}, TensorRole::kLinear);
      add("mlp.down_proj.weight", {D, I}, TensorRole::kLinear);
    }
  }
  return s;
}

}  // namespace dsv3
