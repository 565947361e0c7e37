// `dsv3 convert` (src/fp8/convert.h): BF16 → FP8 → BF16 → FP8 round trips on a small random model with
// several 128-blocks and partial edge blocks, checked by the independent reference (reference/fp8_ref.py reads
// the safetensors bytes and decodes E4M3 itself), the tensor dtypes and config of the real checkpoint format,
// the loader on the converted directory (logits within FP8 quantization error), and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "../temp_dir.h"
#include "core/fp8_block.h"
#include "dsv3/error.h"
#include "fp8/convert.h"
#include "io/safetensors.h"
#include "model/transformer.h"

using namespace dsv3;
namespace fs = std::filesystem;

namespace {

// tiny.json widened so that Linear weights span several 128-blocks with partial edges. The main layers are
// dense (routed experts only in the MTP layer): with random weights router scores are near ties, and a
// quantization-sized change would flip expert choices and hide the comparison of logits.
ModelConfig wide_tiny() {
  std::ifstream in(std::string(DSV3_SOURCE_DIR) + "/configs/tiny.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["hidden_size"] = 200;
  j["intermediate_size"] = 300;
  j["moe_intermediate_size"] = 136;
  j["q_lora_rank"] = 130;
  j["first_k_dense_replace"] = j["num_hidden_layers"];
  return ModelConfig::from_json(j);
}

std::string convert(const std::string& in, const std::string& out, const char* to, bool force = false) {
  fp8::ConvertOptions o;
  o.in_dir = in;
  o.out_dir = out;
  o.to = fp8::parse_checkpoint_format(to);
  o.force = force;
  fp8::convert_checkpoint(o);
  return out;
}

int run_reference_check(const std::string& fp8_dir, const std::string& bf16_dir, const char* direction,
                        const std::string& log) {
  const std::string cmd = std::string("/usr/bin/python3 ") + DSV3_SOURCE_DIR + "/reference/fp8_ref.py --check-convert " +
                          fp8_dir + " --against " + bf16_dir + " --direction " + direction + " > " + log + " 2>&1";
  return std::system(cmd.c_str());
}

std::string slurp(const std::string& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string convert_error(const fp8::ConvertOptions& o) {
  try {
    fp8::convert_checkpoint(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Fp8Convert, RoundTripsAndMatchesReference) {
  test::TempDir tmp;
  const ModelConfig cfg = wide_tiny();
  const ModelWeights src = ModelWeights::random(cfg, 7, 0.02f);
  const std::string bf16 = tmp / "bf16";
  src.save(bf16, DType::BF16, 256 << 10);  // several shards + index
  ASSERT_TRUE(fs::exists(bf16 + "/model.safetensors.index.json"));
  std::ofstream(bf16 + "/tokenizer.json") << "{}";
  std::ofstream(bf16 + "/generation_config.json") << "{\"bos_token_id\": 0}";

  const std::string a = convert(bf16, tmp / "a_fp8", "fp8");
  convert(bf16 + "/", tmp / "a_fp8/", "fp8", true);  // trailing slashes name the same directories
  const std::string b = convert(a, tmp / "b_bf16", "bf16");
  const std::string c = convert(b, tmp / "c_fp8", "fp8");

  // Independent checks: A's codes/scales are the reference quantizer of the BF16 source, B is the rounded
  // dequantization of A, every other tensor unchanged.
  EXPECT_EQ(run_reference_check(a, bf16, "to_fp8", tmp / "a.log"), 0) << slurp(tmp / "a.log");
  EXPECT_EQ(run_reference_check(a, b, "to_bf16", tmp / "b.log"), 0) << slurp(tmp / "b.log");

  // Tensor set and dtypes of the V3 checkpoint format; FP8 → BF16 → FP8 reproduces every code.
  auto sa = io::SafetensorsModel::open(a), sc = io::SafetensorsModel::open(c), sb = io::SafetensorsModel::open(b);
  int64_t n_fp8 = 0, n_code_diff = 0, n_partial = 0;
  for (const TensorSpec& s : weight_specs(cfg)) {
    SCOPED_TRACE(s.name);
    ASSERT_TRUE(sa.has(s.name));
    const DType want = role_is_fp8(s.role) ? DType::F8_E4M3
                       : s.role == TensorRole::kRouterBias ? DType::F32 : DType::BF16;
    EXPECT_EQ(sa.info(s.name).dtype, want);
    EXPECT_EQ(sb.info(s.name).dtype, want == DType::F8_E4M3 ? DType::BF16 : want);
    EXPECT_FALSE(sb.has(s.name + "_scale_inv"));
    if (want != DType::F8_E4M3) continue;
    ++n_fp8;
    n_partial += s.shape[0] % 128 != 0 || s.shape[1] % 128 != 0;
    const auto& si = sa.info(s.name + "_scale_inv");
    EXPECT_EQ(si.dtype, DType::F32);
    EXPECT_EQ(si.shape, (Shape{ceil_div(s.shape[0], 128), ceil_div(s.shape[1], 128)}));
    const Tensor ca = sa.get(s.name), cc = sc.get(s.name);
    for (int64_t i = 0; i < ca.numel(); ++i) n_code_diff += ca.ptr<uint8_t>()[i] != cc.ptr<uint8_t>()[i];
  }
  EXPECT_GT(n_fp8, 20);
  EXPECT_GT(n_partial, 0);
  EXPECT_EQ(n_code_diff, 0);

  // config.json: the real checkpoint's quantization_config; removed again for BF16; tokenizer files copied.
  const auto ja = nlohmann::json::parse(slurp(a + "/config.json")), jb = nlohmann::json::parse(slurp(b + "/config.json"));
  EXPECT_EQ(ja["quantization_config"], nlohmann::json::parse(R"({"activation_scheme":"dynamic","fmt":"e4m3",
      "quant_method":"fp8","weight_block_size":[128,128]})"));
  EXPECT_FALSE(jb.contains("quantization_config"));
  EXPECT_EQ(ja["hidden_size"], 200);
  EXPECT_EQ(ja["torch_dtype"], "bfloat16");
  EXPECT_EQ(slurp(a + "/generation_config.json"), "{\"bos_token_id\": 0}");
  EXPECT_TRUE(fs::exists(b + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(a + "/model.safetensors.index.json"));
  for (const auto& e : fs::directory_iterator(tmp.path))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();

  // The loader reads the FP8 directory: its logits equal those of the source weights put through the block
  // quantizer in memory, and stay within FP8 quantization error of the source's (E4M3 keeps 3 mantissa bits:
  // about 3% RMS error per weight).
  const ModelWeights wsrc = ModelWeights::load(bf16), wa = ModelWeights::load(a), wb = ModelWeights::load(b);
  wa.save(tmp / "a_loaded_f32", DType::F32);
  EXPECT_EQ(run_reference_check(a, tmp / "a_loaded_f32", "loaded_f32", tmp / "l.log"), 0) << slurp(tmp / "l.log");
  ModelWeights wq = ModelWeights::load(bf16);
  for (const TensorSpec& s : weight_specs(cfg)) {
    if (!role_is_fp8(s.role)) continue;
    Tensor& t = wq.by_name.at(s.name);
    std::vector<uint8_t> codes(size_t(t.numel()));
    std::vector<float> scale(size_t(ceil_div(s.shape[0], 128) * ceil_div(s.shape[1], 128)));
    fp8_block_quantize(t.f32(), s.shape[0], s.shape[1], 128, 128, codes.data(), scale.data());
    fp8_block_dequantize(codes.data(), scale.data(), s.shape[0], s.shape[1], 128, 128, t.f32());
  }
  const std::vector<int32_t> toks = {3, 17, 250, 9, 44, 101, 7};
  auto logits = [&](const ModelWeights& w) { return Transformer(w).logits(Transformer(w).hidden(toks)); };
  const Tensor ls = logits(wsrc), la = logits(wa), lb = logits(wb), lq = logits(wq);
  double d_sa = 0, d_ab = 0, d_aq = 0, norm = 0;
  for (int64_t i = 0; i < ls.numel(); ++i) {
    d_sa += std::pow(double(ls.f32()[i]) - la.f32()[i], 2);
    d_ab += std::pow(double(la.f32()[i]) - lb.f32()[i], 2);
    d_aq += std::pow(double(la.f32()[i]) - lq.f32()[i], 2);
    norm += std::pow(double(ls.f32()[i]), 2);
  }
  const double rel_sa = std::sqrt(d_sa / norm), rel_ab = std::sqrt(d_ab / norm), rel_aq = std::sqrt(d_aq / norm);
  std::printf("logits relative L2 difference: FP8 dir vs BF16 source %.3g, vs in-memory quantized %.3g, "
              "BF16-of-FP8 vs FP8 %.3g\n", rel_sa, rel_aq, rel_ab);
  EXPECT_LT(rel_aq, 1e-6);
  EXPECT_GT(rel_sa, 1e-3);
  EXPECT_LT(rel_sa, 0.1);
  EXPECT_LT(rel_ab, 0.01);   // only the BF16 rounding of the dequantized weights
}

TEST(Fp8Convert, BadInput) {
  test::TempDir tmp;
  const ModelConfig cfg = wide_tiny();
  const std::string good = tmp / "good";
  ModelWeights::random(cfg, 1).save(good, DType::BF16);
  fp8::ConvertOptions o;
  o.to = fp8::CheckpointFormat::kFp8;

  o.in_dir = tmp / "nope";
  o.out_dir = tmp / "out";
  EXPECT_NE(convert_error(o).find("does not exist"), std::string::npos);

  fs::create_directories(tmp / "noconfig");
  o.in_dir = tmp / "noconfig";
  EXPECT_NE(convert_error(o).find("no config.json"), std::string::npos);

  EXPECT_THROW(fp8::parse_checkpoint_format("fp16"), Error);
  EXPECT_THROW(fp8::parse_checkpoint_format("FP8"), Error);

  o.in_dir = good;
  o.out_dir = good;
  EXPECT_NE(convert_error(o).find("is the input"), std::string::npos);
  fs::create_directories(tmp / "exists");
  std::ofstream(tmp / "exists/keep") << "x";
  o.out_dir = tmp / "exists";
  EXPECT_NE(convert_error(o).find("--force"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "exists/keep"));
  o.force = true;
  EXPECT_EQ(convert_error(o), "");
  EXPECT_FALSE(fs::exists(tmp / "exists/keep"));
  EXPECT_TRUE(fs::exists(tmp / "exists/config.json"));
  o.force = false;

  // Tensor-level problems: unknown name, wrong shape, FP8 weight without its scale, integer dtype.
  auto rewrite = [&](const std::string& dir, auto edit) {
    io::SafetensorsModel st = io::SafetensorsModel::open(good);
    std::vector<std::pair<std::string, Tensor>> ts;
    for (auto& n : st.names()) ts.emplace_back(n, st.get(n).clone());
    edit(ts);
    fs::create_directories(dir);
    io::write_safetensors(dir + "/model.safetensors", ts);
    fs::copy_file(good + "/config.json", dir + "/config.json");
    return dir;
  };
  o.out_dir = tmp / "o2";
  o.in_dir = rewrite(tmp / "unknown", [](auto& ts) { ts.emplace_back("model.layers.99.foo.weight", Tensor::zeros({2})); });
  EXPECT_NE(convert_error(o).find("model.layers.99.foo.weight"), std::string::npos);
  o.in_dir = rewrite(tmp / "shape", [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.norm.weight") t = Tensor::zeros({3}, DType::BF16);
  });
  EXPECT_NE(convert_error(o).find("model.norm.weight"), std::string::npos);
  o.in_dir = rewrite(tmp / "noscale", [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.0.mlp.up_proj.weight") t = Tensor::zeros(t.shape, DType::F8_E4M3);
  });
  EXPECT_NE(convert_error(o).find("up_proj.weight_scale_inv"), std::string::npos);
  o.in_dir = rewrite(tmp / "int", [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.norm.weight") t = Tensor::zeros(t.shape, DType::I32);
  });
  EXPECT_NE(convert_error(o).find("I32"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "o2"));
  for (const auto& e : fs::directory_iterator(tmp.path))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST(Fp8Convert, CommandLine) {
  test::TempDir tmp;
  const std::string src = tmp / "src";
  ModelWeights::random(wide_tiny(), 2).save(src, DType::F32);
  const std::string bin = std::string(DSV3_BINARY_DIR) + "/dsv3 convert ";
  auto run = [&](const std::string& args) {
    return std::system((bin + args + " > " + (tmp / "log") + " 2>&1").c_str());
  };
  EXPECT_EQ(run("--to fp8 --in " + src + " --out " + (tmp / "f8")), 0) << slurp(tmp / "log");
  EXPECT_NE(slurp(tmp / "log").find("FP8 weights"), std::string::npos);
  EXPECT_EQ(io::SafetensorsModel::open(tmp / "f8").info("model.layers.0.self_attn.o_proj.weight").dtype,
            DType::F8_E4M3);
  EXPECT_NE(run("--to fp16 --in " + src + " --out " + (tmp / "x")), 0);
  EXPECT_NE(slurp(tmp / "log").find("unsupported target format \"fp16\""), std::string::npos) << slurp(tmp / "log");
  EXPECT_NE(run("--to bf16 --in " + src + " --out " + (tmp / "f8")), 0);
  EXPECT_NE(slurp(tmp / "log").find("--force"), std::string::npos) << slurp(tmp / "log");
  EXPECT_NE(run("--to bf16 --force --in " + (tmp / "f8") + " --out " + (tmp / "f8")), 0);  // never in place
  EXPECT_EQ(run("--to bf16 --force --quiet --in " + (tmp / "f8") + " --out " + src), 0) << slurp(tmp / "log");
  EXPECT_EQ(io::SafetensorsModel::open(src).info("model.layers.0.self_attn.o_proj.weight").dtype, DType::BF16);
  EXPECT_NE(run("--in " + src + " --out " + (tmp / "y")), 0);  // --to is required
  EXPECT_FALSE(fs::exists(tmp / "x"));
}
