// Tiled E4M3 quantizer / dequantizer of the FP8 recipe (see quantize.h for the exact rules).
#include "fp8/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "dsv3/error.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__)
#include <immintrin.h>
#define DSV3_FP8_QUANT_AVX512 1
// GCC 12 reports the intrinsics' own undefined pass-through vectors as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace dsv3::fp8 {

namespace {

#ifdef DSV3_FP8_QUANT_AVX512
// E4M3 codes of x/s for 8 lanes (x finite, s finite and positive, so |x/s| <= 448 up to the f32 rounding of
// the scale): the quotient in double (exact enough, see e4m3_of_quotient), clamped to 448, then rounded to 3
// mantissa bits by integer RNE on the double's bits for normal results, and by adding 2^43 (whose ulp is the
// subnormal quantum 2^-9) below 2^-6. The double's exponent and top 3 mantissa bits then are the code.
inline __m512i e4m3_codes8(__m256 x, __m512d s) {
  const __m512d q = _mm512_div_pd(_mm512_cvtps_pd(x), s);
  const __m512d a = _mm512_min_pd(_mm512_abs_pd(q), _mm512_set1_pd(448.0));
  __m512i u = _mm512_castpd_si512(a);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi64(u, 49), _mm512_set1_epi64(1));
  u = _mm512_add_epi64(u, _mm512_add_epi64(_mm512_set1_epi64((int64_t(1) << 48) - 1), lsb));
  const __m512i normal = _mm512_sub_epi64(_mm512_srli_epi64(u, 49), _mm512_set1_epi64((1023 - 7) << 3));
  const __m512d two43 = _mm512_set1_pd(0x1p43);
  const __m512i sub = _mm512_sub_epi64(_mm512_castpd_si512(_mm512_add_pd(a, two43)), _mm512_castpd_si512(two43));
  __m512i code = _mm512_mask_blend_epi64(_mm512_cmp_pd_mask(a, _mm512_set1_pd(0x1p-6), _CMP_LT_OQ), normal, sub);
  const __mmask8 neg = _mm512_movepi64_mask(_mm512_castpd_si512(q));
  return _mm512_mask_or_epi64(code, neg, code, _mm512_set1_epi64(0x80));
}

// codes[0..n) of x[0..n) / scale.
void encode_run(const float* x, int64_t n, float scale, uint8_t* codes) {
  const __m512d s = _mm512_set1_pd(double(scale));
  for (int64_t i = 0; i < n; i += 8) {
    const __mmask8 m = n - i >= 8 ? __mmask8(0xff) : __mmask8((1u << (n - i)) - 1u);
    _mm512_mask_cvtepi64_storeu_epi8(codes + i, m, e4m3_codes8(_mm256_maskz_loadu_ps(m, x + i), s));
  }
}

// Tiles of tile_rows × 1 (one column each): 16 columns at a time, one lane per tile.
void quantize_column_tiles(const float* x, int64_t rows, int64_t cols, int64_t ldx, int64_t tile_rows,
                           ScaleMode mode, uint8_t* codes, float* scales) {
  const int64_t ntr = ceil_div(rows, tile_rows), nch = ceil_div(cols, 16);
  const __m512 big = _mm512_set1_ps(3.4028235e38f);
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols > 32768)
  for (int64_t tr = 0; tr < ntr; ++tr)
    for (int64_t ch = 0; ch < nch; ++ch) {
      const int64_t r0 = tr * tile_rows, r1 = std::min(rows, r0 + tile_rows), c0 = ch * 16;
      const int64_t w = std::min<int64_t>(16, cols - c0);
      const __mmask16 m = w == 16 ? __mmask16(0xffff) : __mmask16((1u << w) - 1u);
      __m512 mx = _mm512_setzero_ps();
      __mmask16 bad = 0;
      for (int64_t r = r0; r < r1; ++r) {
        const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + r * ldx + c0));
        bad |= _mm512_mask_cmp_ps_mask(m, a, big, _CMP_NLE_UQ);
        mx = _mm512_max_ps(mx, a);
      }
      alignas(64) float amax[16], sc[16];
      _mm512_store_ps(amax, mx);
      for (int j = 0; j < 16; ++j) sc[j] = tile_scale((bad >> j) & 1 ? std::nanf("") : amax[j], mode);
      std::memcpy(scales + tr * cols + c0, sc, size_t(w) * 4);
      const __m512d s_lo = _mm512_cvtps_pd(_mm256_load_ps(sc)), s_hi = _mm512_cvtps_pd(_mm256_load_ps(sc + 8));
      for (int64_t r = r0; r < r1; ++r) {
        const __m512 v = _mm512_maskz_loadu_ps(m, x + r * ldx + c0);
        const __m128i lo = _mm512_cvtepi64_epi8(e4m3_codes8(_mm512_castps512_ps256(v), s_lo));
        const __m128i hi = _mm512_cvtepi64_epi8(e4m3_codes8(_mm512_extractf32x8_ps(v, 1), s_hi));
        __m128i c = _mm_unpacklo_epi64(lo, hi);
        c = _mm_mask_blend_epi8(bad, c, _mm_set1_epi8(0x7f));
        _mm_mask_storeu_epi8(codes + r * cols + c0, m, c);
      }
    }
}

// max |x[0..n)|, and whether all are finite.
float amax_run(const float* x, int64_t n, bool& finite) {
  __m512 mx = _mm512_setzero_ps();
  __mmask16 bad = 0;
  const __m512 big = _mm512_set1_ps(3.4028235e38f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i));
    bad |= _mm512_mask_cmp_ps_mask(m, a, big, _CMP_NLE_UQ);  // NaN or Inf
    mx = _mm512_max_ps(mx, a);
  }
  finite = finite && bad == 0;
  return _mm512_reduce_max_ps(mx);
}
#else
void encode_run(const float* x, int64_t n, float scale, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) codes[i] = e4m3_of_quotient(x[i], scale);
}
float amax_run(const float* x, int64_t n, bool& finite) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    finite &= a <= 3.4028235e38f;  // false for NaN and Inf
    amax = std::max(amax, a);
  }
  return amax;
}
#endif

}  // namespace

float tile_scale(float amax, ScaleMode mode) {
  if (!std::isfinite(amax)) return std::nanf("");
  const float s = std::max(amax, kAmaxFloor) / kE4M3Max;
  if (mode == ScaleMode::kAmax) return s;
  // UE8M0: the smallest power of two >= s (s is a normal f32: s >= 1e-4/448).
  uint32_t u = f32_bits(s);
  if (u & 0x7fffffu) u = (u & 0xff800000u) + 0x800000u;
  return bits_f32(u & 0xff800000u);
}

void quantize_tiles(const float* x, int64_t rows, int64_t cols, int64_t ldx, int64_t tile_rows, int64_t tile_cols,
                    ScaleMode mode, uint8_t* codes, float* scales) {
  DSV3_CHECK(rows >= 0 && cols >= 0 && tile_rows > 0 && tile_cols > 0 && ldx >= cols,
             "quantize_tiles: bad shape rows=", rows, " cols=", cols, " ldx=", ldx, " tile=", tile_rows, "x",
             tile_cols);
#ifdef DSV3_FP8_QUANT_AVX512
  if (tile_cols == 1) {
    quantize_column_tiles(x, rows, cols, ldx, tile_rows, mode, codes, scales);
    return;
  }
#endif
  const int64_t ntr = ceil_div(rows, tile_rows), ntc = ceil_div(cols, tile_cols);
#pragma omp parallel for collapse(2) schedule(static) if (rows * cols > 32768)
  for (int64_t tr = 0; tr < ntr; ++tr)
    for (int64_t tc = 0; tc < ntc; ++tc) {
      const int64_t r0 = tr * tile_rows, r1 = std::min(rows, r0 + tile_rows);
      const int64_t c0 = tc * tile_cols, c1 = std::min(cols, c0 + tile_cols);
      float amax = 0.0f;
      bool finite = true;
      for (int64_t r = r0; r < r1; ++r) amax = std::max(amax, amax_run(x + r * ldx + c0, c1 - c0, finite));
      const float scale = tile_scale(finite ? amax : std::nanf(""), mode);
      scales[tr * ntc + tc] = scale;
      for (int64_t r = r0; r < r1; ++r) {
        if (finite) encode_run(x + r * ldx + c0, c1 - c0, scale, codes + r * cols + c0);
        else std::memset(codes + r * cols + c0, 0x7f, size_t(c1 - c0));
      }
    }
}

void dequantize_tiles(const uint8_t* codes, const float* scales, int64_t rows, int64_t cols, int64_t tile_rows,
                      int64_t tile_cols, float* out) {
  fp8_block_dequantize(codes, scales, rows, cols, tile_rows, tile_cols, out);  // any tile shape, same product
}

}  // namespace dsv3::fp8
