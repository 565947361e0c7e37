// RunConfig JSON parsing, validation and model-config resolution (see run_config.h).
#include "train/run_config.h"

#include <filesystem>
#include <set>

#include "dsv3/error.h"

namespace dsv3::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void check_known(const json& j, const std::string& where, const std::set<std::string>& known) {
  for (const auto& [k, v] : j.items())
    DSV3_CHECK(known.count(k), where, ": unknown field \"", k, "\"");
}

template <typename T>
void get(const json& j, const char* key, T& dst, const std::string& where) {
  if (!j.contains(key)) return;
  const json& v = j[key];
  try {
    if constexpr (std::is_same_v<T, std::string>) {
      DSV3_CHECK(v.is_string(), "");
    } else if constexpr (std::is_same_v<T, bool>) {
      DSV3_CHECK(v.is_boolean(), "");
    } else if constexpr (std::is_integral_v<T>) {
      DSV3_CHECK(v.is_number_integer(), "");
    } else {
      DSV3_CHECK(v.is_number(), "");
    }
    dst = v.get<T>();
  } catch (const std::exception&) {
    DSV3_FAIL(where, key, ": wrong type (", v.dump(), ")");
  }
}

}  // namespace

RunConfig RunConfig::from_json(const json& j) {
  DSV3_CHECK(j.is_object(), "run config must be a JSON object");
  check_known(j, "run config",
              {"model", "init_seed", "init_std", "tokenizer", "data", "data_seed", "batch", "seq", "grad_accum",
               "steps", "lr", "adam", "clip", "mtp_lambda", "balance_alpha", "bias_gamma", "eval_every",
               "eval_batches", "checkpoint_every", "keep_last", "checkpoint_dtype", "log_every", "maxvio_window",
               "peak_gflops", "precision", "fp8_cache_activations", "sample_prompts", "sample_tokens", "spike_guard", "out", "comment"});
  RunConfig c;
  const std::string w = "run config field ";
  get(j, "model", c.model, w);
  get(j, "init_seed", c.init_seed, w);
  get(j, "init_std", c.init_std, w);
  get(j, "tokenizer", c.tokenizer, w);
  get(j, "data", c.data, w);
  get(j, "data_seed", c.data_seed, w);
  get(j, "batch", c.batch, w);
  get(j, "seq", c.seq, w);
  get(j, "grad_accum", c.grad_accum, w);
  get(j, "steps", c.steps, w);
  if (j.contains("lr")) c.lr = LrSchedule::from_json(j["lr"]);
  if (j.contains("adam")) {
    const json& a = j["adam"];
    DSV3_CHECK(a.is_object(), "run config field adam must be an object");
    check_known(a, "adam", {"beta1", "beta2", "eps", "weight_decay", "moments"});
    get(a, "beta1", c.adam_beta1, "adam.");
    get(a, "beta2", c.adam_beta2, "adam.");
    get(a, "eps", c.adam_eps, "adam.");
    get(a, "weight_decay", c.weight_decay, "adam.");
    get(a, "moments", c.moments, "adam.");
  }
  get(j, "clip", c.clip, w);
  if (j.contains("mtp_lambda")) c.mtp_lambda = PiecewiseConstant::from_json(j["mtp_lambda"], "mtp_lambda");
  get(j, "balance_alpha", c.balance_alpha, w);
  if (j.contains("bias_gamma")) c.bias_gamma = PiecewiseConstant::from_json(j["bias_gamma"], "bias_gamma");
  get(j, "eval_every", c.eval_every, w);
  get(j, "eval_batches", c.eval_batches, w);
  get(j, "checkpoint_every", c.checkpoint_every, w);
  get(j, "keep_last", c.keep_last, w);
  get(j, "checkpoint_dtype", c.checkpoint_dtype, w);
  get(j, "log_every", c.log_every, w);
  get(j, "maxvio_window", c.maxvio_window, w);
  get(j, "peak_gflops", c.peak_gflops, w);
  get(j, "precision", c.precision, w);
  get(j, "fp8_cache_activations", c.fp8_cache_activations, w);
  if (j.contains("sample_prompts")) {
    DSV3_CHECK(j["sample_prompts"].is_array(), "sample_prompts must be an array");
    for (const json& p : j["sample_prompts"]) {
      bool ok = p.is_string() || (p.is_array() && !p.empty());
      if (p.is_array())
        for (const json& t : p) ok = ok && t.is_number_integer() && t.get<int64_t>() >= 0;
      DSV3_CHECK(ok, "sample_prompts: each prompt is a string or a non-empty array of token ids, got ", p.dump());
      c.sample_prompts.push_back(p);
    }
  }
  get(j, "sample_tokens", c.sample_tokens, w);
  if (j.contains("spike_guard")) {
    const json& s = j["spike_guard"];
    DSV3_CHECK(s.is_object(), "spike_guard must be an object");
    check_known(s, "spike_guard", {"factor", "window", "min_steps", "max_rollbacks"});
    get(s, "factor", c.spike.factor, "spike_guard.");
    get(s, "window", c.spike.window, "spike_guard.");
    get(s, "min_steps", c.spike.min_steps, "spike_guard.");
    get(s, "max_rollbacks", c.spike.max_rollbacks, "spike_guard.");
  }
  get(j, "out", c.out, w);
  c.validate();
  return c;
}

double RunConfig::effective_peak_gflops() const {
  if (peak_gflops > 0) return peak_gflops;
  // FP8 is emulated on the BF16 units of this CPU (fp8/fp8_gemm.h): its ceiling is the BF16 peak.
  return precision == "f32" ? kPeakGflopsF32 : kPeakGflopsBF16;
}

void RunConfig::validate() const {
  DSV3_CHECK(!model.empty(), "run config: model is empty");
  DSV3_CHECK(init_std > 0, "run config: init_std must be positive, got ", init_std);
  DSV3_CHECK(!data.empty(), "run config: data is empty (\"synthetic\" or a data directory)");
  DSV3_CHECK(batch > 0, "run config: batch must be positive, got ", batch);
  DSV3_CHECK(seq >= 3, "run config: seq must be >= 3 (MTP needs S >= D+2), got ", seq);
  DSV3_CHECK(grad_accum > 0, "run config: grad_accum must be positive, got ", grad_accum);
  DSV3_CHECK(steps >= 0, "run config: steps must be >= 0, got ", steps);
  DSV3_CHECK(moments == "f32" || moments == "bf16", "run config: adam.moments must be f32 or bf16, got ", moments);
  DSV3_CHECK(checkpoint_dtype == "f32" || checkpoint_dtype == "bf16" || checkpoint_dtype == "fp8",
             "run config: checkpoint_dtype must be f32, bf16 or fp8, got ", checkpoint_dtype);
  DSV3_CHECK(clip >= 0, "run config: clip must be >= 0");
  DSV3_CHECK(balance_alpha >= 0, "run config: balance_alpha must be >= 0");
  DSV3_CHECK(eval_every >= 0 && eval_batches > 0, "run config: eval_every >= 0 and eval_batches > 0 required");
  DSV3_CHECK(checkpoint_every >= 0, "run config: checkpoint_every must be >= 0");
  DSV3_CHECK(keep_last >= 1, "run config: keep_last must be >= 1, got ", keep_last);
  DSV3_CHECK(log_every >= 1, "run config: log_every must be >= 1");
  DSV3_CHECK(maxvio_window >= 1, "run config: maxvio_window must be >= 1");
  DSV3_CHECK(peak_gflops >= 0, "run config: peak_gflops must be >= 0 (0: the measured peak for the precision)");
  DSV3_CHECK(precision == "f32" || precision == "bf16" || precision == "fp8",
             "run config: precision must be f32, bf16 or fp8, got ", precision);
  DSV3_CHECK(!fp8_cache_activations || precision == "fp8",
             "run config: fp8_cache_activations needs precision fp8, got precision ", precision);
  DSV3_CHECK(sample_tokens >= 0, "run config: sample_tokens must be >= 0");
  DSV3_CHECK(spike.factor >= 0 && spike.window >= 1 && spike.min_steps >= 1 && spike.max_rollbacks >= 0,
             "run config: bad spike_guard values");
  DSV3_CHECK(!out.empty(), "run config: out (the run directory) is empty");
}

json RunConfig::to_json() const {
  json j;
  j["model"] = model;
  j["init_seed"] = init_seed;
  j["init_std"] = init_std;
  j["tokenizer"] = tokenizer;
  j["data"] = data;
  j["data_seed"] = data_seed;
  j["batch"] = batch;
  j["seq"] = seq;
  j["grad_accum"] = grad_accum;
  j["steps"] = steps;
  j["lr"] = lr.to_json();
  j["adam"] = {{"beta1", adam_beta1}, {"beta2", adam_beta2}, {"eps", adam_eps}, {"weight_decay", weight_decay},
               {"moments", moments}};
  j["clip"] = clip;
  j["mtp_lambda"] = mtp_lambda.to_json();
  j["balance_alpha"] = balance_alpha;
  j["bias_gamma"] = bias_gamma.to_json();
  j["eval_every"] = eval_every;
  j["eval_batches"] = eval_batches;
  j["checkpoint_every"] = checkpoint_every;
  j["keep_last"] = keep_last;
  j["checkpoint_dtype"] = checkpoint_dtype;
  j["log_every"] = log_every;
  j["maxvio_window"] = maxvio_window;
  j["peak_gflops"] = peak_gflops;
  j["precision"] = precision;
  j["fp8_cache_activations"] = fp8_cache_activations;
  j["sample_prompts"] = sample_prompts;
  j["sample_tokens"] = sample_tokens;
  j["spike_guard"] = {{"factor", spike.factor}, {"window", spike.window}, {"min_steps", spike.min_steps},
                      {"max_rollbacks", spike.max_rollbacks}};
  j["out"] = out;
  return j;
}

bool is_model_dir(const std::string& spec) {
  std::error_code ec;
  return fs::is_directory(spec, ec) && fs::exists(fs::path(spec) / "config.json", ec) &&
         (fs::exists(fs::path(spec) / "model.safetensors", ec) ||
          fs::exists(fs::path(spec) / "model.safetensors.index.json", ec));
}

ModelConfig resolve_model_config(const std::string& spec, const std::string& source_dir) {
  std::error_code ec;
  if (fs::exists(spec, ec)) return ModelConfig::load(spec);
  const fs::path builtin = fs::path(source_dir) / "configs" / (spec + ".json");
  DSV3_CHECK(fs::exists(builtin, ec), "model \"", spec, "\" is neither a config file, a model directory nor a ",
             "built-in config (", (fs::path(source_dir) / "configs").string(), ")");
  return ModelConfig::load(builtin.string());
}

}  // namespace dsv3::train
