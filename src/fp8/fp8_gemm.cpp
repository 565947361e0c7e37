// Block-scaled FP8 GEMM emulation (see fp8_gemm.h).
//
// Fast path: E4M3 values have 4 significant bits, so every code decodes exactly into BF16; the kernel decodes A
// into BF16 rows and B into 32-column BF16 pair panels, then runs an AVX-512 BF16 micro-kernel (VDPBF16PS: exact
// products, FP32 adds) over one 128-wide K block at a time into fresh accumulators, and promotes each block's
// partial sums into the FP32 total with the block's scales (total += partial · sb[col] · sa[row]). Products are
// multiples of 2^-18 and at most 448², so the instruction's denormal flushing never applies.
#include "fp8/fp8_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define DSV3_FP8_AVX512BF16 1
#endif

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "dsv3/error.h"

namespace dsv3::fp8 {

namespace {

thread_local ScaleMode t_scale_mode = ScaleMode::kAmax;

struct E4M3Tables {
  float f32[256];
  uint16_t bf16[256];
  E4M3Tables() {
    for (int c = 0; c < 256; ++c) {
      f32[c] = e4m3_to_f32(uint8_t(c));
      bf16[c] = f32_to_bf16(f32[c]);
    }
  }
};
const E4M3Tables& tables() {
  static const E4M3Tables t;
  return t;
}

void check_operands(const BlockScaledOperands& op, int64_t ldc) {
  DSV3_CHECK(op.M >= 0 && op.N >= 0 && op.K >= 0, "block_scaled_gemm: negative shape M=", op.M, " N=", op.N,
             " K=", op.K);
  DSV3_CHECK(op.lda >= (op.a_kmajor ? op.M : op.K) && op.ldb >= (op.b_kmajor ? op.N : op.K) && ldc >= op.N,
             "block_scaled_gemm: stride below row length (lda=", op.lda, " ldb=", op.ldb, " ldc=", ldc, ")");
}

// Code of a(m,k) / b(n,k) in either storage order.
inline uint8_t code_a(const BlockScaledOperands& op, int64_t m, int64_t k) {
  return op.a_kmajor ? op.a[k * op.lda + m] : op.a[m * op.lda + k];
}
inline uint8_t code_b(const BlockScaledOperands& op, int64_t n, int64_t k) {
  return op.b_kmajor ? op.b[k * op.ldb + n] : op.b[n * op.ldb + k];
}

// C = beta·C, with beta == 0 writing zeros (a NaN already in C does not survive, as in BLAS).
void scale_output(int64_t M, int64_t N, float* C, int64_t ldc, float beta) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    if (beta == 0.0f) std::fill(c, c + N, 0.0f);
    else if (beta != 1.0f) for (int64_t n = 0; n < N; ++n) c[n] *= beta;
  }
}

void transpose_f32(const float* src, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

#ifdef DSV3_FP8_AVX512BF16
constexpr int kMR = 8;   // rows per micro-tile
constexpr int kNR = 32;  // columns per micro-tile (two zmm)

// One micro-tile over n_kb K blocks. a: BF16 rows (stride lda, K zero-padded to blocks); bp: the tile's packed
// panel (per K pair: kNR columns × 2 BF16); sa: row scales (stride kb_stride); sb: column scales of K block 0
// (stride sb_stride per block); c: FP32 total tile (stride ldc), updated in place.
void micro_kernel(const uint16_t* a, int64_t lda, const uint16_t* bp, int64_t n_kb, const float* sa,
                  int64_t kb_stride, const float* sb, int64_t sb_stride, float* c, int64_t ldc) {
  __m512 tot[kMR][2];
  for (int r = 0; r < kMR; ++r) {
    tot[r][0] = _mm512_loadu_ps(c + r * ldc);
    tot[r][1] = _mm512_loadu_ps(c + r * ldc + 16);
  }
  for (int64_t kb = 0; kb < n_kb; ++kb) {
    __m512 acc[kMR][2];
    for (int r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const uint16_t* ak = a + kb * kTile;
    const uint16_t* bk = bp + kb * kTile * kNR;
    for (int p = 0; p < kTile / 2; ++p) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bk + p * 2 * kNR);
      const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bk + p * 2 * kNR + 32);
      for (int r = 0; r < kMR; ++r) {
        int32_t pair;
        std::memcpy(&pair, ak + r * lda + 2 * p, 4);
        const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
      }
    }
    const __m512 s0 = _mm512_loadu_ps(sb + kb * sb_stride), s1 = _mm512_loadu_ps(sb + kb * sb_stride + 16);
    for (int r = 0; r < kMR; ++r) {
      const __m512 sr = _mm512_set1_ps(sa[r * kb_stride + kb]);
      tot[r][0] = _mm512_fmadd_ps(_mm512_mul_ps(acc[r][0], s0), sr, tot[r][0]);
      tot[r][1] = _mm512_fmadd_ps(_mm512_mul_ps(acc[r][1], s1), sr, tot[r][1]);
    }
  }
  for (int r = 0; r < kMR; ++r) {
    _mm512_storeu_ps(c + r * ldc, tot[r][0]);
    _mm512_storeu_ps(c + r * ldc + 16, tot[r][1]);
  }
}

// Per-thread packing buffers, grown on demand and reused (fresh large allocations page-fault on every call).
struct PackBuffers {
  std::vector<uint16_t> a, b;
  std::vector<float> sa, sb;
};

void block_scaled_gemm_avx512(const BlockScaledOperands& op, float* C, int64_t ldc, float beta) {
  const E4M3Tables& t = tables();
  const int64_t M = op.M, N = op.N, K = op.K;
  const int64_t KB = ceil_div(K, kTile), Kp = KB * kTile;
  const int64_t Mp = ceil_div(M, kMR) * kMR, Np = ceil_div(N, kNR) * kNR;
  thread_local PackBuffers buf;
  auto grow = [](auto& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
  };
  grow(buf.a, Mp * Kp), grow(buf.b, Np * Kp), grow(buf.sa, Mp * KB), grow(buf.sb, KB * Np);
  uint16_t* abf = buf.a.data();
  uint16_t* bp = buf.b.data();
  float* sa = buf.sa.data();
  float* sb = buf.sb.data();
  // A as BF16 rows [Mp, Kp]; padding rows and columns are zero.
#pragma omp parallel for schedule(static) if (M * K > 65536)
  for (int64_t m = 0; m < Mp; ++m) {
    uint16_t* dst = abf + m * Kp;
    if (m >= M) {
      std::fill(dst, dst + Kp, uint16_t(0));
      std::fill(sa + m * KB, sa + (m + 1) * KB, 0.0f);
      continue;
    }
    if (op.a_kmajor) {
      for (int64_t k = 0; k < K; ++k) dst[k] = t.bf16[op.a[k * op.lda + m]];
    } else {
      const uint8_t* src = op.a + m * op.lda;
      for (int64_t k = 0; k < K; ++k) dst[k] = t.bf16[src[k]];
    }
    std::fill(dst + K, dst + Kp, uint16_t(0));
    std::memcpy(sa + m * KB, op.sa + m * KB, size_t(KB) * 4);
  }
  // B as panels of kNR columns: panel j holds, per K pair p, columns n = j·kNR.. as (b[n,2p], b[n,2p+1]).
  for (int64_t kb = 0; kb < KB; ++kb) {
    std::memcpy(sb + kb * Np, op.sb + kb * N, size_t(N) * 4);
    std::fill(sb + kb * Np + N, sb + (kb + 1) * Np, 0.0f);
  }
  if (op.b_kmajor) {
    // Rows 2p and 2p+1 of b [K, N] interleave into the pair panel; reads are contiguous along n.
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t p = 0; p < Kp / 2; ++p)
      for (int64_t n0 = 0; n0 < Np; n0 += kNR) {
        uint16_t* dst = bp + n0 * Kp + p * 2 * kNR;
        for (int64_t j = 0; j < kNR; ++j)
          for (int64_t h = 0; h < 2; ++h) {
            const int64_t k = 2 * p + h, n = n0 + j;
            dst[2 * j + h] = k < K && n < N ? t.bf16[op.b[k * op.ldb + n]] : uint16_t(0);
          }
      }
  } else {
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (int64_t n = 0; n < Np; ++n) {
      uint16_t* dst = bp + (n / kNR) * (kNR * Kp) + (n % kNR) * 2;
      if (n >= N) {
        for (int64_t k = 0; k < Kp; ++k) dst[(k / 2) * 2 * kNR + (k & 1)] = 0;
        continue;
      }
      const uint8_t* src = op.b + n * op.ldb;
      for (int64_t k = 0; k < K; ++k) dst[(k / 2) * 2 * kNR + (k & 1)] = t.bf16[src[k]];
      for (int64_t k = K; k < Kp; ++k) dst[(k / 2) * 2 * kNR + (k & 1)] = 0;
    }
  }
  scale_output(M, N, C, ldc, beta);
  // K chunks keep the A rows of a row chunk in L2 while the panels stream past them. Edge tiles go through a
  // small local tile so the kernel always sees kMR × kNR.
  constexpr int64_t kKcBlocks = 8, kMc = 128;
  const int64_t n_mt = Mp / kMR, n_nt = Np / kNR;
  for (int64_t kb0 = 0; kb0 < KB; kb0 += kKcBlocks) {
    const int64_t n_kb = std::min(kKcBlocks, KB - kb0);
    for (int64_t mc = 0; mc < n_mt; mc += kMc / kMR) {
      const int64_t mt_end = std::min(n_mt, mc + kMc / kMR);
#pragma omp parallel for schedule(static) if ((mt_end - mc) * n_nt * n_kb > 16)
      for (int64_t nt = 0; nt < n_nt; ++nt)
        for (int64_t mt = mc; mt < mt_end; ++mt) {
          const int64_t m0 = mt * kMR, n0 = nt * kNR;
          const int64_t rows = std::min<int64_t>(kMR, M - m0), cols = std::min<int64_t>(kNR, N - n0);
          const uint16_t* a = abf + m0 * Kp + kb0 * kTile;
          const uint16_t* b = bp + n0 * Kp + kb0 * kTile * kNR;
          const float* sar = sa + m0 * KB + kb0;
          const float* sbc = sb + kb0 * Np + n0;
          if (rows == kMR && cols == kNR) {
            micro_kernel(a, Kp, b, n_kb, sar, KB, sbc, Np, C + m0 * ldc + n0, ldc);
            continue;
          }
          float tile[kMR * kNR] = {};
          for (int64_t r = 0; r < rows; ++r) std::memcpy(tile + r * kNR, C + (m0 + r) * ldc + n0, size_t(cols) * 4);
          micro_kernel(a, Kp, b, n_kb, sar, KB, sbc, Np, tile, kNR);
          for (int64_t r = 0; r < rows; ++r) std::memcpy(C + (m0 + r) * ldc + n0, tile + r * kNR, size_t(cols) * 4);
        }
    }
  }
}
#endif

}  // namespace

ScaleMode linear_scale_mode() { return t_scale_mode; }
Fp8ScaleScope::Fp8ScaleScope(ScaleMode m) : saved_(t_scale_mode) { t_scale_mode = m; }
Fp8ScaleScope::~Fp8ScaleScope() { t_scale_mode = saved_; }

void block_scaled_gemm_reference(const BlockScaledOperands& op, float* C, int64_t ldc, float beta) {
  check_operands(op, ldc);
  const float* lut = tables().f32;
  const int64_t KB = ceil_div(op.K, kTile);
  scale_output(op.M, op.N, C, ldc, beta);
#pragma omp parallel for schedule(static) if (op.M * op.N * op.K > 1 << 20)
  for (int64_t m = 0; m < op.M; ++m)
    for (int64_t n = 0; n < op.N; ++n) {
      float total = C[m * ldc + n];
      for (int64_t kb = 0; kb < KB; ++kb) {
        float partial = 0.0f;
        for (int64_t k = kb * kTile; k < std::min(op.K, (kb + 1) * kTile); ++k)
          partial += lut[code_a(op, m, k)] * lut[code_b(op, n, k)];
        total += partial * (op.sa[m * KB + kb] * op.sb[kb * op.N + n]);
      }
      C[m * ldc + n] = total;
    }
}

void block_scaled_gemm(const BlockScaledOperands& op, float* C, int64_t ldc, float beta) {
  check_operands(op, ldc);
  if (op.M == 0 || op.N == 0) return;
  if (op.K == 0) {
    scale_output(op.M, op.N, C, ldc, beta);
    return;
  }
#ifdef DSV3_FP8_AVX512BF16
  block_scaled_gemm_avx512(op, C, ldc, beta);
#else
  block_scaled_gemm_reference(op, C, ldc, beta);
#endif
}

void block_scaled_gemm_limited(const BlockScaledOperands& op, float* C, int64_t ldc, int acc_bits, int group) {
  check_operands(op, ldc);
  DSV3_CHECK(acc_bits >= 2 && acc_bits <= 24, "block_scaled_gemm_limited: acc_bits must be in [2, 24], got ",
             acc_bits);
  DSV3_CHECK(group >= 1 && kTile % group == 0, "block_scaled_gemm_limited: group must divide 128, got ", group);
  const float* lut = tables().f32;
  const int64_t KB = ceil_div(op.K, kTile);
  const uint32_t keep = ~((1u << (24 - acc_bits)) - 1u);  // significand bits kept (truncation toward zero)
#pragma omp parallel for schedule(static) if (op.M * op.N * op.K > 1 << 20)
  for (int64_t m = 0; m < op.M; ++m)
    for (int64_t n = 0; n < op.N; ++n) {
      float acc = 0.0f;
      for (int64_t k0 = 0; k0 < op.K; k0 += group) {  // a group never straddles a 128 block (group | 128)
        const float s = op.sa[m * KB + k0 / kTile] * op.sb[(k0 / kTile) * op.N + n];
        float g = 0.0f;
        for (int64_t k = k0; k < std::min(op.K, k0 + group); ++k) g += lut[code_a(op, m, k)] * lut[code_b(op, n, k)] * s;
        acc = bits_f32(f32_bits(acc + g) & keep);
      }
      C[m * ldc + n] = acc;
    }
}

// ---- the three linear GEMMs ----

namespace {
// Per-thread quantized operands of linear_*, grown on demand and reused across calls.
struct QuantBuffers {
  std::vector<uint8_t> c[2];
  std::vector<float> s[3];
  uint8_t* codes(int i, int64_t n) {
    if (int64_t(c[i].size()) < n) c[i].resize(size_t(n));
    return c[i].data();
  }
  float* scales(int i, int64_t n) {
    if (int64_t(s[i].size()) < n) s[i].resize(size_t(n));
    return s[i].data();
  }
};
QuantBuffers& quant_buffers() {
  thread_local QuantBuffers b;
  return b;
}
}  // namespace

void linear_fprop(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw,
                  float* Y, int64_t ldy, float beta) {
  DSV3_CHECK(M >= 0 && N >= 0 && K >= 0 && ldx >= K && ldw >= K && ldy >= N, "fp8::linear_fprop: bad shape M=", M,
             " N=", N, " K=", K, " ldx=", ldx, " ldw=", ldw, " ldy=", ldy);
  const ScaleMode mode = t_scale_mode;
  const int64_t KB = ceil_div(K, kTile), NB = ceil_div(N, kTile);
  QuantBuffers& qb = quant_buffers();
  uint8_t *xq = qb.codes(0, M * K), *wq = qb.codes(1, N * K);
  float *sx = qb.scales(0, M * KB), *sw = qb.scales(1, NB * KB), *sb = qb.scales(2, KB * N);
  quantize_tiles(X, M, K, ldx, 1, kTile, mode, xq, sx);
  quantize_tiles(W, N, K, ldw, kTile, kTile, mode, wq, sw);
  for (int64_t kb = 0; kb < KB; ++kb)
    for (int64_t n = 0; n < N; ++n) sb[kb * N + n] = sw[(n / kTile) * KB + kb];
  block_scaled_gemm({M, N, K, xq, K, sx, wq, K, sb}, Y, ldy, beta);
}

void linear_dgrad(int64_t M, int64_t N, int64_t K, const float* dY, int64_t lddy, const float* W, int64_t ldw,
                  float* dX, int64_t lddx, float beta) {
  DSV3_CHECK(M >= 0 && N >= 0 && K >= 0 && lddy >= N && ldw >= K && lddx >= K, "fp8::linear_dgrad: bad shape M=",
             M, " N=", N, " K=", K, " lddy=", lddy, " ldw=", ldw, " lddx=", lddx);
  const ScaleMode mode = t_scale_mode;
  const int64_t KB = ceil_div(K, kTile), NB = ceil_div(N, kTile);
  QuantBuffers& qb = quant_buffers();
  uint8_t *gq = qb.codes(0, M * N), *wq = qb.codes(1, N * K);
  float *sg = qb.scales(0, M * NB), *sw = qb.scales(1, NB * KB), *sb = qb.scales(2, NB * K);
  quantize_tiles(dY, M, N, lddy, 1, kTile, mode, gq, sg);
  quantize_tiles(W, N, K, ldw, kTile, kTile, mode, wq, sw);
  for (int64_t nb = 0; nb < NB; ++nb)
    for (int64_t k = 0; k < K; ++k) sb[nb * K + k] = sw[nb * KB + k / kTile];
  // W codes [N, K] are the B operand (output column k, reduction index n) stored reduction-major.
  block_scaled_gemm({M, K, N, gq, N, sg, wq, K, sb, false, true}, dX, lddx, beta);
}

void linear_wgrad(int64_t M, int64_t N, int64_t K, const float* dY, int64_t lddy, const float* X, int64_t ldx,
                  float* dW, int64_t lddw, float beta) {
  DSV3_CHECK(M >= 0 && N >= 0 && K >= 0 && lddy >= N && ldx >= K && lddw >= K, "fp8::linear_wgrad: bad shape M=",
             M, " N=", N, " K=", K, " lddy=", lddy, " ldx=", ldx, " lddw=", lddw);
  const ScaleMode mode = t_scale_mode;
  const int64_t MB = ceil_div(M, kTile);
  QuantBuffers& qb = quant_buffers();
  uint8_t *gq = qb.codes(0, M * N), *xq = qb.codes(1, M * K);
  float *sg = qb.scales(0, MB * N), *sgt = qb.scales(1, N * MB), *sx = qb.scales(2, MB * K);
  quantize_tiles(dY, M, N, lddy, kTile, 1, mode, gq, sg);
  quantize_tiles(X, M, K, ldx, kTile, 1, mode, xq, sx);
  transpose_f32(sg, MB, N, sgt);  // [N, MB]
  // dY codes [M, N] and X codes [M, K] are both stored token- (reduction-) major.
  block_scaled_gemm({N, K, M, gq, N, sgt, xq, K, sx, true, true}, dW, lddw, beta);
}

}  // namespace dsv3::fp8
