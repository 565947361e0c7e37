// RunConfig: one training run's recipe, parsed once from run.json (+ command-line overrides) into typed,
// validated fields. The resolved config is printed at start, saved as RUN/run_config.json and stored in
// every checkpoint's trainer state. Unknown fields are errors (a typo must not silently fall back to a default).
// Example recipes: configs/train/*.json; field reference: docs/training.md "Run config".
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/lr_schedule.h"

namespace dsv3::train {

struct SpikeGuard {
  double factor = 4.0;     // loss > factor × running median → roll back to the last checkpoint (0: off)
  int64_t window = 64;     // steps in the running median
  int64_t min_steps = 16;  // the guard is armed once the window holds this many losses
  int64_t max_rollbacks = 3;  // then the run stops with an error
};

// Measured GEMM peaks of the 2-core development machine (oneDNN sgemm F32, oneDNN matmul BF16; BENCHMARKS.md).
inline constexpr double kPeakGflopsF32 = 213.0;
inline constexpr double kPeakGflopsBF16 = 418.0;

struct RunConfig {
  // Model: a config.json path, a built-in name (configs/NAME.json), or a model directory to continue from
  // (its weights are the initial weights).
  std::string model = "tiny";
  uint64_t init_seed = 0;
  double init_std = 0.006;  // paper §7
  std::string tokenizer;    // optional tokenizer.json path (or dir): copied into checkpoints, used for samples

  // Data: "synthetic" or a data directory for the shard loader (split "train"; eval uses split "val").
  std::string data = "synthetic";
  uint64_t data_seed = 0;

  int64_t batch = 8;       // B sequences per micro-batch
  int64_t seq = 64;        // S tokens per sequence
  int64_t grad_accum = 1;  // micro-batches per optimizer step
  int64_t steps = 100;

  LrSchedule lr;
  double adam_beta1 = 0.9, adam_beta2 = 0.95, adam_eps = 1e-8, weight_decay = 0.1;
  std::string moments = "f32";  // f32 | bf16
  double clip = 1.0;            // global grad-norm clip (0: off)
  PiecewiseConstant mtp_lambda = PiecewiseConstant::constant(0.3);
  double balance_alpha = 1e-4;
  PiecewiseConstant bias_gamma = PiecewiseConstant::constant(0.001);

  int64_t eval_every = 0;    // steps between validation evaluations (0: off)
  int64_t eval_batches = 4;
  int64_t checkpoint_every = 0;  // steps between checkpoints (0: only at the end)
  int64_t keep_last = 3;         // checkpoints kept (older ones are deleted)
  std::string checkpoint_dtype = "f32";  // f32 | bf16 | fp8 (bf16/fp8: F32 master weights also go into trainer_state)
  int64_t log_every = 1;
  int64_t maxvio_window = 20;  // steps summed for the running-window MaxVio
  // Linear GEMMs (train/linear.h): "bf16" (BF16 operands, F32 accumulation, F32 master weights), "f32", or "fp8"
  // (emulated E4M3 with the V3 tiling; lm_head BF16).
  std::string precision = "bf16";
  // precision fp8 only: keep the FFN SwiGLU inputs for the backward as E4M3 codes with 1×128 tile scales instead
  // of F32 (V3 recipe, paper §3.3.3; train/blocks.h). Changes no saved state.
  bool fp8_cache_activations = false;
  // MFU denominator in GFLOP/s; 0: the measured GEMM peak of the development machine for `precision`
  // (kPeakGflopsF32 / kPeakGflopsBF16 — also for fp8, emulated on the BF16 units; BENCHMARKS.md).
  double peak_gflops = 0.0;
  double effective_peak_gflops() const;

  std::vector<nlohmann::json> sample_prompts;  // strings (need a tokenizer) or arrays of token ids
  int64_t sample_tokens = 16;  // greedy tokens generated per prompt at each checkpoint (0: no samples)

  SpikeGuard spike;
  std::string out = "runs/run";  // the run directory

  static RunConfig from_json(const nlohmann::json& j);  // validates; unknown fields are errors
  nlohmann::json to_json() const;                      // round-trips through from_json
  void validate() const;
};

// The model config a RunConfig names: a file, a model dir, or a built-in configs/NAME.json under source_dir.
ModelConfig resolve_model_config(const std::string& spec, const std::string& source_dir);
// True when `spec` is a directory holding model weights (config.json + safetensors) to start from.
bool is_model_dir(const std::string& spec);

}  // namespace dsv3::train
