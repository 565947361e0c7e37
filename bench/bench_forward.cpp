// Full forward-pass throughput (tokens/s) of a random model held in memory: `small` at S = 256 and 1024 by
// default, with F32 and BF16 GEMMs; DSV3_BENCH_CONFIG=<name|path> selects another config. FLOP/s counts the matmul FLOPs of
// ModelPlan (2 × active matmul params per token + causal attention at the run's length) plus the lm_head.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>

#include "kernels/ops.h"
#include "model/plan.h"
#include "model/transformer.h"

namespace {

dsv3::ModelWeights& weights() {
  static std::unique_ptr<dsv3::ModelWeights> w = [] {
    const char* env = std::getenv("DSV3_BENCH_CONFIG");
    std::string spec = env ? env : "small";
    std::string path = spec.find('/') != std::string::npos ? spec : std::string(DSV3_SOURCE_DIR) + "/configs/" + spec + ".json";
    return std::make_unique<dsv3::ModelWeights>(dsv3::ModelWeights::random(dsv3::ModelConfig::load(path), 1, 0.02f));
  }();
  return *w;
}

void BM_forward(benchmark::State& st) {
  dsv3::ops::GemmPrecisionScope prec(st.range(1) ? dsv3::ops::GemmPrecision::kBF16 : dsv3::ops::GemmPrecision::kF32);
  st.SetLabel(st.range(1) ? "bf16 gemm" : "f32 gemm");
  dsv3::ModelWeights& w = weights();
  dsv3::Transformer model(w);
  const int64_t S = st.range(0);
  std::vector<int32_t> ids(S);
  for (int64_t i = 0; i < S; ++i) ids[i] = int32_t((i * 7919) % w.cfg.vocab_size);
  for (auto _ : st) {
    dsv3::Tensor h = model.hidden(ids);
    dsv3::Tensor l = model.logits(h);
    benchmark::DoNotOptimize(l.data);
  }
  dsv3::ModelPlan p = dsv3::make_plan(w.cfg, S);
  st.counters["tok/s"] = benchmark::Counter(double(S * st.iterations()), benchmark::Counter::kIsRate);
  st.counters["GFLOPs"] =
      benchmark::Counter(p.flops_per_token_fwd * double(S * st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

}  // namespace

// Args: sequence length, GEMM precision (0 = f32 OpenBLAS, 1 = bf16 oneDNN).
BENCHMARK(BM_forward)->Args({256, 0})->Args({1024, 0})->Args({256, 1})->Args({1024, 1})->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK_MAIN();
