// ModelConfig parsing/validation, YaRN constants against V3_SPEC.md §4.3, and `plan` figures for the real
// 671B config against the paper / weight documentation (671B main, ~37B activated, 11.6B MTP).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "dsv3/error.h"
#include "model/config.h"
#include "model/plan.h"

using namespace dsv3;
using nlohmann::json;

namespace {
json load_json(const std::string& name) {
  std::ifstream f(std::string(DSV3_SOURCE_DIR) + "/configs/" + name + ".json");
  return json::parse(f);
}
std::string error_of(const json& j) {
  try {
    ModelConfig::from_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Config, Loads671B) {
  ModelConfig c = ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/671b.json");
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.n_group, 8);
  ASSERT_TRUE(c.quantization_config.has_value());
  EXPECT_EQ(c.quantization_config->block_out, 128);
  EXPECT_NEAR(c.softmax_scale(), 0.1352338, 1e-7);
  // f'_j table of V3_SPEC.md §4.3.
  const double expect[32] = {1, 0.749894, 0.562341, 0.421697, 0.316228, 0.237137, 0.177828, 0.133352, 0.1,
                             0.0749894, 0.0562341, 0.0390069, 0.0268794, 0.0183781, 0.012448, 0.00833451, 0.0055,
                             0.003562, 0.00224937, 0.00137051, 0.000790569, 0.00041499, 0.000177828, 3.3338e-05,
                             2.5e-05, 1.87474e-05, 1.40585e-05, 1.05424e-05, 7.90569e-06, 5.92843e-06, 4.4457e-06,
                             3.3338e-06};
  auto f = c.rope_inv_freq();
  ASSERT_EQ(f.size(), 32u);
  for (int j = 0; j < 32; ++j) EXPECT_NEAR(f[j] / expect[j], 1.0, 2e-5) << j;
  EXPECT_DOUBLE_EQ(c.rope_cos_sin_scale(), 1.0);
}

TEST(Config, Plan671BMatchesPaper) {
  ModelPlan p = make_plan(ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/671b.json"));
  EXPECT_NEAR(double(p.total_params) / 1e9, 671.03, 0.01);  // V3_SPEC.md §6.1
  EXPECT_NEAR(double(p.mtp_params) / 1e9, 11.6, 0.05);
  EXPECT_NEAR(double(p.active_params) / 1e9, 36.7, 0.2);     // README_WEIGHTS: 36.7B activated
  EXPECT_EQ(p.kv_cache_elems_per_token_per_layer, 576);
  EXPECT_EQ(p.mha_cache_elems_per_token_per_layer, 40960);
  EXPECT_EQ(p.kv_cache_bytes_per_token_bf16, 576 * 61 * 2);
  // Forward FLOPs ≈ 2 × activated matmul params plus attention: between 2×36B and 2×40B at seq 4096.
  EXPECT_GT(p.flops_per_token_fwd, 2 * 36e9);
  EXPECT_LT(p.flops_per_token_fwd, 2 * 45e9);
  EXPECT_DOUBLE_EQ(p.flops_per_token_train, 3 * p.flops_per_token_fwd);
}

TEST(Config, TransformersFiveSpellings) {
  json j = load_json("tiny");
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 40.0},
                          {"original_max_position_embeddings", 4096}, {"beta_fast", 32}, {"beta_slow", 1},
                          {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
  j["num_local_experts"] = j["n_routed_experts"];
  j.erase("n_routed_experts");
  ModelConfig a = ModelConfig::from_json(j), b = ModelConfig::from_json(load_json("tiny"));
  EXPECT_EQ(a.n_routed_experts, b.n_routed_experts);
  EXPECT_EQ(a.rope_inv_freq(), b.rope_inv_freq());
  EXPECT_EQ(a.softmax_scale(), b.softmax_scale());
  // Round trip through to_json.
  ModelConfig c = ModelConfig::from_json(a.to_json());
  EXPECT_EQ(c.rope_inv_freq(), b.rope_inv_freq());
  EXPECT_EQ(c.q_lora_rank, b.q_lora_rank);
}

TEST(Config, NullQLoraMeansNoCompression) {
  ModelConfig c = ModelConfig::from_json(load_json("tiny_noqlora"));
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_TRUE(c.to_json()["q_lora_rank"].is_null());
}

TEST(Config, ClearErrors) {
  struct Case {
    std::function<void(json&)> edit;
    std::string expect;
  } cases[] = {
      {[](json& j) { j.erase("hidden_size"); }, "missing required field \"hidden_size\""},
      {[](json& j) { j["hidden_size"] = "64"; }, "\"hidden_size\" must be an integer"},
      {[](json& j) { j["hidden_size"] = 64.5; }, "\"hidden_size\" must be an integer"},
      {[](json& j) { j["num_attention_heads"] = 0; }, "num_attention_heads must be > 0"},
      {[](json& j) { j["scoring_func"] = "softmax"; }, "scoring_func \"softmax\" is not supported"},
      {[](json& j) { j["topk_method"] = "greedy"; }, "topk_method \"greedy\" is not supported"},
      {[](json& j) { j["n_group"] = 3; }, "must be divisible by n_group"},
      {[](json& j) { j["topk_group"] = 5; }, "topk_group (5) must be in [1, n_group=4]"},
      {[](json& j) { j["num_experts_per_tok"] = 7; }, "exceeds the experts in topk_group groups"},
      {[](json& j) { j["qk_rope_head_dim"] = 7; }, "qk_rope_head_dim must be even"},
      {[](json& j) { j["rope_scaling"]["type"] = "dynamic"; }, "rope_scaling type \"dynamic\" is not supported"},
      {[](json& j) { j["norm_topk_prob"] = 1; }, "\"norm_topk_prob\" must be true/false"},
      {[](json& j) { j["model_type"] = "llama"; }, "model_type \"llama\" is not supported"},
      {[](json& j) { j["rope_interleave"] = false; }, "rope_interleave=false"},
      {[](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act \"gelu\" is not supported"},
  };
  for (auto& cs : cases) {
    json j = load_json("tiny");
    cs.edit(j);
    std::string err = error_of(j);
    EXPECT_NE(err.find(cs.expect), std::string::npos) << "expected \"" << cs.expect << "\", got \"" << err << "\"";
  }
  EXPECT_NE(error_of(json::array()).find("must be a JSON object"), std::string::npos);
}

TEST(Config, FileErrorsNameTheFile) {
  const std::string dir = std::string(DSV3_BINARY_DIR) + "/test_config_bad";
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/config.json") << "{\"vocab_size\": 10,"; }
  try {
    ModelConfig::load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not valid JSON"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos);
  }
  EXPECT_THROW(ModelConfig::load(dir + "/nonexistent"), Error);
}
