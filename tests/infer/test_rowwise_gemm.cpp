// The row-independent GEMM (infer/rowwise_gemm.h): bit-exact against a plain scalar re-derivation of its one
// summation order (simd.h) on random and edge shapes; a row's result is the same for any M, any grouping
// and any thread count. Also measures whether the library F32 GEMM (ops::gemm_nt) gives M-dependent rows on this
// machine — the reason the engine does not use it for decode.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "dsv3/error.h"
#include "infer/decode.h"
#include "infer/infer_weights.h"
#include "infer/rowwise_gemm.h"
#include "infer_test_util.h"
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

// ---- Quantized weights (BF16, FP8 E4M3 with 128×128 scales) ----
namespace {

// The exact value of C[i,j] on the operands the kernel is defined on: A rounded to bf16 per element, B as
// held (bf16, or e4m3 code × block scale_inv), products summed in double. Also Σ|a·b| for the error bound.
struct QRef {
  std::vector<double> val, mag;
};

QRef q_reference(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const std::vector<float>& Bvals,
                 int64_t ldb) {
  QRef r;
  r.val.assign(size_t(M * N), 0.0);
  r.mag.assign(size_t(M * N), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(bf16_to_f32(f32_to_bf16(A[i * lda + k]))) * double(Bvals[size_t(j * ldb + k)]);
        s += p, m += std::fabs(p);
      }
      r.val[size_t(i * N + j)] = s, r.mag[size_t(i * N + j)] = m;
    }
  return r;
}

// F32 accumulation of K products in 16 lanes (plus a scale FMA per 128-block for FP8) and a 4-level tree:
// at most ~(K/16 + 2·K/128 + 6) roundings of relative size 2^-24 on partial sums bounded by Σ|a·b|.
double q_bound(int64_t K, double mag) { return double(K / 16 + 2 * (K / 128) + 8) * std::ldexp(1.0, -24) * mag; }

struct QWeights {
  DType dtype;
  std::vector<uint16_t> bf16;
  std::vector<uint8_t> codes;
  std::vector<float> scale, values;  // values: what the weights represent
  int64_t ld_scale = 0;
  GemmNT problem(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, int64_t ldb, float* C,
                 int64_t ldc) const {
    GemmNT g{M, N, K, A, lda, nullptr, ldb, C, ldc};
    g.b_dtype = dtype;
    g.Bq = dtype == DType::BF16 ? static_cast<const void*>(bf16.data()) : static_cast<const void*>(codes.data());
    g.b_scale = scale.data(), g.ld_scale = ld_scale;
    return g;
  }
};

// Random weights [N, ldb]; FP8 blocks get scales spread over 2^-6..2^6 so the promotion matters.
QWeights make_q(DType dtype, int64_t N, int64_t ldb, uint64_t seed) {
  QWeights q;
  q.dtype = dtype;
  std::vector<float> w = randv(N * ldb, seed);
  q.values.resize(w.size());
  if (dtype == DType::BF16) {
    for (size_t i = 0; i < w.size(); ++i) q.bf16.push_back(f32_to_bf16(w[i]));
    for (size_t i = 0; i < w.size(); ++i) q.values[i] = bf16_to_f32(q.bf16[i]);
    return q;
  }
  const int64_t nb = (N + 127) / 128;
  q.ld_scale = (ldb + 127) / 128;
  q.codes.resize(w.size());
  q.scale.resize(size_t(nb * q.ld_scale));
  for (size_t i = 0; i < q.scale.size(); ++i) q.scale[i] = std::ldexp(1.0f + 0.37f * float(i % 5), int(i % 13) - 6);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < ldb; ++k) {
      const size_t i = size_t(n * ldb + k);
      q.codes[i] = f32_to_e4m3(w[i] * 100.0f);  // spans normals and subnormals of e4m3
      q.values[i] = e4m3_to_f32(q.codes[i]) * q.scale[size_t((n / 128) * q.ld_scale + k / 128)];
    }
  return q;
}

}  // namespace

TEST(RowwiseGemmQuantized, MatchesDoubleReferenceOnRoundedOperands) {
  for (DType dt : {DType::BF16, DType::F8_E4M3})
    for (int64_t M : {1, 2, 3, 4, 6})
      for (int64_t N : {1, 9, 64, 131})
        for (int64_t K : {1, 31, 32, 100, 128, 300}) {
          const int64_t lda = K + 5, ldb = K + 3, ldc = N + 1;
          auto A = randv(M * lda, 20 + M);
          const QWeights q = make_q(dt, N, ldb, 30 + N + K);
          std::vector<float> C(size_t(M * ldc), 7.0f);
          gemm_nt_rowwise(q.problem(M, N, K, A.data(), lda, ldb, C.data(), ldc));
          const QRef ref = q_reference(M, N, K, A.data(), lda, q.values, ldb);
          int bad = 0;
          double worst = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              const double err = std::fabs(double(C[size_t(i * ldc + j)]) - ref.val[size_t(i * N + j)]);
              worst = std::max(worst, err / std::max(ref.mag[size_t(i * N + j)], 1e-30));
              bad += !(err <= q_bound(K, ref.mag[size_t(i * N + j)]));
            }
          EXPECT_EQ(bad, 0) << dtype_name(dt) << " M " << M << " N " << N << " K " << K << " worst rel " << worst;
          for (int64_t i = 0; i < M; ++i) EXPECT_EQ(C[size_t(i * ldc + N)], 7.0f);
        }
}

// The kernel's order written out with scalars (rowwise_gemm.h): 16 lanes, lane l adding the products of the
// pairs (32s + 2l + 1) then (32s + 2l), each sum rounded to F32 (vdpbf16ps; the bf16 products are exact in
// F32; zeros past K), FP8 per 128-block with one fused multiply-add by the scale; then the simd::hsum tree.
float ref_q_dot(const float* a, const QWeights& q, int64_t row, int64_t ldb, int64_t K) {
  auto A = [&](int64_t k) { return k < K ? bf16_to_f32(f32_to_bf16(a[k])) : 0.0f; };
  auto B = [&](int64_t k) {
    if (k >= K) return 0.0f;
    const size_t i = size_t(row * ldb + k);
    return q.dtype == DType::BF16 ? bf16_to_f32(q.bf16[i]) : e4m3_to_f32(q.codes[i]);
  };
  float total[16] = {};
  const int64_t block = q.dtype == DType::BF16 ? std::max<int64_t>(K, 1) : 128;
  for (int64_t k0 = 0; k0 < K; k0 += block) {
    const int64_t k1 = std::min(K, k0 + block);
    float blk[16] = {};
    for (int64_t k = k0; k < k1; k += 32)
      for (int l = 0; l < 16; ++l) {
        const int64_t i1 = k + 2 * l + 1, i0 = k + 2 * l;
        blk[l] = blk[l] + (i1 < k1 ? A(i1) * B(i1) : 0.0f);
        blk[l] = blk[l] + (i0 < k1 ? A(i0) * B(i0) : 0.0f);
      }
    const float sc = q.dtype == DType::BF16 ? 1.0f : q.scale[size_t((row / 128) * q.ld_scale + k0 / 128)];
    for (int l = 0; l < 16; ++l) total[l] = q.dtype == DType::BF16 ? blk[l] : std::fma(blk[l], sc, total[l]);
  }
  for (int h = 8; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) total[l] = total[l] + total[l + h];
  return total[0];
}

TEST(RowwiseGemmQuantized, BitExactAgainstScalarOrder) {
  for (DType dt : {DType::BF16, DType::F8_E4M3})
    for (int64_t M : {1, 3, 5, 8, 9})
      for (int64_t N : {1, 9, 130})
        for (int64_t K : {1, 33, 128, 300}) {
          const int64_t lda = K + 1, ldb = K + 7, ldc = N;
          auto A = randv(M * lda, 60 + M);
          const QWeights q = make_q(dt, N, ldb, 70 + N + K);
          std::vector<float> C(size_t(M * ldc));
          gemm_nt_rowwise(q.problem(M, N, K, A.data(), lda, ldb, C.data(), ldc));
          int bad = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              const float want = ref_q_dot(A.data() + i * lda, q, j, ldb, K);
              bad += std::memcmp(&want, &C[size_t(i * ldc + j)], 4) != 0;
            }
          EXPECT_EQ(bad, 0) << dtype_name(dt) << " M " << M << " N " << N << " K " << K;
        }
}

TEST(RowwiseGemmQuantized, RowsIndependentOfBatchGroupingAndThreads) {
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    const int64_t M = 37, N = 300, K = 384;
    auto A = randv(M * K, 50);
    const QWeights q = make_q(dt, N, K, 51);
    std::vector<float> full(size_t(M * N)), one(static_cast<size_t>(N));
    gemm_nt_rowwise(q.problem(M, N, K, A.data(), K, K, full.data(), N));
    for (int64_t i = 0; i < M; ++i) {
      gemm_nt_rowwise(q.problem(1, N, K, A.data() + i * K, K, K, one.data(), N));
      EXPECT_EQ(0, std::memcmp(one.data(), full.data() + i * N, size_t(N) * 4)) << dtype_name(dt) << " row " << i;
    }
    std::vector<float> split(size_t(M * N));
    GemmNT p[2] = {q.problem(20, N, K, A.data(), K, K, split.data(), N),
                   q.problem(M - 20, N, K, A.data() + 20 * K, K, K, split.data() + 20 * N, N)};
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    gemm_nt_rowwise_grouped(p);
    omp_set_num_threads(threads);
    EXPECT_EQ(0, std::memcmp(split.data(), full.data(), full.size() * 4)) << dtype_name(dt);
    // accumulate adds the same value
    std::vector<float> acc(size_t(M * N), 0.0f);
    GemmNT g = q.problem(M, N, K, A.data(), K, K, acc.data(), N);
    g.accumulate = true;
    gemm_nt_rowwise_serial(g);
    EXPECT_EQ(0, std::memcmp(acc.data(), full.data(), full.size() * 4)) << dtype_name(dt);
  }
}

TEST(RowwiseGemmQuantized, RejectsUnsupportedOrIncompleteWeights) {
  float a[4] = {1, 2, 3, 4}, c[1];
  uint8_t codes[4] = {};
  GemmNT g{1, 1, 4, a, 4, nullptr, 4, c, 1};
  g.b_dtype = DType::F16;
  g.Bq = codes;
  EXPECT_THROW(gemm_nt_rowwise(g), Error);
  g.b_dtype = DType::F8_E4M3;  // no scales
  EXPECT_THROW(gemm_nt_rowwise(g), Error);
  g.Bq = nullptr;
  g.b_dtype = DType::BF16;
  EXPECT_THROW(gemm_nt_rowwise(g), Error);
}

// Every one of the 256 e4m3 codes is widened exactly, wherever it sits in a 128-wide block (the widening
// paths work on 32 or 64 codes at a time): column j holds code j at position 37j mod 128 and zeros elsewhere,
// so C[i, j] = a_i · e4m3(j) · scale exactly (powers of two); the two NaN codes give NaN. fp8_as_f32 (16 codes
// at a time by arithmetic) gives bitwise the F32 kernel's results on the dequantized values.
TEST(RowwiseGemmQuantized, EveryFp8CodeWidensExactly) {
  const int64_t N = 256, K = 128;
  std::vector<uint8_t> codes(size_t(N * K), 0);
  for (int64_t j = 0; j < N; ++j) codes[size_t(j * K + (37 * j) % K)] = uint8_t(j);
  const float scale[2] = {1.0f, 0.125f};
  for (int64_t M : {1, 2, 3}) {
    std::vector<float> A(size_t(M * K)), C(size_t(M * N));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) A[size_t(i * K + k)] = std::ldexp(1.0f, -int(i) * 3);
    GemmNT g{M, N, K, A.data(), K, nullptr, K, C.data(), N};
    g.b_dtype = DType::F8_E4M3, g.Bq = codes.data(), g.b_scale = scale, g.ld_scale = 1;
    gemm_nt_rowwise(g);
    int bad = 0;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        const float got = C[size_t(i * N + j)];
        if ((j & 0x7f) == 0x7f) {
          bad += !std::isnan(got);
          continue;
        }
        const float want = e4m3_to_f32(uint8_t(j)) * std::ldexp(1.0f, -int(i) * 3) * scale[j / 128];
        bad += !(got == want);
      }
    EXPECT_EQ(bad, 0) << "M " << M;
    // fp8_as_f32: bitwise the F32 kernel on e4m3_to_f32(code) × scale (NaN codes included)
    std::vector<float> deq(codes.size()), want(C.size()), got(C.size());
    for (size_t i = 0; i < codes.size(); ++i) deq[i] = e4m3_to_f32(codes[i]) * scale[i / size_t(128 * K)];
    GemmNT f{M, N, K, A.data(), K, deq.data(), K, want.data(), N};
    gemm_nt_rowwise(f);
    g.C = got.data(), g.fp8_as_f32 = true;
    gemm_nt_rowwise(g);
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4)) << "fp8_as_f32 M " << M;
  }
}

// fp8_as_f32: FP8 codes multiplied as the F32 values they stand for give bitwise the F32 kernel's results on
// those values (fp8_block_dequantize), for row slices starting anywhere in a scale block, any M and K tails.
TEST(RowwiseGemmQuantized, Fp8AsF32MatchesTheDequantizedF32Kernel) {
  const int64_t rows = 300;
  for (int64_t K : {1, 17, 100, 128, 300}) {
    const QWeights q = make_q(DType::F8_E4M3, rows, K, 90 + K);
    const std::vector<float>& deq = q.values;  // code value × block scale, one F32 product each
    for (int64_t M : {1, 2, 3, 5, 8})
      for (int64_t row0 : {0, 64, 100, 130})
        for (int64_t N : {1, 9, 70}) {
          auto A = randv(M * (K + 3), 91 + M);
          std::vector<float> want(size_t(M * N)), got(size_t(M * N), 5.0f);
          GemmNT f{M, N, K, A.data(), K + 3, deq.data() + row0 * K, K, want.data(), N};
          gemm_nt_rowwise(f);
          GemmNT g{M, N, K, A.data(), K + 3, nullptr, K, got.data(), N};
          g.b_dtype = DType::F8_E4M3, g.fp8_as_f32 = true;
          g.Bq = q.codes.data() + row0 * K;
          g.b_scale = q.scale.data() + (row0 / 128) * q.ld_scale, g.ld_scale = q.ld_scale;
          g.b_scale_row0 = row0 % 128;
          gemm_nt_rowwise(g);
          EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
              << "K " << K << " M " << M << " row0 " << row0 << " N " << N;
        }
  }
  float a[4] = {1, 2, 3, 4}, c[1];
  uint8_t codes[4] = {};
  float scale[1] = {1.0f};
  GemmNT g{1, 1, 4, a, 4, nullptr, 4, c, 1};
  g.b_dtype = DType::F8_E4M3, g.Bq = codes, g.b_scale = scale, g.ld_scale = 1, g.fp8_as_f32 = true;
  g.b_scale_row0 = 128;  // outside the first block row
  EXPECT_THROW(gemm_nt_rowwise(g), Error);
  g.fp8_as_f32 = false, g.b_scale_row0 = 5;  // the block-promoting kernel needs block-aligned rows
  EXPECT_THROW(gemm_nt_rowwise(g), Error);
}

// The absorbed MLA matrices of an FP8 kv_b are held as codes multiplied as F32 (infer_weights.h): decode logits
// are bitwise those of F32 copies of the dequantized matrices, and W^UK transposed holds the same values.
TEST(RowwiseGemmQuantized, Fp8AbsorbedMatricesMatchTheirF32Copies) {
  for (const char* config : {"tiny", "small"}) {
    const ModelWeights& mw = test::random_model(config);
    const InferWeights f = InferWeights::from(mw, DType::F8_E4M3);
    InferWeights g = f;
    const int64_t H = f.cfg.num_attention_heads, dn = f.cfg.qk_nope_head_dim, dv = f.cfg.v_head_dim;
    const int64_t dc = f.cfg.kv_lora_rank;
    for (InferLayer& L : g.layers) {
      ASSERT_TRUE(L.kv_b_abs.fp8_as_f32 && L.w_uk_t.fp8_as_f32) << config;
      const Tensor kvb = L.kv_b.to_f32(), uk = L.w_uk_t.to_f32();
      int bad = 0;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < dn; ++n)
          for (int64_t j = 0; j < dc; ++j)
            bad += std::memcmp(&uk.f32()[(h * dc + j) * dn + n], &kvb.f32()[(h * (dn + dv) + n) * dc + j], 4) !=
                   0;
      EXPECT_EQ(bad, 0) << config;
      L.w_uk_t = QMatrix::from_f32(uk, DType::F32);
      L.kv_b_abs = QMatrix::from_f32(kvb, DType::F32);
    }
    const std::vector<int32_t> tokens = test::random_tokens(12, f.cfg.vocab_size, 3);
    const std::vector<float> a = test::step_logits(f, tokens), b = test::step_logits(g, tokens);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << config;
  }
}
