// Trainer: the training loop of a run (V3_SPEC.md §7). One optimizer step =
//   for each of grad_accum micro-batches: next [B, S] batch → TrainModel forward (loss with λ(step), α) →
//   backward (gradients accumulate);  gradients ÷ grad_accum;  global norm;
//   non-finite loss or norm → the step is skipped (logged; data and the step counter still advance);
//   loss > k × running median (spike guard) → roll back to the last checkpoint (weights, moments, router biases,
//   step; the data cursor is NOT rewound, so the offending batches are skipped) — or skip if there is none;
//   otherwise AdamW (clip folded in) → update_router_bias with the counts summed over the micro-batches, γ(step).
// Then metrics (progress line + metrics.jsonl), validation every eval_every steps, a checkpoint every
// checkpoint_every steps and at the end (with greedy sample generations).
//
// Determinism: given the run config, every number except timings is a function of the seeds; resuming from a
// checkpoint continues bit-identically (weights, moments, biases, data cursor, windows, step and token counters
// are all restored exactly; F32 master weights are always restored, even from a BF16 checkpoint).
// Run directory: run_config.json, metrics.jsonl, samples.jsonl, checkpoints/ (train/checkpoint.h).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/weights.h"
#include "train/batch_source.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/run_config.h"
#include "train/train_model.h"

namespace dsv3::train {

// The data factory: "synthetic" → SyntheticSource; a directory → the data pipeline's shard loader
// (dsv3::data::open_batch_source(dir, split, seed) from data/shard_loader.h, when that header exists).
// split: "train" or "val".
std::unique_ptr<BatchSource> make_batch_source(const RunConfig& cfg, const ModelConfig& model, const std::string& split);

struct TrainerOptions {
  std::string config_dir;  // where built-in model configs live (the source tree's configs/ parent)
  std::string resume;      // "" (fresh run), a run directory (its latest checkpoint) or a checkpoint directory
  bool quiet = false;      // no progress lines on stdout
  // Test hook: replaces the step's loss value as seen by the NaN / spike guards (not the gradients).
  std::function<double(int64_t step, double loss)> test_loss_override;
};

struct StepRecord {
  int64_t step = 0;  // steps completed after this one
  LossValues loss;
  double lr = 0, grad_norm = 0, tokens_per_s = 0, mfu = 0;
  std::vector<double> maxvio;
  double maxvio_window = 0;
  bool skipped = false, rolled_back = false;
};

class Trainer {
 public:
  Trainer(const RunConfig& cfg, const TrainerOptions& opt);
  ~Trainer();

  void run();        // steps until cfg.steps; checkpoints / evals / samples as configured
  StepRecord step(); // one optimizer step (see above)
  double evaluate(); // mean validation loss (total) over eval_batches batches of split "val"
  std::string save_checkpoint();

  const RunConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return weights_; }
  int64_t steps_done() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }

 private:
  void resume_from(const std::string& path);
  void restore_from_checkpoint(const std::string& dir, bool restore_data);
  nlohmann::json trainer_state() const;
  void write_samples();
  void log_event(const std::string& event, const std::string& detail);

  RunConfig cfg_;
  TrainerOptions topt_;
  ModelConfig mcfg_;
  ModelWeights weights_;
  ModelWeights grad_;
  std::unique_ptr<TrainModel> model_;
  std::unique_ptr<AdamW> opt_;
  std::unique_ptr<BatchSource> train_src_;
  std::unique_ptr<MetricsLog> log_;
  RunningMedian loss_window_;
  MaxVioWindow maxvio_window_;
  int64_t step_ = 0;
  double tokens_ = 0;
  int64_t rollbacks_ = 0;
  int64_t last_checkpoint_step_ = -1;
  double flops_per_token_ = 0;
  std::vector<StepRecord> history_;
  TrainBatch batch_;
  std::chrono::steady_clock::time_point t_session_;
  int64_t session_steps_ = 0;
};

}  // namespace dsv3::train
