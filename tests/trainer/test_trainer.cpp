// The trainer in process (train/trainer.h): synthetic data determinism, loss goes down, gradient accumulation
// equals one big batch, resume bit-identity (F32 and BF16 moments/checkpoints), keep-last, the NaN and spike
// guards, model-config mismatch on resume, a full disk during checkpointing, samples.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "dsv3/error.h"
#include "train/checkpoint.h"
#include "train/synthetic_source.h"
#include "train/trainer.h"
#include "trainer_test_util.h"

using namespace dsv3;
using namespace dsv3::train;
using namespace dsv3::train::testing;
namespace fs = std::filesystem;

namespace {

TrainerOptions quiet() {
  TrainerOptions o;
  o.config_dir = DSV3_SOURCE_DIR;
  o.quiet = true;
  return o;
}

}  // namespace

TEST(SyntheticSource, DeterministicAndRestorable) {
  SingleThread one_thread;
  SyntheticSource a(320, 7), b(320, 7), v(320, 7, "val");
  std::vector<int32_t> x, y, z;
  a.next(3, 20, x);
  nlohmann::json st = a.state();
  a.next(3, 20, x);
  b.restore(st);
  b.next(3, 20, y);
  EXPECT_EQ(x, y);
  v.restore(st);
  v.next(3, 20, z);
  EXPECT_NE(x, z);
  for (int32_t t : x) EXPECT_TRUE(t >= 0 && t < 320);
  EXPECT_NE(a.fingerprint(), v.fingerprint());
}

TEST(Trainer, LossDecreasesOnSyntheticData) {
  SingleThread one_thread;
  const std::string out = fresh_dir("learn");
  RunConfig c = tiny_run(out, 30);
  c.eval_every = 30;
  Trainer t(c, quiet());
  t.run();
  const auto& h = t.history();
  ASSERT_EQ(h.size(), 30u);
  EXPECT_NEAR(h.front().loss.main_ce, std::log(320.0), 0.3);
  EXPECT_LT(h.back().loss.main_ce, h.front().loss.main_ce - 0.5);
  for (const auto& r : h) {
    EXPECT_TRUE(std::isfinite(r.grad_norm));
    EXPECT_FALSE(r.maxvio.empty());
  }
  auto lines = read_metrics(out + "/metrics.jsonl");
  int n_step = 0, n_eval = 0;
  for (const auto& j : lines) n_step += j["type"] == "step", n_eval += j["type"] == "eval";
  EXPECT_EQ(n_step, 30);
  EXPECT_EQ(n_eval, 1);
  EXPECT_TRUE(fs::exists(out + "/run_config.json"));
  EXPECT_EQ(list_checkpoints(out).size(), 1u);  // the final one
  fs::remove_all(out);
}

TEST(Trainer, GradAccumulationMatchesOneBigBatch) {
  SingleThread one_thread;
  const std::string o1 = fresh_dir("acc1"), o2 = fresh_dir("acc2");
  RunConfig big = tiny_run(o1, 1), acc = tiny_run(o2, 1);
  big.batch = 4;
  acc.batch = 2, acc.grad_accum = 2;  // the same 4 sequences in two micro-batches
  Trainer a(big, quiet()), b(acc, quiet());
  StepRecord ra = a.step(), rb = b.step();
  EXPECT_NEAR(ra.loss.total, rb.loss.total, 1e-5 * ra.loss.total);
  EXPECT_NEAR(ra.grad_norm, rb.grad_norm, 1e-4 * ra.grad_norm);
  double max_diff = 0;
  for (const auto& [n, t] : a.weights().by_name) {
    const float* x = t.f32();
    const float* y = b.weights().by_name.at(n).f32();
    for (int64_t i = 0; i < t.numel(); ++i) max_diff = std::max(max_diff, double(std::abs(x[i] - y[i])));
  }
  EXPECT_LT(max_diff, 1e-5);
  fs::remove_all(o1), fs::remove_all(o2);
}

// N steps straight == k steps + checkpoint + resume + N−k steps, bitwise (loss trajectory and final weights).
void resume_is_bit_identical(const std::string& moments, const std::string& ckpt_dtype, int64_t accum) {
  const int64_t N = 7, k = 3;
  const std::string straight = fresh_dir("straight_" + moments), split = fresh_dir("split_" + moments);
  auto cfg = [&](const std::string& out, int64_t steps) {
    RunConfig c = tiny_run(out, steps);
    c.moments = moments, c.checkpoint_dtype = ckpt_dtype, c.grad_accum = accum;
    c.steps = N;  // same schedule (cosine over N) in both runs
    return c;
  };
  Trainer a(cfg(straight, N), quiet());
  a.run();
  {
    Trainer b(cfg(split, N), quiet());
    for (int64_t i = 0; i < k; ++i) b.step();
    b.save_checkpoint();
    b.step();  // work after the checkpoint that the resumed run must redo identically
  }
  TrainerOptions ro = quiet();
  ro.resume = split;
  Trainer c(cfg(split, N), ro);
  EXPECT_EQ(c.steps_done(), k);
  c.run();
  ASSERT_EQ(c.history().size(), size_t(N - k));
  for (int64_t i = 0; i < N - k; ++i) {
    const StepRecord& x = a.history()[size_t(k + i)];
    const StepRecord& y = c.history()[size_t(i)];
    EXPECT_EQ(x.step, y.step);
    EXPECT_EQ(x.loss.total, y.loss.total) << "step " << x.step;  // bitwise
    EXPECT_EQ(x.grad_norm, y.grad_norm) << "step " << x.step;
    EXPECT_EQ(x.lr, y.lr);
    EXPECT_EQ(x.maxvio, y.maxvio);
  }
  expect_bitwise_equal(a.weights(), c.weights());
  // The metrics file of the resumed run has exactly one line per step (the abandoned step 4 line was cut).
  int n_step = 0;
  for (const auto& j : read_metrics(split + "/metrics.jsonl")) n_step += j["type"] == "step";
  EXPECT_EQ(n_step, N);
  fs::remove_all(straight), fs::remove_all(split);
}

TEST(Trainer, ResumeIsBitIdenticalF32) {
  SingleThread one_thread;
  resume_is_bit_identical("f32", "f32", 1);
}
TEST(Trainer, ResumeIsBitIdenticalBf16MomentsBf16CheckpointAccum) {
  SingleThread one_thread;
  resume_is_bit_identical("bf16", "bf16", 2);
}
TEST(Trainer, ResumeIsBitIdenticalFp8Checkpoint) {
  SingleThread one_thread;
  resume_is_bit_identical("f32", "fp8", 1);
}

TEST(Trainer, KeepLastAndLatestPointer) {
  SingleThread one_thread;
  const std::string out = fresh_dir("keep");
  RunConfig c = tiny_run(out, 5);
  c.checkpoint_every = 1, c.keep_last = 2;
  Trainer t(c, quiet());
  t.run();
  auto all = list_checkpoints(out);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(fs::path(all[0]).filename(), "step-000004");
  EXPECT_EQ(fs::path(all[1]).filename(), "step-000005");
  EXPECT_EQ(slurp(out + "/checkpoints/latest"), "step-000005\n");
  EXPECT_EQ(resolve_checkpoint(out), all[1]);
  // An HF model directory: loads as a model, with generation_config.json.
  ModelWeights w = ModelWeights::load(all[1]);
  expect_bitwise_equal(w, t.weights());
  EXPECT_TRUE(fs::exists(all[1] + "/generation_config.json"));
  fs::remove_all(out);
}

TEST(Trainer, NanLossSkipsTheStep) {
  SingleThread one_thread;
  const std::string out = fresh_dir("nan");
  RunConfig c = tiny_run(out, 4);
  TrainerOptions o = quiet();
  o.test_loss_override = [](int64_t step, double loss) { return step == 2 ? NAN : loss; };
  Trainer t(c, o);
  t.step(), t.step();
  ModelWeights before = zero_gradients(t.weights());
  for (auto& [n, x] : before.by_name) std::memcpy(x.data, t.weights().by_name.at(n).data, x.nbytes());
  StepRecord r = t.step();
  EXPECT_TRUE(r.skipped);
  EXPECT_EQ(t.steps_done(), 3);
  expect_bitwise_equal(before, t.weights());
  bool logged = false;
  for (const auto& j : read_metrics(out + "/metrics.jsonl")) logged |= j["type"] == "event" && j["event"] == "skip";
  EXPECT_TRUE(logged);
  fs::remove_all(out);
}

TEST(Trainer, LossSpikeRollsBackToTheLastCheckpoint) {
  SingleThread one_thread;
  const std::string out = fresh_dir("spike");
  RunConfig c = tiny_run(out, 8);
  c.checkpoint_every = 3;
  c.spike.factor = 3.0, c.spike.min_steps = 2;
  TrainerOptions o = quiet();
  int spikes = 0;
  o.test_loss_override = [&](int64_t step, double loss) {
    if (step == 4 && spikes == 0) {
      ++spikes;
      return 100.0;
    }
    return loss;
  };
  Trainer t(c, o);
  t.run();
  EXPECT_EQ(spikes, 1);
  EXPECT_EQ(t.steps_done(), 8);
  bool rolled = false;
  for (const auto& r : t.history())
    if (r.rolled_back) {
      rolled = true;
      EXPECT_EQ(r.step, 3);
    }
  EXPECT_TRUE(rolled);
  // 8 committed steps + the step-4 commit that the rollback undid + the rolled-back attempt itself.
  EXPECT_EQ(t.history().size(), 10u);
  fs::remove_all(out);
}

TEST(Trainer, ResumeWithADifferentModelConfigIsAClearError) {
  SingleThread one_thread;
  const std::string out = fresh_dir("mismatch");
  {
    Trainer t(tiny_run(out, 1), quiet());
    t.run();
  }
  RunConfig c = tiny_run(out, 2);
  c.model = "tiny_noqlora";
  TrainerOptions o = quiet();
  o.resume = out;
  try {
    Trainer t(c, o);
    FAIL() << "expected an error";
  } catch (const dsv3::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("different model config"), std::string::npos) << m;
    EXPECT_NE(m.find("q_lora_rank"), std::string::npos) << m;
  }
  // Other data (a different synthetic seed, so another fingerprint) is refused as well.
  RunConfig d = tiny_run(out, 2);
  d.data_seed = 99;
  try {
    Trainer t(d, o);
    FAIL() << "expected an error";
  } catch (const dsv3::Error& e) {
    EXPECT_NE(std::string(e.what()).find("trained on data"), std::string::npos) << e.what();
  }
  // A fresh run into a directory with checkpoints is refused too.
  EXPECT_THROW(Trainer(tiny_run(out, 1), quiet()), dsv3::Error);
  fs::remove_all(out);
}

TEST(Trainer, FullDiskDuringCheckpointKeepsThePreviousOne) {
  SingleThread one_thread;
  // Size one checkpoint, then give the run a tmpfs with room for about 1.5 of them.
  const std::string probe = fresh_dir("probe");
  {
    Trainer t(tiny_run(probe, 1), quiet());
    t.run();
  }
  uintmax_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(probe))
    if (e.is_regular_file()) bytes += e.file_size();
  fs::remove_all(probe);
  const std::string mnt = fresh_dir("tmpfs");
  fs::create_directories(mnt);
  const std::string opts = "size=" + std::to_string((bytes * 3 / 2 + 8191) / 4096 * 4096);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
    fs::remove_all(mnt);
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << ")";
  }
  const std::string out = mnt + "/run";
  RunConfig c = tiny_run(out, 4);
  c.checkpoint_every = 2, c.keep_last = 1;
  std::string msg;
  {
    Trainer t(c, quiet());
    try {
      t.run();
    } catch (const dsv3::Error& e) {
      msg = e.what();
    }
  }
  EXPECT_NE(msg.find("checkpoint of step 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No space left on device"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step-000002 is intact"), std::string::npos) << msg;
  EXPECT_EQ(resolve_checkpoint(out), out + "/checkpoints/step-000002");
  LoadedCheckpoint ck = read_checkpoint(resolve_checkpoint(out));
  EXPECT_EQ(ck.trainer_state["step"], 2);
  bool leftovers = false;
  for (const auto& e : fs::directory_iterator(out + "/checkpoints"))
    leftovers |= e.path().filename().string().starts_with(".tmp-");
  EXPECT_FALSE(leftovers);
  ::umount(mnt.c_str());
  fs::remove_all(mnt);
}

TEST(Trainer, SamplesAtCheckpoints) {
  SingleThread one_thread;
  const std::string out = fresh_dir("samples");
  RunConfig c = tiny_run(out, 2);
  c.sample_tokens = 5;
  c.sample_prompts = {nlohmann::json::array({5, 6, 7}), nlohmann::json::array({0})};
  Trainer t(c, quiet());
  t.run();
  auto lines = read_metrics(out + "/samples.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["prompt"], nlohmann::json::array({5, 6, 7}));
  EXPECT_LE(lines[0]["tokens"].size(), 5u);
  EXPECT_GE(lines[0]["tokens"].size(), 1u);
  fs::remove_all(out);
}

TEST(Trainer, CheckpointCarriesTheRunsTokenizerFiles) {
  SingleThread one_thread;
  const std::string out = fresh_dir("tok");
  fs::create_directories(out + "_tok");
  std::ofstream(out + "_tok/tokenizer.json") << R"({"model": {"type": "BPE"}})";
  std::ofstream(out + "_tok/tokenizer_config.json") << R"({"bos_token": "<s>"})";
  RunConfig c = tiny_run(out, 1);
  c.tokenizer = out + "_tok/tokenizer.json";
  Trainer t(c, quiet());
  t.run();
  const std::string ck = resolve_checkpoint(out);
  EXPECT_EQ(slurp(ck + "/tokenizer.json"), slurp(out + "_tok/tokenizer.json"));
  EXPECT_EQ(slurp(ck + "/tokenizer_config.json"), slurp(out + "_tok/tokenizer_config.json"));
  auto gen = nlohmann::json::parse(slurp(ck + "/generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 0);
  EXPECT_EQ(gen["eos_token_id"], 1);
  fs::remove_all(out), fs::remove_all(out + "_tok");
}

TEST(RunConfig, CheckpointDtypeOutsideF32Bf16Fp8IsAClearError) {
  for (const char* ok : {"f32", "bf16", "fp8"})
    EXPECT_NO_THROW(RunConfig::from_json({{"model", "tiny"}, {"checkpoint_dtype", ok}})) << ok;
  try {
    RunConfig::from_json({{"model", "tiny"}, {"checkpoint_dtype", "f16"}});
    FAIL() << "checkpoint_dtype f16 was accepted";
  } catch (const dsv3::Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint_dtype"), std::string::npos) << e.what();
  }
}

TEST(RunConfig, CheckedInRecipesParseAndRoundTrip) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(std::string(DSV3_SOURCE_DIR) + "/configs/train")) {
    if (e.path().extension() != ".json") continue;
    RunConfig c = RunConfig::from_json(nlohmann::json::parse(slurp(e.path().string())));
    RunConfig back = RunConfig::from_json(c.to_json());
    EXPECT_EQ(back.to_json(), c.to_json()) << e.path();
    ++n;
  }
  EXPECT_GE(n, 3);
  RunConfig p = RunConfig::from_json(
      nlohmann::json::parse(slurp(std::string(DSV3_SOURCE_DIR) + "/configs/train/paper_schedule.json")));
  EXPECT_DOUBLE_EQ(p.lr.at(100000, 5e12, p.steps), 2.2e-4);
  EXPECT_DOUBLE_EQ(p.lr.at(230000, 14.7e12, p.steps), 7.3e-6);
  EXPECT_DOUBLE_EQ(p.mtp_lambda.at(0, 11e12), 0.1);
  EXPECT_DOUBLE_EQ(p.bias_gamma.at(0, 14.5e12), 0.0);
  EXPECT_EQ(p.moments, "bf16");
}
