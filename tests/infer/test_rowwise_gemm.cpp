// The row-independent GEMM (infer/rowwise_gemm.h): bit-exact against a plain scalar re-derivation of its one
// summation order (simd.h) on random and edge shapes; a row's result is the same for any M, any grouping
// and any thread count. Also measures whether the library F32 GEMM (ops::gemm_nt) gives M-dependent rows on this
// machine — the reason the engine does not use it for decode.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "infer/rowwise_gemm.h"
#include "infer/simd.h"
#include "kernels/ops.h"

using namespace dsv3;
using namespace dsv3::infer;

namespace {

std::vector<float> randv(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  rng_fill_normal(v.data(), uint64_t(n), 1.0f, seed, 5);
  return v;
}

// The order of simd.h written out with scalars: lane l sums k ≡ l (mod L) with fused multiply-adds over the
// zero-padded vectors, then a halving tree.
float ref_dot(const float* a, const float* b, int64_t K) {
  const int L = simd::kLanes;
  std::vector<float> acc(static_cast<size_t>(L), 0.0f);
  const int64_t Kp = (K + L - 1) / L * L;
  for (int64_t k = 0; k < Kp; ++k) {
    const float x = k < K ? a[k] : 0.0f, y = k < K ? b[k] : 0.0f;
    acc[size_t(k % L)] = std::fma(x, y, acc[size_t(k % L)]);
  }
  for (int h = L / 2; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) acc[size_t(l)] = acc[size_t(l)] + acc[size_t(l + h)];
  return acc[0];
}

}  // namespace

TEST(RowwiseGemm, BitExactAgainstScalarOrder) {
  for (int64_t M : {1, 2, 3, 4, 5, 7, 9, 33})
    for (int64_t N : {1, 5, 8, 63, 64, 65, 130})
      for (int64_t K : {1, 15, 16, 17, 100, 256}) {
        const int64_t lda = K + 3, ldb = K + 1, ldc = N + 2;
        auto A = randv(M * lda, 1 + M), B = randv(N * ldb, 2 + N);
        std::vector<float> C(size_t(M * ldc), 7.0f);
        gemm_nt_rowwise(GemmNT{M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc});
        int bad = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            const float want = ref_dot(A.data() + i * lda, B.data() + j * ldb, K);
            bad += std::memcmp(&want, &C[size_t(i * ldc + j)], 4) != 0;
          }
        EXPECT_EQ(bad, 0) << "M " << M << " N " << N << " K " << K;
        // Padding columns untouched.
        for (int64_t i = 0; i < M; ++i) EXPECT_EQ(C[size_t(i * ldc + N)], 7.0f);
      }
}

TEST(RowwiseGemm, AccumulateAddsTheSameDot) {
  const int64_t M = 3, N = 70, K = 45;
  auto A = randv(M * K, 3), B = randv(N * K, 4), C0 = randv(M * N, 5);
  std::vector<float> C = C0;
  GemmNT g{M, N, K, A.data(), K, B.data(), K, C.data(), N};
  g.accumulate = true;
  gemm_nt_rowwise(g);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const float want = C0[size_t(i * N + j)] + ref_dot(A.data() + i * K, B.data() + j * K, K);
      EXPECT_EQ(want, C[size_t(i * N + j)]);
    }
}

TEST(RowwiseGemm, RowsIndependentOfBatchGroupingAndThreads) {
  const int64_t M = 37, N = 300, K = 256;
  auto A = randv(M * K, 6), B = randv(N * K, 7);
  std::vector<float> full(size_t(M * N)), one(static_cast<size_t>(N));
  gemm_nt_rowwise(GemmNT{M, N, K, A.data(), K, B.data(), K, full.data(), N});
  for (int64_t i = 0; i < M; ++i) {
    gemm_nt_rowwise(GemmNT{1, N, K, A.data() + i * K, K, B.data(), K, one.data(), N});
    EXPECT_EQ(0, std::memcmp(one.data(), full.data() + i * N, size_t(N) * 4)) << "row " << i;
  }
  // Split into two grouped problems over row ranges, single thread.
  std::vector<float> split(size_t(M * N));
  GemmNT p[2] = {{20, N, K, A.data(), K, B.data(), K, split.data(), N},
                 {M - 20, N, K, A.data() + 20 * K, K, B.data(), K, split.data() + 20 * N, N}};
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  gemm_nt_rowwise_grouped(p);
  omp_set_num_threads(threads);
  EXPECT_EQ(0, std::memcmp(split.data(), full.data(), full.size() * 4));
  // Serial entry point too.
  std::vector<float> serial(size_t(M * N));
  gemm_nt_rowwise_serial(GemmNT{M, N, K, A.data(), K, B.data(), K, serial.data(), N});
  EXPECT_EQ(0, std::memcmp(serial.data(), full.data(), full.size() * 4));
}

TEST(RowwiseGemm, EmptyProblemsAreNoOps) {
  std::vector<float> C(4, 1.0f);
  gemm_nt_rowwise(GemmNT{0, 2, 3, nullptr, 3, nullptr, 3, C.data(), 2});
  gemm_nt_rowwise(GemmNT{2, 0, 3, nullptr, 3, nullptr, 3, C.data(), 2});
  gemm_nt_rowwise_grouped({});
  EXPECT_EQ(C[0], 1.0f);
  // K = 0: dot of nothing is 0.
  float a = 1, b = 1, c = 5;
  gemm_nt_rowwise(GemmNT{1, 1, 0, &a, 1, &b, 1, &c, 1});
  EXPECT_EQ(c, 0.0f);
}

// Informational: does the library F32 GEMM (ops::gemm_nt) give a row a different result when other rows come along? Prints the count
// for the decode-like shapes; the engine does not depend on the answer.
TEST(RowwiseGemm, OpenBlasRowDependenceOnM) {
  const int64_t N = 512, K = 256;
  auto A = randv(64 * K, 8), B = randv(N * K, 9);
  std::vector<float> ref(static_cast<size_t>(N)), out(size_t(64 * N));
  ops::gemm_nt(1, N, K, A.data(), K, B.data(), K, ref.data(), N);
  int differing_m = 0;
  for (int64_t M : {2, 3, 4, 8, 16, 32, 64}) {
    ops::gemm_nt(M, N, K, A.data(), K, B.data(), K, out.data(), N);
    const bool same = std::memcmp(ref.data(), out.data(), size_t(N) * 4) == 0;
    differing_m += !same;
    std::printf("  gemm_nt row 0 with M=%-3lld vs M=1: %s\n", (long long)M, same ? "bitwise equal" : "DIFFERENT");
  }
  RecordProperty("openblas_m_values_with_different_row0", differing_m);
}
