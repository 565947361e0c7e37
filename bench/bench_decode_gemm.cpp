// The row-independent inference GEMM (infer/rowwise_gemm.h) on the `medium` model's shapes: F32, BF16 and FP8
// weights, decode-like M (1, 8: memory-bound, counter "GBs" = weight bytes streamed per second) and prefill-like
// M = 512 (compute-bound, counter "GFLOPs"). M = 1 over 384 columns (384 KB in BF16) stays in L2: the kernel's
// arithmetic rate without DRAM (for FP8, how fast the codes are widened). Threads: OMP_NUM_THREADS.
#include <benchmark/benchmark.h>

#include <vector>

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "core/rng.h"
#include "infer/rowwise_gemm.h"

namespace {

using dsv3::DType;
using dsv3::infer::GemmNT;

struct Weights {
  std::vector<float> f32, scale;
  std::vector<uint16_t> bf16;
  std::vector<uint8_t> codes;
};

Weights make(int64_t N, int64_t K) {
  Weights w;
  w.f32.resize(size_t(N * K));
  dsv3::rng_fill_normal(w.f32.data(), w.f32.size(), 0.02f, 1, 2);
  w.bf16.resize(w.f32.size());
  dsv3::convert_from_f32(DType::BF16, w.f32.data(), w.bf16.data(), w.f32.size());
  w.codes.resize(w.f32.size());
  w.scale.resize(size_t(dsv3::ceil_div(N, 128) * dsv3::ceil_div(K, 128)));
  dsv3::fp8_block_quantize(w.f32.data(), N, K, 128, 128, w.codes.data(), w.scale.data());
  return w;
}

void run(benchmark::State& st, DType dt, bool fp8_as_f32 = false) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  static Weights w;
  static int64_t wn = 0, wk = 0;
  if (wn != N || wk != K) w = make(N, K), wn = N, wk = K;
  std::vector<float> A(size_t(M * K)), C(size_t(M * N));
  dsv3::rng_fill_normal(A.data(), A.size(), 1.0f, 3, 4);
  GemmNT g{M, N, K, A.data(), K, w.f32.data(), K, C.data(), N};
  g.b_dtype = dt;
  if (dt == DType::BF16) g.Bq = w.bf16.data();
  if (dt == DType::F8_E4M3) g.Bq = w.codes.data(), g.b_scale = w.scale.data(), g.ld_scale = dsv3::ceil_div(K, 128);
  g.fp8_as_f32 = fp8_as_f32;
  for (auto _ : st) {
    dsv3::infer::gemm_nt_rowwise(g);
    benchmark::DoNotOptimize(C.data());
  }
  const double it = double(st.iterations());
  st.counters["GFLOPs"] = benchmark::Counter(2.0 * double(M * N * K) * it / 1e9, benchmark::Counter::kIsRate);
  st.counters["GBs"] = benchmark::Counter(dsv3::infer::gemm_weight_bytes(g) * it / 1e9, benchmark::Counter::kIsRate);
}

void BM_rowwise_f32(benchmark::State& st) { run(st, DType::F32); }
void BM_rowwise_bf16(benchmark::State& st) { run(st, DType::BF16); }
void BM_rowwise_fp8(benchmark::State& st) { run(st, DType::F8_E4M3); }
// FP8 codes multiplied as their F32 values with the F32 kernel (GemmNT::fp8_as_f32; the absorbed MLA matrices).
void BM_rowwise_fp8_as_f32(benchmark::State& st) { run(st, DType::F8_E4M3, true); }

// lm_head (129280 x 1024) at decode, and an L2-resident slice of it; o_proj / expert shapes at prefill.
#define SHAPES                                                                                     \
  ->Args({1, 129280, 1024})->Args({1, 384, 1024})->Args({8, 129280, 1024})->Args({512, 1024, 1024}) \
      ->Args({48, 512, 1024})
BENCHMARK(BM_rowwise_f32) SHAPES->UseRealTime();
BENCHMARK(BM_rowwise_bf16) SHAPES->UseRealTime();
BENCHMARK(BM_rowwise_fp8) SHAPES->UseRealTime();
BENCHMARK(BM_rowwise_fp8_as_f32)->Args({1, 129280, 1024})->Args({1, 384, 1024})->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
