// `dsv3 bench decode | prefill`: inference throughput against the machine's measured roofline.
//   dsv3 bench decode  (--model DIR | --config NAME) [--weights auto|f32|bf16|fp8] [--lm-head auto|bf16|fp8]
//                      [--kv-cache auto|f32|bf16] [--batch 1,4,16] [--ctx 512] [--steps 32] [--warmup 4]
//   dsv3 bench prefill (--model DIR | --config NAME) [--weights …] [--tokens 512] [--chunk 256] [--reps 3]
//                      [--baseline]
// Weights: --model keeps the checkpoint's format (BF16 stays BF16, FP8 stays FP8 codes + scales) unless
//   --weights says otherwise; --config builds random weights in the --weights format (auto = F32).
//   --lm-head re-holds lm_head after loading (fp8: 128×128 blocks; the V3 FP8 format stores it in BF16).
// decode: B sequences with a latent cache of --ctx tokens each (filled with random rows: the arithmetic and
//   the bytes are those of a real cache), then timed batched decode steps (one token per sequence, logits for
//   all). Reports the median step, tokens/s, the distinct weight bytes + KV bytes each step reads, the
//   achieved GB/s and its share of the read bandwidth measured in the same run (median of 7 two-thread sums
//   over a buffer far larger than the last-level cache) — which is also the share of the bandwidth bound
//   (tokens/s if every step only streamed those bytes at that bandwidth). Also the resident set size.
// prefill: one prompt of --tokens random ids in chunks, median of --reps; achieved GFLOP/s (GEMM + attention
//   FLOPs); --baseline adds the full-sequence F32 forward (library GEMMs, naive MLA) on the same prompt.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "infer_options.h"
#include "core/rng.h"
#include "dsv3/error.h"
#include "infer/decode.h"
#include "infer/engine.h"
#include "infer/infer_weights.h"
#include "infer/simd.h"
#include "model/transformer.h"

namespace dsv3::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Sum of buf[i0, i1) with 4 vector accumulators (a plain function: GCC 12 warns spuriously when these
// intrinsics are inlined into an OpenMP-outlined region).
__attribute__((noinline)) float sum_range(const float* buf, int64_t i0, int64_t i1) {
  using namespace infer::simd;
  Vec acc[4] = {zero(), zero(), zero(), zero()};
  const Vec one = set1(1.0f);
  for (int64_t i = i0; i + 4 * kLanes <= i1; i += 4 * kLanes)
    for (int u = 0; u < 4; ++u) acc[u] = fma(load(buf + i + u * kLanes), one, acc[u]);
  return hsum(acc[0]) + hsum(acc[1]) + hsum(acc[2]) + hsum(acc[3]);
}

// Read bandwidth: median of `reps` parallel sums over `bytes` (first-touched by the same threads).
double measure_read_gbps(size_t bytes, int reps) {
  const int64_t step = 4 * infer::simd::kLanes;
  const int64_t n = int64_t(bytes / sizeof(float)) / step * step;
  // Allocated like the weights and caches it is compared with (Tensor::empty: huge pages at this size).
  Tensor t = Tensor::empty({n});
  float* buf = t.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) buf[size_t(i)] = 1.0f;
  std::vector<double> gbps;
  volatile float sink = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num(), per = n / step / nt;
      const int64_t i0 = t * per * step, i1 = t + 1 == nt ? n : (t + 1) * per * step;
      total += sum_range(buf, i0, i1);
    }
    sink = total;
    gbps.push_back(double(n) * sizeof(float) / seconds_since(t0) / 1e9);
  }
  (void)sink;
  return median(gbps);
}

// FMA peak: independent vector FMA chains on every thread (GFLOP/s, 2 flops per lane per FMA).
constexpr int kChains = 12;
__attribute__((noinline)) float fma_chains(int64_t iters) {
  using namespace infer::simd;
  Vec acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = set1(float(c) * 1e-3f);
  const Vec a = set1(0.999999f), b = set1(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = fma(acc[c], a, b);
  float total = 0;
  for (int c = 0; c < kChains; ++c) total += hsum(acc[c]);
  return total;
}

double measure_fma_gflops() {
  const int64_t iters = 20'000'000;
  const auto t0 = Clock::now();
  float total = 0;
#pragma omp parallel reduction(+ : total)
  total += fma_chains(iters);
  const double s = seconds_since(t0);
  volatile float sink = total;
  (void)sink;
  return double(iters) * kChains * infer::simd::kLanes * 2 * omp_get_max_threads() / s / 1e9;
}

// Resident set size of this process (MB), from /proc/self/status.
double rss_mb(const char* field = "VmRSS:") {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stod(line.substr(std::string(field).size())) / 1024.0;
  return 0;
}

struct ModelSource {
  std::string model, config;
  InferOptions opt;  // --weights, --lm-head, --kv-cache (infer_options.h)
  mutable infer::QMatrix loaded_lm_head;  // lm_head as loaded, when --lm-head converted it
  std::unique_ptr<infer::InferWeights> load() const {
    auto w = load_main();
    loaded_lm_head = w->lm_head;
    apply_lm_head(*w, opt);
    if (w->lm_head.dtype == loaded_lm_head.dtype) loaded_lm_head = {};
    return w;
  }
  std::unique_ptr<infer::InferWeights> load_main() const {
    DSV3_CHECK(model.empty() != config.empty(), "bench: give exactly one of --model or --config");
    const std::optional<DType> want = weight_dtype(opt);
    if (!model.empty()) return std::make_unique<infer::InferWeights>(infer::InferWeights::load(model, want));
    fs::path p = config;
    if (!fs::exists(p)) p = fs::path(DSV3_SOURCE_DIR) / "configs" / (config + ".json");
    DSV3_CHECK(fs::exists(p), "bench: config \"", config, "\" is neither a file nor a built-in config");
    ModelConfig c = ModelConfig::load(p.string());
    c.num_nextn_predict_layers = 0;
    const ModelWeights w = ModelWeights::random(c, 1, 0.02f);
    return std::make_unique<infer::InferWeights>(infer::InferWeights::from(w, want.value_or(DType::F32)));
  }
};

// Logits of a 64-token random prompt (every row) with the converted lm_head vs the loaded one: the error the
// conversion adds (the hidden states are identical; only the lm_head product differs).
void report_lm_head_error(const infer::InferWeights& w, const infer::QMatrix& loaded) {
  const ModelConfig& c = w.cfg;
  const int64_t S = 64, V = c.vocab_size;
  infer::InferWeights ref = w;  // shares every tensor
  ref.lm_head = loaded;
  std::vector<infer::DecodeRow> rows;
  for (int64_t i = 0; i < S; ++i)
    rows.push_back({0, i, int32_t(rng_uniform(11, 0, uint64_t(i)) * float(V)) % int32_t(V), true});
  auto run = [&](const infer::InferWeights& x) {
    infer::KvCache cache(infer::KvCacheConfig::for_model(c, S, 1, S, 16));
    const int32_t seq = cache.acquire();
    DSV3_CHECK(seq == 0 && cache.reserve(seq, S), "bench: cache too small");
    infer::Decoder dec(x, S, S);
    std::vector<float> out(size_t(S * V));
    dec.forward(rows, cache, out.data());
    return out;
  };
  const std::vector<float> a = run(w), b = run(ref);
  std::vector<double> rel;
  int64_t top1 = 0;
  for (int64_t r = 0; r < S; ++r) {
    const float* x = a.data() + r * V;
    const float* y = b.data() + r * V;
    double dmax = 0, ymax = 0;
    for (int64_t j = 0; j < V; ++j) {
      dmax = std::max(dmax, double(std::fabs(x[j] - y[j])));
      ymax = std::max(ymax, double(std::fabs(y[j])));
    }
    rel.push_back(dmax / ymax);
    top1 += std::max_element(x, x + V) - x == std::max_element(y, y + V) - y;
  }
  std::sort(rel.begin(), rel.end());
  std::printf("lm_head %s vs %s logits (%lld rows): max|d|/max|logit| median %.2e, max %.2e; top-1 agrees in "
              "%lld/%lld rows\n",
              std::string(dtype_name(w.lm_head.dtype)).c_str(), std::string(dtype_name(loaded.dtype)).c_str(),
              (long long)S, rel[size_t(S / 2)], rel.back(), (long long)top1, (long long)S);
}

void add_source(CLI::App* cmd, ModelSource& s) {
  cmd->add_option("--model", s.model, "model directory");
  cmd->add_option("--config", s.config, "or: built-in config name / config.json path (random weights)");
  add_infer_options(cmd, s.opt);
}

void print_model(const infer::InferWeights& w) {
  const ModelConfig& c = w.cfg;
  std::printf("model: %s Linear weights, %s lm_head, %.1f MB resident parameters (RSS %.0f MB after loading), "
              "D %lld, %lld layers, %lld experts (K %lld), vocab %lld\n",
              std::string(dtype_name(w.dtype)).c_str(), std::string(dtype_name(w.lm_head.dtype)).c_str(),
              w.resident_bytes() / 1e6, rss_mb(), (long long)c.hidden_size,
              (long long)c.num_hidden_layers, (long long)c.n_routed_experts, (long long)c.num_experts_per_tok,
              (long long)c.vocab_size);
}

void register_bench(CLI::App& root) {
  auto* bench = root.add_subcommand("bench", "Inference benchmarks against the measured roofline");
  bench->require_subcommand(1);

  // ---- decode ----
  struct DecodeOpts {
    ModelSource src;
    std::string batch = "1,4,16";
    int64_t ctx = 512, steps = 32, warmup = 4;
    size_t bw_mib = 1024;
  };
  auto d = std::make_shared<DecodeOpts>();
  auto* dec = bench->add_subcommand("decode", "Batched decode steps over a filled latent cache");
  add_source(dec, d->src);
  dec->add_option("--batch", d->batch, "batch sizes (comma-separated)")->capture_default_str();
  dec->add_option("--ctx", d->ctx, "cached tokens per sequence")->capture_default_str();
  dec->add_option("--steps", d->steps, "timed steps")->capture_default_str();
  dec->add_option("--warmup", d->warmup, "untimed steps first")->capture_default_str();
  dec->add_option("--bw-mib", d->bw_mib, "buffer for the bandwidth measurement (MiB)")->capture_default_str();
  dec->callback([d] {
    auto wp = d->src.load();
    const infer::InferWeights& w = *wp;
    const ModelConfig& c = w.cfg;
    const std::vector<int64_t> batches = parse_int_list(d->batch);
    const int64_t max_b = *std::max_element(batches.begin(), batches.end());
    DSV3_CHECK(max_b > 0 && d->ctx >= 0 && d->steps > 0 && d->warmup >= 0, "bench decode: bad sizes");
    const int64_t max_len = d->ctx + d->warmup + d->steps + 1;

    if (d->src.loaded_lm_head.defined()) {  // then drop the loaded head, so the RSS figures are the serving ones
      report_lm_head_error(w, d->src.loaded_lm_head);
      d->src.loaded_lm_head = {};
    }
    print_model(w);
    const double bw = measure_read_gbps(d->bw_mib << 20, 7);
    std::printf("machine: %d threads, read bandwidth %.1f GB/s (median of 7 sums over %zu MiB); %.0f MB of this "
                "process on huge pages\n", omp_get_max_threads(), bw, d->bw_mib, double(anon_huge_page_bytes()) / 1e6);
    infer::KvCacheConfig kc = infer::KvCacheConfig::for_model(c, max_len, 1, max_len, 16);
    kc.dtype = kv_dtype(d->src.opt, w);
    const infer::AttnPrecision attn = kc.dtype == DType::BF16 ? infer::AttnPrecision::kBF16 : infer::AttnPrecision::kF32;
    std::printf("latent KV cache: %s rows, %lld bytes/token = (kv_lora_rank %lld + qk_rope_head_dim %lld) x %lld "
                "layers x %zu\n", std::string(dtype_name(kc.dtype)).c_str(), (long long)kc.bytes_per_token(),
                (long long)c.kv_lora_rank, (long long)c.qk_rope_head_dim, (long long)c.num_hidden_layers,
                dtype_size(kc.dtype));
    std::printf("%6s %6s %10s %10s %12s %12s %10s %11s %8s\n", "batch", "ctx", "step_ms", "tok/s", "weight_MB",
                "kv_MB", "GB/s", "bound_tok/s", "%bound");
    for (int64_t B : batches) {
      infer::KvCacheConfig bkc = infer::KvCacheConfig::for_model(c, B * ((max_len + 15) / 16 * 16), B, max_len, 16);
      bkc.dtype = kc.dtype;
      infer::KvCache cache(bkc);
      infer::Decoder decoder(w, B, max_len, attn);
      std::vector<float> row(size_t(kc.row_elems()));
      std::vector<int32_t> seq(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) {
        seq[size_t(b)] = cache.acquire();
        DSV3_CHECK(cache.reserve(seq[size_t(b)], max_len), "bench: cache too small");
        for (int64_t l = 0; l < c.num_hidden_layers; ++l)
          for (int64_t p = 0; p < d->ctx; ++p) {
            float* r = cache.is_bf16() ? row.data() : cache.row(seq[size_t(b)], l, p);
            rng_fill_normal(r, uint64_t(kc.row_elems()), 1.0f, 3, uint64_t((b * c.num_hidden_layers + l) * max_len + p));
            if (cache.is_bf16())
              infer::round_rows_bf16(1, kc.row_elems(), r, kc.row_elems(), cache.row_bf16(seq[size_t(b)], l, p));
          }
        cache.set_length(seq[size_t(b)], d->ctx);
      }
      std::vector<float> logits(static_cast<size_t>(B * c.vocab_size));
      std::vector<infer::DecodeRow> rows(static_cast<size_t>(B));
      std::vector<double> times;
      infer::StepStats st;
      for (int64_t s = 0; s < d->warmup + d->steps; ++s) {
        for (int64_t b = 0; b < B; ++b)
          rows[size_t(b)] = {seq[size_t(b)], d->ctx + s,
                             int32_t(rng_uniform(9, uint64_t(b), uint64_t(s)) * float(c.vocab_size)) % int32_t(c.vocab_size),
                             true};
        const auto t0 = Clock::now();
        decoder.forward(rows, cache, logits.data());
        if (s >= d->warmup) times.push_back(seconds_since(t0));
        st = decoder.last_stats();
      }
      const double t = median(times);
      const double bytes = st.weight_bytes + st.kv_bytes;
      const double bound = double(B) * bw * 1e9 / bytes;
      std::printf("%6lld %6lld %10.3f %10.1f %12.2f %12.2f %10.2f %11.1f %7.1f%%\n", (long long)B, (long long)d->ctx,
                  t * 1e3, double(B) / t, st.weight_bytes / 1e6, st.kv_bytes / 1e6, bytes / t / 1e9, bound,
                  100.0 * (double(B) / t) / bound);
    }
    std::printf("weight_MB: distinct weights the step reads (each routed expert used once); kv_MB: cached rows "
                "read (one pass); GB/s = (weight + kv bytes) / median step time; bound_tok/s = batch x measured "
                "bandwidth / (weight + kv bytes); RSS %.0f MB (peak %.0f MB)\n", rss_mb(), rss_mb("VmHWM:"));
  });

  // ---- prefill ----
  struct PrefillOpts {
    ModelSource src;
    int64_t tokens = 512, chunk = 256, reps = 3;
    bool baseline = false;
  };
  auto p = std::make_shared<PrefillOpts>();
  auto* pre = bench->add_subcommand("prefill", "Chunked prefill of one prompt vs the full-sequence forward");
  add_source(pre, p->src);
  pre->add_option("--tokens", p->tokens, "prompt length")->capture_default_str();
  pre->add_option("--chunk", p->chunk, "prefill chunk (rows per step)")->capture_default_str();
  pre->add_option("--reps", p->reps, "repetitions (median)")->capture_default_str();
  pre->add_flag("--baseline", p->baseline, "also time the full-sequence F32 forward (loads F32 weights)");
  pre->callback([p] {
    auto wp = p->src.load();
    const infer::InferWeights& w = *wp;
    const ModelConfig& c = w.cfg;
    DSV3_CHECK(p->tokens > 0 && p->chunk > 0 && p->reps > 0, "bench prefill: bad sizes");
    print_model(w);
    const double peak = measure_fma_gflops();
    std::printf("machine: %d threads, F32 FMA peak %.1f GFLOP/s (%d lanes)\n", omp_get_max_threads(), peak,
                infer::simd::kLanes);
    std::vector<int32_t> tokens(static_cast<size_t>(p->tokens));
    for (int64_t i = 0; i < p->tokens; ++i)
      tokens[size_t(i)] = int32_t(rng_uniform(4, 0, uint64_t(i)) * float(c.vocab_size)) % int32_t(c.vocab_size);

    infer::KvCacheConfig kc = infer::KvCacheConfig::for_model(c, p->tokens, 1, p->tokens, 16);
    kc.dtype = kv_dtype(p->src.opt, w);
    const bool bf16 = kc.dtype == DType::BF16;
    infer::KvCache cache(kc);
    infer::Decoder decoder(w, std::min(p->chunk, p->tokens), p->tokens,
                           bf16 ? infer::AttnPrecision::kBF16 : infer::AttnPrecision::kF32);
    std::printf("KV cache and latent attention: %s (--kv-cache bf16 also reports the last logits' difference "
                "from f32)\n", std::string(dtype_name(kc.dtype)).c_str());
    std::vector<float> logits(static_cast<size_t>(c.vocab_size));
    std::vector<double> times;
    double flops = 0;
    for (int64_t r = 0; r < p->reps; ++r) {
      const int32_t s = cache.acquire();
      DSV3_CHECK(cache.reserve(s, p->tokens), "bench: cache too small");
      flops = 0;
      const auto t0 = Clock::now();
      for (int64_t at = 0; at < p->tokens; at += p->chunk) {
        const int64_t n = std::min(p->chunk, p->tokens - at);
        std::vector<infer::DecodeRow> rows;
        for (int64_t i = 0; i < n; ++i) rows.push_back({s, at + i, tokens[size_t(at + i)], at + i + 1 == p->tokens});
        decoder.forward(rows, cache, logits.data());
        flops += decoder.last_stats().flops;
      }
      times.push_back(seconds_since(t0));
      cache.release(s);
    }
    const double t = median(times);

    std::printf("prefill %lld tokens (chunks of %lld): %.3f s, %.1f tok/s, %.2f GFLOP/s (%.1f%% of the F32 FMA "
                "peak)\n", (long long)p->tokens, (long long)p->chunk, t, double(p->tokens) / t, flops / t / 1e9,
                100.0 * flops / t / 1e9 / peak);
    if (bf16) {  // the last token's logits against F32 attention on the same weights
      infer::KvCache cache32(infer::KvCacheConfig::for_model(c, p->tokens, 1, p->tokens, 16));
      infer::Decoder dec32(w, std::min(p->chunk, p->tokens), p->tokens);
      std::vector<float> logits32(static_cast<size_t>(c.vocab_size));
      const int32_t s = cache32.acquire();
      DSV3_CHECK(cache32.reserve(s, p->tokens), "bench: cache too small");
      for (int64_t at = 0; at < p->tokens; at += p->chunk) {
        const int64_t n = std::min(p->chunk, p->tokens - at);
        std::vector<infer::DecodeRow> rows;
        for (int64_t i = 0; i < n; ++i) rows.push_back({s, at + i, tokens[size_t(at + i)], at + i + 1 == p->tokens});
        dec32.forward(rows, cache32, logits32.data());
      }
      double max_diff = 0, max_ref = 0;
      for (size_t i = 0; i < logits.size(); ++i) {
        max_diff = std::max(max_diff, double(std::fabs(logits[i] - logits32[i])));
        max_ref = std::max(max_ref, double(std::fabs(logits32[i])));
      }
      const auto arg = [](const std::vector<float>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); };
      std::printf("last-token logits, bf16 vs f32 attention: max |diff| %.3g (max |logit| %.3g), argmax %s\n",
                  max_diff, max_ref, arg(logits) == arg(logits32) ? "equal" : "differs");
    }
    if (p->baseline) {
      DSV3_CHECK(!p->src.model.empty() || !p->src.config.empty(), "bench: no model");
      std::unique_ptr<ModelWeights> f32;
      if (!p->src.model.empty()) {
        LoadOptions lo;
        lo.load_mtp = false;
        f32 = std::make_unique<ModelWeights>(ModelWeights::load(p->src.model, lo));
      } else {
        fs::path cp = p->src.config;
        if (!fs::exists(cp)) cp = fs::path(DSV3_SOURCE_DIR) / "configs" / (p->src.config + ".json");
        ModelConfig mc = ModelConfig::load(cp.string());
        mc.num_nextn_predict_layers = 0;
        f32 = std::make_unique<ModelWeights>(ModelWeights::random(mc, 1, 0.02f));
      }
      Transformer model(*f32);
      std::vector<double> base_times;
      for (int64_t r = 0; r < p->reps; ++r) {
        const auto t0 = Clock::now();
        Tensor h = model.hidden(tokens);
        Tensor last = Tensor::empty({1, c.hidden_size});
        std::copy(h.f32() + (p->tokens - 1) * c.hidden_size, h.f32() + p->tokens * c.hidden_size, last.f32());
        model.logits(last);
        base_times.push_back(seconds_since(t0));
      }
      const double tb = median(base_times);
      std::printf("baseline full forward (F32 weights, library GEMMs, naive MLA, same prompt): %.3f s, %.1f tok/s\n",
                  tb, double(p->tokens) / tb);
    }
  });
}

}  // namespace

DSV3_REGISTER_COMMAND(register_bench);

}  // namespace dsv3::cli
