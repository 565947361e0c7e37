// The C++ training forward/backward pinned to PyTorch autograd in float64 (reference/make_grad_fixtures.py):
// the loss parts, the expert counts, and the gradient of every parameter of the tiny, tiny_noqlora and small
// configs on a B=2 × S=12 batch (λ = 0.3, α = 0.1 so the balance-loss gradient is visible). Also: the training
// forward reproduces the inference forward (Transformer) and `dsv3 grad` reproduces the fixture end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "grad_fixtures.h"
#include "io/safetensors.h"
#include "model/transformer.h"

using namespace dsv3;
namespace fs = std::filesystem;

namespace {

constexpr double kGradTol = 1e-4;  // max |Δ| ≤ 1e-4 × max |reference gradient| per tensor
constexpr double kLossTol = 1e-5;  // relative, per loss component

std::vector<std::string> cases() {
  std::vector<std::string> out;
  const std::string root = test::grad_fixtures();
  if (root.empty()) return out;
  for (auto& e : fs::directory_iterator(root))
    if (e.is_directory() && fs::exists(e.path() / "grads.safetensors")) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

double rel(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1e-12); }

struct Worst {
  double ratio = 0.0;  // max|Δ| / max|ref|
  std::string name;
};

// Compares every gradient with the reference file; returns the worst relative error.
Worst compare_gradients(const std::vector<std::pair<std::string, Tensor>>& got, const std::string& ref_path) {
  auto ref = io::SafetensorsFile::open(ref_path);
  std::map<std::string, Tensor> mine(got.begin(), got.end());
  EXPECT_EQ(mine.size(), ref->tensors().size()) << "number of gradient tensors";
  Worst worst;
  for (const io::TensorInfo& info : ref->tensors()) {
    auto it = mine.find(info.name);
    if (it == mine.end()) {
      ADD_FAILURE() << "no C++ gradient for " << info.name;
      continue;
    }
    Tensor r = ref->get(info.name).to_f32();
    const Tensor& g = it->second;
    EXPECT_EQ(g.shape, r.shape) << info.name;
    if (g.shape != r.shape) continue;
    double max_d = 0.0, ref_max = 0.0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      const double d = std::fabs(double(g.f32()[i]) - double(r.f32()[i]));
      max_d = std::isnan(d) ? INFINITY : std::max(max_d, d);
      ref_max = std::max(ref_max, double(std::fabs(r.f32()[i])));
    }
    if (ref_max == 0.0) {  // e.g. an expert no token was routed to: must be exactly zero here too
      EXPECT_EQ(max_d, 0.0) << info.name << " should be all zeros";
      continue;
    }
    const double ratio = max_d / ref_max;
    EXPECT_LE(ratio, kGradTol) << info.name << ": max|Δ| " << max_d << ", max|ref| " << ref_max;
    if (ratio > worst.ratio) worst = {ratio, info.name};
  }
  return worst;
}

train::LossOptions loss_options(const nlohmann::json& j) {
  train::LossOptions lo;
  lo.mtp_lambda = j.at("lambda").get<double>();
  lo.balance_alpha = j.at("alpha").get<double>();
  return lo;
}

void expect_loss(const train::LossValues& got, const nlohmann::json& want) {
  EXPECT_LE(rel(got.total, want.at("loss").get<double>()), kLossTol) << "loss " << got.total;
  EXPECT_LE(rel(got.main_ce, want.at("main_ce").get<double>()), kLossTol) << "main_ce " << got.main_ce;
  EXPECT_LE(rel(got.balance, want.at("balance").get<double>()), kLossTol) << "balance " << got.balance;
  const auto& mtp = want.at("mtp_ce");
  ASSERT_EQ(got.mtp_ce.size(), mtp.size());
  for (size_t k = 0; k < mtp.size(); ++k)
    EXPECT_LE(rel(got.mtp_ce[k], mtp[k].get<double>()), kLossTol) << "mtp_ce[" << k << "] " << got.mtp_ce[k];
}

}  // namespace

TEST(GradReference, FixturesExist) {
  auto c = cases();
  ASSERT_EQ(c.size(), 3u) << "gradient fixtures could not be generated; see " << DSV3_BINARY_DIR
                          << "/fixtures/grad.log";
}

TEST(GradReference, LossCountsAndEveryGradient) {
  for (const std::string& dir : cases()) {
    SCOPED_TRACE(dir);
    ModelWeights w = ModelWeights::load(dir + "/model");
    train::TrainModel model(w);
    const nlohmann::json want = test::read_json(dir + "/loss.json");
    train::LossValues loss = model.forward(test::load_batch(dir), loss_options(want));
    expect_loss(loss, want);

    const nlohmann::json counts = test::read_json(dir + "/expert_counts.json");
    auto load = model.expert_load();
    ASSERT_EQ(load.size(), counts.size());
    for (const auto& l : load)
      EXPECT_EQ(l.count, counts.at(std::to_string(l.layer)).get<std::vector<int64_t>>()) << "layer " << l.layer;

    ModelWeights grad = train::zero_gradients(w);
    model.backward(grad);
    Worst worst = compare_gradients(train::gradient_list(grad), dir + "/grads.safetensors");
    std::printf("[ grad ref ] %-14s loss %.6f  worst gradient max|Δ|/max|ref| = %.2e (%s)\n",
                fs::path(dir).filename().c_str(), loss.total, worst.ratio, worst.name.c_str());
  }
}

TEST(GradReference, TrainingForwardMatchesInference) {
  for (const std::string& dir : cases()) {
    SCOPED_TRACE(dir);
    ModelWeights w = ModelWeights::load(dir + "/model");
    train::TrainBatch batch = test::load_batch(dir);
    train::TrainModel tm(w);
    tm.forward(batch, {});
    Transformer model(w);
    const int64_t S = batch.S, V = w.cfg.vocab_size, D = w.cfg.hidden_size;
    for (int64_t b = 0; b < batch.B; ++b) {
      std::vector<int32_t> ids(batch.tokens.begin() + b * S, batch.tokens.begin() + (b + 1) * S);
      Tensor h = model.hidden(ids);
      Tensor lg = model.logits(h);
      auto check = [&](const Tensor& ref, const float* got, int64_t rows, int64_t cols, const char* what) {
        double max_d = 0, ref_max = 0;
        for (int64_t i = 0; i < rows * cols; ++i) {
          max_d = std::max(max_d, double(std::fabs(got[i] - ref.f32()[i])));
          ref_max = std::max(ref_max, double(std::fabs(ref.f32()[i])));
        }
        EXPECT_LE(max_d, 1e-5 * ref_max) << what << " of sequence " << b;
      };
      check(h, tm.hidden().f32() + b * S * D, S, D, "hidden");
      check(lg, tm.logits().f32() + b * S * V, S, V, "logits");
      for (int k = 1; k <= int(w.cfg.num_nextn_predict_layers); ++k) {
        Tensor ml = model.mtp_logits(h, ids, k);
        check(ml, tm.mtp_logits(k).f32() + b * (S - k) * V, S - k, V, "mtp logits");
      }
    }
  }
}

TEST(GradReference, CliWritesTheSameGradients) {
  auto c = cases();
  ASSERT_FALSE(c.empty());
  const std::string dir = c.front();
  const nlohmann::json want = test::read_json(dir + "/loss.json");
  train::TrainBatch batch = test::load_batch(dir);
  std::string list;
  for (int64_t b = 0; b < batch.B; ++b) {
    if (b) list += ";";
    for (int64_t i = 0; i < batch.S; ++i) list += (i ? "," : "") + std::to_string(batch.tokens[b * batch.S + i]);
  }
  const std::string out = std::string(DSV3_BINARY_DIR) + "/cli_grad";
  fs::create_directories(out);
  char lam[64], alpha[64];
  std::snprintf(lam, sizeof lam, "%.17g", want.at("lambda").get<double>());
  std::snprintf(alpha, sizeof alpha, "%.17g", want.at("alpha").get<double>());
  const std::string cmd = std::string(DSV3_BINARY_DIR) + "/dsv3 grad --model " + dir + "/model --tokens \"" + list +
                          "\" --lambda " + lam + " --alpha " + alpha + " --out " + out + "/g.safetensors > " + out +
                          "/loss.json 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const nlohmann::json got = test::read_json(out + "/loss.json");
  for (const char* key : {"loss", "main_ce", "balance"})
    EXPECT_LE(rel(got.at(key).get<double>(), want.at(key).get<double>()), kLossTol) << key;
  ASSERT_EQ(got.at("mtp_ce").size(), want.at("mtp_ce").size());
  for (size_t k = 0; k < want.at("mtp_ce").size(); ++k)
    EXPECT_LE(rel(got.at("mtp_ce")[k].get<double>(), want.at("mtp_ce")[k].get<double>()), kLossTol);
  auto file = io::SafetensorsFile::open(out + "/g.safetensors");
  std::vector<std::pair<std::string, Tensor>> grads;
  for (const io::TensorInfo& info : file->tensors()) {
    EXPECT_EQ(info.dtype, DType::F32) << info.name;
    EXPECT_EQ(info.name.find("e_score_correction_bias"), std::string::npos) << info.name;
    grads.emplace_back(info.name, file->get(info.name).to_f32());
  }
  Worst worst = compare_gradients(grads, dir + "/grads.safetensors");
  EXPECT_LE(worst.ratio, kGradTol);
}

TEST(GradReference, CliRejectsRaggedBatch) {
  auto c = cases();
  ASSERT_FALSE(c.empty());
  const std::string cmd = std::string(DSV3_BINARY_DIR) + "/dsv3 grad --model " + c.front() +
                          "/model --tokens \"1,2,3;4,5\" --out /dev/null > /dev/null 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
}
