// Row-independent f32 GEMM (D = A·Bᵀ) for the inference engine: every output element C[i,j] is
// simd::dot(A[i,:], B[j,:], K) — one fixed summation order (simd.h), whatever M, N, the tiling, the thread
// count or the other rows are. This is what makes decoding batch-invariant: a sequence's logits are
// bitwise identical alone or in any batch, and a prompt's latent cache is bitwise identical however its
// prefill was chunked (so prefix reuse and recompute-after-preemption are exact).
//
// Why not OpenBLAS: its sgemm picks kernels and K-blocking by M (small-M GEMV paths vs packed GEMM), so one
// row's result can change with the batch size; tests/infer/test_rowwise_gemm.cpp measures that on this
// machine. Memory-bound decode (small M) reads each weight row once for all rows of the batch.
//
// Belongs in src/kernels/cpu/ with an ops.h signature once the kernel layer adopts it (owned by the lead).
//
// Quantized weights (b_dtype BF16 or F8_E4M3): each A row is first rounded to BF16 (round to nearest even,
// per row, so a row's rounding never depends on the others), then C[i,j] accumulates vdpbf16ps products
// in one fixed order: 16 F32 lanes, lane l taking the pairs k ∈ {32s + 2l, 32s + 2l + 1} for s = 0, 1, …
// (masked to zero past K), then the lane tree of simd::hsum. FP8 weights are widened to BF16 in registers
// (exact: e4m3 has 3 mantissa bits; 64 codes at a time through byte tables for 1–2-row tiles) and
// accumulated per 128-wide K block into a block accumulator that is promoted into the F32 total with one
// fused multiply-add by the block's scale_inv; blocks in K order.
// Tiling over M/N and the thread count only choose which elements are computed together, never the order.
#pragma once
#include <cstdint>
#include <span>

#include "core/dtype.h"

namespace dsv3::infer {

// One problem: C[M,N] = A[M,K]·B[N,K]ᵀ (or C += … when accumulate). Row strides in elements.
struct GemmNT {
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  const float* B = nullptr;
  int64_t ldb = 0;
  float* C = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
  // Weight format. F32: B as above. BF16: Bq points at [N, ldb] bf16 bit patterns. F8_E4M3: Bq points at
  // [N, ldb] e4m3 codes, b_scale at scale_inv [ceil(N/128), ld_scale] for 128×128 blocks whose first block
  // starts at B's row 0 and column 0.
  DType b_dtype = DType::F32;
  const void* Bq = nullptr;
  const float* b_scale = nullptr;
  int64_t ld_scale = 0;
  // F8_E4M3 only: multiply the F32 values the codes stand for (each code's value times its block's scale_inv,
  // one F32 product — what fp8_block_dequantize stores) with the F32 kernel and its order, so the result is
  // bitwise that of B = those F32 values, while reading 1 byte per weight. b_scale_row0: the row of B's row 0
  // inside the scale grid's first block row (0–127; a row slice need not start on a block).
  bool fp8_as_f32 = false;
  int64_t b_scale_row0 = 0;
};

// FP8 block size the kernels assume (the V3 checkpoint's weight_block_size).
inline constexpr int64_t kFp8Block = 128;

// K rounded up to a multiple of 32 (one vdpbf16ps step).
inline int64_t bf16_padded_k(int64_t K) { return (K + 31) / 32 * 32; }
// Rows of A rounded to bf16 (round to nearest even, NaN kept quiet) into out [M, bf16_padded_k(K)], zero-padded.
// Each row's rounding depends only on that row.
void round_rows_bf16(int64_t M, int64_t K, const float* A, int64_t lda, uint16_t* out);

// Weight bytes a problem streams (B, plus the FP8 scales).
double gemm_weight_bytes(const GemmNT& p);

// Multi-threaded (OpenMP over column tiles).
void gemm_nt_rowwise(const GemmNT& p);
// Several independent problems in one parallel region (heads of MLA, the experts of a MoE layer).
void gemm_nt_rowwise_grouped(std::span<const GemmNT> problems);
// Single-threaded, on the calling thread (used inside already-parallel kernels).
void gemm_nt_rowwise_serial(const GemmNT& p);

}  // namespace dsv3::infer
