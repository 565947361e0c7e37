// GEMM entry points. F32: oneDNN's sgemm (measured ~1.2x OpenBLAS's OpenMP build on this machine's shapes,
// bench/bench_gemm.cpp). BF16: operands converted to BF16 (RNE) and multiplied by a oneDNN matmul primitive with
// F32 accumulation that reads the caller's strides and writes (or accumulates into) the caller's output directly.
#include <dnnl.hpp>
#include <immintrin.h>

#include <mutex>
#include <vector>

#include "core/dtype.h"
#include "dsv3/error.h"
#include "kernels/ops.h"

namespace dsv3::ops {

namespace {

thread_local GemmPrecision t_precision = GemmPrecision::kF32;

void scale_only(int64_t M, int64_t N, float* D, int64_t ldd, float beta) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) D[i * ldd + j] = beta == 0.0f ? 0.0f : beta * D[i * ldd + j];
}

// oneDNN matmul primitives with every dimension and leading stride given at execution time (oneDNN's jit GEMM,
// measured on par with the shape-specialised brgemm kernels for the training shapes and free of the per-shape
// creation cost — the routed experts' row counts change every step). One per (transposes, accumulate).
class Bf16Prims {
 public:
  static Bf16Prims& get() {
    static Bf16Prims p;
    return p;
  }
  const dnnl::engine& engine() const { return engine_; }
  const dnnl::matmul& find(bool ta, bool tb, bool acc) {
    std::lock_guard<std::mutex> lock(mu_);
    dnnl::matmul& m = prims_[(ta ? 4 : 0) + (tb ? 2 : 0) + (acc ? 1 : 0)];
    if (!m) {
      using namespace dnnl;
      const memory::dim R = DNNL_RUNTIME_DIM_VAL;
      const auto bf16 = memory::data_type::bf16;
      memory::desc a({R, R}, bf16, ta ? memory::dims{1, R} : memory::dims{R, 1});
      memory::desc b({R, R}, bf16, tb ? memory::dims{1, R} : memory::dims{R, 1});
      memory::desc c({R, R}, memory::data_type::f32, memory::dims{R, 1});
      primitive_attr attr;
      if (acc) {
        post_ops po;
        po.append_sum(1.0f);
        attr.set_post_ops(po);
      }
      m = matmul(matmul::primitive_desc(matmul::desc(a, b, c), attr, engine_));
    }
    return m;
  }

 private:
  Bf16Prims() : engine_(dnnl::engine::kind::cpu, 0) {}
  dnnl::engine engine_;
  std::mutex mu_;
  dnnl::matmul prims_[8];
};

// Converts an R×C matrix (row stride ld) into a contiguous BF16 buffer.
void convert(int64_t R, int64_t C, const float* src, int64_t ld, std::vector<uint16_t>& dst) {
  dst.resize(size_t(R * C));
  to_bf16(R, C, src, ld, dst.data(), C);
}

// The F32-operand BF16 path behind gemm_nt/nn/tn: both stored operands converted, then gemm_bf16.
void gemm_bf16_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, float* D, int64_t ldd, float alpha, float beta) {
  thread_local std::vector<uint16_t> a16, b16;
  thread_local std::vector<float> tmp;
  convert(ta ? K : M, ta ? M : K, A, lda, a16);
  convert(tb ? N : K, tb ? K : N, B, ldb, b16);
  const int64_t a_ld = ta ? M : K, b_ld = tb ? K : N;
  if (alpha == 1.0f && (beta == 0.0f || beta == 1.0f))
    return gemm_bf16(ta, tb, M, N, K, a16.data(), a_ld, b16.data(), b_ld, D, ldd, beta);
  tmp.resize(size_t(M * N));
  gemm_bf16(ta, tb, M, N, K, a16.data(), a_ld, b16.data(), b_ld, tmp.data(), N, 0.0f);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      const float v = alpha * tmp[size_t(i * N + j)];
      D[i * ldd + j] = beta == 0.0f ? v : v + beta * D[i * ldd + j];
    }
}

}  // namespace

GemmPrecision gemm_precision() { return t_precision; }
GemmPrecisionScope::GemmPrecisionScope(GemmPrecision p) : saved_(t_precision) { t_precision = p; }
GemmPrecisionScope::~GemmPrecisionScope() { t_precision = saved_; }

void to_bf16(int64_t R, int64_t C, const float* src, int64_t ld, uint16_t* dst, int64_t dst_ld) {
#pragma omp parallel for schedule(static) if (R * C > 65536)
  for (int64_t r = 0; r < R; ++r) {
    const float* s = src + r * ld;
    uint16_t* d = dst + r * dst_ld;
    int64_t c = 0;
#if defined(__AVX512BF16__)
    // vcvtneps2bf16 rounds to nearest-even like f32_to_bf16 (they differ only in NaN payloads).
    for (; c + 16 <= C; c += 16) {
      const __m256bh v = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + c), reinterpret_cast<const __m256i&>(v));
    }
#endif
    for (; c < C; ++c) d[c] = f32_to_bf16(s[c]);
  }
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float* C, int64_t ldc, float beta) {
  DSV3_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16: beta must be 0 or 1, got ", beta);
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  using namespace dnnl;
  Bf16Prims& P = Bf16Prims::get();
  const dnnl::matmul& prim = P.find(trans_a, trans_b, beta == 1.0f);
  const auto bf16 = memory::data_type::bf16;
  memory a(memory::desc({M, K}, bf16, trans_a ? memory::dims{1, lda} : memory::dims{lda, 1}), P.engine(),
           const_cast<uint16_t*>(A));
  memory b(memory::desc({K, N}, bf16, trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1}), P.engine(),
           const_cast<uint16_t*>(B));
  memory c(memory::desc({M, N}, memory::data_type::f32, memory::dims{ldc, 1}), P.engine(), C);
  thread_local stream s(P.engine());
  prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  s.wait();
}

void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, D, ldd, beta);
  if (t_precision == GemmPrecision::kBF16) return gemm_bf16_f32(false, true, M, N, K, A, lda, B, ldb, D, ldd, alpha, beta);
  dnnl_sgemm('N', 'T', M, N, K, alpha, A, lda, B, ldb, beta, D, ldd);
}

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, D, ldd, beta);
  if (t_precision == GemmPrecision::kBF16)
    return gemm_bf16_f32(false, false, M, N, K, A, lda, B, ldb, D, ldd, alpha, beta);
  dnnl_sgemm('N', 'N', M, N, K, alpha, A, lda, B, ldb, beta, D, ldd);
}

void gemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, D, ldd, beta);
  if (t_precision == GemmPrecision::kBF16)
    return gemm_bf16_f32(true, false, M, N, K, A, lda, B, ldb, D, ldd, alpha, beta);
  dnnl_sgemm('T', 'N', M, N, K, alpha, A, lda, B, ldb, beta, D, ldd);
}

}  // namespace dsv3::ops
