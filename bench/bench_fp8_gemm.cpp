// Emulated block-scaled FP8 GEMM (src/fp8/fp8_gemm.h) against the GEMMs it replaces, measured in the same run:
// ops::gemm_nt in BF16 (oneDNN matmul, F32 accumulation) and in F32 (oneDNN sgemm). Reports GFLOP/s (counter
// "GFLOPs", 2·M·N·K per call) over wall time.
//   BM_fp8_kernel   block_scaled_gemm on operands already quantized (decode + BF16 micro-kernel + promotion)
//   BM_fp8_fprop    linear_fprop: quantize X (1×128) and W (128×128), then the kernel
//   BM_fp8_dgrad    linear_dgrad (W transposed in the packing step)
//   BM_fp8_wgrad    linear_wgrad (128×1 re-tiling of dY and X along the token dimension)
#include <benchmark/benchmark.h>

#include <vector>

#include "core/fp8_block.h"
#include "core/rng.h"
#include "fp8/fp8_gemm.h"
#include "kernels/ops.h"

namespace {

void set_flops(benchmark::State& st, double M, double N, double K) {
  st.counters["GFLOPs"] =
      benchmark::Counter(2.0 * M * N * K * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

std::vector<float> randv(size_t n, uint64_t stream) {
  std::vector<float> v(n);
  dsv3::rng_fill_normal(v.data(), n, 1.0f, 1, stream);
  return v;
}

void BM_bf16_gemm_nt(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto A = randv(M * K, 1), B = randv(N * K, 2);
  std::vector<float> C(M * N);
  dsv3::ops::GemmPrecisionScope bf16(dsv3::ops::GemmPrecision::kBF16);
  for (auto _ : st) {
    dsv3::ops::gemm_nt(M, N, K, A.data(), K, B.data(), K, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

void BM_f32_gemm_nt(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto A = randv(M * K, 1), B = randv(N * K, 2);
  std::vector<float> C(M * N);
  for (auto _ : st) {
    dsv3::ops::gemm_nt(M, N, K, A.data(), K, B.data(), K, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

void BM_fp8_kernel(benchmark::State& st) {
  using namespace dsv3::fp8;
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2), KB = dsv3::ceil_div(K, kTile);
  auto A = randv(M * K, 1), B = randv(N * K, 2);
  std::vector<uint8_t> a(M * K), b(N * K);
  std::vector<float> sa(M * KB), sbt(N * KB), sb(KB * N), C(M * N);
  quantize_tiles(A.data(), M, K, K, 1, kTile, ScaleMode::kAmax, a.data(), sa.data());
  quantize_tiles(B.data(), N, K, K, 1, kTile, ScaleMode::kAmax, b.data(), sbt.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t kb = 0; kb < KB; ++kb) sb[kb * N + n] = sbt[n * KB + kb];
  const BlockScaledOperands op{M, N, K, a.data(), K, sa.data(), b.data(), K, sb.data()};
  for (auto _ : st) {
    block_scaled_gemm(op, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

void BM_fp8_fprop(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  auto X = randv(M * K, 1), W = randv(N * K, 2);
  std::vector<float> Y(M * N);
  for (auto _ : st) {
    dsv3::fp8::linear_fprop(M, N, K, X.data(), K, W.data(), K, Y.data(), N);
    benchmark::DoNotOptimize(Y.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

void BM_fp8_dgrad(benchmark::State& st) {  // dX[M,K] = dY[M,N]·W[N,K]; args are (M, output K, reduction N)
  const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
  auto dY = randv(M * N, 1), W = randv(N * K, 2);
  std::vector<float> dX(M * K);
  for (auto _ : st) {
    dsv3::fp8::linear_dgrad(M, N, K, dY.data(), N, W.data(), K, dX.data(), K);
    benchmark::DoNotOptimize(dX.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

void BM_fp8_wgrad(benchmark::State& st) {  // dW[N,K] = dY[M,N]ᵀ·X[M,K]; args are (N, K, reduction M)
  const int64_t N = st.range(0), K = st.range(1), M = st.range(2);
  auto dY = randv(M * N, 1), X = randv(M * K, 2);
  std::vector<float> dW(N * K);
  for (auto _ : st) {
    dsv3::fp8::linear_wgrad(M, N, K, dY.data(), N, X.data(), K, dW.data(), K);
    benchmark::DoNotOptimize(dW.data());
  }
  set_flops(st, double(M), double(N), double(K));
}

// (rows of the output, columns of the output, reduction length)
void shapes(benchmark::internal::Benchmark* b) {
  b->Args({2048, 2048, 2048});  // compute-bound
  b->Args({1024, 1024, 1024});
  b->Args({512, 2048, 1024});   // a training-size Linear: 512 tokens
  b->Args({256, 704, 256});     // small: dense gate/up at S=256
  b->Unit(benchmark::kMillisecond)->MinTime(1.0)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_bf16_gemm_nt)->Apply(shapes);
BENCHMARK(BM_f32_gemm_nt)->Apply(shapes);
BENCHMARK(BM_fp8_kernel)->Apply(shapes);
BENCHMARK(BM_fp8_fprop)->Apply(shapes);
BENCHMARK(BM_fp8_dgrad)->Apply(shapes);
BENCHMARK(BM_fp8_wgrad)->Apply(shapes);
BENCHMARK_MAIN();
