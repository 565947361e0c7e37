// A fixed-width float vector for the inference kernels (rowwise_gemm, latent_attention), so that every dot
// product has ONE summation order per build:
//   lane l (0 ≤ l < kLanes) accumulates a[k]·b[k] for k ≡ l (mod kLanes), k increasing, with fused multiply-add
//   (the last partial vector is zero-padded); the lanes are then summed by a halving tree
//   (l + l+kLanes/2, then l + l+kLanes/4, ..., down to lane 0).
// AVX-512 (16 lanes), AVX2+FMA (8 lanes) or a scalar emulation of 8 lanes (std::fma), chosen at compile time.
// tests/infer/test_rowwise_gemm.cpp re-derives the same order in plain scalar code and checks bit equality.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace dsv3::infer::simd {

#if defined(__AVX512F__)
inline constexpr int kLanes = 16;
struct Vec {
  __m512 v;
};
inline Vec zero() { return {_mm512_setzero_ps()}; }
inline Vec set1(float x) { return {_mm512_set1_ps(x)}; }
inline Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline Vec load_partial(const float* p, int n) { return {_mm512_maskz_loadu_ps(__mmask16((1u << n) - 1u), p)}; }
inline void store(float* p, Vec a) { _mm512_storeu_ps(p, a.v); }
inline void store_partial(float* p, Vec a, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1u), a.v); }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline float hsum(Vec a) {
  // Full-mask forms of the shuffles: the plain ones are built on _mm512_undefined_ps, which GCC 12 flags
  // with a spurious -Wuninitialized once inlined.
  const __m512 x = a.v;
  const __m512 s8 = _mm512_add_ps(x, _mm512_mask_shuffle_f32x4(x, 0xFFFF, x, x, _MM_SHUFFLE(1, 0, 3, 2)));  // l + l+8
  const __m512 s4 = _mm512_add_ps(s8, _mm512_mask_shuffle_f32x4(s8, 0xFFFF, s8, s8, _MM_SHUFFLE(2, 3, 0, 1)));  // +4
  const __m512 s2 = _mm512_add_ps(s4, _mm512_mask_permute_ps(s4, 0xFFFF, s4, _MM_SHUFFLE(1, 0, 3, 2)));  // l + l+2
  const __m512 s1 = _mm512_add_ps(s2, _mm512_mask_permute_ps(s2, 0xFFFF, s2, _MM_SHUFFLE(2, 3, 0, 1)));  // l + l+1
  return _mm512_cvtss_f32(s1);
}
// hsum of 16 vectors at once: out[i] = hsum(v[i]), bit for bit (the same halving tree, applied by a butterfly
// of whole-register shuffles: 45 instructions instead of 16 separate reductions).
inline void hsum16(const Vec* v, float* out) {
  __m512 s8[8], s4[4], s2[2];
  for (int i = 0; i < 8; ++i) {  // lanes l + l+8 of v[2i] → lanes 0-7, of v[2i+1] → lanes 8-15
    const __m512 a = v[2 * i].v, b = v[2 * i + 1].v;
    s8[i] = _mm512_add_ps(_mm512_mask_shuffle_f32x4(a, 0xFFFF, a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_mask_shuffle_f32x4(a, 0xFFFF, a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 4; ++i) {  // + l+4: quarters [A0 B0 C0 D0] + [A1 B1 C1 D1]
    const __m512 a = s8[2 * i], b = s8[2 * i + 1];
    s4[i] = _mm512_add_ps(_mm512_mask_shuffle_f32x4(a, 0xFFFF, a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_mask_shuffle_f32x4(a, 0xFFFF, a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  for (int i = 0; i < 2; ++i) {  // + l+2 inside each quarter
    const __m512 a = s4[2 * i], b = s4[2 * i + 1];
    s2[i] = _mm512_add_ps(_mm512_mask_shuffle_ps(a, 0xFFFF, a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_mask_shuffle_ps(a, 0xFFFF, a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // + l+1
  const __m512 s1 = _mm512_add_ps(_mm512_mask_shuffle_ps(s2[0], 0xFFFF, s2[0], s2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_mask_shuffle_ps(s2[0], 0xFFFF, s2[0], s2[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // Lane of input i after the butterfly (worked out once from the shuffle pattern above).
  alignas(64) float tmp[16];
  _mm512_store_ps(tmp, s1);
  static constexpr int kLaneOf[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
  for (int i = 0; i < 16; ++i) out[i] = tmp[kLaneOf[i]];
}
#elif defined(__AVX2__) && defined(__FMA__)
inline constexpr int kLanes = 8;
struct Vec {
  __m256 v;
};
inline __m256i lane_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}
inline Vec zero() { return {_mm256_setzero_ps()}; }
inline Vec set1(float x) { return {_mm256_set1_ps(x)}; }
inline Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline Vec load_partial(const float* p, int n) { return {_mm256_maskload_ps(p, lane_mask(n))}; }
inline void store(float* p, Vec a) { _mm256_storeu_ps(p, a.v); }
inline void store_partial(float* p, Vec a, int n) { _mm256_maskstore_ps(p, lane_mask(n), a.v); }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline float hsum(Vec a) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, _MM_SHUFFLE(1, 1, 1, 1)));
  return _mm_cvtss_f32(s1);
}
#else
inline constexpr int kLanes = 8;
struct Vec {
  float v[8];
};
inline Vec zero() { return {}; }
inline Vec set1(float x) {
  Vec r;
  for (int l = 0; l < 8; ++l) r.v[l] = x;
  return r;
}
inline Vec load(const float* p) {
  Vec r;
  for (int l = 0; l < 8; ++l) r.v[l] = p[l];
  return r;
}
inline Vec load_partial(const float* p, int n) {
  Vec r{};
  for (int l = 0; l < n; ++l) r.v[l] = p[l];
  return r;
}
inline void store(float* p, Vec a) {
  for (int l = 0; l < 8; ++l) p[l] = a.v[l];
}
inline void store_partial(float* p, Vec a, int n) {
  for (int l = 0; l < n; ++l) p[l] = a.v[l];
}
inline Vec fma(Vec a, Vec b, Vec c) {
  Vec r;
  for (int l = 0; l < 8; ++l) r.v[l] = std::fma(a.v[l], b.v[l], c.v[l]);
  return r;
}
inline float hsum(Vec a) {
  float s[8];
  for (int l = 0; l < 8; ++l) s[l] = a.v[l];
  for (int h = 4; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) s[l] = s[l] + s[l + h];
  return s[0];
}
#endif

#if !defined(__AVX512F__)
inline void hsum16(const Vec* v, float* out) {
  for (int i = 0; i < 16; ++i) out[i] = hsum(v[i]);
}
#endif

// The fixed-order dot product described at the top of this file.
inline float dot(const float* a, const float* b, int64_t K) {
  Vec acc = zero();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) acc = fma(load(a + k), load(b + k), acc);
  if (k < K) acc = fma(load_partial(a + k, int(K - k)), load_partial(b + k, int(K - k)), acc);
  return hsum(acc);
}

// y[0..n) += alpha · x[0..n), element by element with one fused multiply-add each.
inline void axpy(int64_t n, float alpha, const float* x, float* y) {
  const Vec a = set1(alpha);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) store(y + j, fma(a, load(x + j), load(y + j)));
  if (j < n) {
    const int r = int(n - j);
    store_partial(y + j, fma(a, load_partial(x + j, r), load_partial(y + j, r)), r);
  }
}

}  // namespace dsv3::infer::simd
