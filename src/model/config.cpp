// config.json <-> ModelConfig, validation, and the YaRN / softmax-scale formulas (V3_SPEC.md §1, §4.1, §4.3).
#include "model/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "dsv3/error.h"

namespace dsv3 {

namespace {

using nlohmann::json;

const char* type_name(const json& v) { return v.type_name(); }

int64_t get_int(const json& j, const char* key, std::optional<int64_t> def = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    DSV3_CHECK(def.has_value(), "config: missing required field \"", key, "\"");
    return *def;
  }
  if (it->is_number_float()) {
    double d = it->get<double>();
    DSV3_CHECK(std::floor(d) == d, "config: field \"", key, "\" must be an integer, got ", d);
    return int64_t(d);
  }
  DSV3_CHECK(it->is_number_integer(), "config: field \"", key, "\" must be an integer, got ", type_name(*it), " ",
             it->dump());
  return it->get<int64_t>();
}

double get_num(const json& j, const char* key, std::optional<double> def = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    DSV3_CHECK(def.has_value(), "config: missing required field \"", key, "\"");
    return *def;
  }
  DSV3_CHECK(it->is_number(), "config: field \"", key, "\" must be a number, got ", type_name(*it), " ", it->dump());
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, bool def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  DSV3_CHECK(it->is_boolean(), "config: field \"", key, "\" must be true/false, got ", it->dump());
  return it->get<bool>();
}

std::string get_str(const json& j, const char* key, std::optional<std::string> def = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    DSV3_CHECK(def.has_value(), "config: missing required field \"", key, "\"");
    return *def;
  }
  DSV3_CHECK(it->is_string(), "config: field \"", key, "\" must be a string, got ", it->dump());
  return it->get<std::string>();
}

// Either key spelling (HF 4.x name first, then the transformers 5.x alias).
int64_t get_int_alias(const json& j, const char* key, const char* alias, std::optional<int64_t> def = std::nullopt) {
  if (!j.contains(key) && j.contains(alias)) return get_int(j, alias, def);
  return get_int(j, key, def);
}

double yarn_get_m(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

}  // namespace

ModelConfig ModelConfig::from_json(const json& j) {
  DSV3_CHECK(j.is_object(), "config: top level must be a JSON object");
  ModelConfig c;
  c.raw = j;
  if (j.contains("model_type")) {
    std::string mt = get_str(j, "model_type");
    DSV3_CHECK(mt == "deepseek_v3", "config: model_type \"", mt, "\" is not supported (expected \"deepseek_v3\")");
  }
  c.vocab_size = get_int(j, "vocab_size");
  c.hidden_size = get_int(j, "hidden_size");
  c.intermediate_size = get_int(j, "intermediate_size");
  c.moe_intermediate_size = get_int(j, "moe_intermediate_size", 0);
  c.num_hidden_layers = get_int(j, "num_hidden_layers");
  c.num_nextn_predict_layers = get_int_alias(j, "num_nextn_predict_layers", "num_mtp_layers", 0);
  c.num_attention_heads = get_int(j, "num_attention_heads");
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads);
  c.n_shared_experts = get_int(j, "n_shared_experts", 0);
  c.n_routed_experts = get_int_alias(j, "n_routed_experts", "num_local_experts", 0);
  c.routed_scaling_factor = get_num(j, "routed_scaling_factor", 1.0);
  c.kv_lora_rank = get_int(j, "kv_lora_rank");
  c.q_lora_rank = get_int(j, "q_lora_rank", 0);
  c.qk_rope_head_dim = get_int(j, "qk_rope_head_dim");
  c.qk_nope_head_dim = get_int(j, "qk_nope_head_dim");
  c.v_head_dim = get_int(j, "v_head_dim");
  c.topk_method = get_str(j, "topk_method", std::string("noaux_tc"));
  c.n_group = get_int(j, "n_group", 1);
  c.topk_group = get_int(j, "topk_group", 1);
  c.num_experts_per_tok = get_int(j, "num_experts_per_tok", 0);
  c.moe_layer_freq = get_int(j, "moe_layer_freq", 1);
  c.first_k_dense_replace = get_int(j, "first_k_dense_replace", 0);
  c.norm_topk_prob = get_bool(j, "norm_topk_prob", true);
  c.scoring_func = get_str(j, "scoring_func", std::string("sigmoid"));
  c.hidden_act = get_str(j, "hidden_act", std::string("silu"));
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 4096);
  c.rms_norm_eps = get_num(j, "rms_norm_eps", 1e-6);
  c.bos_token_id = get_int(j, "bos_token_id", 0);
  c.eos_token_id = get_int(j, "eos_token_id", 1);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false);
  c.torch_dtype = get_str(j, "torch_dtype", std::string("bfloat16"));
  DSV3_CHECK(!get_bool(j, "attention_bias", false), "config: attention_bias=true is not supported by DeepSeek-V3");
  DSV3_CHECK(get_bool(j, "rope_interleave", true),
             "config: rope_interleave=false (rotate-half pairing) is not supported; DeepSeek checkpoints use "
             "interleaved pairs");

  // RoPE: old style rope_theta + rope_scaling, or transformers 5.x rope_parameters.
  json rs;
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) rs = j["rope_scaling"];
  c.rope_theta = get_num(j, "rope_theta", 10000.0);
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const json& rp = j["rope_parameters"];
    DSV3_CHECK(rp.is_object(), "config: rope_parameters must be an object");
    c.rope_theta = get_num(rp, "rope_theta", c.rope_theta);
    std::string rt = get_str(rp, "rope_type", std::string("default"));
    if (rt != "default") rs = rp;
  }
  if (!rs.is_null()) {
    DSV3_CHECK(rs.is_object(), "config: rope_scaling must be an object or null");
    RopeScaling r;
    r.type = rs.contains("type") ? get_str(rs, "type") : get_str(rs, "rope_type", std::string("yarn"));
    DSV3_CHECK(r.type == "yarn", "config: rope_scaling type \"", r.type, "\" is not supported (only \"yarn\")");
    r.factor = get_num(rs, "factor");
    r.original_max_position_embeddings = get_int(rs, "original_max_position_embeddings", 4096);
    r.beta_fast = get_num(rs, "beta_fast", 32.0);
    r.beta_slow = get_num(rs, "beta_slow", 1.0);
    r.mscale = get_num(rs, "mscale", 1.0);
    r.mscale_all_dim = get_num(rs, "mscale_all_dim", 0.0);
    c.rope_scaling = r;
  }
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    const json& q = j["quantization_config"];
    DSV3_CHECK(q.is_object(), "config: quantization_config must be an object");
    QuantizationConfig qc;
    qc.quant_method = get_str(q, "quant_method", std::string("fp8"));
    qc.fmt = get_str(q, "fmt", std::string("e4m3"));
    qc.activation_scheme = get_str(q, "activation_scheme", std::string("dynamic"));
    DSV3_CHECK(qc.quant_method == "fp8" && qc.fmt == "e4m3", "config: quantization_config ", q.dump(),
               " is not supported (expected quant_method fp8, fmt e4m3)");
    if (q.contains("weight_block_size")) {
      const json& b = q["weight_block_size"];
      DSV3_CHECK(b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer(),
                 "config: quantization_config.weight_block_size must be [out, in], got ", b.dump());
      qc.block_out = b[0].get<int64_t>();
      qc.block_in = b[1].get<int64_t>();
    }
    if (q.contains("scale_fmt") && !q["scale_fmt"].is_null()) qc.scale_fmt = get_str(q, "scale_fmt");
    c.quantization_config = qc;
  }
  c.validate();
  return c;
}

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* name) { DSV3_CHECK(v > 0, "config: ", name, " must be > 0, got ", v); };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(kv_lora_rank, "kv_lora_rank");
  positive(qk_nope_head_dim, "qk_nope_head_dim");
  positive(qk_rope_head_dim, "qk_rope_head_dim");
  positive(v_head_dim, "v_head_dim");
  DSV3_CHECK(q_lora_rank >= 0, "config: q_lora_rank must be >= 0 or null, got ", q_lora_rank);
  DSV3_CHECK(qk_rope_head_dim % 2 == 0, "config: qk_rope_head_dim must be even (RoPE rotates pairs), got ",
             qk_rope_head_dim);
  DSV3_CHECK(num_nextn_predict_layers >= 0, "config: num_nextn_predict_layers must be >= 0");
  DSV3_CHECK(first_k_dense_replace >= 0, "config: first_k_dense_replace must be >= 0");
  DSV3_CHECK(rms_norm_eps > 0, "config: rms_norm_eps must be > 0");
  DSV3_CHECK(rope_theta > 0, "config: rope_theta must be > 0");
  DSV3_CHECK(hidden_act == "silu", "config: hidden_act \"", hidden_act, "\" is not supported (only \"silu\")");
  const bool any_dense = first_k_dense_replace > 0 || n_routed_experts == 0;
  if (any_dense) positive(intermediate_size, "intermediate_size");
  if (n_routed_experts > 0 && first_k_dense_replace < num_hidden_layers + num_nextn_predict_layers) {
    DSV3_CHECK(scoring_func == "sigmoid", "config: scoring_func \"", scoring_func,
               "\" is not supported (DeepSeek-V3 uses \"sigmoid\")");
    DSV3_CHECK(topk_method == "noaux_tc", "config: topk_method \"", topk_method,
               "\" is not supported (DeepSeek-V3 uses \"noaux_tc\")");
    DSV3_CHECK(moe_layer_freq == 1, "config: moe_layer_freq must be 1, got ", moe_layer_freq);
    positive(moe_intermediate_size, "moe_intermediate_size");
    positive(num_experts_per_tok, "num_experts_per_tok");
    positive(n_group, "n_group");
    DSV3_CHECK(n_routed_experts % n_group == 0, "config: n_routed_experts (", n_routed_experts,
               ") must be divisible by n_group (", n_group, ")");
    DSV3_CHECK(topk_group >= 1 && topk_group <= n_group, "config: topk_group (", topk_group, ") must be in [1, n_group=",
               n_group, "]");
    if (n_group > 1)
      DSV3_CHECK(experts_per_group() >= 2, "config: group-limited routing scores a group by its top-2 experts, so "
                 "each group needs >= 2 experts (n_routed_experts/n_group = ", experts_per_group(), ")");
    DSV3_CHECK(num_experts_per_tok <= topk_group * experts_per_group(), "config: num_experts_per_tok (",
               num_experts_per_tok, ") exceeds the experts in topk_group groups (", topk_group * experts_per_group(), ")");
    DSV3_CHECK(n_shared_experts >= 0, "config: n_shared_experts must be >= 0");
  }
  if (rope_scaling) {
    DSV3_CHECK(rope_scaling->factor > 0, "config: rope_scaling.factor must be > 0");
    DSV3_CHECK(rope_scaling->original_max_position_embeddings > 0,
               "config: rope_scaling.original_max_position_embeddings must be > 0");
  }
  if (quantization_config)
    DSV3_CHECK(quantization_config->block_out > 0 && quantization_config->block_in > 0,
               "config: weight_block_size must be positive");
}

ModelConfig ModelConfig::load(const std::string& path) {
  std::filesystem::path p(path);
  if (std::filesystem::is_directory(p)) p /= "config.json";
  std::ifstream f(p);
  DSV3_CHECK(f.good(), "cannot open config ", p.string());
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    DSV3_FAIL("config ", p.string(), " is not valid JSON: ", e.what());
  }
  try {
    return from_json(j);
  } catch (const Error& e) {
    DSV3_FAIL(p.string(), ": ", e.what());
  }
}

json ModelConfig::to_json() const {
  json j = raw.is_object() ? raw : json::object();
  // Normalise to the HF 4.x / official DeepSeek-V3 spellings.
  for (const char* k : {"num_local_experts", "num_mtp_layers", "rope_parameters"}) j.erase(k);
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["model_type"] = "deepseek_v3";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["n_shared_experts"] = n_shared_experts;
  j["n_routed_experts"] = n_routed_experts;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["kv_lora_rank"] = kv_lora_rank;
  j["q_lora_rank"] = q_lora_rank > 0 ? json(q_lora_rank) : json(nullptr);
  j["qk_rope_head_dim"] = qk_rope_head_dim;
  j["qk_nope_head_dim"] = qk_nope_head_dim;
  j["v_head_dim"] = v_head_dim;
  j["topk_method"] = topk_method;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["moe_layer_freq"] = moe_layer_freq;
  j["first_k_dense_replace"] = first_k_dense_replace;
  j["norm_topk_prob"] = norm_topk_prob;
  j["scoring_func"] = scoring_func;
  j["hidden_act"] = hidden_act;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (rope_scaling) {
    j["rope_scaling"] = {{"type", rope_scaling->type},
                         {"factor", rope_scaling->factor},
                         {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings},
                         {"beta_fast", rope_scaling->beta_fast},
                         {"beta_slow", rope_scaling->beta_slow},
                         {"mscale", rope_scaling->mscale},
                         {"mscale_all_dim", rope_scaling->mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = false;
  j["torch_dtype"] = torch_dtype;
  if (quantization_config) {
    json q = {{"activation_scheme", quantization_config->activation_scheme},
              {"fmt", quantization_config->fmt},
              {"quant_method", quantization_config->quant_method},
              {"weight_block_size", {quantization_config->block_out, quantization_config->block_in}}};
    if (quantization_config->scale_fmt) q["scale_fmt"] = *quantization_config->scale_fmt;
    j["quantization_config"] = q;
  } else {
    j.erase("quantization_config");
  }
  return j;
}

double ModelConfig::softmax_scale() const {
  double s = 1.0 / std::sqrt(double(qk_head_dim()));
  if (rope_scaling && rope_scaling->factor > 1.0) {
    double m = yarn_get_m(rope_scaling->factor, rope_scaling->mscale_all_dim);
    s *= m * m;
  }
  return s;
}

double ModelConfig::rope_cos_sin_scale() const {
  if (!rope_scaling) return 1.0;
  return yarn_get_m(rope_scaling->factor, rope_scaling->mscale) /
         yarn_get_m(rope_scaling->factor, rope_scaling->mscale_all_dim);
}

std::vector<double> ModelConfig::rope_inv_freq() const {
  const int64_t d = qk_rope_head_dim, half = d / 2;
  std::vector<double> f(half);
  for (int64_t j = 0; j < half; ++j) f[j] = std::pow(rope_theta, -2.0 * double(j) / double(d));
  if (!rope_scaling) return f;
  const RopeScaling& r = *rope_scaling;
  const double L0 = double(r.original_max_position_embeddings);
  auto corr = [&](double n) { return double(d) * std::log(L0 / (2.0 * M_PI * n)) / (2.0 * std::log(rope_theta)); };
  double lo = std::max(std::floor(corr(r.beta_fast)), 0.0);
  double hi = std::min(std::ceil(corr(r.beta_slow)), double(d - 1));
  if (lo == hi) hi += 0.001;
  for (int64_t j = 0; j < half; ++j) {
    double ramp = std::clamp((double(j) - lo) / (hi - lo), 0.0, 1.0);
    f[j] = f[j] * (1.0 - ramp) + (f[j] / r.factor) * ramp;
  }
  return f;
}

}  // namespace dsv3
