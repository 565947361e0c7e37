// Row-independent GEMM (see rowwise_gemm.h). Register tiles of R rows × C columns, each element accumulated
// in its own vector register over the full K (no K-blocking: the order per element is exactly simd::dot).
#include "infer/rowwise_gemm.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "dsv3/error.h"

#include "infer/simd.h"

namespace dsv3::infer {

namespace {

using simd::kLanes;
using simd::Vec;

// F32 weight rows for micro: B[c, k…] as stored.
struct F32Rows {
  const float* B;
  int64_t ldb;
  simd::Vec load(int c, int64_t k) const { return simd::load(B + c * ldb + k); }
  simd::Vec load_partial(int c, int64_t k, int n) const { return simd::load_partial(B + c * ldb + k, n); }
  void prefetch(int c, int64_t k) const { __builtin_prefetch(B + c * ldb + k, 0, 3); }
};

// FP8 weight rows for micro (GemmNT::fp8_as_f32): each kLanes-wide load gives the F32 values the codes stand
// for — code value × its block's scale_inv, one F32 product (kLanes divides 128, so one scale per load).
struct F8Rows {
  const uint8_t* B;
  int64_t ldb;
  const float* scale;
  int64_t ld_scale, row;  // row: B's row 0 inside the scale grid's first block row
  F8Rows(const uint8_t* b, int64_t ld, const float* s, int64_t lds, int64_t r)
      : B(b), ldb(ld), scale(s), ld_scale(lds), row(r) {}
  float scale_of(int c, int64_t k) const { return scale[((row + c) / kFp8Block) * ld_scale + k / kFp8Block]; }
  simd::Vec load(int c, int64_t k) const;
  simd::Vec load_partial(int c, int64_t k, int n) const;
  void prefetch(int c, int64_t k) const {
    if (k % 64 == 0) __builtin_prefetch(B + c * ldb + k, 0, 3);
  }
};

// C[r, c] (r < R, c < C) = dot(A row r, B row c) over K; B rows from `Rows` (F32Rows, or FP8 codes dequantized
// to the same F32 values in registers).
template <int R, int C, class Rows>
void micro(int64_t K, const float* A, int64_t lda, const Rows B, float* Cm, int64_t ldc, bool accumulate) {
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = simd::zero();
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    Vec a[R];
    for (int r = 0; r < R; ++r) a[r] = simd::load(A + r * lda + k);
    for (int c = 0; c < C; ++c) {
      const Vec b = B.load(c, k);
      for (int r = 0; r < R; ++r) acc[r][c] = simd::fma(a[r], b, acc[r][c]);
      // Few rows (decode): memory-bound on B, so fetch the rows of the next column group ahead.
      if constexpr (R <= 2) B.prefetch(c + C, k);
    }
  }
  if (k < K) {
    const int n = int(K - k);
    Vec a[R];
    for (int r = 0; r < R; ++r) a[r] = simd::load_partial(A + r * lda + k, n);
    for (int c = 0; c < C; ++c) {
      const Vec b = B.load_partial(c, k, n);
      for (int r = 0; r < R; ++r) acc[r][c] = simd::fma(a[r], b, acc[r][c]);
    }
  }
  // Reduce the lanes: 8+ accumulators together through hsum16 (bit-identical to one hsum each).
  float sums[16];
  if constexpr (R * C >= 8 && R * C <= 16) {
    Vec all[16];
    for (int i = 0; i < 16; ++i) all[i] = i < R * C ? acc[i / C][i % C] : simd::zero();
    simd::hsum16(all, sums);
  } else {
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sums[r * C + c] = simd::hsum(acc[r][c]);
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float* out = Cm + r * ldc + c;
      *out = accumulate ? *out + sums[r * C + c] : sums[r * C + c];
    }
}

// Column-tile width per row-tile height: 16 vector accumulators at most (AVX-512 has 32 registers).
constexpr int kWideC = kLanes == 16 ? 8 : 4;

template <int R>
void row_block(const GemmNT& p, int64_t m0, int64_t n0, int64_t n1) {
  constexpr int C = R <= 2 ? kWideC : 4;
  const float* A = p.A + m0 * p.lda;
  float* Cm = p.C + m0 * p.ldc;
  int64_t n = n0;
  if (p.fp8_as_f32) {
    const auto* B = static_cast<const uint8_t*>(p.Bq);
    for (; n + C <= n1; n += C)
      micro<R, C>(p.K, A, p.lda, F8Rows(B + n * p.ldb, p.ldb, p.b_scale, p.ld_scale, p.b_scale_row0 + n), Cm + n,
                  p.ldc, p.accumulate);
    for (; n < n1; ++n)
      micro<R, 1>(p.K, A, p.lda, F8Rows(B + n * p.ldb, p.ldb, p.b_scale, p.ld_scale, p.b_scale_row0 + n), Cm + n,
                  p.ldc, p.accumulate);
    return;
  }
  for (; n + C <= n1; n += C)
    micro<R, C>(p.K, A, p.lda, F32Rows{p.B + n * p.ldb, p.ldb}, Cm + n, p.ldc, p.accumulate);
  for (; n < n1; ++n) micro<R, 1>(p.K, A, p.lda, F32Rows{p.B + n * p.ldb, p.ldb}, Cm + n, p.ldc, p.accumulate);
}

// Rows [0, M) × columns [n0, n1) of one problem.
void tile(const GemmNT& p, int64_t n0, int64_t n1) {
  int64_t m = 0;
  for (; m + 4 <= p.M; m += 4) row_block<4>(p, m, n0, n1);
  switch (p.M - m) {
    case 3: row_block<3>(p, m, n0, n1); break;
    case 2: row_block<2>(p, m, n0, n1); break;
    case 1: row_block<1>(p, m, n0, n1); break;
    default: break;
  }
}


// ---- Quantized weights: BF16 activations (rounded per row), vdpbf16ps, F32 accumulation ----

constexpr int64_t kPairK = 32;  // bf16 elements per vdpbf16ps step
inline int64_t padded_k(int64_t K) { return bf16_padded_k(K); }

#if defined(__AVX512BF16__) && defined(__AVX512BW__)

inline __m512 dp(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

// Lane reduction of R×C accumulators (simd::hsum order, 16 at a time) and the store.
template <int R, int C>
inline void finish(__m512 (&acc)[R][C], float* Cm, int64_t ldc, bool accumulate) {
  float sums[R * C];
  if constexpr (R * C >= 8 && R * C <= 16) {
    simd::Vec all[16];
    for (int i = 0; i < 16; ++i) all[i] = {i < R * C ? acc[i / C][i % C] : _mm512_setzero_ps()};
    float tmp[16];
    simd::hsum16(all, tmp);
    for (int i = 0; i < R * C; ++i) sums[i] = tmp[i];
  } else {
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sums[r * C + c] = simd::hsum({acc[r][c]});
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float* out = Cm + r * ldc + c;
      *out = accumulate ? *out + sums[r * C + c] : sums[r * C + c];
    }
}

// BF16 weights: C[r, c] over K; A rows are bf16, zero-padded to padded_k(K).
template <int R, int C>
void micro_bf16(int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* Cm, int64_t ldc,
                bool accumulate) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + kPairK <= K; k += kPairK) {
    __m512i a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_loadu_si512(A + r * lda + k);
    for (int c = 0; c < C; ++c) {
      const __m512i b = _mm512_loadu_si512(B + c * ldb + k);
      for (int r = 0; r < R; ++r) acc[r][c] = dp(acc[r][c], a[r], b);
      // Decode tiles are memory-bound: fetch the column group four ahead into L2 (measured: 14 → 20 GB/s on
      // one core at M = 1 against one group ahead into L1; bench_decode_gemm).
      if constexpr (R <= 2 || R > 4) __builtin_prefetch(B + (c + 4 * C) * ldb + k, 0, 2);
    }
  }
  if (k < K) {
    const __mmask32 m = __mmask32((1ull << (K - k)) - 1);
    __m512i a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_loadu_si512(A + r * lda + k);  // padded with zeros
    for (int c = 0; c < C; ++c) {
      const __m512i b = _mm512_maskz_loadu_epi16(m, B + c * ldb + k);
      for (int r = 0; r < R; ++r) acc[r][c] = dp(acc[r][c], a[r], b);
    }
  }
  finish<R, C>(acc, Cm, ldc, accumulate);
}

// e4m3 → bf16 bit patterns of codes 0..127 (exact), as four 32-entry tables.
struct Fp8Table {
  __m512i t[4];
};
const Fp8Table& fp8_table() {
  static const Fp8Table tab = [] {
    alignas(64) uint16_t v[128];
    for (int c = 0; c < 128; ++c) v[c] = (c & 0x7f) == 0x7f ? uint16_t(0x7fc0) : f32_to_bf16(e4m3_to_f32(uint8_t(c)));
    Fp8Table t;
    for (int i = 0; i < 4; ++i) t.t[i] = _mm512_load_si512(v + 32 * i);
    return t;
  }();
  return tab;
}

// 32 e4m3 codes → 32 bf16: two 64-entry permutes on the magnitude (they read index bits 0–5), chosen by bit 6,
// then the sign. The codes are sign-extended, so bit 15 of each index already is the code's sign bit and one
// ternary-logic op merges it (bits 0–14 from the table entry, bit 15 from the index).
inline __m512i fp8_to_bf16(__m256i codes, const __m512i (&t)[4]) {
  const __m512i idx = _mm512_cvtepi8_epi16(codes);
  const __m512i lo = _mm512_permutex2var_epi16(t[0], idx, t[1]);
  const __m512i hi = _mm512_permutex2var_epi16(t[2], idx, t[3]);
  const __mmask32 upper = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x40));
  const __m512i mag = _mm512_mask_blend_epi16(upper, lo, hi);
  // Bitwise A ? C : B (imm 0xAC) with A = 0x8000 per lane, B = mag, C = idx.
  return _mm512_ternarylogic_epi32(_mm512_set1_epi16(int16_t(0x8000)), mag, idx, 0xAC);
}

#if defined(__AVX512VBMI__)
// 64 codes at a time with byte permutes (VBMI): the low and the high byte of each magnitude's bf16 pattern
// from two 128-entry byte tables (vpermi2b reads index bits 0–6, so the sign bit is ignored), the sign ORed
// into the high byte, then two byte interleaves put codes 0–31 and 32–63 into bf16 lanes in order. Five
// permute-class ops per 64 weights against twelve for two fp8_to_bf16 calls; the same bit patterns.
struct Fp8ByteTable {
  __m512i lo[2], hi[2], inter[2];
};
const Fp8ByteTable& fp8_byte_table() {
  static const Fp8ByteTable tab = [] {
    alignas(64) uint8_t lo[128], hi[128], inter[128];
    for (int c = 0; c < 128; ++c) {
      const uint16_t v = (c & 0x7f) == 0x7f ? uint16_t(0x7fc0) : f32_to_bf16(e4m3_to_f32(uint8_t(c)));
      lo[c] = uint8_t(v & 0xff), hi[c] = uint8_t(v >> 8);
    }
    // inter[h]: output byte 2j ← lo byte of code 32h + j (index 32h + j), 2j + 1 ← its hi byte (64 + 32h + j).
    for (int h = 0; h < 2; ++h)
      for (int j = 0; j < 32; ++j) {
        inter[64 * h + 2 * j] = uint8_t(32 * h + j);
        inter[64 * h + 2 * j + 1] = uint8_t(64 + 32 * h + j);
      }
    Fp8ByteTable t;
    for (int i = 0; i < 2; ++i) {
      t.lo[i] = _mm512_load_si512(lo + 64 * i);
      t.hi[i] = _mm512_load_si512(hi + 64 * i);
      t.inter[i] = _mm512_load_si512(inter + 64 * i);
    }
    return t;
  }();
  return tab;
}

// 64 e4m3 codes → bf16 of codes 0–31 (b0) and 32–63 (b1).
inline void fp8x64_to_bf16(__m512i codes, const Fp8ByteTable& t, __m512i& b0, __m512i& b1) {
  const __m512i lo = _mm512_permutex2var_epi8(t.lo[0], codes, t.lo[1]);
  __m512i hi = _mm512_permutex2var_epi8(t.hi[0], codes, t.hi[1]);
  hi = _mm512_ternarylogic_epi32(hi, codes, _mm512_set1_epi8(char(0x80)), 0xF8);  // hi | (codes & 0x80)
  b0 = _mm512_permutex2var_epi8(lo, t.inter[0], hi);
  b1 = _mm512_permutex2var_epi8(lo, t.inter[1], hi);
}
#endif

// 16 codes → their e4m3 values as F32 exactly (e4m3_to_f32's: the NaN codes give its positive quiet NaN). The
// codes sign-extended to 32 bits and shifted left by 20 put the sign on bit 31, e4m3's exponent on F32's low 4
// exponent bits and its 3 mantissa bits on F32's top ones (bits 27–30, copies of the sign, masked off): the
// value times 2^-120 — for exponent 0 an F32 subnormal, exact too — so one multiply by 2^120 (exact) gives it.
// No table and no call in the loop (full-mask forms: the plain widen / shift build on undefined vectors, which
// GCC 12 flags once inlined).
inline __m512 fp8x16_to_f32(__m128i codes) {
  const __m512i wide = _mm512_maskz_cvtepi8_epi32(0xFFFF, codes);
  const __m512i bits =
      _mm512_and_si512(_mm512_maskz_slli_epi32(0xFFFF, wide, 20), _mm512_set1_epi32(int32_t(0x87F00000u)));
  const __mmask16 nan = _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FF00000)),
                                                _mm512_set1_epi32(0x07F00000));
  const __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(bits), _mm512_set1_ps(0x1p120f));
  return _mm512_mask_mov_ps(v, nan, _mm512_castsi512_ps(_mm512_set1_epi32(0x7FC00000)));
}
// Then one F32 product with the block's scale_inv (the value being exact, fp8_block_dequantize's product).
inline simd::Vec F8Rows::load(int c, int64_t k) const {
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(B + c * ldb + k));
  return {_mm512_mul_ps(fp8x16_to_f32(codes), _mm512_set1_ps(scale_of(c, k)))};
}
inline simd::Vec F8Rows::load_partial(int c, int64_t k, int n) const {
  const __mmask16 m = __mmask16((1u << n) - 1u);
  const __m128i codes = _mm_maskz_loadu_epi8(m, B + c * ldb + k);
  // zeros past K, as the F32 kernel's masked load gives
  return {_mm512_maskz_mul_ps(m, fp8x16_to_f32(codes), _mm512_set1_ps(scale_of(c, k)))};
}

// FP8 weights with 128×128 block scales: per K block a block accumulator, promoted by scale_inv (FMA).
// `scale` points at the scale row of column 0's block row; column c uses scale + (c_abs/128 − n0/128)·ld.
template <int R, int C>
void micro_f8(int64_t K, const uint16_t* A, int64_t lda, const uint8_t* B, int64_t ldb, int64_t n0,
              const float* scale, int64_t ld_scale, float* Cm, int64_t ldc, bool accumulate) {
  const Fp8Table& tab = fp8_table();
  const __m512i t[4] = {tab.t[0], tab.t[1], tab.t[2], tab.t[3]};
#if defined(__AVX512VBMI__)
  const Fp8ByteTable bt = fp8_byte_table();
#endif
  const float* srow[C];
  for (int c = 0; c < C; ++c) srow[c] = scale + ((n0 + c) / kFp8Block) * ld_scale;
  __m512 total[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) total[r][c] = _mm512_setzero_ps();
  for (int64_t k0 = 0, kb = 0; k0 < K; k0 += kFp8Block, ++kb) {
    const int64_t k1 = std::min(K, k0 + kFp8Block);
    __m512 blk[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) blk[r][c] = _mm512_setzero_ps();
    int64_t k = k0;
#if defined(__AVX512VBMI__)
    // 1–2 rows (decode): 64 codes per step through the byte tables. More rows would spill (two A registers per
    // row next to the six tables); they and K tails take the 32-wide steps below. Per accumulator the products
    // and their order are those of two 32-wide steps.
    if constexpr (R <= 2) {
      for (; k + 2 * kPairK <= k1; k += 2 * kPairK) {
        __m512i a0[R], a1[R];
        for (int r = 0; r < R; ++r) {
          a0[r] = _mm512_loadu_si512(A + r * lda + k);
          a1[r] = _mm512_loadu_si512(A + r * lda + k + kPairK);
        }
        for (int c = 0; c < C; ++c) {
          __m512i b0, b1;
          fp8x64_to_bf16(_mm512_loadu_si512(B + c * ldb + k), bt, b0, b1);
          for (int r = 0; r < R; ++r) blk[r][c] = dp(blk[r][c], a0[r], b0);
          for (int r = 0; r < R; ++r) blk[r][c] = dp(blk[r][c], a1[r], b1);
          __builtin_prefetch(B + (c + 4 * C) * ldb + k, 0, 2);  // one line per column and step
        }
      }
    }
#endif
    for (; k < k1; k += kPairK) {
      __m512i a[R];
      for (int r = 0; r < R; ++r) a[r] = _mm512_loadu_si512(A + r * lda + k);  // zero-padded past K
      if (k + kPairK <= k1) {
        for (int c = 0; c < C; ++c) {
          const __m512i b =
              fp8_to_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + c * ldb + k)), t);
          for (int r = 0; r < R; ++r) blk[r][c] = dp(blk[r][c], a[r], b);
          if constexpr (R <= 2 || R > 4) __builtin_prefetch(B + (c + 4 * C) * ldb + k, 0, 2);
        }
      } else {
        const __mmask32 m = __mmask32((1ull << (k1 - k)) - 1);
        for (int c = 0; c < C; ++c) {
          const __m512i b = fp8_to_bf16(_mm256_maskz_loadu_epi8(m, B + c * ldb + k), t);
          for (int r = 0; r < R; ++r) blk[r][c] = dp(blk[r][c], a[r], b);
        }
      }
    }
    for (int c = 0; c < C; ++c) {
      const __m512 s = _mm512_set1_ps(srow[c][kb]);
      for (int r = 0; r < R; ++r) total[r][c] = _mm512_fmadd_ps(blk[r][c], s, total[r][c]);
    }
  }
  finish<R, C>(total, Cm, ldc, accumulate);
}

#else  // no AVX512-BF16: F8Rows loads through scalars; a scalar emulation of the same lane layout (a[2l+1]·b
       // first, then a[2l]·b, each rounded)

inline simd::Vec F8Rows::load_partial(int c, int64_t k, int n) const {
  alignas(64) float v[simd::kLanes] = {};
  const float s = scale_of(c, k);
  for (int i = 0; i < n; ++i) v[i] = e4m3_to_f32(B[c * ldb + k + i]) * s;
  return simd::load(v);
}
inline simd::Vec F8Rows::load(int c, int64_t k) const { return load_partial(c, k, simd::kLanes); }

template <int R, int C>
void finish_lanes(float (&acc)[R][C][16], float* Cm, int64_t ldc, bool accumulate) {
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float* s = acc[r][c];
      for (int h = 8; h >= 1; h /= 2)
        for (int l = 0; l < h; ++l) s[l] = s[l] + s[l + h];
      float* out = Cm + r * ldc + c;
      *out = accumulate ? *out + s[0] : s[0];
    }
}

inline float bf(uint16_t h) { return bf16_to_f32(h); }

template <int R, int C>
void micro_bf16(int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* Cm, int64_t ldc,
                bool accumulate) {
  float acc[R][C][16] = {};
  for (int64_t k = 0; k < K; k += kPairK)
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c)
        for (int l = 0; l < 16; ++l) {
          const int64_t k0 = k + 2 * l, k1 = k0 + 1;
          float& s = acc[r][c][l];
          if (k1 < K) s = s + bf(A[r * lda + k1]) * bf(B[c * ldb + k1]);
          if (k0 < K) s = s + bf(A[r * lda + k0]) * bf(B[c * ldb + k0]);
        }
  finish_lanes<R, C>(acc, Cm, ldc, accumulate);
}

template <int R, int C>
void micro_f8(int64_t K, const uint16_t* A, int64_t lda, const uint8_t* B, int64_t ldb, int64_t n0,
              const float* scale, int64_t ld_scale, float* Cm, int64_t ldc, bool accumulate) {
  float total[R][C][16] = {};
  for (int64_t k0 = 0, kb = 0; k0 < K; k0 += kFp8Block, ++kb) {
    const int64_t k1e = std::min(K, k0 + kFp8Block);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) {
        float blk[16] = {};
        for (int64_t k = k0; k < k1e; k += kPairK)
          for (int l = 0; l < 16; ++l) {
            const int64_t i0 = k + 2 * l, i1 = i0 + 1;
            const float b1 = i1 < k1e ? e4m3_to_f32(B[c * ldb + i1]) : 0.0f;
            const float b0 = i0 < k1e ? e4m3_to_f32(B[c * ldb + i0]) : 0.0f;
            if (i1 < k1e) blk[l] = blk[l] + bf(A[r * lda + i1]) * b1;
            if (i0 < k1e) blk[l] = blk[l] + bf(A[r * lda + i0]) * b0;
          }
        const float s = scale[((n0 + c) / kFp8Block) * ld_scale + kb];
        for (int l = 0; l < 16; ++l) total[r][c][l] = std::fma(blk[l], s, total[r][c][l]);
      }
  }
  finish_lanes<R, C>(total, Cm, ldc, accumulate);
}

#endif

// One problem's quantized-weight view for the tiles: A already rounded to bf16 with row stride padded_k(K).
struct QProblem {
  const uint16_t* A = nullptr;
  int64_t lda = 0;
};

// Column-group width per row-block height: ≤ 16 accumulators (32 for FP8: block + total accumulators).
template <int R>
void row_block_q(const GemmNT& p, const QProblem& q, int64_t m0, int64_t n0, int64_t n1) {
  const uint16_t* A = q.A + m0 * q.lda;
  float* Cm = p.C + m0 * p.ldc;
  int64_t n = n0;
  if (p.b_dtype == DType::BF16) {
    constexpr int C = R <= 2 ? 8 : R <= 4 ? 4 : 2;
    const auto* B = static_cast<const uint16_t*>(p.Bq);
    for (; n + C <= n1; n += C) micro_bf16<R, C>(p.K, A, q.lda, B + n * p.ldb, p.ldb, Cm + n, p.ldc, p.accumulate);
    for (; n < n1; ++n) micro_bf16<R, 1>(p.K, A, q.lda, B + n * p.ldb, p.ldb, Cm + n, p.ldc, p.accumulate);
  } else {
    constexpr int C = R == 1 ? 8 : R == 2 ? 4 : R <= 4 ? 2 : 1;
    const auto* B = static_cast<const uint8_t*>(p.Bq);
    for (; n + C <= n1; n += C)
      micro_f8<R, C>(p.K, A, q.lda, B + n * p.ldb, p.ldb, n, p.b_scale, p.ld_scale, Cm + n, p.ldc, p.accumulate);
    for (; n < n1; ++n)
      micro_f8<R, 1>(p.K, A, q.lda, B + n * p.ldb, p.ldb, n, p.b_scale, p.ld_scale, Cm + n, p.ldc, p.accumulate);
  }
}

// Up to 8 rows (decode steps, small expert groups) in one block, so each weight row is streamed once for all
// of them; more rows (prefill) in blocks of 4 over an L2-resident column tile.
void tile_q(const GemmNT& p, const QProblem& q, int64_t n0, int64_t n1) {
  switch (p.M) {
    case 5: row_block_q<5>(p, q, 0, n0, n1); return;
    case 6: row_block_q<6>(p, q, 0, n0, n1); return;
    case 7: row_block_q<7>(p, q, 0, n0, n1); return;
    case 8: row_block_q<8>(p, q, 0, n0, n1); return;
    default: break;
  }
  int64_t m = 0;
  for (; m + 4 <= p.M; m += 4) row_block_q<4>(p, q, m, n0, n1);
  switch (p.M - m) {
    case 3: row_block_q<3>(p, q, m, n0, n1); break;
    case 2: row_block_q<2>(p, q, m, n0, n1); break;
    case 1: row_block_q<1>(p, q, m, n0, n1); break;
    default: break;
  }
}

constexpr int64_t kTileN = 64;

struct WorkItem {
  int32_t problem;
  int64_t n0, n1;
};

// Checks a quantized problem and rounds its A rows to bf16 at buf[used…); returns their offset.
size_t prepare(const GemmNT& p, std::vector<uint16_t>& buf, size_t& used) {
  DSV3_CHECK(p.b_dtype == DType::BF16 || p.b_dtype == DType::F8_E4M3, "rowwise gemm: weight dtype ",
             dtype_name(p.b_dtype), " is not supported (F32, BF16, F8_E4M3)");
  DSV3_CHECK(p.Bq != nullptr && (p.b_dtype != DType::F8_E4M3 || p.b_scale != nullptr),
             "rowwise gemm: quantized weights without data or scales");
  DSV3_CHECK(p.b_scale_row0 == 0, "rowwise gemm: a scale row offset needs fp8_as_f32");
  const size_t need = size_t(p.M * padded_k(p.K)), at = used;
  if (buf.size() < used + need) buf.resize(std::max(used + need, buf.size() * 2));
  round_rows_bf16(p.M, p.K, p.A, p.lda, buf.data() + at);
  used += need;
  return at;
}

}  // namespace

void round_rows_bf16(int64_t M, int64_t K, const float* A, int64_t lda, uint16_t* out) {
  const int64_t Kp = padded_k(K);
  for (int64_t i = 0; i < M; ++i) {
    const float* a = A + i * lda;
    uint16_t* o = out + i * Kp;
    int64_t k = 0;
#if defined(__AVX512BW__)
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    for (; k + 16 <= K; k += 16) {
      const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(a + k));
      const __m512i lsb = _mm512_and_si512(_mm512_maskz_srli_epi32(0xFFFF, u, 16), one);
      __m512i r = _mm512_maskz_srli_epi32(0xFFFF, _mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
      const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
      r = _mm512_mask_or_epi32(r, nan, _mm512_maskz_srli_epi32(0xFFFF, u, 16), _mm512_set1_epi32(0x40));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), _mm512_maskz_cvtepi32_epi16(0xFFFF, r));
    }
#endif
    for (; k < K; ++k) o[k] = f32_to_bf16(a[k]);
    for (; k < Kp; ++k) o[k] = 0;
  }
}

double gemm_weight_bytes(const GemmNT& p) {
  const double nk = double(p.N) * double(p.K);
  switch (p.b_dtype) {
    case DType::BF16: return 2.0 * nk;
    case DType::F8_E4M3:
      return nk + 4.0 * double((p.N + kFp8Block - 1) / kFp8Block) * double((p.K + kFp8Block - 1) / kFp8Block);
    default: return 4.0 * nk;
  }
}

void gemm_nt_rowwise_grouped(std::span<const GemmNT> problems) {
  // Work items: column tiles of each problem. Small jobs run on the calling thread (same numbers either way).
  int64_t n_items = 0;
  double flops = 0;
  for (const GemmNT& p : problems) {
    if (p.M <= 0 || p.N <= 0) continue;
    n_items += (p.N + kTileN - 1) / kTileN;
    flops += double(p.M) * double(p.N) * double(p.K);
  }
  if (n_items == 0) return;
  thread_local std::vector<WorkItem> items;  // reused: no allocation once warm
  thread_local std::vector<QProblem> qs;
  thread_local std::vector<size_t> aoff;
  thread_local std::vector<uint16_t> abuf;
  items.clear();
  qs.assign(problems.size(), QProblem{});
  aoff.assign(problems.size(), 0);
  size_t used = 0;
  const GemmNT* prev_q = nullptr;  // the previous quantized problem (its bf16 rows are reused for the same A)
  for (size_t i = 0; i < problems.size(); ++i) {
    const GemmNT& p = problems[i];
    if (p.M <= 0 || p.N <= 0) continue;
    if (p.fp8_as_f32)
      DSV3_CHECK(p.b_dtype == DType::F8_E4M3 && p.Bq != nullptr && p.b_scale != nullptr && p.b_scale_row0 >= 0 &&
                     p.b_scale_row0 < kFp8Block,
                 "rowwise gemm: fp8_as_f32 needs FP8 codes, scales and a scale row offset in [0, 128)");
    else if (p.b_dtype != DType::F32) {
      qs[i].lda = padded_k(p.K);
      if (prev_q && prev_q->A == p.A && prev_q->lda == p.lda && prev_q->M == p.M && prev_q->K == p.K)
        aoff[i] = aoff[size_t(prev_q - problems.data())];
      else
        aoff[i] = prepare(p, abuf, used);
      prev_q = &p;
    }
    for (int64_t n0 = 0; n0 < p.N; n0 += kTileN) items.push_back({int32_t(i), n0, std::min(p.N, n0 + kTileN)});
  }
  for (size_t i = 0; i < problems.size(); ++i)
    if (qs[i].lda > 0) qs[i].A = abuf.data() + aoff[i];
  // Raw pointers into the calling thread's lists (a thread_local named inside the region would be each
  // thread's own, empty, copy).
  const WorkItem* list = items.data();
  const GemmNT* probs = problems.data();
  const QProblem* qlist = qs.data();
  // Below ~0.5 M multiply-adds a fork/join costs more than it saves (and much more on a busy machine).
  const bool parallel = flops > 5.0e5 && n_items > 1 && omp_get_max_threads() > 1;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t i = 0; i < n_items; ++i) {
    const WorkItem& w = list[i];
    const GemmNT& p = probs[w.problem];
    if (p.b_dtype == DType::F32 || p.fp8_as_f32) tile(p, w.n0, w.n1);
    else tile_q(p, qlist[w.problem], w.n0, w.n1);
  }
}

void gemm_nt_rowwise_serial(const GemmNT& p) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.b_dtype == DType::F32) {
    tile(p, 0, p.N);
    return;
  }  // (fp8_as_f32 goes through the checks of the grouped entry, on the calling thread when small)
  gemm_nt_rowwise_grouped(std::span<const GemmNT>(&p, 1));  // (small problems stay on the calling thread)
}

void gemm_nt_rowwise(const GemmNT& p) { gemm_nt_rowwise_grouped(std::span<const GemmNT>(&p, 1)); }

}  // namespace dsv3::infer
