// `dsv3 train` and `dsv3 plot` as child processes: the resolved config printed and saved, flags overriding the
// run config; SIGKILL during a checkpoint write, then resume: the previous checkpoint is intact and training
// continues bit-identically to an uninterrupted run; `dsv3 plot` writes a PNG of one run or of several.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "trainer_test_util.h"

using namespace dsv3;
using namespace dsv3::train;
using namespace dsv3::train::testing;
namespace fs = std::filesystem;

namespace {

std::string write_run_config(const std::string& dir) {
  fs::create_directories(dir);
  const std::string p = dir + "/run.json";
  std::ofstream(p) << R"({"model": "tiny", "batch": 4, "seq": 16, "steps": 100, "checkpoint_every": 2,
                          "lr": {"kind": "cosine", "peak": 0.003, "min": 0.0003, "warmup_steps": 2},
                          "sample_tokens": 0, "keep_last": 5})";
  return p;
}

std::vector<std::string> train_args(const std::string& cfg, const std::string& out) {
  return {dsv3_bin(), "train", "--config", cfg, "--out", out, "--steps", "6", "--quiet"};
}

// loss per step from metrics.jsonl (last line per step wins).
std::map<int64_t, double> losses(const std::string& run) {
  std::map<int64_t, double> m;
  for (const auto& j : read_metrics(run + "/metrics.jsonl"))
    if (j["type"] == "step") m[j["step"].get<int64_t>()] = j["loss"].get<double>();
  return m;
}

}  // namespace

TEST(TrainCli, PrintsAndSavesTheResolvedConfigWithOverrides) {
  const std::string dir = fresh_dir("cli");
  const std::string cfg = write_run_config(dir);
  const std::string log = dir + "/log.txt";
  ASSERT_EQ(run_wait({dsv3_bin(), "train", "--config", cfg, "--out", dir + "/run", "--steps", "2", "--batch", "2",
                      "--seq", "12", "--lr", "0.001"},
                     log),
            0)
      << slurp(log);
  const std::string text = slurp(log);
  EXPECT_NE(text.find("resolved run config"), std::string::npos);
  EXPECT_NE(text.find("step 2/2"), std::string::npos) << text;
  EXPECT_NE(text.find("tok/s"), std::string::npos);
  EXPECT_NE(text.find("MFU"), std::string::npos);
  auto saved = nlohmann::json::parse(slurp(dir + "/run/run_config.json"));
  EXPECT_EQ(saved["steps"], 2);
  EXPECT_EQ(saved["batch"], 2);
  EXPECT_EQ(saved["seq"], 12);
  EXPECT_EQ(saved["lr"]["peak"], 0.001);
  EXPECT_EQ(saved["lr"]["kind"], "cosine");  // the rest of the lr object survives the override
  // An unknown field is an error that names it.
  std::ofstream(dir + "/bad.json") << R"({"model": "tiny", "stpes": 3})";
  EXPECT_EQ(run_wait({dsv3_bin(), "train", "--config", dir + "/bad.json", "--out", dir + "/bad"}, log), 1);
  EXPECT_NE(slurp(log).find("stpes"), std::string::npos);
  fs::remove_all(dir);
}

TEST(TrainCli, KillDuringCheckpointThenResumeContinuesIdentically) {
  const std::string dir = fresh_dir("kill");
  const std::string cfg = write_run_config(dir);
  const std::string ref = dir + "/ref", run = dir + "/run";
  // Uninterrupted reference: 6 steps, checkpoints at 2, 4, 6.
  ASSERT_EQ(run_wait(train_args(cfg, ref), dir + "/ref.log"), 0) << slurp(dir + "/ref.log");

  // Same run, SIGKILLed while writing the step-4 checkpoint (weights written, trainer state not).
  pid_t pid = spawn(train_args(cfg, run), {"DSV3_TEST_KILL_DURING_CHECKPOINT=4"}, dir + "/run.log");
  const std::string marker = run + "/checkpoints/.paused_in_checkpoint";
  for (int i = 0; i < 600 && !fs::exists(marker); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(marker)) << slurp(dir + "/run.log");
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  // The half-written checkpoint is only a .tmp directory; step 2 is intact and `latest` names it.
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step-000004"));
  bool tmp_left = false;
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))
    tmp_left |= e.path().filename().string().starts_with(".tmp-step-000004");
  EXPECT_TRUE(tmp_left);
  EXPECT_EQ(slurp(run + "/checkpoints/latest"), "step-000002\n");
  EXPECT_EQ(resolve_checkpoint(run), run + "/checkpoints/step-000002");
  read_checkpoint(resolve_checkpoint(run));  // loads without error

  // Resume (run config taken from the checkpoint) to the end.
  ASSERT_EQ(run_wait({dsv3_bin(), "train", "--resume", run, "--quiet"}, dir + "/resume.log"), 0)
      << slurp(dir + "/resume.log");
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))
    EXPECT_FALSE(e.path().filename().string().starts_with(".tmp-")) << "stale temp dir not cleaned";

  // Loss trajectory and final weights (and optimizer state) bitwise equal to the uninterrupted run.
  EXPECT_EQ(losses(ref), losses(run));
  EXPECT_EQ(losses(run).size(), 6u);
  for (const char* f : {"model.safetensors", "trainer_state.safetensors", "config.json"}) {
    const std::string a = slurp(ref + "/checkpoints/step-000006/" + f), b = slurp(run + "/checkpoints/step-000006/" + f);
    EXPECT_FALSE(a.empty()) << f;
    if (std::string(f) == "trainer_state.safetensors") {
      // Tensors must match exactly; the JSON metadata holds the run config, whose "out" differs.
      auto fa = io::SafetensorsFile::open(ref + "/checkpoints/step-000006/" + f);
      auto fb = io::SafetensorsFile::open(run + "/checkpoints/step-000006/" + f);
      ASSERT_EQ(fa->tensors().size(), fb->tensors().size());
      for (const auto& info : fa->tensors()) {
        Tensor x = fa->get(info.name), y = fb->get(info.name);
        ASSERT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << info.name;
      }
    } else {
      EXPECT_TRUE(a == b) << f << " differs";
    }
  }

  // dsv3 plot on the resumed run.
  const std::string png = dir + "/loss.png";
  ASSERT_EQ(run_wait({dsv3_bin(), "plot", run, "--out", png}, dir + "/plot.log"), 0) << slurp(dir + "/plot.log");
  const std::string bytes = slurp(png);
  ASSERT_GT(bytes.size(), 1000u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  // Several runs in one figure; a missing run directory is an error.
  const std::string png2 = dir + "/cmp.png";
  ASSERT_EQ(run_wait({dsv3_bin(), "plot", ref, run, "--out", png2}, dir + "/plot2.log"), 0) << slurp(dir + "/plot2.log");
  EXPECT_NE(slurp(dir + "/plot2.log").find("2 run(s), 12 steps"), std::string::npos) << slurp(dir + "/plot2.log");
  EXPECT_EQ(slurp(png2).substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_NE(run_wait({dsv3_bin(), "plot", ref, dir + "/no-such-run", "--out", dir + "/x.png"}, dir + "/plot3.log"), 0);
  EXPECT_FALSE(fs::exists(dir + "/x.png"));
  fs::remove_all(dir);
}
