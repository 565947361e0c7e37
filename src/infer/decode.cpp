// Incremental forward over the latent cache (see decode.h).
#include "infer/decode.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "dsv3/error.h"
#include "infer/latent_attention.h"
#include "infer/simd.h"
#include "kernels/ops.h"
#include "model/transformer.h"

namespace dsv3::infer {

namespace {
constexpr float kLatentNormEps = 1e-6f;  // q_a_layernorm / kv_a_layernorm: hard-coded 1e-6 (V3_SPEC.md §2.1)
}

Decoder::Decoder(const ModelWeights& w, int64_t max_rows, int64_t max_seq_len, AttnPrecision attn)
    : Decoder(InferWeights::from(w, DType::F32), max_rows, max_seq_len, attn) {}

Decoder::Decoder(const InferWeights& w, int64_t max_rows, int64_t max_seq_len, AttnPrecision attn)
    : w_(w), max_rows_(max_rows), max_seq_len_(max_seq_len), attn_(attn) {
  const ModelConfig& c = w.cfg;
  DSV3_CHECK(max_rows > 0, "decoder: max_rows must be positive, got ", max_rows);
  DSV3_CHECK(max_seq_len > 0, "decoder: max_seq_len must be positive, got ", max_seq_len);
  const int64_t R = max_rows, D = c.hidden_size, H = c.num_attention_heads, dn = c.qk_nope_head_dim,
                dr = c.qk_rope_head_dim, dv = c.v_head_dim, dc = c.kv_lora_rank, dqk = dn + dr;
  DSV3_CHECK(int64_t(w.layers.size()) == c.num_hidden_layers, "decoder: weights hold ", w.layers.size(),
             " main layers, config says ", c.num_hidden_layers);

  const int64_t I_shared = c.n_shared_experts * c.moe_intermediate_size;
  bool any_dense = false;
  for (const InferLayer& L : w.layers) any_dense = any_dense || !L.moe;
  const int64_t I_gu = std::max<int64_t>(any_dense ? c.intermediate_size : 0, I_shared);
  const int64_t K = c.n_routed_experts > 0 ? c.num_experts_per_tok : 0;
  x_ = Tensor::empty({R, D});
  a_ = Tensor::empty({R, D});
  f_ = Tensor::empty({R, D});
  h_ = Tensor::empty({R, D});
  cq_ = Tensor::empty({R, std::max<int64_t>(c.q_lora_rank, 1)});
  q_ = Tensor::empty({R, H * dqk});
  kv_ = Tensor::empty({R, dc + dr});
  q_lat_ = Tensor::empty({R, H, dc + dr});
  o_lat_ = Tensor::empty({R, H, dc});
  o_ = Tensor::empty({R, H * dv});
  gu_ = Tensor::empty({R, 2 * std::max<int64_t>(I_gu, 1)});
  z_ = Tensor::empty({R, std::max<int64_t>(c.n_routed_experts, 1)});
  x_exp_ = Tensor::empty({std::max<int64_t>(R * K, 1), D});
  gu_exp_ = Tensor::empty({std::max<int64_t>(R * K, 1), 2 * c.moe_intermediate_size});
  y_exp_ = Tensor::empty({std::max<int64_t>(R * K, 1), D});
  if (attn == AttnPrecision::kBF16) {
    DSV3_CHECK(latent_attention_bf16_available(), "decoder: BF16 attention needs a build with AVX512-BF16");
    DSV3_CHECK(dc % 16 == 0, "decoder: BF16 attention needs kv_lora_rank to be a multiple of 16, got ", dc);
    q_bf16_.assign(size_t(R * H * bf16_padded_k(dc + dr)), 0);
  }
  scratch_per_thread_ = latent_attention_scratch_floats(H, max_seq_len);
  attn_scratch_ = Tensor::empty({int64_t(omp_get_max_threads()), scratch_per_thread_});
  inv_freq_ = c.rope_inv_freq();
  pos_.resize(size_t(R));
  seq_.resize(size_t(R));
  count_.resize(size_t(c.n_routed_experts + 1));
  offset_.resize(size_t(c.n_routed_experts + 1));
  fill_.resize(size_t(c.n_routed_experts + 1));
  slot_of_.resize(size_t(R * K));
  pos_of_.resize(size_t(R * K));
  problems_.reserve(size_t(2 * (c.n_routed_experts + c.num_attention_heads + 2)));
}

void Decoder::gemm(const GemmNT& p) {
  stats_.weight_bytes += gemm_weight_bytes(p);
  stats_.flops += 2.0 * double(p.M) * double(p.N) * double(p.K);
  gemm_nt_rowwise(p);
}

void Decoder::gemm_group(std::span<const GemmNT> ps) {
  for (const GemmNT& p : ps) {
    stats_.weight_bytes += gemm_weight_bytes(p);
    stats_.flops += 2.0 * double(p.M) * double(p.N) * double(p.K);
  }
  gemm_nt_rowwise_grouped(ps);
}

void Decoder::forward(std::span<const DecodeRow> rows, KvCache& cache, float* logits) {
  const ModelConfig& c = w_.cfg;
  const int64_t R = int64_t(rows.size()), D = c.hidden_size;
  DSV3_CHECK(R > 0 && R <= max_rows_, "decoder: a step has ", R, " rows, the limit is ", max_rows_);
  const KvCacheConfig& kc = cache.config();
  DSV3_CHECK(kc.n_layers == c.num_hidden_layers && kc.kv_lora_rank == c.kv_lora_rank &&
                 kc.qk_rope_head_dim == c.qk_rope_head_dim,
             "decoder: the KV cache was built for another model shape");
  DSV3_CHECK((attn_ == AttnPrecision::kBF16) == cache.is_bf16(), "decoder: a ",
             attn_ == AttnPrecision::kBF16 ? "BF16" : "F32", "-attention decoder needs a ",
             attn_ == AttnPrecision::kBF16 ? "BF16" : "F32", " KV cache, got ", dtype_name(kc.dtype));
  DSV3_CHECK(attn_ != AttnPrecision::kBF16 || kc.block_size % 2 == 0,
             "decoder: BF16 attention needs an even KV block size, got ", kc.block_size);
  if (int64_t(next_pos_.size()) != kc.max_seqs) next_pos_.assign(size_t(kc.max_seqs), -1);

  // Check the rows against the cache: consecutive positions per sequence from its current length.
  stats_ = StepStats{};
  stats_.rows = R;
  bool ok = true;
  for (int64_t r = 0; r < R && ok; ++r) {
    const DecodeRow& row = rows[size_t(r)];
    ok = row.seq >= 0 && row.seq < kc.max_seqs && cache.in_use(row.seq);
    if (!ok) break;
    int64_t& next = next_pos_[size_t(row.seq)];
    if (next < 0) next = cache.length(row.seq);
    ok = row.pos == next && row.pos < cache.capacity(row.seq) && row.pos < max_seq_len_ && row.token >= 0 &&
         row.token < c.vocab_size;
    ++next;
    pos_[size_t(r)] = row.pos;
    seq_[size_t(r)] = row.seq;
    stats_.logit_rows += row.want_logits;
  }
  if (!ok) {
    for (const DecodeRow& row : rows)
      if (row.seq >= 0 && row.seq < kc.max_seqs) next_pos_[size_t(row.seq)] = -1;
  }
  DSV3_CHECK(ok, "decoder: invalid step rows (each sequence's rows need consecutive positions from its cache "
             "length, reserved cache blocks, positions < ", max_seq_len_, " and token ids < ", c.vocab_size, ")");

  for (int64_t r = 0; r < R; ++r) {
    const int64_t t = rows[size_t(r)].token;
    if (w_.embed.dtype == DType::BF16) convert_to_f32(DType::BF16, w_.embed.ptr<uint16_t>() + t * D, x_.f32() + r * D, size_t(D));
    else std::memcpy(x_.f32() + r * D, w_.embed.f32() + t * D, size_t(D) * sizeof(float));
  }

  for (const InferLayer& L : w_.layers) {
    ops::rmsnorm(R, D, x_.f32(), D, L.attn_norm.f32(), float(c.rms_norm_eps), a_.f32(), D);
    attention(L, L.index, R, cache);
    float* x = x_.f32();
    const float* f = f_.f32();
    for (int64_t i = 0; i < R * D; ++i) x[i] += f[i];
    ops::rmsnorm(R, D, x_.f32(), D, L.ffn_norm.f32(), float(c.rms_norm_eps), a_.f32(), D);
    if (L.moe) moe(L, R);
    else dense_mlp(L.mlp, R);
    for (int64_t i = 0; i < R * D; ++i) x[i] += f[i];
  }

  // Commit the new cache lengths.
  for (const DecodeRow& row : rows) {
    int64_t& next = next_pos_[size_t(row.seq)];
    if (next >= 0) cache.set_length(row.seq, next);
    next = -1;
  }

  // Final norm + lm_head for the rows that want logits.
  int64_t n_out = 0;
  for (int64_t r = 0; r < R; ++r)
    if (rows[size_t(r)].want_logits) {
      ops::rmsnorm(1, D, x_.f32() + r * D, D, w_.final_norm.f32(), float(c.rms_norm_eps), h_.f32() + n_out * D, D);
      ++n_out;
    }
  if (n_out > 0) {
    DSV3_CHECK(logits != nullptr, "decoder: rows want logits but no output buffer was given");
    gemm(w_.lm_head.gemm(n_out, h_.f32(), D, logits, c.vocab_size));
  }
}

void Decoder::attention(const InferLayer& W, int64_t layer, int64_t R, KvCache& cache) {
  const ModelConfig& c = w_.cfg;
  const int64_t D = c.hidden_size, H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dv = c.v_head_dim, dc = c.kv_lora_rank, dqk = dn + dr;
  const double* inv_freq = inv_freq_.data();
  const double cs_scale = c.rope_cos_sin_scale();

  // q [R, H, d_n + d_r].
  if (c.q_lora_rank > 0) {
    const int64_t dq = c.q_lora_rank;
    gemm(W.q_a.gemm(R, a_.f32(), D, cq_.f32(), dq));
    ops::rmsnorm(R, dq, cq_.f32(), dq, W.q_a_norm.f32(), kLatentNormEps, cq_.f32(), dq);
    gemm(W.q_b.gemm(R, cq_.f32(), dq, q_.f32(), H * dqk));
  } else {
    gemm(W.q.gemm(R, a_.f32(), D, q_.f32(), H * dqk));
  }
  ops::rope_interleaved(R, H, dr, q_.f32() + dn, H * dqk, dqk, pos_.data(), inv_freq, cs_scale);

  // kv [R, d_c + d_r]: normalised latent and roped shared key, then into the cache.
  gemm(W.kv_a.gemm(R, a_.f32(), D, kv_.f32(), dc + dr));
  ops::rmsnorm(R, dc, kv_.f32(), dc + dr, W.kv_a_norm.f32(), kLatentNormEps, kv_.f32(), dc + dr);
  ops::rope_interleaved(R, 1, dr, kv_.f32() + dc, dc + dr, dr, pos_.data(), inv_freq, cs_scale);
  for (int64_t r = 0; r < R; ++r) {
    if (cache.is_bf16())  // (the row's padding to stored_elems() is written as zeros)
      round_rows_bf16(1, dc + dr, kv_.f32() + r * (dc + dr), dc + dr,
                      cache.row_bf16(seq_[size_t(r)], layer, pos_[size_t(r)]));
    else
      std::memcpy(cache.row(seq_[size_t(r)], layer, pos_[size_t(r)]), kv_.f32() + r * (dc + dr),
                  size_t(dc + dr) * sizeof(float));
    stats_.kv_bytes += double(pos_[size_t(r)] + 1) * double(cache.config().stored_elems()) *
                       double(dtype_size(cache.config().dtype));
    stats_.flops += 2.0 * double(H) * double(pos_[size_t(r)] + 1) * double(2 * dc + dr);
  }

  // [q̃_h ; q^R_h] per head → [R, H, d_c + d_r]: q̃_h = q^C_h · W^UK_h, then the roped q^R_h copied beside it.
  problems_.clear();
  for (int64_t h = 0; h < H; ++h)
    problems_.push_back(W.w_uk_t.gemm(R, q_.f32() + h * dqk, H * dqk, q_lat_.f32() + h * (dc + dr), H * (dc + dr),
                                      h * dc, dc));
  gemm_group(problems_);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t h = 0; h < H; ++h)
      std::memcpy(q_lat_.f32() + (r * H + h) * (dc + dr) + dc, q_.f32() + r * H * dqk + h * dqk + dn,
                  size_t(dr) * sizeof(float));

  LatentAttention la;
  la.n_rows = R, la.n_heads = H, la.kv_lora_rank = dc, la.qk_rope_head_dim = dr;
  la.q = q_lat_.f32();
  la.out = o_lat_.f32();
  la.seq = seq_.data(), la.pos = pos_.data();
  la.cache = &cache, la.layer = layer;
  la.scale = float(c.softmax_scale());
  la.scratch = attn_scratch_.f32(), la.scratch_per_thread = scratch_per_thread_;
  la.scratch_threads = attn_scratch_.dim(0);
  if (attn_ == AttnPrecision::kBF16) {
    round_rows_bf16(R * H, dc + dr, q_lat_.f32(), dc + dr, q_bf16_.data());
    la.q_bf16 = q_bf16_.data();
    latent_attention_bf16(la);
  } else {
    latent_attention(la);
  }

  // o_h = ô_h · W^UV_hᵀ → [R, H d_v], then o_proj.
  problems_.clear();
  for (int64_t h = 0; h < H; ++h)
    problems_.push_back(
        W.kv_b_abs.gemm(R, o_lat_.f32() + h * dc, H * dc, o_.f32() + h * dv, H * dv, h * (dn + dv) + dn, dv));
  gemm_group(problems_);
  gemm(W.o.gemm(R, o_.f32(), H * dv, f_.f32(), D));
}

void Decoder::dense_mlp(const InferMlp& m, int64_t R) {
  const int64_t D = w_.cfg.hidden_size, I = m.gate.N;
  problems_.clear();
  problems_.push_back(m.gate.gemm(R, a_.f32(), D, gu_.f32(), 2 * I));
  problems_.push_back(m.up.gemm(R, a_.f32(), D, gu_.f32() + I, 2 * I));
  gemm_group(problems_);
  ops::silu_mul(R, I, gu_.f32(), gu_.f32() + I, 2 * I, gu_.f32(), 2 * I);
  gemm(m.down.gemm(R, gu_.f32(), 2 * I, f_.f32(), D));
}

void Decoder::moe(const InferLayer& L, int64_t R) {
  const ModelConfig& c = w_.cfg;
  const int64_t D = c.hidden_size, N = c.n_routed_experts, K = c.num_experts_per_tok, I = c.moe_intermediate_size;
  gemm(L.router.gemm(R, a_.f32(), D, z_.f32(), N));
  const Routing rt = route_tokens(c, z_.f32(), R, L.router_bias.f32());

  // Dispatch: list position j (grouped by expert, rows in step order) ← (row, slot) pair slot_of[j].
  std::fill(count_.begin(), count_.end(), 0);
  for (int64_t i = 0; i < R * K; ++i) ++count_[size_t(rt.idx[size_t(i)] + 1)];
  offset_[0] = 0;
  for (int64_t e = 0; e < N; ++e) offset_[size_t(e + 1)] = offset_[size_t(e)] + count_[size_t(e + 1)];
  std::copy(offset_.begin(), offset_.begin() + N, fill_.begin());
  for (int64_t i = 0; i < R * K; ++i) slot_of_[size_t(fill_[size_t(rt.idx[size_t(i)])]++)] = i;
  for (int64_t j = 0; j < R * K; ++j) {
    pos_of_[size_t(slot_of_[size_t(j)])] = j;
    std::memcpy(x_exp_.f32() + j * D, a_.f32() + (slot_of_[size_t(j)] / K) * D, size_t(D) * sizeof(float));
  }

  // gate|up for every routed expert with rows, and the shared expert over all rows, in one grouped call.
  const int64_t Is = c.n_shared_experts * I;
  problems_.clear();
  for (int64_t e = 0; e < N; ++e) {
    const int64_t n = offset_[size_t(e + 1)] - offset_[size_t(e)], o = offset_[size_t(e)];
    if (n == 0) continue;
    ++stats_.experts_run;
    const InferMlp& m = L.experts[size_t(e)];
    problems_.push_back(m.gate.gemm(n, x_exp_.f32() + o * D, D, gu_exp_.f32() + o * 2 * I, 2 * I));
    problems_.push_back(m.up.gemm(n, x_exp_.f32() + o * D, D, gu_exp_.f32() + o * 2 * I + I, 2 * I));
  }
  if (L.has_shared) {
    problems_.push_back(L.shared.gate.gemm(R, a_.f32(), D, gu_.f32(), 2 * Is));
    problems_.push_back(L.shared.up.gemm(R, a_.f32(), D, gu_.f32() + Is, 2 * Is));
  }
  gemm_group(problems_);
  ops::silu_mul(R * K, I, gu_exp_.f32(), gu_exp_.f32() + I, 2 * I, gu_exp_.f32(), 2 * I);
  if (L.has_shared) ops::silu_mul(R, Is, gu_.f32(), gu_.f32() + Is, 2 * Is, gu_.f32(), 2 * Is);

  problems_.clear();
  for (int64_t e = 0; e < N; ++e) {
    const int64_t n = offset_[size_t(e + 1)] - offset_[size_t(e)], o = offset_[size_t(e)];
    if (n == 0) continue;
    problems_.push_back(L.experts[size_t(e)].down.gemm(n, gu_exp_.f32() + o * 2 * I, 2 * I, y_exp_.f32() + o * D, D));
  }
  if (L.has_shared) problems_.push_back(L.shared.down.gemm(R, gu_.f32(), 2 * Is, f_.f32(), D));
  gemm_group(problems_);
  if (!L.has_shared) std::memset(f_.f32(), 0, size_t(R * D) * sizeof(float));

  // Combine: shared output, then each row's routed outputs in its slot order.
  for (int64_t t = 0; t < R; ++t)
    for (int64_t k = 0; k < K; ++k)
      simd::axpy(D, rt.weight[size_t(t * K + k)], y_exp_.f32() + pos_of_[size_t(t * K + k)] * D, f_.f32() + t * D);
}

}  // namespace dsv3::infer
