// dsv3 init | forward | plan: make a random HF-format model, run the full forward pass, and print model arithmetic.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "core/dtype.h"
#include "dsv3/error.h"
#include "io/npy.h"
#include "kernels/ops.h"
#include "model/plan.h"
#include "model/transformer.h"

namespace dsv3::cli {

namespace fs = std::filesystem;

// A config path, or the name of a built-in config (configs/NAME.json in the source tree).
static ModelConfig resolve_config(const std::string& spec) {
  if (fs::exists(spec)) return ModelConfig::load(spec);
  const fs::path builtin = fs::path(DSV3_SOURCE_DIR) / "configs" / (spec + ".json");
  DSV3_CHECK(fs::exists(builtin), "config \"", spec, "\" is neither a file nor a built-in config (",
             (fs::path(DSV3_SOURCE_DIR) / "configs").string(), ")");
  return ModelConfig::load(builtin.string());
}

static void register_init(CLI::App& root) {
  auto* cmd = root.add_subcommand("init", "Write an HF-format model directory with random weights");
  struct Opts {
    std::string config, out, dtype = "f32";
    uint64_t seed = 0;
    float std = 0.006f;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--config", o->config, "config.json path or built-in name (tiny, small, medium, 671b)")->required();
  cmd->add_option("--out", o->out, "output directory")->required();
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "storage dtype")->check(CLI::IsMember({"f32", "bf16", "fp8"}))->capture_default_str();
  cmd->add_option("--std", o->std, "init standard deviation (paper: 0.006)")->capture_default_str();
  cmd->callback([o] {
    ModelConfig cfg = resolve_config(o->config);
    ModelWeights w = ModelWeights::random(cfg, o->seed, o->std);
    const DType dt = o->dtype == "f32" ? DType::F32 : o->dtype == "bf16" ? DType::BF16 : DType::F8_E4M3;
    w.save(o->out, dt);
    std::printf("wrote %s (%s, %lld layers + %lld MTP, seed %llu)\n", o->out.c_str(), o->dtype.c_str(),
                (long long)cfg.num_hidden_layers, (long long)cfg.num_nextn_predict_layers, (unsigned long long)o->seed);
  });
}

static void register_forward(CLI::App& root) {
  auto* cmd = root.add_subcommand("forward", "Run the full forward pass and write logits [S, vocab] as .npy");
  struct Opts {
    std::string model, tokens, logits, mtp_logits, mla = "naive", dump, precision = "f32";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--model", o->model, "model directory (config.json + safetensors)")->required();
  cmd->add_option("--tokens", o->tokens, "comma-separated token ids, e.g. 1,5,9")->required();
  cmd->add_option("--logits", o->logits, "output .npy for float32 logits [S, vocab]")->required();
  cmd->add_option("--mtp-logits", o->mtp_logits,
                  "output .npy for MTP depth-1 logits [S-1, vocab] (row i predicts token i+2)");
  cmd->add_option("--mla", o->mla, "MLA form")->check(CLI::IsMember({"naive", "absorbed"}))->capture_default_str();
  cmd->add_option("--dump", o->dump, "directory to write every named intermediate as .npy");
  cmd->add_option("--precision", o->precision,
                  "GEMM precision: f32 (exact reference path) or bf16 (BF16 operands, F32 accumulation)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->callback([o] {
    ops::GemmPrecisionScope precision(o->precision == "bf16" ? ops::GemmPrecision::kBF16 : ops::GemmPrecision::kF32);
    std::vector<int64_t> ids64 = parse_int_list(o->tokens);
    std::vector<int32_t> ids;
    for (int64_t v : ids64) {
      DSV3_CHECK(v >= 0 && v <= INT32_MAX, "token id ", v, " is out of range");
      ids.push_back(int32_t(v));
    }
    LoadOptions lo;
    lo.load_mtp = !o->mtp_logits.empty() || !o->dump.empty();
    ModelWeights w = ModelWeights::load(o->model, lo);
    Transformer model(w);
    Trace trace;
    ForwardOptions fo;
    fo.mla = o->mla == "absorbed" ? MlaMode::kAbsorbed : MlaMode::kNaive;
    if (!o->dump.empty()) fo.trace = &trace;
    Tensor h = model.hidden(ids, fo);
    io::write_npy(o->logits, model.logits(h));
    if (!o->mtp_logits.empty()) io::write_npy(o->mtp_logits, model.mtp_logits(h, ids, 1, fo));
    if (!o->dump.empty()) {
      if (o->mtp_logits.empty() && w.cfg.num_nextn_predict_layers > 0 && ids.size() > 1) model.mtp_logits(h, ids, 1, fo);
      fs::create_directories(o->dump);
      for (const auto& [name, t] : trace.tensors) io::write_npy((fs::path(o->dump) / (name + ".npy")).string(), t);
    }
    std::fprintf(stderr, "forward: %zu tokens, logits [%zu, %lld] -> %s\n", ids.size(), ids.size(),
                 (long long)w.cfg.vocab_size, o->logits.c_str());
  });
}

static void register_plan(CLI::App& root) {
  auto* cmd = root.add_subcommand("plan", "Parameters, activated parameters, FLOPs and KV-cache size of a config");
  struct Opts {
    std::string config;
    bool json = false;
    int64_t seq = 4096;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--config", o->config, "config.json path or built-in name")->required();
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->add_option("--seq", o->seq, "context length for the attention FLOPs")->capture_default_str();
  cmd->callback([o] {
    DSV3_CHECK(o->seq > 0, "--seq must be positive");
    ModelPlan p = make_plan(resolve_config(o->config), o->seq);
    std::cout << (o->json ? p.to_json().dump(2) + "\n" : p.to_text());
  });
}

DSV3_REGISTER_COMMAND(register_init);
DSV3_REGISTER_COMMAND(register_forward);
DSV3_REGISTER_COMMAND(register_plan);

}  // namespace dsv3::cli
