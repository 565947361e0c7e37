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
#pragma once
#include <cstdint>
#include <span>

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
};

// Multi-threaded (OpenMP over column tiles).
void gemm_nt_rowwise(const GemmNT& p);
// Several independent problems in one parallel region (heads of MLA, the experts of a MoE layer).
void gemm_nt_rowwise_grouped(std::span<const GemmNT> problems);
// Single-threaded, on the calling thread (used inside already-parallel kernels).
void gemm_nt_rowwise_serial(const GemmNT& p);

}  // namespace dsv3::infer
