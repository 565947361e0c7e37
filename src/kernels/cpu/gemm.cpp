// GEMM entry points. F32: oneDNN's sgemm (measured ~1.2x OpenBLAS's OpenMP build on this machine's shapes,
// bench/bench_gemm.cpp). BF16: operands rounded to BF16 and multiplied by a cached oneDNN
// matmul primitive with F32 accumulation (M is padded up to a multiple of 32 so a handful of primitives
// serve the varying row counts of routed experts). The choice of library per precision was measured in
// bench/bench_gemm.cpp (BENCHMARKS.md).
#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "kernels/ops.h"

namespace dsv3::ops {

namespace {

thread_local GemmPrecision t_precision = GemmPrecision::kF32;

void scale_only(int64_t M, int64_t N, float* D, int64_t ldd, float beta) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) D[i * ldd + j] = beta == 0.0f ? 0.0f : beta * D[i * ldd + j];
}

// One BF16 matmul shape: src [Mp, K] row-major, weights given as [N, K] row-major, dst [Mp, N] f32.
struct Bf16Matmul {
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, c_md;
};

class Bf16Gemm {
 public:
  static Bf16Gemm& get() {
    static Bf16Gemm g;
    return g;
  }
  // D = alpha * A·Bᵀ + beta * D, with A_bf16 [Mp, K] and B_bf16 [N, K] already packed; M ≤ Mp real rows.
  void run(int64_t M, int64_t Mp, int64_t N, int64_t K, const uint16_t* A, const uint16_t* B, float* D, int64_t ldd,
           float alpha, float beta, std::vector<float>& C) {
    Bf16Matmul* mm;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto key = std::make_tuple(Mp, N, K);
      auto it = cache_.find(key);
      if (it == cache_.end()) {
        using namespace dnnl;
        Bf16Matmul m;
        m.a_md = memory::desc({Mp, K}, memory::data_type::bf16, memory::dims{K, 1});
        m.b_md = memory::desc({K, N}, memory::data_type::bf16, memory::dims{1, K});
        m.c_md = memory::desc({Mp, N}, memory::data_type::f32, memory::dims{N, 1});
        matmul::primitive_desc pd(matmul::desc(m.a_md, m.b_md, m.c_md), engine_);
        m.prim = matmul(pd);
        it = cache_.emplace(key, std::move(m)).first;
      }
      mm = &it->second;
    }
    C.resize(size_t(Mp * N));
    dnnl::memory a(mm->a_md, engine_, const_cast<uint16_t*>(A)), b(mm->b_md, engine_, const_cast<uint16_t*>(B)),
        c(mm->c_md, engine_, C.data());
    dnnl::stream s(engine_);
    mm->prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    s.wait();
#pragma omp parallel for schedule(static) if (M * N > 65536)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        const float v = alpha * C[size_t(i * N + j)];
        D[i * ldd + j] = beta == 0.0f ? v : v + beta * D[i * ldd + j];
      }
  }

 private:
  Bf16Gemm() : engine_(dnnl::engine::kind::cpu, 0) {}
  dnnl::engine engine_;
  std::mutex mu_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Bf16Matmul> cache_;
};

// Packs element (r, c) = src[r * rs + c * cs] of an R×C matrix into dst [R_pad, C] BF16, zero rows after R.
void pack_bf16(int64_t R, int64_t Rp, int64_t C, const float* src, int64_t rs, int64_t cs, std::vector<uint16_t>& dst) {
  dst.resize(size_t(Rp * C));
#pragma omp parallel for schedule(static) if (R * C > 65536)
  for (int64_t r = 0; r < Rp; ++r)
    for (int64_t c = 0; c < C; ++c) dst[size_t(r * C + c)] = r < R ? f32_to_bf16(src[r * rs + c * cs]) : 0;
}

// General BF16 path: op(A) is M×K with element (m, k) at A[m*ams + k*aks]; op(B)ᵀ is N×K with element (n, k)
// at B[n*bns + k*bks].
void gemm_bf16(int64_t M, int64_t N, int64_t K, const float* A, int64_t ams, int64_t aks, const float* B, int64_t bns,
               int64_t bks, float* D, int64_t ldd, float alpha, float beta) {
  thread_local std::vector<uint16_t> a16, b16;
  thread_local std::vector<float> c32;
  const int64_t Mp = (M + 31) / 32 * 32;
  pack_bf16(M, Mp, K, A, ams, aks, a16);
  pack_bf16(N, N, K, B, bns, bks, b16);
  Bf16Gemm::get().run(M, Mp, N, K, a16.data(), b16.data(), D, ldd, alpha, beta, c32);
}

}  // namespace

GemmPrecision gemm_precision() { return t_precision; }
GemmPrecisionScope::GemmPrecisionScope(GemmPrecision p) : saved_(t_precision) { t_precision = p; }
GemmPrecisionScope::~GemmPrecisionScope() { t_precision = saved_; }

void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, D, ldd, beta);
  if (t_precision == GemmPrecision::kBF16) return gemm_bf16(M, N, K, A, lda, 1, B, ldb, 1, D, ldd, alpha, beta);
  dnnl_sgemm('N', 'T', M, N, K, alpha, A, lda, B, ldb, beta, D, ldd);
}

void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, D, ldd, beta);
  if (t_precision == GemmPrecision::kBF16) return gemm_bf16(M, N, K, A, lda, 1, B, 1, ldb, D, ldd, alpha, beta);
  dnnl_sgemm('N', 'N', M, N, K, alpha, A, lda, B, ldb, beta, D, ldd);
}

void gemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* D,
             int64_t ldd, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, D, ldd, beta);
  if (t_precision == GemmPrecision::kBF16) return gemm_bf16(M, N, K, A, 1, lda, B, 1, ldb, D, ldd, alpha, beta);
  dnnl_sgemm('T', 'N', M, N, K, alpha, A, lda, B, ldb, beta, D, ldd);
}

}  // namespace dsv3::ops
