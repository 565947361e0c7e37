// Row-wise CPU ops: RMSNorm, interleaved RoPE, SwiGLU activation (see ops.h for the contracts).
#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "kernels/cpu/vec_exp.h"

namespace dsv3::ops {

void rmsnorm(int64_t T, int64_t D, const float* x, int64_t x_stride, const float* w, float eps, float* y,
             int64_t y_stride) {
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * x_stride;
    float* yr = y + t * y_stride;
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i) ss += double(xr[i]) * double(xr[i]);
    const float r = float(1.0 / std::sqrt(ss / double(D) + double(eps)));
    for (int64_t i = 0; i < D; ++i) yr[i] = w[i] * (xr[i] * r);
  }
}

void rope_interleaved_signed(int64_t T, int64_t n_vec, int64_t d, float* x, int64_t token_stride, int64_t vec_stride,
                             const int64_t* pos, const double* inv_freq, double cs_scale, float sin_sign) {
  const int64_t half = d / 2;
#pragma omp parallel for schedule(static) if (T > 16)
  for (int64_t t = 0; t < T; ++t) {
    thread_local std::vector<float> cs, sn;
    cs.resize(size_t(half));
    sn.resize(size_t(half));
    for (int64_t j = 0; j < half; ++j) {
      // Angle and cos/sin in double: at long positions an f32 angle alone carries ~pos·2^-24 rad of error.
      const double ang = double(pos[t]) * inv_freq[j];
      cs[j] = float(std::cos(ang) * cs_scale);
      sn[j] = sin_sign * float(std::sin(ang) * cs_scale);
    }
    for (int64_t v = 0; v < n_vec; ++v) {
      float* p = x + t * token_stride + v * vec_stride;
      for (int64_t j = 0; j < half; ++j) {
        const float a = p[2 * j], b = p[2 * j + 1];
        p[2 * j] = a * cs[j] - b * sn[j];
        p[2 * j + 1] = a * sn[j] + b * cs[j];
      }
    }
  }
}

void rope_table(int64_t T, int64_t d, const int64_t* pos, const double* inv_freq, double cs_scale, float* cs,
                float* sn) {
  const int64_t half = d / 2;
#pragma omp parallel for schedule(static) if (T > 64)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < half; ++j) {
      const double ang = double(pos[t]) * inv_freq[j];
      cs[t * half + j] = float(std::cos(ang) * cs_scale);
      sn[t * half + j] = float(std::sin(ang) * cs_scale);
    }
}

void rope_interleaved_table(int64_t T, int64_t n_vec, int64_t d, float* x, int64_t token_stride, int64_t vec_stride,
                            const float* cs_all, const float* sn_all, float sin_sign) {
  const int64_t half = d / 2;
#pragma omp parallel for schedule(static) if (T * n_vec * d > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* cs = cs_all + t * half;
    const float* sn0 = sn_all + t * half;
    for (int64_t v = 0; v < n_vec; ++v) {
      float* p = x + t * token_stride + v * vec_stride;
      for (int64_t j = 0; j < half; ++j) {
        const float a = p[2 * j], b = p[2 * j + 1], sn = sin_sign * sn0[j];
        p[2 * j] = a * cs[j] - b * sn;
        p[2 * j + 1] = a * sn + b * cs[j];
      }
    }
  }
}

void rope_interleaved(int64_t T, int64_t n_vec, int64_t d, float* x, int64_t token_stride, int64_t vec_stride,
                      const int64_t* pos, const double* inv_freq, double cs_scale) {
  rope_interleaved_signed(T, n_vec, d, x, token_stride, vec_stride, pos, inv_freq, cs_scale, 1.0f);
}

void silu_mul(int64_t T, int64_t I, const float* gate, const float* up, int64_t ld, float* out, int64_t out_ld) {
#pragma omp parallel for schedule(static) if (T * I > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gate + t * ld;
    const float* u = up + t * ld;
    float* o = out + t * out_ld;
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= I; i += 16) {
      const __m512 gv = _mm512_loadu_ps(g + i);
      _mm512_storeu_ps(o + i, _mm512_mul_ps(_mm512_mul_ps(gv, detail::sigmoid16(gv)), _mm512_loadu_ps(u + i)));
    }
#endif
    for (; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace dsv3::ops
