// Options shared by the commands that run the inference engine (generate, chat, serve): the resident weight
// format, the lm_head format and the KV-cache row type.
//   --weights auto|f32|bf16|fp8   auto keeps the checkpoint's format (BF16 → BF16, FP8 → codes + block scales)
//   --lm-head auto|bf16|fp8       fp8 re-holds lm_head in 128×128 FP8 blocks after loading (opt-in)
//   --kv-cache auto|f32|bf16      auto: BF16 rows for BF16 / FP8 weights, F32 for F32 weights
#pragma once
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "infer/engine.h"
#include "infer/infer_weights.h"

namespace dsv3::cli {

struct InferOptions {
  std::string weights = "auto", lm_head = "auto", kv_cache = "auto";
};

void add_infer_options(CLI::App* cmd, InferOptions& o);
// --weights as a resident format (nullopt: auto, as stored).
std::optional<DType> weight_dtype(const InferOptions& o);
// --lm-head: re-holds w.lm_head in that format (auto: leaves it).
void apply_lm_head(infer::InferWeights& w, const InferOptions& o);
// Loads DIR's main layers in the --weights format and applies --lm-head.
infer::InferWeights load_infer_weights(const std::string& dir, const InferOptions& o);
// --kv-cache resolved for these weights (infer::kv_cache_dtype).
DType kv_dtype(const InferOptions& o, const infer::InferWeights& w);
// "weights BF16, lm_head BF16, KV cache BF16 (4608 bytes/token)" for the start-up line.
std::string describe_runtime(const infer::InferWeights& w, const infer::KvCacheConfig& kv);

}  // namespace dsv3::cli
