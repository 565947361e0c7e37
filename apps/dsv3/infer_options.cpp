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

std::optional<DType> weight_dtype(const InferOptions& o) {
  if (o.weights == "f32") return DType::F32;
  if (o.weights == "bf16") return DType::BF16;
  if (o.weights == "fp8") return DType::F8_E4M3;
  DSV3_CHECK(o.weights == "auto", "--weights must be auto, f32, bf16 or fp8, got \"", o.weights, "\"");
  return std::nullopt;
}

void apply_lm_head(infer::InferWeights& w, const InferOptions& o) {
  if (o.lm_head == "bf16") w.set_lm_head_format(DType::BF16);
  else if (o.lm_head == "fp8") w.set_lm_head_format(DType::F8_E4M3);
  else DSV3_CHECK(o.lm_head == "auto", "--lm-head must be auto, bf16 or fp8, got \"", o.lm_head, "\"");
}

infer::InferWeights load_infer_weights(const std::string& dir, const InferOptions& o) {
  infer::InferWeights w = infer::InferWeights::load(dir, weight_dtype(o));
  apply_lm_head(w, o);
  return w;
}

DType kv_dtype(const InferOptions& o, const infer::InferWeights& w) { return infer::kv_cache_dtype(o.kv_cache, w); }

std::string describe_runtime(const infer::InferWeights& w, const infer::KvCacheConfig& kv) {
  return "weights " + std::string(dtype_name(w.dtype)) + ", lm_head " + std::string(dtype_name(w.lm_head.dtype)) +
         ", KV cache " + std::string(dtype_name(kv.dtype)) + " (" + std::to_string(kv.bytes_per_token()) +
         " bytes/token)";
}

}  // namespace dsv3::cli
