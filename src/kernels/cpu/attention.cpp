// Causal attention for one head: scores by GEMM, masked softmax, weighted sum by GEMM (see ops.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/ops.h"
#include "kernels/cpu/vec_exp.h"

namespace dsv3::ops {

void causal_softmax(int64_t S_q, int64_t S_kv, float* scores, int64_t ld, int64_t q_offset) {
#pragma omp parallel for schedule(static) if (S_q * S_kv > 16384)
  for (int64_t s = 0; s < S_q; ++s) {
    float* r = scores + s * ld;
    const int64_t n = std::clamp<int64_t>(q_offset + s + 1, 0, S_kv);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) mx = std::max(mx, r[t]);
    const double sum = detail::exp_shift(r, r, n, -mx);
    const float inv = n > 0 ? float(1.0 / sum) : 0.0f;
    for (int64_t t = 0; t < n; ++t) r[t] *= inv;
    for (int64_t t = n; t < S_kv; ++t) r[t] = 0.0f;
  }
}

void head_attention(const HeadAttention& a) {
  gemm_nt(a.S_q, a.S_kv, a.dk, a.q, a.q_ld, a.k, a.k_ld, a.scores, a.S_kv, a.scale, 0.0f);
  causal_softmax(a.S_q, a.S_kv, a.scores, a.S_kv, a.q_offset);
  gemm_nn(a.S_q, a.dv, a.S_kv, a.scores, a.S_kv, a.v, a.v_ld, a.out, a.out_ld, 1.0f, 0.0f);
}

}  // namespace dsv3::ops
