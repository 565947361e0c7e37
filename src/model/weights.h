// ModelWeights: every parameter of a DeepSeek-V3 model, owned by name (HF tensor names) and also reachable
// through typed per-layer structs that share the same storage. Compute copies are F32: BF16 and FP8
// (+ weight_scale_inv) checkpoints are dequantized exactly on load (V3_SPEC.md §6.2).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/tensor_names.h"

namespace dsv3 {

struct MlpWeights {
  Tensor gate, up;  // [I, D]
  Tensor down;      // [D, I]
};

struct AttnWeights {
  Tensor q_a;        // [d_q, D]            (q_lora_rank > 0)
  Tensor q_a_norm;   // [d_q]
  Tensor q_b;        // [H*(d_n+d_r), d_q]
  Tensor q;          // [H*(d_n+d_r), D]    (q_lora_rank == 0)
  Tensor kv_a;       // [d_c + d_r, D]
  Tensor kv_a_norm;  // [d_c]
  Tensor kv_b;       // [H*(d_n+d_v), d_c]
  Tensor o;          // [D, H*d_v]
};

struct LayerWeights {
  int64_t index = 0;
  bool moe = false;
  bool mtp = false;
  Tensor attn_norm, ffn_norm;  // [D]
  AttnWeights attn;
  MlpWeights mlp;              // dense layers
  Tensor router;               // [N_r, D]
  Tensor router_bias;          // [N_r] e_score_correction_bias (selection only)
  std::vector<MlpWeights> experts;
  bool has_shared = false;
  MlpWeights shared;           // width n_shared * moe_intermediate
  Tensor enorm, hnorm;         // MTP: [D]
  Tensor eh_proj;              // MTP: [D, 2D]
  Tensor head_norm;            // MTP: shared_head.norm [D]
};

struct LoadOptions {
  bool load_mtp = true;  // skip MTP layers (plain decoding never runs them)
};

struct ModelWeights {
  ModelConfig cfg;
  std::map<std::string, Tensor> by_name;  // F32 parameters (MTP copies of embed/head are not stored)
  Tensor embed;                           // [V, D]
  Tensor final_norm;                      // [D]
  Tensor lm_head;                         // [V, D]
  std::vector<LayerWeights> layers;       // main layers then MTP layers

  // Reads config.json + safetensors (single, sharded, F32/BF16/F16/FP8+scale); every tensor is checked
  // against the name table (missing or misshaped tensors are named with the expected shape and dtype).
  static ModelWeights load(const std::string& dir, const LoadOptions& opt = {});
  // Random init: Linear/embedding/router ~ N(0, std²) (paper: 0.006), norms 1, router bias 0; each tensor
  // drawn from its own counter-based stream (seed, hash(name)), so values do not depend on the tensor order.
  static ModelWeights random(const ModelConfig& cfg, uint64_t seed, float std = 0.006f);
  // Writes an HF model directory (config.json + safetensors) storing weights as F32, BF16, or FP8 (the V3
  // tensor set in E4M3 + weight_scale_inv, the rest BF16, router bias F32).
  void save(const std::string& dir, DType storage, uint64_t max_shard_bytes = 5ull << 30) const;

  int64_t n_main_layers() const { return cfg.num_hidden_layers; }
  void bind();  // (re)points the typed structs at by_name
};

}  // namespace dsv3
