// Loading, random init and saving of ModelWeights in the Hugging Face DeepSeek-V3 format (see weights.h).
#include "model/weights.h"

#include <filesystem>

#include "core/fp8_block.h"
#include "core/rng.h"
#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace dsv3 {

namespace fs = std::filesystem;

namespace {

bool want(const TensorSpec& s, const ModelConfig& c, bool load_mtp) {
  if (s.role == TensorRole::kMtpCopy) return false;
  return load_mtp || s.layer < c.num_hidden_layers;
}

// F32 copy of a stored tensor, dequantizing FP8 with its weight_scale_inv.
Tensor load_one(const io::SafetensorsModel& st, const TensorSpec& s, const ModelConfig& c) {
  DSV3_CHECK(st.has(s.name), "checkpoint ", st.path(), " is missing tensor ", s.name, " (expected shape ",
             shape_str(s.shape), ")");
  const io::TensorInfo& info = st.info(s.name);
  DSV3_CHECK(info.shape == s.shape, "tensor ", s.name, " in ", info.file, " has shape ", shape_str(info.shape),
             ", expected ", shape_str(s.shape), " for this config");
  Tensor raw = st.get(s.name);
  switch (info.dtype) {
    case DType::F32: case DType::BF16: case DType::F16: case DType::F64:
      return raw.to_f32();
    case DType::F8_E4M3: {
      DSV3_CHECK(s.shape.size() == 2, "tensor ", s.name, " is F8_E4M3 but not a matrix");
      int64_t bo = 128, bi = 128;
      if (c.quantization_config) bo = c.quantization_config->block_out, bi = c.quantization_config->block_in;
      const std::string sname = s.name + "_scale_inv";
      const Shape sshape = {ceil_div(s.shape[0], bo), ceil_div(s.shape[1], bi)};
      DSV3_CHECK(st.has(sname), "tensor ", s.name, " is F8_E4M3 but its scale ", sname, " (shape ",
                 shape_str(sshape), ") is missing");
      const io::TensorInfo& si = st.info(sname);
      DSV3_CHECK(si.shape == sshape, "scale ", sname, " has shape ", shape_str(si.shape), ", expected ",
                 shape_str(sshape), " (blocks of ", bo, "x", bi, ")");
      Tensor scale = st.get(sname).to_f32();
      Tensor out = Tensor::empty(s.shape);
      fp8_block_dequantize(raw.ptr<uint8_t>(), scale.f32(), s.shape[0], s.shape[1], bo, bi, out.f32());
      return out;
    }
    default:
      DSV3_FAIL("tensor ", s.name, " in ", info.file, " has dtype ", dtype_name(info.dtype),
                ", expected a float type (F32, BF16, F16, F8_E4M3)");
  }
}

}  // namespace

void ModelWeights::bind() {
  const ModelConfig& c = cfg;
  auto get = [&](const std::string& n) -> Tensor {
    auto it = by_name.find(n);
    DSV3_ASSERT(it != by_name.end());
    return it->second;
  };
  embed = get("model.embed_tokens.weight");
  final_norm = get("model.norm.weight");
  lm_head = get("lm_head.weight");
  layers.clear();
  for (int64_t l = 0; l < c.n_layers_total(); ++l) {
    const std::string p = layer_prefix(l);
    if (!by_name.count(p + "input_layernorm.weight")) continue;  // MTP layers not loaded
    LayerWeights L;
    L.index = l;
    L.mtp = l >= c.num_hidden_layers;
    L.moe = c.is_moe_layer(l);
    L.attn_norm = get(p + "input_layernorm.weight");
    L.ffn_norm = get(p + "post_attention_layernorm.weight");
    if (c.q_lora_rank > 0) {
      L.attn.q_a = get(p + "self_attn.q_a_proj.weight");
      L.attn.q_a_norm = get(p + "self_attn.q_a_layernorm.weight");
      L.attn.q_b = get(p + "self_attn.q_b_proj.weight");
    } else {
      L.attn.q = get(p + "self_attn.q_proj.weight");
    }
    L.attn.kv_a = get(p + "self_attn.kv_a_proj_with_mqa.weight");
    L.attn.kv_a_norm = get(p + "self_attn.kv_a_layernorm.weight");
    L.attn.kv_b = get(p + "self_attn.kv_b_proj.weight");
    L.attn.o = get(p + "self_attn.o_proj.weight");
    if (L.moe) {
      L.router = get(p + "mlp.gate.weight");
      L.router_bias = get(p + "mlp.gate.e_score_correction_bias");
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
        L.experts.push_back({get(ep + "gate_proj.weight"), get(ep + "up_proj.weight"), get(ep + "down_proj.weight")});
      }
      L.has_shared = c.n_shared_experts > 0;
      if (L.has_shared)
        L.shared = {get(p + "mlp.shared_experts.gate_proj.weight"), get(p + "mlp.shared_experts.up_proj.weight"),
                    get(p + "mlp.shared_experts.down_proj.weight")};
    } else {
      L.mlp = {get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight"), get(p + "mlp.down_proj.weight")};
    }
    if (L.mtp) {
      L.enorm = get(p + "enorm.weight");
      L.hnorm = get(p + "hnorm.weight");
      L.eh_proj = get(p + "eh_proj.weight");
      L.head_norm = get(p + "shared_head.norm.weight");
    }
    layers.push_back(std::move(L));
  }
}

ModelWeights ModelWeights::load(const std::string& dir, const LoadOptions& opt) {
  ModelWeights w;
  w.cfg = ModelConfig::load(dir);
  io::SafetensorsModel st = io::SafetensorsModel::open(dir);
  for (const TensorSpec& s : weight_specs(w.cfg))
    if (want(s, w.cfg, opt.load_mtp)) w.by_name.emplace(s.name, load_one(st, s, w.cfg));
  w.bind();
  return w;
}

ModelWeights ModelWeights::random(const ModelConfig& cfg, uint64_t seed, float std) {
  ModelWeights w;
  w.cfg = cfg;
  for (const TensorSpec& s : weight_specs(cfg)) {
    if (s.role == TensorRole::kMtpCopy) continue;
    Tensor t = Tensor::empty(s.shape);
    float* p = t.f32();
    const int64_t n = t.numel();
    switch (s.role) {
      case TensorRole::kNorm: for (int64_t i = 0; i < n; ++i) p[i] = 1.0f; break;
      case TensorRole::kRouterBias: for (int64_t i = 0; i < n; ++i) p[i] = 0.0f; break;
      default: rng_fill_normal(p, uint64_t(n), std, seed, hash_name(s.name.c_str())); break;
    }
    w.by_name.emplace(s.name, std::move(t));
  }
  w.bind();
  return w;
}

void ModelWeights::save(const std::string& dir, DType storage, uint64_t max_shard_bytes) const {
  DSV3_CHECK(storage == DType::F32 || storage == DType::BF16 || storage == DType::F8_E4M3,
             "save: storage dtype must be F32, BF16 or F8_E4M3, got ", dtype_name(storage));
  fs::create_directories(dir);
  ModelConfig c = cfg;
  const int64_t bo = 128, bi = 128;
  if (storage == DType::F8_E4M3) {
    QuantizationConfig q;
    q.block_out = bo, q.block_in = bi;
    c.quantization_config = q;
    c.torch_dtype = "bfloat16";
  } else {
    c.quantization_config.reset();
    c.torch_dtype = storage == DType::F32 ? "float32" : "bfloat16";
  }
  std::vector<std::pair<std::string, Tensor>> out;
  auto cast = [](const Tensor& src, DType t) {
    Tensor d = Tensor::empty(src.shape, t);
    convert_from_f32(t, src.f32(), d.data, size_t(src.numel()));
    return d;
  };
  for (const TensorSpec& s : weight_specs(cfg)) {
    const Tensor* src = nullptr;
    if (s.role == TensorRole::kMtpCopy) {
      const bool is_embed = s.name.ends_with("embed_tokens.weight");
      src = is_embed ? &embed : &lm_head;
    } else {
      auto it = by_name.find(s.name);
      if (it == by_name.end()) continue;  // MTP layers not loaded
      src = &it->second;
    }
    if (s.role == TensorRole::kRouterBias || storage == DType::F32) {
      out.emplace_back(s.name, s.role == TensorRole::kRouterBias ? src->clone() : cast(*src, DType::F32));
    } else if (storage == DType::F8_E4M3 && role_is_fp8(s.role)) {
      Tensor codes = Tensor::empty(s.shape, DType::F8_E4M3);
      Tensor scale = Tensor::empty({ceil_div(s.shape[0], bo), ceil_div(s.shape[1], bi)}, DType::F32);
      fp8_block_quantize(src->f32(), s.shape[0], s.shape[1], bo, bi, codes.ptr<uint8_t>(), scale.f32());
      out.emplace_back(s.name, std::move(codes));
      out.emplace_back(s.name + "_scale_inv", std::move(scale));
    } else {
      out.emplace_back(s.name, cast(*src, DType::BF16));
    }
  }
  io::write_safetensors_model(dir, out, max_shard_bytes, {{"format", "pt"}});
  io::atomic_write_file((fs::path(dir) / "config.json").string(), c.to_json().dump(2) + "\n");
}

}  // namespace dsv3
