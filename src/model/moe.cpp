// DeepSeekMoE (V3_SPEC.md §3) and the dense SwiGLU MLP (§2.2).
// Router in f32: sigmoid affinities; e_score_correction_bias is added for SELECTION ONLY; group-limited
// top-k (group score = sum of its two largest biased scores); gate weights from the unbiased affinities,
// normalised over the selected experts, × routed_scaling_factor. Experts run as GEMMs over the tokens routed
// to them; each token's expert outputs are summed in its own slot order, so the result does not depend on
// which other tokens are in the batch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "dsv3/error.h"
#include "kernels/ops.h"
#include "model/transformer.h"

namespace dsv3 {

Routing route_tokens(const ModelConfig& c, const float* logits, int64_t T, const float* bias) {
  const int64_t N = c.n_routed_experts, K = c.num_experts_per_tok, G = c.n_group, per = N / G;
  Routing r;
  r.T = T, r.K = K;
  r.idx.resize(size_t(T * K));
  r.weight.resize(size_t(T * K));
  r.affinity.resize(size_t(T * N));
#pragma omp parallel for schedule(static) if (T > 64)
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> sel(N);
    float* s = r.affinity.data() + t * N;
    for (int64_t i = 0; i < N; ++i) {
      s[i] = 1.0f / (1.0f + std::exp(-logits[t * N + i]));
      sel[i] = s[i] + bias[i];
    }
    if (G > 1) {
      std::vector<float> gscore(G);
      for (int64_t g = 0; g < G; ++g) {
        float m1 = -std::numeric_limits<float>::infinity(), m2 = m1;
        for (int64_t i = g * per; i < (g + 1) * per; ++i) {
          if (sel[i] > m1) m2 = m1, m1 = sel[i];
          else if (sel[i] > m2) m2 = sel[i];
        }
        gscore[g] = m1 + m2;
      }
      std::vector<int64_t> order(G);
      std::iota(order.begin(), order.end(), 0);
      // Stable: on equal group scores the lower group index wins.
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return gscore[x] > gscore[y]; });
      for (int64_t gi = c.topk_group; gi < G; ++gi)
        for (int64_t i = order[gi] * per; i < (order[gi] + 1) * per; ++i) sel[i] = -std::numeric_limits<float>::infinity();
    }
    std::vector<int32_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int32_t x, int32_t y) {
      return sel[x] > sel[y] || (sel[x] == sel[y] && x < y);
    });
    double denom = 0.0;
    for (int64_t k = 0; k < K; ++k) denom += s[order[k]];
    for (int64_t k = 0; k < K; ++k) {
      r.idx[t * K + k] = order[k];
      double g = c.norm_topk_prob ? s[order[k]] / denom : s[order[k]];
      r.weight[t * K + k] = float(g * c.routed_scaling_factor);
    }
  }
  return r;
}

void Transformer::mlp(const MlpWeights& m, const float* u, int64_t T, float* out, bool accumulate) const {
  const int64_t D = w_.cfg.hidden_size, I = m.gate.dim(0);
  if (T == 0) return;
  Tensor gu = Tensor::empty({T, 2 * I});
  ops::gemm_nt(T, I, D, u, D, m.gate.f32(), D, gu.f32(), 2 * I);
  ops::gemm_nt(T, I, D, u, D, m.up.f32(), D, gu.f32() + I, 2 * I);
  ops::silu_mul(T, I, gu.f32(), gu.f32() + I, 2 * I, gu.f32(), 2 * I);
  ops::gemm_nt(T, D, I, gu.f32(), 2 * I, m.down.f32(), I, out, D, 1.0f, accumulate ? 1.0f : 0.0f);
}

void Transformer::moe(const LayerWeights& L, const float* u, int64_t T, float* out, const ForwardOptions& opt,
                      const std::string& name) const {
  const ModelConfig& c = w_.cfg;
  const int64_t D = c.hidden_size, N = c.n_routed_experts, K = c.num_experts_per_tok;
  Tensor z = Tensor::empty({T, N});
  ops::gemm_nt(T, N, D, u, D, L.router.f32(), D, z.f32(), N);
  Routing r = route_tokens(c, z.f32(), T, L.router_bias.f32());
  if (opt.trace) {
    // Sorted by expert id per token, weights in the same order (order-free comparison with references).
    std::vector<int64_t> idx(size_t(T * K));
    std::vector<float> wt(size_t(T * K));
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int64_t> perm(K);
      std::iota(perm.begin(), perm.end(), 0);
      std::sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return r.idx[t * K + a] < r.idx[t * K + b]; });
      for (int64_t k = 0; k < K; ++k) idx[t * K + k] = r.idx[t * K + perm[k]], wt[t * K + k] = r.weight[t * K + perm[k]];
    }
    opt.trace->put_i64(name + "topk_idx", idx, {T, K});
    opt.trace->put(name + "topk_w", wt.data(), {T, K});
  }

  // Dispatch: the (token, slot) pairs of each expert, in token order.
  std::vector<int64_t> count(N + 1, 0);
  for (int64_t i = 0; i < T * K; ++i) ++count[r.idx[i] + 1];
  std::vector<int64_t> offset(N + 1, 0);
  for (int64_t e = 0; e < N; ++e) offset[e + 1] = offset[e] + count[e + 1];
  std::vector<int64_t> slot_of(T * K), fill(offset.begin(), offset.end() - 1);
  for (int64_t i = 0; i < T * K; ++i) slot_of[fill[r.idx[i]]++] = i;

  Tensor xin = Tensor::empty({T * K, D}), yout = Tensor::empty({T * K, D});
  for (int64_t j = 0; j < T * K; ++j) std::memcpy(xin.f32() + j * D, u + (slot_of[j] / K) * D, size_t(D) * 4);
  for (int64_t e = 0; e < N; ++e) {
    const int64_t n = offset[e + 1] - offset[e];
    if (n) mlp(L.experts[e], xin.f32() + offset[e] * D, n, yout.f32() + offset[e] * D, false);
  }
  // Combine: shared expert first, then each token's routed outputs in its slot order.
  std::vector<int64_t> pos_of(T * K);
  for (int64_t j = 0; j < T * K; ++j) pos_of[slot_of[j]] = j;
  if (L.has_shared) mlp(L.shared, u, T, out, false);
  else std::memset(out, 0, size_t(T * D) * 4);
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const float g = r.weight[t * K + k];
      const float* y = yout.f32() + pos_of[t * K + k] * D;
      float* o = out + t * D;
      for (int64_t d = 0; d < D; ++d) o[d] += g * y[d];
    }
}

}  // namespace dsv3
