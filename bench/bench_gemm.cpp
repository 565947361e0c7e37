// Peak GEMM throughput on this machine for the libraries dsv3 can use: OpenBLAS sgemm (f32) and oneDNN
// matmul in f32 and bf16 (f32 accumulation). Square-ish shapes large enough to be compute-bound, plus the
// skinny shapes of the `small` model's forward. Reports GFLOP/s (counter "GFLOPs").
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <dnnl.hpp>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"

namespace {

void set_flops(benchmark::State& st, double M, double N, double K) {
  st.counters["GFLOPs"] = benchmark::Counter(2.0 * M * N * K * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

std::vector<float> randv(size_t n, uint64_t stream) {
  std::vector<float> v(n);
  dsv3::rng_fill_normal(v.data(), n, 1.0f, 1, stream);
  return v;
}

void BM_openblas_sgemm_nt(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto A = randv(M * K, 1), B = randv(N * K, 2);
  std::vector<float> C(M * N);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, A.data(), int(K), B.data(),
                int(K), 0.0f, C.data(), int(N));
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

// oneDNN matmul D[M,N] = A[M,K] · B[K,N] with B given as [N,K] row-major (i.e. strides {1, K}).
void onednn_matmul(benchmark::State& st, dnnl::memory::data_type dt) {
  using namespace dnnl;
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  memory::desc a_md({M, K}, dt, memory::format_tag::ab);
  memory::desc b_md({K, N}, dt, memory::format_tag::ba);
  memory::desc c_md({M, N}, memory::data_type::f32, memory::format_tag::ab);
  matmul::primitive_desc pd(matmul::desc(a_md, b_md, c_md), eng);
  matmul prim(pd);
  memory a(a_md, eng), b(b_md, eng), c(c_md, eng);
  auto fa = randv(M * K, 1), fb = randv(N * K, 2);
  if (dt == memory::data_type::bf16) {
    auto* pa = static_cast<uint16_t*>(a.get_data_handle());
    auto* pb = static_cast<uint16_t*>(b.get_data_handle());
    for (size_t i = 0; i < fa.size(); ++i) pa[i] = dsv3::f32_to_bf16(fa[i]);
    for (size_t i = 0; i < fb.size(); ++i) pb[i] = dsv3::f32_to_bf16(fb[i]);
  } else {
    std::copy(fa.begin(), fa.end(), static_cast<float*>(a.get_data_handle()));
    std::copy(fb.begin(), fb.end(), static_cast<float*>(b.get_data_handle()));
  }
  for (auto _ : st) {
    prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    s.wait();
  }
  set_flops(st, double(M), double(N), double(K));
  st.SetLabel(pd.impl_info_str());
}
void BM_onednn_f32(benchmark::State& st) { onednn_matmul(st, dnnl::memory::data_type::f32); }
void BM_onednn_bf16(benchmark::State& st) { onednn_matmul(st, dnnl::memory::data_type::bf16); }

// oneDNN's BLAS-like sgemm (row-major, no primitive to create).
void BM_onednn_sgemm_nt(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto A = randv(M * K, 1), B = randv(N * K, 2);
  std::vector<float> C(M * N);
  for (auto _ : st) {
    dnnl_sgemm('N', 'T', M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

void shapes(benchmark::internal::Benchmark* b) {
  b->Args({2048, 2048, 2048});  // compute-bound peak
  b->Args({1024, 1024, 1024});
  b->Args({256, 704, 256});     // small: dense gate/up at S=256
  b->Args({1024, 2048, 256});   // small: lm_head at S=1024
  b->Unit(benchmark::kMillisecond)->MinTime(1.0)->UseRealTime();  // rates over wall time (threads)
}

}  // namespace

BENCHMARK(BM_openblas_sgemm_nt)->Apply(shapes);
BENCHMARK(BM_onednn_f32)->Apply(shapes);
BENCHMARK(BM_onednn_bf16)->Apply(shapes);
BENCHMARK(BM_onednn_sgemm_nt)->Apply(shapes);
BENCHMARK_MAIN();
