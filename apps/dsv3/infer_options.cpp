// Shared inference options (infer_options.h).
#include "infer_options.h"

#include <optional>

#include "dsv3/error.h"
#include "infer/kv_cache.h"

namespace dsv3::cli {

void add_infer_options(CLI::App* cmd, InferOptions& o) {
  cmd->add_option("--weights", o.weights, "resident weight format: auto (as stored), f32, bf16, fp8")
      ->check(CLI::IsMember({"auto", "f32", "bf16", "fp8"}))
      ->capture_default_str();
  cmd->add_option("--lm-head", o.lm_head, "lm_head format: auto (as loaded), bf16, fp8 (128x128 blocks)")
      ->check(CLI::IsMember({"auto", "bf16", "fp8"}))
      ->capture_default_str();
  cmd->add_option("--kv-cache", o.kv_cache,
                  "KV-cache rows: auto (bf16 for BF16/FP8 weights, else f32), f32, bf16 (half the bytes, BF16 "
                  "latent attention)")
      ->check(CLI::IsMember({"auto", "f32", "bf16"}))
      ->capture_default_str();
}

infer::InferWeights load_infer_weights(const std::string& dir, const InferOptions& o) {
  std::optional<DType> want;
  if (o.weights == "f32") want = DType::F32;
  else if (o.weights == "bf16") want = DType::BF16;
  else if (o.weights == "fp8") want = DType::F8_E4M3;
  else DSV3_CHECK(o.weights == "auto", "--weights must be auto, f32, bf16 or fp8, got \"", o.weights, "\"");
  infer::InferWeights w = infer::InferWeights::load(dir, want);
  if (o.lm_head == "bf16") w.set_lm_head_format(DType::BF16);
  else if (o.lm_head == "fp8") w.set_lm_head_format(DType::F8_E4M3);
  else DSV3_CHECK(o.lm_head == "auto", "--lm-head must be auto, bf16 or fp8, got \"", o.lm_head, "\"");
  return w;
}

DType kv_dtype(const InferOptions& o, const infer::InferWeights& w) { return infer::kv_cache_dtype(o.kv_cache, w); }

std::string describe_runtime(const infer::InferWeights& w, const infer::EngineConfig& ec) {
  infer::KvCacheConfig k;
  k.n_layers = w.cfg.num_hidden_layers, k.kv_lora_rank = w.cfg.kv_lora_rank;
  k.qk_rope_head_dim = w.cfg.qk_rope_head_dim, k.dtype = ec.kv_dtype;
  return "weights " + std::string(dtype_name(w.dtype)) + ", lm_head " + std::string(dtype_name(w.lm_head.dtype)) +
         ", KV cache " + std::string(dtype_name(ec.kv_dtype)) + " (" + std::to_string(k.bytes_per_token()) +
         " bytes/token)";
}

}  // namespace dsv3::cli
