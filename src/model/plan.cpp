// `dsv3 plan` arithmetic (see plan.h). Counts come from the same tensor-name table the loader uses.
#include "model/plan.h"

#include <cstdio>
#include <sstream>

#include "core/fp8_block.h"
#include "model/tensor_names.h"

namespace dsv3 {

ModelPlan make_plan(const ModelConfig& c, int64_t seq_len) {
  ModelPlan p;
  p.seq_len = seq_len;
  const int64_t H = c.num_attention_heads, dqk = c.qk_head_dim(), dv = c.v_head_dim, K = c.num_experts_per_tok;
  int64_t active_matmul = 0;
  for (const TensorSpec& s : weight_specs(c)) {
    if (s.role == TensorRole::kMtpCopy) continue;
    const int64_t n = shape_numel(s.shape);
    const bool mtp = s.layer >= c.num_hidden_layers;
    (mtp ? p.mtp_params : p.total_params) += n;
    // Checkpoint bytes: F32 / BF16 everywhere (router bias stays F32), or the V3 FP8 layout.
    p.bytes_f32 += n * 4;
    p.bytes_bf16 += s.role == TensorRole::kRouterBias ? n * 4 : n * 2;
    if (role_is_fp8(s.role)) p.bytes_fp8 += n + ceil_div(s.shape[0], 128) * ceil_div(s.shape[1], 128) * 4;
    else p.bytes_fp8 += s.role == TensorRole::kRouterBias ? n * 4 : n * 2;
    if (mtp) continue;
    if (s.role == TensorRole::kEmbedding) {
      p.embedding_params += n;
      continue;
    }
    if (s.expert >= 0) p.routed_expert_params += n;
    const bool matmul = s.shape.size() == 2;
    // A routed expert is active for K/N_r of the tokens: count K experts' worth per token.
    int64_t act = n;
    if (s.expert >= 0) act = s.expert < K ? n : 0;  // K experts per layer (all experts of a layer have equal shapes)
    p.active_params += act;
    if (matmul) active_matmul += act;
  }
  // Attention core: scores (H·dqk) and weighted values (H·dv) over an average causal context of seq/2.
  const double ctx = double(seq_len) / 2.0;
  const double attn = 2.0 * double(H) * double(dqk + dv) * ctx * double(c.num_hidden_layers);
  p.flops_per_token_fwd = 2.0 * double(active_matmul) + attn;
  p.flops_per_token_train = 3.0 * p.flops_per_token_fwd;
  p.kv_cache_elems_per_token_per_layer = c.kv_lora_rank + c.qk_rope_head_dim;
  p.mha_cache_elems_per_token_per_layer = H * dqk + H * dv;
  p.kv_cache_bytes_per_token_bf16 = p.kv_cache_elems_per_token_per_layer * c.num_hidden_layers * 2;
  p.mha_cache_bytes_per_token_bf16 = p.mha_cache_elems_per_token_per_layer * c.num_hidden_layers * 2;
  return p;
}

nlohmann::json ModelPlan::to_json() const {
  return {{"total_params", total_params},
          {"mtp_params", mtp_params},
          {"active_params", active_params},
          {"embedding_params", embedding_params},
          {"routed_expert_params", routed_expert_params},
          {"flops_per_token_fwd", flops_per_token_fwd},
          {"flops_per_token_train", flops_per_token_train},
          {"seq_len", seq_len},
          {"kv_cache_elems_per_token_per_layer", kv_cache_elems_per_token_per_layer},
          {"mha_cache_elems_per_token_per_layer", mha_cache_elems_per_token_per_layer},
          {"kv_cache_bytes_per_token_bf16", kv_cache_bytes_per_token_bf16},
          {"mha_cache_bytes_per_token_bf16", mha_cache_bytes_per_token_bf16},
          {"weight_bytes", {{"f32", bytes_f32}, {"bf16", bytes_bf16}, {"fp8", bytes_fp8}}}};
}

namespace {
std::string human(double v, const char* unit) {
  const char* sfx[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (v >= 1000.0 && i < 5) v /= 1000.0, ++i;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s%s", v, sfx[i], unit);
  return buf;
}
std::string bytes(double v) {
  const char* sfx[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (v >= 1024.0 && i < 4) v /= 1024.0, ++i;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s", v, sfx[i]);
  return buf;
}
}  // namespace

std::string ModelPlan::to_text() const {
  std::ostringstream o;
  o << "parameters (main model)      " << human(double(total_params), "") << "  (" << total_params << ")\n"
    << "parameters (MTP, unique)     " << human(double(mtp_params), "") << "  (" << mtp_params << ")\n"
    << "activated per token          " << human(double(active_params), "") << "  (" << active_params
    << ", embedding lookup excluded)\n"
    << "  embedding                  " << human(double(embedding_params), "") << "\n"
    << "  routed experts (all)       " << human(double(routed_expert_params), "") << "\n"
    << "FLOPs/token forward          " << human(flops_per_token_fwd, "FLOP") << "  (attention at seq " << seq_len
    << ")\n"
    << "FLOPs/token training         " << human(flops_per_token_train, "FLOP") << "  (3 x forward)\n"
    << "KV cache / token / layer     " << kv_cache_elems_per_token_per_layer << " elems (MLA latent) vs "
    << mha_cache_elems_per_token_per_layer << " (multi-head K+V), "
    << double(mha_cache_elems_per_token_per_layer) / double(kv_cache_elems_per_token_per_layer) << "x smaller\n"
    << "KV cache / token, BF16       " << bytes(double(kv_cache_bytes_per_token_bf16)) << " (all layers) vs "
    << bytes(double(mha_cache_bytes_per_token_bf16)) << "\n"
    << "weights F32 / BF16 / FP8     " << bytes(double(bytes_f32)) << " / " << bytes(double(bytes_bf16)) << " / "
    << bytes(double(bytes_fp8)) << "\n";
  return o.str();
}

}  // namespace dsv3
