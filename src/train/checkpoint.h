// Training checkpoints: RUN/checkpoints/step-000123/ is a Hugging Face model directory (ModelWeights::save:
// config.json + model.safetensors, F32 by default or BF16; generation_config.json with bos/eos; the run's
// tokenizer.json / tokenizer_config.json when it names a tokenizer) plus trainer_state.safetensors:
//   exp_avg.<param>, exp_avg_sq.<param>   AdamW moments (F32 or BF16, as the run keeps them)
//   master.<param>                        the F32 master weights, only when the weights are stored as BF16
//   __metadata__ {"format": "dsv3-trainer-state", "trainer_state": JSON}
//     trainer_state: step, tokens, rng, data-source state + fingerprint, running windows, the run config.
//
// Crash safety: everything is written into RUN/checkpoints/.tmp-step-000123-<pid>/ (each file fsynced), the
// directory is fsynced and renamed to its final name, the parent fsynced, and only then the `latest` pointer
// file (one line: the directory name) is replaced atomically. A crash or a full disk at any point leaves every
// earlier checkpoint and `latest` intact; a leftover .tmp-* directory is ignored and removed by the next write.
// keep_last: after a successful write only the newest keep_last complete checkpoints are kept.
//
// Fault-injection hook for tests: with DSV3_TEST_KILL_DURING_CHECKPOINT=<step> in the environment, the writer of
// that step's checkpoint stops half way (weights written, trainer state not) after creating
// RUN/checkpoints/.paused_in_checkpoint, and sleeps until killed.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/weights.h"
#include "train/optimizer.h"

namespace dsv3::train {

struct CheckpointWriteOptions {
  DType weights_dtype = DType::F32;  // F32 or BF16
  std::string tokenizer;             // tokenizer.json path or a directory holding it ("" = none)
  int64_t keep_last = 3;
};

std::string checkpoint_name(int64_t step);  // "step-000123"
std::string checkpoints_dir(const std::string& run_dir);  // RUN/checkpoints

// Writes the checkpoint of `step` (steps completed) as described above and returns its directory.
// Throws dsv3::Error (naming the step and the cause, e.g. "No space left on device") with earlier checkpoints
// untouched.
std::string write_checkpoint(const std::string& run_dir, int64_t step, const ModelWeights& w, const AdamW& opt,
                             const nlohmann::json& trainer_state, const CheckpointWriteOptions& o);

// Complete checkpoints of a run (directories step-* holding trainer_state.safetensors), oldest first.
std::vector<std::string> list_checkpoints(const std::string& run_dir);
// A checkpoint directory from `path`: a checkpoint directory itself, or a run directory (its `latest`, or
// the newest complete checkpoint when `latest` is missing or stale). Throws if there is none.
std::string resolve_checkpoint(const std::string& path);

struct LoadedCheckpoint {
  std::string dir;
  ModelWeights weights;                         // F32 master weights
  std::map<std::string, Tensor> optimizer;      // exp_avg.* / exp_avg_sq.* (owned copies)
  nlohmann::json trainer_state;
};
LoadedCheckpoint read_checkpoint(const std::string& dir);

}  // namespace dsv3::train
