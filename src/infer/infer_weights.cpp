// Resident-format inference weights (see infer_weights.h).
#include "infer/infer_weights.h"

#include <algorithm>
#include <set>
#include <vector>

#include "core/fp8_block.h"
#include "dsv3/error.h"
#include "io/safetensors.h"

namespace dsv3::infer {

namespace {

// Format a tensor of `role` is held in, given the format asked for the Linear weights.
DType resident_dtype(TensorRole role, DType linear) {
  switch (role) {
    case TensorRole::kLinear: return linear;
    case TensorRole::kEmbedding:
    case TensorRole::kHead: return linear == DType::F32 ? DType::F32 : DType::BF16;
    default: return DType::F32;
  }
}

// Stored dtype → the format kept when nothing else is asked.
DType natural(DType stored) {
  return stored == DType::BF16 || stored == DType::F8_E4M3 ? stored : DType::F32;
}

Tensor round_bf16(const Tensor& f32) {
  Tensor t = Tensor::empty(f32.shape, DType::BF16);
  convert_from_f32(DType::BF16, f32.f32(), t.data, size_t(f32.numel()));
  return t;
}

bool wanted(const TensorSpec& s, const ModelConfig& c) {
  return s.role != TensorRole::kMtpCopy && (s.layer < 0 || s.layer < c.num_hidden_layers);
}

// Name → held tensor, before binding into the layer structs.
struct Store {
  std::map<std::string, QMatrix> mats;   // Linear, head, router
  std::map<std::string, Tensor> vecs;    // norms, router bias, embedding
};

void put(Store& st, const TensorSpec& s, QMatrix m) {
  if (s.role == TensorRole::kNorm || s.role == TensorRole::kRouterBias || s.role == TensorRole::kEmbedding)
    st.vecs.emplace(s.name, m.data);
  else
    st.mats.emplace(s.name, std::move(m));
}

QMatrix wrap(Tensor t, DType dtype) {
  QMatrix m;
  m.dtype = dtype;
  m.N = t.shape.empty() ? 0 : t.dim(0);
  m.K = t.shape.size() > 1 ? t.dim(1) : 1;
  m.data = std::move(t);
  return m;
}

// Per-head W^UK_hᵀ ([H·d_c, d_n], row h·d_c + j, column n = kv_b[h·(d_n + d_v) + n, j]) from an FP8 kv_b as FP8
// codes with their own 128×128 scale grid, multiplied as F32 — defined only when each block of the result
// takes its codes from a single kv_b block (one scale); else undefined (the caller makes an F32 copy).
QMatrix fp8_w_uk_t(const QMatrix& kvb, int64_t H, int64_t dn, int64_t dv, int64_t dc) {
  const int64_t N = H * dc, nbr = (N + kFp8Block - 1) / kFp8Block, nbc = (dn + kFp8Block - 1) / kFp8Block;
  const int64_t ld = kvb.scale.dim(1);
  const float* src_scale = kvb.scale.f32();
  Tensor scale = Tensor::empty({nbr, nbc});
  std::vector<int64_t> block_src(size_t(nbr * nbc), -1);  // index of the kv_b scale each block uses
  for (int64_t r = 0; r < N; ++r)
    for (int64_t n = 0; n < dn; ++n) {
      const int64_t h = r / dc, j = r % dc;
      const int64_t from = ((h * (dn + dv) + n) / kFp8Block) * ld + j / kFp8Block;
      int64_t& b = block_src[size_t((r / kFp8Block) * nbc + n / kFp8Block)];
      if (b >= 0 && b != from) return {};
      b = from;
    }
  for (size_t i = 0; i < block_src.size(); ++i) scale.f32()[i] = src_scale[block_src[i]];
  Tensor codes = Tensor::empty({N, dn}, DType::F8_E4M3);
  const uint8_t* src = kvb.data.ptr<uint8_t>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < dn; ++n)
      for (int64_t j = 0; j < dc; ++j)
        codes.ptr<uint8_t>()[(h * dc + j) * dn + n] = src[(h * (dn + dv) + n) * dc + j];
  QMatrix m = wrap(std::move(codes), DType::F8_E4M3);
  m.scale = std::move(scale);
  m.fp8_as_f32 = true;
  return m;
}

InferWeights bind(const ModelConfig& c, DType dtype, Store& st) {
  InferWeights w;
  w.cfg = c;
  w.dtype = dtype;
  auto mat = [&](const std::string& n) -> QMatrix {
    auto it = st.mats.find(n);
    DSV3_ASSERT(it != st.mats.end());
    return it->second;
  };
  auto vec = [&](const std::string& n) -> Tensor {
    auto it = st.vecs.find(n);
    DSV3_ASSERT(it != st.vecs.end());
    return it->second;
  };
  w.embed = vec("model.embed_tokens.weight");
  w.final_norm = vec("model.norm.weight");
  w.lm_head = mat("lm_head.weight");
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, dc = c.kv_lora_rank;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    InferLayer L;
    L.index = l;
    L.moe = c.is_moe_layer(l);
    L.attn_norm = vec(p + "input_layernorm.weight");
    L.ffn_norm = vec(p + "post_attention_layernorm.weight");
    if (c.q_lora_rank > 0) {
      L.q_a = mat(p + "self_attn.q_a_proj.weight");
      L.q_a_norm = vec(p + "self_attn.q_a_layernorm.weight");
      L.q_b = mat(p + "self_attn.q_b_proj.weight");
    } else {
      L.q = mat(p + "self_attn.q_proj.weight");
    }
    L.kv_a = mat(p + "self_attn.kv_a_proj_with_mqa.weight");
    L.kv_a_norm = vec(p + "self_attn.kv_a_layernorm.weight");
    L.kv_b = mat(p + "self_attn.kv_b_proj.weight");
    L.o = mat(p + "self_attn.o_proj.weight");
    // Absorbed MLA matrices: kv_b's format; FP8 multiplied as F32 (infer_weights.h).
    L.kv_b_abs = L.kv_b;
    L.kv_b_abs.fp8_as_f32 = L.kv_b.dtype == DType::F8_E4M3;
    if (L.kv_b.dtype == DType::F8_E4M3) L.w_uk_t = fp8_w_uk_t(L.kv_b, H, dn, dv, dc);
    if (!L.w_uk_t.defined()) {
      const DType abs_dtype = L.kv_b.dtype == DType::BF16 ? DType::BF16 : DType::F32;
      const Tensor kvb = L.kv_b.dtype == DType::F8_E4M3 ? L.kv_b.to_f32() : Tensor{};
      const QMatrix src = L.kv_b.dtype == DType::F8_E4M3 ? wrap(kvb, DType::F32) : L.kv_b;
      Tensor t = Tensor::empty({H * dc, dn}, abs_dtype);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < dn; ++n)
          for (int64_t j = 0; j < dc; ++j) {
            const int64_t from = (h * (dn + dv) + n) * dc + j, to = (h * dc + j) * dn + n;
            if (abs_dtype == DType::BF16) t.ptr<uint16_t>()[to] = src.data.ptr<uint16_t>()[from];
            else t.f32()[to] = src.data.f32()[from];
          }
      L.w_uk_t = wrap(t, abs_dtype);
    }
    if (L.moe) {
      L.router = mat(p + "mlp.gate.weight");
      L.router_bias = vec(p + "mlp.gate.e_score_correction_bias");
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const std::string ep = p + "mlp.experts." + std::to_string(e) + ".";
        L.experts.push_back({mat(ep + "gate_proj.weight"), mat(ep + "up_proj.weight"), mat(ep + "down_proj.weight")});
      }
      L.has_shared = c.n_shared_experts > 0;
      if (L.has_shared)
        L.shared = {mat(p + "mlp.shared_experts.gate_proj.weight"), mat(p + "mlp.shared_experts.up_proj.weight"),
                    mat(p + "mlp.shared_experts.down_proj.weight")};
    } else {
      L.mlp = {mat(p + "mlp.gate_proj.weight"), mat(p + "mlp.up_proj.weight"), mat(p + "mlp.down_proj.weight")};
    }
    w.layers.push_back(std::move(L));
  }
  return w;
}

void check_dtype(DType d) {
  DSV3_CHECK(d == DType::F32 || d == DType::BF16 || d == DType::F8_E4M3,
             "inference weights: format must be F32, BF16 or F8_E4M3, got ", dtype_name(d));
}

}  // namespace

GemmNT QMatrix::gemm(int64_t M, const float* A, int64_t lda, float* C, int64_t ldc, int64_t row0, int64_t n) const {
  if (n < 0) n = N - row0;
  DSV3_CHECK(row0 >= 0 && row0 + n <= N, "QMatrix::gemm: rows [", row0, ", ", row0 + n, ") out of ", N);
  GemmNT g;
  g.M = M, g.N = n, g.K = K, g.A = A, g.lda = lda, g.C = C, g.ldc = ldc, g.ldb = K, g.b_dtype = dtype;
  switch (dtype) {
    case DType::F32: g.B = data.f32() + row0 * K; break;
    case DType::BF16: g.Bq = data.ptr<uint16_t>() + row0 * K; break;
    case DType::F8_E4M3:
      DSV3_CHECK(fp8_as_f32 || row0 % kFp8Block == 0,
                 "QMatrix::gemm: FP8 row slices must start on a 128-row block");
      g.Bq = data.ptr<uint8_t>() + row0 * K;
      g.b_scale = scale.f32() + (row0 / kFp8Block) * scale.dim(1);
      g.ld_scale = scale.dim(1);
      g.fp8_as_f32 = fp8_as_f32;
      g.b_scale_row0 = row0 % kFp8Block;
      break;
    default: DSV3_FAIL("QMatrix::gemm: unsupported dtype ", dtype_name(dtype));
  }
  return g;
}

Tensor QMatrix::to_f32() const {
  if (dtype != DType::F8_E4M3) return data.to_f32();
  Tensor out = Tensor::empty({N, K});
  fp8_block_dequantize(data.ptr<uint8_t>(), scale.f32(), N, K, kFp8Block, kFp8Block, out.f32());
  return out;
}

QMatrix QMatrix::from_f32(const Tensor& w, DType dtype) {
  DSV3_CHECK(w.dtype == DType::F32 && w.shape.size() == 2, "QMatrix::from_f32: expects an F32 matrix");
  check_dtype(dtype);
  if (dtype == DType::F32) return wrap(w, DType::F32);
  if (dtype == DType::BF16) return wrap(round_bf16(w), DType::BF16);
  QMatrix m = wrap(Tensor::empty(w.shape, DType::F8_E4M3), DType::F8_E4M3);
  m.scale = Tensor::empty({ceil_div(m.N, kFp8Block), ceil_div(m.K, kFp8Block)});
  fp8_block_quantize(w.f32(), m.N, m.K, kFp8Block, kFp8Block, m.data.ptr<uint8_t>(), m.scale.f32());
  return m;
}

InferWeights InferWeights::from(const ModelWeights& w, DType dtype) {
  check_dtype(dtype);
  Store st;
  for (const TensorSpec& s : weight_specs(w.cfg)) {
    if (!wanted(s, w.cfg)) continue;
    auto it = w.by_name.find(s.name);
    DSV3_CHECK(it != w.by_name.end(), "inference weights: missing tensor ", s.name);
    const DType d = resident_dtype(s.role, dtype);
    if (d == DType::F32 && dtype != DType::F32 && s.role != TensorRole::kRouterBias)
      put(st, s, wrap(round_bf16(it->second).to_f32(), DType::F32));  // as a BF16 / FP8 checkpoint stores it
    else if (s.shape.size() == 2)
      put(st, s, QMatrix::from_f32(it->second, d));
    else
      put(st, s, wrap(it->second, DType::F32));
  }
  return bind(w.cfg, dtype, st);
}

ModelWeights InferWeights::resident_values(const ModelWeights& w, DType dtype) {
  check_dtype(dtype);
  ModelWeights r;
  r.cfg = w.cfg;
  for (const auto& [name, t] : w.by_name) r.by_name.emplace(name, t);
  for (const TensorSpec& s : weight_specs(w.cfg)) {
    auto it = r.by_name.find(s.name);
    if (it == r.by_name.end() || dtype == DType::F32 || s.role == TensorRole::kRouterBias) continue;
    const DType d = s.layer >= w.cfg.num_hidden_layers ? DType::BF16 : resident_dtype(s.role, dtype);
    if (d == DType::F8_E4M3) it->second = QMatrix::from_f32(it->second, d).to_f32();
    else it->second = round_bf16(it->second).to_f32();
  }
  r.bind();
  return r;
}

InferWeights InferWeights::load(const std::string& dir, std::optional<DType> want) {
  if (want) check_dtype(*want);
  const ModelConfig c = ModelConfig::load(dir);
  io::SafetensorsModel st = io::SafetensorsModel::open(dir);
  int64_t bo = kFp8Block, bi = kFp8Block;
  if (c.quantization_config) bo = c.quantization_config->block_out, bi = c.quantization_config->block_in;
  Store store;
  std::set<DType> linear_dtypes;
  for (const TensorSpec& s : weight_specs(c)) {
    if (!wanted(s, c)) continue;
    DSV3_CHECK(st.has(s.name), "checkpoint ", st.path(), " is missing tensor ", s.name, " (expected shape ",
               shape_str(s.shape), ")");
    const io::TensorInfo& info = st.info(s.name);
    DSV3_CHECK(info.shape == s.shape, "tensor ", s.name, " in ", info.file, " has shape ", shape_str(info.shape),
               ", expected ", shape_str(s.shape), " for this config");
    DSV3_CHECK(dtype_is_float(info.dtype) && info.dtype != DType::F8_E5M2, "tensor ", s.name, " in ", info.file,
               " has dtype ", dtype_name(info.dtype), ", expected F32, BF16, F16 or F8_E4M3");
    const DType stored = info.dtype;
    DType target = resident_dtype(s.role, want.value_or(natural(stored)));
    if (s.role == TensorRole::kLinear) linear_dtypes.insert(target);
    Tensor raw = st.get(s.name);
    Tensor scale;
    if (stored == DType::F8_E4M3) {
      DSV3_CHECK(s.shape.size() == 2, "tensor ", s.name, " is F8_E4M3 but not a matrix");
      const std::string sname = s.name + "_scale_inv";
      const Shape sshape = {ceil_div(s.shape[0], bo), ceil_div(s.shape[1], bi)};
      DSV3_CHECK(st.has(sname), "tensor ", s.name, " is F8_E4M3 but its scale ", sname, " (shape ",
                 shape_str(sshape), ") is missing");
      DSV3_CHECK(st.info(sname).shape == sshape, "scale ", sname, " has shape ", shape_str(st.info(sname).shape),
                 ", expected ", shape_str(sshape), " (blocks of ", bo, "x", bi, ")");
      scale = st.get(sname).to_f32();
    }
    if (stored == target && stored != DType::F32) {
      // Kept as stored: an owned copy of the bytes (the file mapping is released after loading).
      QMatrix m = wrap(raw.clone(), stored);
      if (stored == DType::F8_E4M3) {
        DSV3_CHECK(bo == kFp8Block && bi == kFp8Block, "FP8 inference needs 128x128 scale blocks, checkpoint has ",
                   bo, "x", bi);
        m.scale = scale;
      }
      put(store, s, std::move(m));
      continue;
    }
    Tensor f32 = raw.to_f32();
    if (stored == DType::F8_E4M3) {
      f32 = Tensor::empty(s.shape);
      fp8_block_dequantize(raw.ptr<uint8_t>(), scale.f32(), s.shape[0], s.shape[1], bo, bi, f32.f32());
    }
    if (s.shape.size() == 2) put(store, s, QMatrix::from_f32(f32, target));
    else put(store, s, wrap(f32, DType::F32));
  }
  DSV3_CHECK(linear_dtypes.size() <= 1, "checkpoint ", dir, " mixes Linear weight formats; pass one explicitly");
  return bind(c, linear_dtypes.empty() ? DType::F32 : *linear_dtypes.begin(), store);
}


void InferWeights::set_lm_head_format(DType dtype) {
  check_dtype(dtype);
  DSV3_CHECK(lm_head.defined(), "inference weights: no lm_head to convert");
  if (lm_head.dtype == dtype) return;
  if (dtype != DType::F8_E4M3 || lm_head.dtype == DType::F8_E4M3) {
    lm_head = QMatrix::from_f32(lm_head.to_f32(), dtype);
    return;
  }
  // F32 / BF16 → FP8 one 128-row block at a time (no F32 copy of the whole vocabulary × D matrix).
  const int64_t N = lm_head.N, K = lm_head.K;
  QMatrix m = wrap(Tensor::empty({N, K}, DType::F8_E4M3), DType::F8_E4M3);
  m.scale = Tensor::empty({ceil_div(N, kFp8Block), ceil_div(K, kFp8Block)});
  std::vector<float> rows(size_t(kFp8Block * K));
  for (int64_t r0 = 0; r0 < N; r0 += kFp8Block) {
    const int64_t n = std::min(kFp8Block, N - r0);
    if (lm_head.dtype == DType::BF16)
      convert_to_f32(DType::BF16, lm_head.data.ptr<uint16_t>() + r0 * K, rows.data(), size_t(n * K));
    else
      std::copy(lm_head.data.f32() + r0 * K, lm_head.data.f32() + (r0 + n) * K, rows.begin());
    fp8_block_quantize(rows.data(), n, K, kFp8Block, kFp8Block, m.data.ptr<uint8_t>() + r0 * K,
                       m.scale.f32() + (r0 / kFp8Block) * m.scale.dim(1));
  }
  lm_head = std::move(m);
}

double InferWeights::resident_bytes() const {
  double b = double(embed.nbytes()) + double(final_norm.nbytes()) + lm_head.bytes();
  auto mlp = [](const InferMlp& m) { return m.gate.bytes() + m.up.bytes() + m.down.bytes(); };
  for (const InferLayer& L : layers) {
    b += double(L.attn_norm.nbytes() + L.ffn_norm.nbytes()) + L.q_a.bytes() + L.q_b.bytes() + L.q.bytes() +
         L.kv_a.bytes() + L.kv_b.bytes() + L.o.bytes() + L.w_uk_t.bytes() + L.router.bytes() + mlp(L.mlp) +
         mlp(L.shared);
    if (L.q_a_norm.defined()) b += double(L.q_a_norm.nbytes());
    b += double(L.kv_a_norm.nbytes());
    if (L.kv_b_abs.data.data != L.kv_b.data.data) b += L.kv_b_abs.bytes();
    if (L.router_bias.defined()) b += double(L.router_bias.nbytes());
    for (const InferMlp& e : L.experts) b += mlp(e);
  }
  return b;
}

}  // namespace dsv3::infer
