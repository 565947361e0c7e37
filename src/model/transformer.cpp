// Top-level forward: embedding, decoder layers, final norm, lm_head, MTP chain (V3_SPEC.md §2, §5).
#include "model/transformer.h"

#include <cstring>

#include "dsv3/error.h"
#include "kernels/ops.h"

namespace dsv3 {

void Trace::put(const std::string& name, const float* data, const Shape& shape, int64_t row_stride) {
  Tensor t = Tensor::empty(shape);
  const int64_t cols = shape.empty() ? 1 : shape.back();
  const int64_t rows = cols ? t.numel() / cols : 0;
  if (row_stride < 0) row_stride = cols;
  for (int64_t r = 0; r < rows; ++r) std::memcpy(t.f32() + r * cols, data + r * row_stride, size_t(cols) * 4);
  tensors[name] = std::move(t);
}

void Trace::put_i64(const std::string& name, const std::vector<int64_t>& data, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::I64);
  std::memcpy(t.data, data.data(), data.size() * 8);
  tensors[name] = std::move(t);
}

void Transformer::decoder_layer(const LayerWeights& L, Tensor& x, const std::vector<int64_t>& pos,
                                const ForwardOptions& opt, const std::string& name) const {
  const ModelConfig& c = w_.cfg;
  const int64_t S = x.dim(0), D = c.hidden_size;
  Tensor a = Tensor::empty({S, D}), o = Tensor::empty({S, D});
  ops::rmsnorm(S, D, x.f32(), D, L.attn_norm.f32(), float(c.rms_norm_eps), a.f32(), D);
  if (opt.trace) opt.trace->put(name + "attn_norm", a.f32(), {S, D});
  mla(L, a.f32(), S, pos, o.f32(), opt, name);
  if (opt.trace) opt.trace->put(name + "attn_out", o.f32(), {S, D});
  float* xp = x.f32();
  for (int64_t i = 0; i < S * D; ++i) xp[i] += o.f32()[i];
  ops::rmsnorm(S, D, x.f32(), D, L.ffn_norm.f32(), float(c.rms_norm_eps), a.f32(), D);
  if (opt.trace) opt.trace->put(name + "ffn_norm", a.f32(), {S, D});
  if (L.moe) moe(L, a.f32(), S, o.f32(), opt, name);
  else mlp(L.mlp, a.f32(), S, o.f32(), false);
  if (opt.trace) opt.trace->put(name + "ffn_out", o.f32(), {S, D});
  for (int64_t i = 0; i < S * D; ++i) xp[i] += o.f32()[i];
  if (opt.trace) opt.trace->put(name + "out", x.f32(), {S, D});
}

Tensor Transformer::hidden(std::span<const int32_t> tokens, const ForwardOptions& opt) const {
  const ModelConfig& c = w_.cfg;
  const int64_t S = int64_t(tokens.size()), D = c.hidden_size;
  DSV3_CHECK(S > 0, "forward: empty token list");
  for (int64_t i = 0; i < S; ++i)
    DSV3_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, "forward: token id ", tokens[i], " at position ", i,
               " is outside the vocabulary [0, ", c.vocab_size, ")");
  Tensor x = Tensor::empty({S, D});
  for (int64_t i = 0; i < S; ++i) std::memcpy(x.f32() + i * D, w_.embed.f32() + int64_t(tokens[i]) * D, size_t(D) * 4);
  if (opt.trace) opt.trace->put("emb", x.f32(), {S, D});
  std::vector<int64_t> pos(S);
  for (int64_t i = 0; i < S; ++i) pos[i] = i;
  for (const LayerWeights& L : w_.layers) {
    if (L.mtp) continue;
    decoder_layer(L, x, pos, opt, "L" + std::to_string(L.index) + ".");
  }
  ops::rmsnorm(S, D, x.f32(), D, w_.final_norm.f32(), float(c.rms_norm_eps), x.f32(), D);
  if (opt.trace) opt.trace->put("final_norm", x.f32(), {S, D});
  return x;
}

Tensor Transformer::logits(const Tensor& h) const {
  const ModelConfig& c = w_.cfg;
  const int64_t S = h.dim(0);
  Tensor out = Tensor::empty({S, c.vocab_size});
  ops::gemm_nt(S, c.vocab_size, c.hidden_size, h.f32(), c.hidden_size, w_.lm_head.f32(), c.hidden_size, out.f32(),
               c.vocab_size);
  return out;
}

const LayerWeights& Transformer::mtp_layer(int depth) const {
  const int64_t idx = w_.cfg.num_hidden_layers + depth - 1;
  for (const LayerWeights& L : w_.layers)
    if (L.index == idx) return L;
  DSV3_FAIL("MTP depth ", depth, " is not available (num_nextn_predict_layers = ", w_.cfg.num_nextn_predict_layers,
            ", MTP weights loaded: ", w_.layers.size() > size_t(w_.cfg.num_hidden_layers) ? "yes" : "no", ")");
}

Tensor Transformer::mtp_logits(const Tensor& h, std::span<const int32_t> tokens, int depth,
                               const ForwardOptions& opt) const {
  const ModelConfig& c = w_.cfg;
  const int64_t S = int64_t(tokens.size()), D = c.hidden_size;
  DSV3_CHECK(depth >= 1 && depth <= c.num_nextn_predict_layers, "MTP depth ", depth, " outside [1, ",
             c.num_nextn_predict_layers, "]");
  DSV3_CHECK(h.dim(0) == S, "mtp_logits: hidden has ", h.dim(0), " rows for ", S, " tokens");
  DSV3_CHECK(S > depth, "MTP depth ", depth, " needs at least ", depth + 1, " tokens, got ", S);
  Tensor prev = h;  // h^{k-1}: rows 0 .. S-k
  for (int k = 1; k <= depth; ++k) {
    const LayerWeights& L = mtp_layer(k);
    const int64_t n = S - k;
    const std::string name = "mtp.L" + std::to_string(L.index) + ".";
    Tensor cat = Tensor::empty({n, 2 * D});
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(cat.f32() + i * 2 * D, w_.embed.f32() + int64_t(tokens[i + k]) * D, size_t(D) * 4);
    ops::rmsnorm(n, D, cat.f32(), 2 * D, L.enorm.f32(), float(c.rms_norm_eps), cat.f32(), 2 * D);
    ops::rmsnorm(n, D, prev.f32(), D, L.hnorm.f32(), float(c.rms_norm_eps), cat.f32() + D, 2 * D);
    Tensor x = Tensor::empty({n, D});
    ops::gemm_nt(n, D, 2 * D, cat.f32(), 2 * D, L.eh_proj.f32(), 2 * D, x.f32(), D);
    if (opt.trace) opt.trace->put(name + "in", x.f32(), {n, D});
    std::vector<int64_t> pos(n);
    for (int64_t i = 0; i < n; ++i) pos[i] = i;
    decoder_layer(L, x, pos, opt, name);
    ops::rmsnorm(n, D, x.f32(), D, L.head_norm.f32(), float(c.rms_norm_eps), x.f32(), D);
    prev = x;
  }
  return logits(prev);
}

}  // namespace dsv3
