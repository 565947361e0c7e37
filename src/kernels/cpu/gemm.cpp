// f32 GEMM entry points over OpenBLAS (measured against oneDNN in bench/bench_gemm.cpp; see BENCHMARKS.md).
#include <cblas.h>

#include "kernels/ops.h"

namespace dsv3::ops {

void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta,
              D, int(ldd));
}

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb),
              beta, D, int(ldd));
}

}  // namespace dsv3::ops
