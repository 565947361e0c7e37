// Emulated FP8 (E4M3) GEMMs of the DeepSeek-V3 mixed-precision recipe (V3_SPEC.md §8, paper §3.3): fine-grained
// block-scaled quantization of both operands and FP32 accumulation promoted at every 128-wide K block.
//
// Operands arrive in F32 and are quantized inside (src/fp8/quantize.h, E4M3 RNE, scale = max(amax, 1e-4)/448):
//   fprop: Y[M,N]  = X[M,K]·W[N,K]ᵀ  (+ beta·Y)   X per 1×128 tiles along K (per row), W per 128×128 blocks
//   dgrad: dX[M,K] = dY[M,N]·W[N,K]  (+ beta·dX)  dY per 1×128 tiles along N, W per 128×128 blocks
//   wgrad: dW[N,K] = dY[M,N]ᵀ·X[M,K] (+ beta·dW)  dY and X per 128×1 tiles along M (the token dimension)
// Products of decoded codes are exact in FP32; they accumulate in FP32 within each 128-wide block of the reduction
// dimension, and each block's partial sum is multiplied by (a_scale·b_scale) and added into an FP32 total.
// Shapes and strides follow ops::gemm_nt / gemm_nn / gemm_tn (src/kernels/ops.h): row-major, strides in elements.
// A tile containing NaN or ±Inf quantizes to NaN (see quantize.h), so non-finite inputs give NaN outputs.
#pragma once
#include <cstdint>

#include "fp8/quantize.h"

namespace dsv3::fp8 {

void linear_fprop(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw,
                  float* Y, int64_t ldy, float beta = 0.0f);
void linear_dgrad(int64_t M, int64_t N, int64_t K, const float* dY, int64_t lddy, const float* W, int64_t ldw,
                  float* dX, int64_t lddx, float beta = 0.0f);
void linear_wgrad(int64_t M, int64_t N, int64_t K, const float* dY, int64_t lddy, const float* X, int64_t ldx,
                  float* dW, int64_t lddw, float beta = 0.0f);

// Scale mode used by the three linear_* entry points on the calling thread (default kAmax). V3.1-style
// power-of-two (UE8M0) scales: Fp8ScaleScope s(ScaleMode::kPow2);
ScaleMode linear_scale_mode();
class Fp8ScaleScope {
 public:
  explicit Fp8ScaleScope(ScaleMode m);
  ~Fp8ScaleScope();
  Fp8ScaleScope(const Fp8ScaleScope&) = delete;
  Fp8ScaleScope& operator=(const Fp8ScaleScope&) = delete;

 private:
  ScaleMode saved_;
};

// ---- the block-scaled GEMM on quantized operands ----
// C[M,N] = Σ_kb (sa[m,kb]·sb[kb,n]) · Σ_{k in block kb} e4m3(a[m,k])·e4m3(b[n,k])  (+ beta·C)
// a: codes [M,K] row stride lda; sa: [M, ceil(K/128)] (row stride ceil(K/128));
// b: codes [N,K] row stride ldb (the "NT" layout); sb: [ceil(K/128), N] (row stride N) — one scale per output
// column per K block (a 128×128 weight block repeats its scale over its 128 columns).
// a_kmajor / b_kmajor: the codes are stored transposed instead, a as [K,M] (a(m,k) = a[k·lda + m]) and b as
// [K,N] (b(n,k) = b[k·ldb + n]); the kernel's packing step reads them directly (Dgrad's W, Wgrad's dY and X).
struct BlockScaledOperands {
  int64_t M = 0, N = 0, K = 0;
  const uint8_t* a = nullptr; int64_t lda = 0;
  const float* sa = nullptr;
  const uint8_t* b = nullptr; int64_t ldb = 0;
  const float* sb = nullptr;
  bool a_kmajor = false, b_kmajor = false;
};
// The production path: every 128-wide block accumulated exactly in FP32 and promoted (AVX-512 BF16 kernel).
void block_scaled_gemm(const BlockScaledOperands& op, float* C, int64_t ldc, float beta = 0.0f);
// Plain scalar form of the same arithmetic (sequential FP32 sum within a block, then promotion): the test oracle's
// twin and the fallback on CPUs without avx512_bf16.
void block_scaled_gemm_reference(const BlockScaledOperands& op, float* C, int64_t ldc, float beta = 0.0f);
// "Limited accumulator" emulation of a tensor core without promotion: products (codes·sa·sb, exact in FP32 up
// to the scale product) are summed in FP32 in consecutive groups of `group` along K, and each group sum is added
// to one running accumulator over the whole K whose significand is truncated to `acc_bits` bits (the leading
// one included) after every addition. acc_bits = 14 with 4-product groups models the paper's observation about
// H800 FP8 GEMMs (about 2% maximum relative error at K = 4096; docs/fp8.md has the measurements). Scalar, for
// measuring the error only.
void block_scaled_gemm_limited(const BlockScaledOperands& op, float* C, int64_t ldc, int acc_bits = 14,
                               int group = 4);

}  // namespace dsv3::fp8
