// Checkpoint interoperability: a checkpoint written by `dsv3 train` is a Hugging Face DeepSeek-V3 directory that
// another implementation reads as it is. `dsv3 train` runs a few steps (so the weights and the router's
// e_score_correction_bias are no longer the initial ones), `dsv3 forward` computes logits and MTP logits from the
// checkpoint, and reference/interop_logits.py — the float64 PyTorch model with its own strict safetensors
// loader, which also checks what transformers' from_pretrained reads (config identity keys, generation config,
// format=pt metadata) — computes them from the same files. Both F32 and BF16 checkpoints.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "../trainer/trainer_test_util.h"
#include "core/tensor.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"

using namespace dsv3;
using namespace dsv3::train::testing;
namespace fs = std::filesystem;

namespace {

struct Compared {
  double max_abs_diff = 0, max_abs_ref = 0;
};

Compared compare(const Tensor& got, const Tensor& ref) {
  EXPECT_EQ(got.shape, ref.shape);
  Compared c;
  if (got.shape != ref.shape) return c;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    c.max_abs_diff = std::max(c.max_abs_diff, double(std::fabs(got.f32()[i] - ref.f32()[i])));
    c.max_abs_ref = std::max(c.max_abs_ref, double(std::fabs(ref.f32()[i])));
  }
  return c;
}

void check_checkpoint_dtype(const std::string& dtype) {
  const std::string dir = fresh_dir("interop_" + dtype);
  fs::create_directories(dir);
  const std::string cfg = dir + "/run.json";
  std::ofstream(cfg) << R"({"model": "tiny", "batch": 4, "seq": 16, "steps": 4, "sample_tokens": 0,
                          "lr": {"kind": "cosine", "peak": 0.01, "min": 0.001, "warmup_steps": 1},
                          "bias_gamma": 0.01, "checkpoint_dtype": ")"
                     << dtype << R"("})";
  const std::string log = dir + "/train.log";
  ASSERT_EQ(run_wait({dsv3_bin(), "train", "--config", cfg, "--out", dir + "/run", "--quiet"}, log), 0)
      << slurp(log);
  const std::string ckpt = train::resolve_checkpoint(dir + "/run");

  // Stored as asked: FP8 checkpoints hold E4M3 codes with a 128x128 weight_scale_inv for q_a_proj (and the rest of
  // V3's FP8 set); the router bias stays F32 in every format.
  const io::SafetensorsModel st = io::SafetensorsModel::open(ckpt);
  const std::string q_a = "model.layers.0.self_attn.q_a_proj.weight";
  const DType want = dtype == "fp8" ? DType::F8_E4M3 : dtype == "bf16" ? DType::BF16 : DType::F32;
  EXPECT_EQ(st.info(q_a).dtype, want);
  EXPECT_EQ(st.has(q_a + "_scale_inv"), dtype == "fp8");
  EXPECT_EQ(st.info("model.layers.1.mlp.gate.e_score_correction_bias").dtype, DType::F32);

  // The router bias moved: the checkpoint is a trained one, not the initial weights.
  const ModelWeights w = ModelWeights::load(ckpt);
  bool bias_moved = false;
  for (const auto& [name, t] : w.by_name)
    if (name.find("e_score_correction_bias") != std::string::npos)
      for (int64_t i = 0; i < t.numel(); ++i) bias_moved |= t.f32()[i] != 0.0f;
  EXPECT_TRUE(bias_moved);

  const std::string tokens = "1,7,42,3,99,250,17,5,64,128,31,2,200,77,9,150";
  const std::string ours = dir + "/ours", theirs = dir + "/theirs";
  fs::create_directories(ours);
  ASSERT_EQ(run_wait({dsv3_bin(), "forward", "--model", ckpt, "--tokens", tokens, "--logits", ours + "/logits.npy",
                      "--mtp-logits", ours + "/mtp_logits.npy"},
                     dir + "/forward.log"),
            0)
      << slurp(dir + "/forward.log");
  const std::string py = std::string("/usr/bin/python3 ") + DSV3_SOURCE_DIR + "/reference/interop_logits.py " +
                         ckpt + " --tokens " + tokens + " --out " + theirs + " > " + dir + "/ref.log 2>&1";
  ASSERT_EQ(std::system(py.c_str()), 0) << slurp(dir + "/ref.log");

  for (const char* name : {"logits.npy", "mtp_logits.npy"}) {
    const Compared c = compare(io::read_npy(ours + "/" + name), io::read_npy(theirs + "/" + name));
    ASSERT_GT(c.max_abs_ref, 0.0) << name;
    EXPECT_LE(c.max_abs_diff, 1e-4 * c.max_abs_ref) << dtype << " checkpoint, " << name << ": max |Δ| "
                                                    << c.max_abs_diff << " vs max |ref| " << c.max_abs_ref;
  }
  fs::remove_all(dir);
}

}  // namespace

TEST(CheckpointInterop, F32CheckpointSameLogitsInPyTorch) { check_checkpoint_dtype("f32"); }
TEST(CheckpointInterop, Bf16CheckpointSameLogitsInPyTorch) { check_checkpoint_dtype("bf16"); }
TEST(CheckpointInterop, Fp8CheckpointSameLogitsInPyTorch) { check_checkpoint_dtype("fp8"); }
