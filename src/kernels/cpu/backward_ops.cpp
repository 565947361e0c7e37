// CPU backward operators (see kernels/backward_ops.h for the contracts). Reductions over a row are done in
// f64; elementwise math in f32 like the forward ops.
#include "kernels/backward_ops.h"
#include "kernels/cpu/vec_exp.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace dsv3::ops {

static inline float rms_inv(const float* x, int64_t D, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < D; ++i) ss += double(x[i]) * double(x[i]);
  // Same rounding as ops::rmsnorm: r computed in f64, rounded once to f32.
  return float(1.0 / std::sqrt(ss / double(D) + double(eps)));
}

void rmsnorm_backward_input(int64_t T, int64_t D, const float* x, int64_t x_stride, const float* w, const float* dy,
                            int64_t dy_stride, float eps, float* dx, int64_t dx_stride, bool accumulate) {
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * x_stride;
    const float* gr = dy + t * dy_stride;
    float* o = dx + t * dx_stride;
    const float r = rms_inv(xr, D, eps);
    double dot = 0.0;  // Σ_i w_i dy_i x_i
    for (int64_t i = 0; i < D; ++i) dot += double(w[i]) * double(gr[i]) * double(xr[i]);
    const float c = float(double(r) * double(r) * dot / double(D));
    for (int64_t i = 0; i < D; ++i) {
      const float v = r * (w[i] * gr[i] - xr[i] * c);
      o[i] = accumulate ? o[i] + v : v;
    }
  }
}

void rmsnorm_backward_weight(int64_t T, int64_t D, const float* x, int64_t x_stride, const float* dy,
                             int64_t dy_stride, float eps, float* dw) {
  std::vector<float> r(static_cast<size_t>(T));
#pragma omp parallel for schedule(static) if (T * D > 65536)
  for (int64_t t = 0; t < T; ++t) r[t] = rms_inv(x + t * x_stride, D, eps);
  // Blocks of 64 columns walked row by row (contiguous reads); each column still sums its rows in order.
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (T * D > 65536)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    const int64_t i0 = blk * kBlock, i1 = std::min(D, i0 + kBlock);
    double s[kBlock] = {};
    for (int64_t t = 0; t < T; ++t) {
      const float* dyr = dy + t * dy_stride;
      const float* xr = x + t * x_stride;
      const float rt = r[t];
      for (int64_t i = i0; i < i1; ++i) s[i - i0] += double(dyr[i]) * double(xr[i] * rt);
    }
    for (int64_t i = i0; i < i1; ++i) dw[i] += float(s[i - i0]);
  }
}

void rope_interleaved_backward(int64_t T, int64_t n_vec, int64_t d, float* dx, int64_t token_stride,
                               int64_t vec_stride, const int64_t* pos, const double* inv_freq, double cs_scale) {
  // The transpose of a rotation by θ is the rotation by −θ: same kernel with the sine negated.
  rope_interleaved_signed(T, n_vec, d, dx, token_stride, vec_stride, pos, inv_freq, cs_scale, -1.0f);
}

void silu_mul_backward(int64_t T, int64_t I, const float* gate, const float* up, int64_t ld, const float* dout,
                       int64_t dout_ld, float* dgate, float* dup, int64_t d_ld) {
#pragma omp parallel for schedule(static) if (T * I > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gate + t * ld;
    const float* u = up + t * ld;
    const float* go = dout + t * dout_ld;
    float* dg = dgate + t * d_ld;
    float* du = dup + t * d_ld;
    int64_t i = 0;
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= I; i += 16) {
      const __m512 gv = _mm512_loadu_ps(g + i), uv = _mm512_loadu_ps(u + i), dov = _mm512_loadu_ps(go + i);
      const __m512 sig = detail::sigmoid16(gv);
      const __m512 silu = _mm512_mul_ps(gv, sig);
      const __m512 dgv = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dov, uv), sig),
                                       _mm512_fmadd_ps(gv, _mm512_sub_ps(one, sig), one));
      const __m512 duv = _mm512_mul_ps(dov, silu);
      _mm512_storeu_ps(dg + i, dgv);
      _mm512_storeu_ps(du + i, duv);
    }
#endif
    for (; i < I; ++i) {
      const float gv = g[i], uv = u[i], dov = go[i];
      const float sig = 1.0f / (1.0f + std::exp(-gv));
      const float silu = gv * sig;
      dg[i] = dov * uv * sig * (1.0f + gv * (1.0f - sig));
      du[i] = dov * silu;
    }
  }
}

void softmax_backward(int64_t S_q, int64_t S_kv, const float* p, int64_t p_ld, float* dp, int64_t dp_ld,
                      float scale) {
#pragma omp parallel for schedule(static) if (S_q * S_kv > 16384)
  for (int64_t s = 0; s < S_q; ++s) {
    const float* pr = p + s * p_ld;
    float* g = dp + s * dp_ld;
    double dot = 0.0;
    for (int64_t t = 0; t < S_kv; ++t) dot += double(pr[t]) * double(g[t]);
    const float c = float(dot);
    for (int64_t t = 0; t < S_kv; ++t) g[t] = scale * pr[t] * (g[t] - c);
  }
}

// Row max and log-sum-exp (exponentials in f32, summed in f64); `work` holds V floats.
static inline double row_lse(const float* r, int64_t V, float* work) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t v = 0; v < V; ++v) mx = std::max(mx, r[v]);
  const double sum = detail::exp_shift(r, work, V, -mx);
  return double(mx) + std::log(sum);
}

double cross_entropy_sum(int64_t T, int64_t V, const float* logits, int64_t ld, const int32_t* target) {
  std::vector<double> row(static_cast<size_t>(T), 0.0);  // per-row terms, summed in row order (deterministic)
#pragma omp parallel for schedule(static) if (T * V > 65536)
  for (int64_t t = 0; t < T; ++t) {
    if (target[t] < 0) continue;
    const float* r = logits + t * ld;
    thread_local std::vector<float> work;
    work.resize(size_t(V));
    row[t] = row_lse(r, V, work.data()) - double(r[target[t]]);
  }
  double total = 0.0;
  for (double v : row) total += v;
  return total;
}

void cross_entropy_backward(int64_t T, int64_t V, const float* logits, int64_t ld, const int32_t* target, float scale,
                            float* dlogits, int64_t d_ld) {
#pragma omp parallel for schedule(static) if (T * V > 65536)
  for (int64_t t = 0; t < T; ++t) {
    float* g = dlogits + t * d_ld;
    if (target[t] < 0) {
      std::fill(g, g + V, 0.0f);
      continue;
    }
    const float* r = logits + t * ld;
    const double lse = row_lse(r, V, g);
    detail::exp_shift(r, g, V, float(-lse));
    for (int64_t v = 0; v < V; ++v) g[v] *= scale;
    g[target[t]] -= scale;
  }
}

}  // namespace dsv3::ops
