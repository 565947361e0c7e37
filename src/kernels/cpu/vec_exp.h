// exp over F32 arrays, 16 lanes at a time with AVX-512 (scalar std::exp elsewhere and for the tails).
// exp(x) = 2^n · e^r with n = round(x·log2 e), r = x − n·ln 2 (two-part ln 2, |r| ≤ ln2/2) and e^r by its
// Taylor polynomial to degree 7 (truncation ≤ 0.347⁸/8! ≈ 6e-9 relative); measured within 2 ulp of std::exp
// over [−87, 88] (tests/kernels/test_vec_exp.cpp). Inputs below −87.3 give a subnormal or 0 (0 below ≈ −103.3); NaN stays NaN.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace dsv3::ops::detail {

#if defined(__AVX512F__)
inline __m512 exp16(__m512 x) {
  const __m512 hi = _mm512_set1_ps(88.7f), lo = _mm512_set1_ps(-110.0f);
  x = _mm512_max_ps(lo, _mm512_min_ps(hi, x));  // vmin/vmaxps return the second operand for NaN: NaN stays NaN
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
#endif

// y[i] = exp(x[i] + shift) for i < n (x and y may alias); returns Σ y in double.
inline double exp_shift(const float* x, float* y, int64_t n, float shift) {
  int64_t i = 0;
  double sum = 0.0;
#if defined(__AVX512F__)
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_add_ps(_mm512_loadu_ps(x + i), s));
    _mm512_storeu_ps(y + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = double(_mm512_reduce_add_ps(acc));
#endif
  for (; i < n; ++i) {
    y[i] = std::exp(x[i] + shift);
    sum += y[i];
  }
  return sum;
}

// σ(x) = 1 / (1 + e^−x) for 16 lanes.
#if defined(__AVX512F__)
inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}
#endif

}  // namespace dsv3::ops::detail
