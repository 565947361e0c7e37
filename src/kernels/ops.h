// CPU operator API used by the model code. One signature per op; shapes are row-major, PyTorch order.
// Each op has a plain reference somewhere in tests/ (wide accumulation) that the fast path is checked against.
#pragma once
#include <cstdint>

namespace dsv3::ops {

// GEMM precision of the calling thread. kF32: oneDNN sgemm (multi-threaded). kBF16: both operands rounded
// to BF16 (RNE), products accumulated in F32 by oneDNN's matmul (avx512_bf16 / AMX where the CPU has them);
// alpha/beta are applied in F32. Set with a GemmPrecisionScope; the default is kF32. The precision is per
// thread: OpenMP workers start at kF32.
enum class GemmPrecision { kF32, kBF16 };
GemmPrecision gemm_precision();
class GemmPrecisionScope {
 public:
  explicit GemmPrecisionScope(GemmPrecision p);
  ~GemmPrecisionScope();
  GemmPrecisionScope(const GemmPrecisionScope&) = delete;
  GemmPrecisionScope& operator=(const GemmPrecisionScope&) = delete;

 private:
  GemmPrecision saved_;
};

// Converts an R×C F32 matrix (row stride ld) to BF16 (round to nearest even) into dst (row stride dst_ld).
void to_bf16(int64_t R, int64_t C, const float* src, int64_t ld, uint16_t* dst, int64_t dst_ld);
// C[M,N] = op(A)·op(B) (+ C when beta == 1; beta must be 0 or 1) with BF16 operands and F32 accumulation.
// op(A) is M×K: A stored [M,K] (trans_a false) or [K,M] (trans_a true), row stride lda. op(B) is K×N: B stored
// [K,N] (trans_b false) or [N,K] (trans_b true), row stride ldb. For operands converted once and used by several
// GEMMs (training weights); gemm_nt/nn/tn in kBF16 convert their F32 operands on every call and come here.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float* C, int64_t ldc, float beta);

// D[M,N] = alpha * A[M,K] · B[N,K]^T + beta * D. lda/ldb/ldd are row strides in elements.
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha = 1.0f, float beta = 0.0f);
// D[M,N] = alpha * A[M,K] · B[K,N] + beta * D.
void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha = 1.0f, float beta = 0.0f);
// D[M,N] = alpha * A[K,M]^T · B[K,N] + beta * D. The weight-gradient GEMM: dW = dYᵀ·X.
void gemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha = 1.0f, float beta = 0.0f);

// y[T,D] = w ⊙ x / sqrt(mean(x²) + eps), row by row; x and y may alias. x_stride/y_stride in elements.
void rmsnorm(int64_t T, int64_t D, const float* x, int64_t x_stride, const float* w, float eps, float* y,
             int64_t y_stride);

// In-place interleaved RoPE on n_vec vectors of length d (even) per token:
//   y[2j] = x[2j]cos − x[2j+1]sin, y[2j+1] = x[2j]sin + x[2j+1]cos, angle = pos[t]·inv_freq[j].
// x: token t's vectors start at x + t*token_stride, consecutive vectors vec_stride apart.
// cos/sin are multiplied by `cs_scale` (YaRN mscale ratio).
void rope_interleaved(int64_t T, int64_t n_vec, int64_t d, float* x, int64_t token_stride, int64_t vec_stride,
                      const int64_t* pos, const double* inv_freq, double cs_scale);

// Shared body of rope_interleaved (sin_sign = +1) and its transpose (sin_sign = −1, kernels/backward_ops.h).
void rope_interleaved_signed(int64_t T, int64_t n_vec, int64_t d, float* x, int64_t token_stride, int64_t vec_stride,
                             const int64_t* pos, const double* inv_freq, double cs_scale, float sin_sign);

// The same rotation with the cos/sin precomputed per token: cs/sn [T, d/2] (already scaled; rows of the angles
// pos[t]·inv_freq[j] evaluated as in rope_interleaved), the sine multiplied by sin_sign (−1: the transpose).
void rope_interleaved_table(int64_t T, int64_t n_vec, int64_t d, float* x, int64_t token_stride, int64_t vec_stride,
                            const float* cs, const float* sn, float sin_sign);
// The table of rope_interleaved_table for positions pos[0..T): cs[t,j] = f32(cos(pos[t]·inv_freq[j])·cs_scale).
void rope_table(int64_t T, int64_t d, const int64_t* pos, const double* inv_freq, double cs_scale, float* cs,
                float* sn);

// out[T,I] = silu(gate) ⊙ up, where gate/up are [T,I] with row stride ld.
void silu_mul(int64_t T, int64_t I, const float* gate, const float* up, int64_t ld, float* out, int64_t out_ld);

}  // namespace dsv3::ops

namespace dsv3::ops {

// Causal softmax attention for one head over a query block and a key block, through GEMMs:
//   scores[s,t] = scale · q_s·k_t (t <= q_offset + s, else masked), p = softmax_t(scores), out_s = Σ_t p[s,t] v_t.
// Rows are given by (pointer, row stride). `scores` is caller workspace of S_q*S_kv floats.
struct HeadAttention {
  int64_t S_q = 0, S_kv = 0, dk = 0, dv = 0;
  const float* q = nullptr; int64_t q_ld = 0;     // [S_q, dk]
  const float* k = nullptr; int64_t k_ld = 0;     // [S_kv, dk]
  const float* v = nullptr; int64_t v_ld = 0;     // [S_kv, dv]
  float* out = nullptr; int64_t out_ld = 0;       // [S_q, dv]
  float scale = 1.0f;
  int64_t q_offset = 0;  // absolute position of query row 0 minus that of key row 0
  float* scores = nullptr;
};
void head_attention(const HeadAttention& a);
// Masked row softmax in place: row s keeps columns t <= q_offset + s (others set to 0). Rows in f32, max-subtracted.
void causal_softmax(int64_t S_q, int64_t S_kv, float* scores, int64_t ld, int64_t q_offset);

}  // namespace dsv3::ops
