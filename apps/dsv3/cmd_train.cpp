// dsv3 train: run (or resume) a training run described by a run config (train/run_config.h) with flags
// overriding its fields. The resolved config is printed and saved as RUN/run_config.json; progress goes to
// stdout, metrics to RUN/metrics.jsonl, checkpoints to RUN/checkpoints/ (docs/training.md "The trainer").
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "dsv3/error.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace dsv3::cli {

namespace fs = std::filesystem;
using nlohmann::json;

static void register_train(CLI::App& root) {
  auto* cmd = root.add_subcommand("train", "Train a model (AdamW, schedules, checkpoints, resume)");
  struct Opts {
    std::string config, resume, out, model, data, moments, checkpoint_dtype, tokenizer, precision;
    std::optional<int64_t> steps, batch, seq, grad_accum, eval_every, checkpoint_every, keep_last;
    std::optional<uint64_t> init_seed;
    std::optional<double> lr, peak_gflops;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--config", o->config, "run config JSON (configs/train/*.json); fields below override it");
  cmd->add_option("--resume", o->resume,
                  "continue from a run directory's latest checkpoint, a checkpoint directory, or 'latest' (= --out); "
                  "without --config the run config stored in the checkpoint is used");
  cmd->add_option("--out", o->out, "run directory");
  cmd->add_option("--model-config,--model", o->model,
                  "model: config.json path, built-in name (tiny, small, ...) or a model directory to start from");
  cmd->add_option("--data", o->data, "\"synthetic\" or a data directory");
  cmd->add_option("--steps", o->steps, "optimizer steps");
  cmd->add_option("--batch", o->batch, "sequences per micro-batch (B)");
  cmd->add_option("--seq", o->seq, "tokens per sequence (S)");
  cmd->add_option("--grad-accum", o->grad_accum, "micro-batches per optimizer step");
  cmd->add_option("--lr", o->lr, "peak learning rate (lr.peak)");
  cmd->add_option("--eval-every", o->eval_every, "steps between validation evaluations (0: off)");
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "steps between checkpoints (0: only at the end)");
  cmd->add_option("--keep-last", o->keep_last, "checkpoints to keep");
  cmd->add_option("--init-seed", o->init_seed, "weight init seed");
  cmd->add_option("--moments", o->moments, "AdamW moment storage")->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--checkpoint-dtype", o->checkpoint_dtype,
                  "checkpoint weight storage (fp8: DeepSeek-V3's FP8 format, E4M3 + 128x128 weight_scale_inv; the F32 "
                  "master weights go into the trainer state either way)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}));
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer.json (copied into checkpoints; text sample prompts)");
  cmd->add_option("--peak-gflops", o->peak_gflops,
                  "machine peak GFLOP/s for MFU (default: the measured GEMM peak for the precision)");
  cmd->add_option("--precision", o->precision,
                  "Linear GEMM precision: bf16 (default), f32, or fp8 (emulated E4M3, the V3 tiling; F32 master weights "
                  "in every case)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}));
  cmd->add_flag("--quiet", o->quiet, "no progress lines");
  cmd->callback([o] {
    json j = json::object();
    std::string resume = o->resume;
    if (!o->config.empty()) {
      std::ifstream f(o->config);
      DSV3_CHECK(f.good(), "cannot read run config '", o->config, "'");
      try {
        j = json::parse(f);
      } catch (const std::exception& e) {
        DSV3_FAIL("run config '", o->config, "' is not valid JSON: ", e.what());
      }
    }
    if (resume == "latest") {
      std::string out = o->out.empty() ? j.value("out", std::string()) : o->out;
      DSV3_CHECK(!out.empty(), "--resume latest needs --out or a run config with \"out\"");
      resume = out;
    }
    if (!resume.empty() && o->config.empty()) {
      // The run config stored with the checkpoint.
      const std::string ck = train::resolve_checkpoint(resume);
      auto st = io::SafetensorsFile::open((fs::path(ck) / "trainer_state.safetensors").string());
      auto it = st->metadata().find("trainer_state");
      DSV3_CHECK(it != st->metadata().end(), "checkpoint '", ck, "' has no trainer state metadata");
      j = json::parse(it->second).at("run_config");
    }
    if (!o->out.empty()) j["out"] = o->out;
    if (!o->model.empty()) j["model"] = o->model;
    if (!o->data.empty()) j["data"] = o->data;
    if (!o->tokenizer.empty()) j["tokenizer"] = o->tokenizer;
    if (o->steps) j["steps"] = *o->steps;
    if (o->batch) j["batch"] = *o->batch;
    if (o->seq) j["seq"] = *o->seq;
    if (o->grad_accum) j["grad_accum"] = *o->grad_accum;
    if (o->eval_every) j["eval_every"] = *o->eval_every;
    if (o->checkpoint_every) j["checkpoint_every"] = *o->checkpoint_every;
    if (o->keep_last) j["keep_last"] = *o->keep_last;
    if (o->init_seed) j["init_seed"] = *o->init_seed;
    if (o->peak_gflops) j["peak_gflops"] = *o->peak_gflops;
    if (!o->precision.empty()) j["precision"] = o->precision;
    if (o->lr) {
      if (!j.contains("lr")) j["lr"] = json::object();
      j["lr"]["peak"] = *o->lr;
    }
    if (!o->moments.empty()) {
      if (!j.contains("adam")) j["adam"] = json::object();
      j["adam"]["moments"] = o->moments;
    }
    if (!o->checkpoint_dtype.empty()) j["checkpoint_dtype"] = o->checkpoint_dtype;
    train::RunConfig cfg = train::RunConfig::from_json(j);
    train::TrainerOptions topt;
    topt.config_dir = DSV3_SOURCE_DIR;
    topt.resume = resume;
    topt.quiet = o->quiet;
    train::Trainer trainer(cfg, topt);
    trainer.run();
    std::printf("done: %lld steps, run directory %s\n", (long long)trainer.steps_done(), cfg.out.c_str());
  });
}

DSV3_REGISTER_COMMAND(register_train);

}  // namespace dsv3::cli
