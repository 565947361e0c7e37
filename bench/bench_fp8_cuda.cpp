// GPU FP8 path (src/cuda/fp8_cuda.h): block-scaled E4M3 GEMM through cuBLASLt against the BF16 cuBLASLt GEMM on
// the same shapes in the same run, and the tile quantizer's bandwidth. A plain program (no Google Benchmark),
// so it also builds from the few sources scripts/gpu-check.sh names on a machine without the project's other
// dependencies.
//   bench_fp8_cuda            timings: M ∈ {512, 4096, 16384} × V3 (N, K) shapes, BF16 outputs
//   bench_fp8_cuda --check    first the correctness checks of tests/cuda/ (quantizer bit for bit vs the CPU,
//                             GEMMs vs float64), printing PASS/FAIL; exit status 1 on a failure
//   bench_fp8_cuda --quick    M = 512 only, fewer repetitions
//   bench_fp8_cuda --quantizer-only   the quantizer timings alone (e.g. under ncu)
// Timing: CUDA events around each call, 3 warm-up calls, median of 20, rotating over input sets that together
// exceed 192 MiB (so L2, 50-60 MiB, never holds the operands of the next call).
#ifndef DSV3_HAVE_CUDA
#include <cstdio>
int main() {
  std::puts("bench_fp8_cuda: built without CUDA (configure with a CUDA compiler and DSV3_CUDA=ON)");
  return 0;
}
#else
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "../tests/cuda/fp8_cuda_checks.h"
#include "cuda/fp8_cuda.h"

namespace {

using namespace dsv3;
using namespace dsv3::cuda;

template <typename F>
double median_ms(int warmup, int reps, F&& call) {
  EventTimer t;
  for (int i = 0; i < warmup; ++i) call(i);
  synchronize();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    t.start();
    call(warmup + i);
    ms.push_back(t.stop_ms());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Row {
  std::string name;
  int64_t M, N, K;
  double fp8_ms, bf16_ms, fp8q_ms;  // fp8q: the activation quantizer (F32 in) + the FP8 GEMM
  const char* path;
};

// One shape: `sets` rotating operand sets, FP8 (codes + scales) and BF16 copies of the same random values.
Row bench_shape(GemmContext& ctx, const char* name, int64_t M, int64_t N, int64_t K, int reps) {
  const double set_bytes = double(M + N) * double(K) * 2.0;  // the BF16 operands (the FP8 ones are half)
  const int sets = int(std::clamp(192.0 * (1 << 20) / set_bytes, 1.0, 8.0));
  struct Set {
    DeviceBuffer xc, wc, sx, sw, xb, wb;
  };
  std::vector<Set> s(static_cast<size_t>(sets));
  DeviceBuffer xf(size_t(M * K) * 4);  // the last set's F32 activations, for the quantize + GEMM timing
  {
    DeviceBuffer wf(size_t(N * K) * 4);
    for (int i = 0; i < sets; ++i) {
      fill_random(xf.as<float>(), M, K, uint64_t(100 + 2 * i), 4);
      fill_random(wf.as<float>(), N, K, uint64_t(101 + 2 * i), 1);
      Set& t = s[size_t(i)];
      t.xc = DeviceBuffer(size_t(M * K)), t.wc = DeviceBuffer(size_t(N * K));
      t.sx = DeviceBuffer(size_t(activation_scale_count(M, K)) * 4);
      t.sw = DeviceBuffer(size_t(weight_scale_count(N, K)) * 4);
      t.xb = DeviceBuffer(size_t(M * K) * 2), t.wb = DeviceBuffer(size_t(N * K) * 2);
      quantize_activations(xf.as<float>(), M, K, K, fp8::ScaleMode::kAmax, t.xc.as<uint8_t>(), t.sx.as<float>());
      quantize_weights(wf.as<float>(), N, K, K, fp8::ScaleMode::kAmax, t.wc.as<uint8_t>(), t.sw.as<float>());
      convert_f32_to_bf16(xf.as<float>(), t.xb.as<uint16_t>(), M * K);
      convert_f32_to_bf16(wf.as<float>(), t.wb.as<uint16_t>(), N * K);
    }
  }
  DeviceBuffer y(size_t(M * N) * 2);
  GemmPath path = GemmPath::kAuto;
  const double fp8_ms = median_ms(3, reps, [&](int i) {
    const Set& t = s[size_t(i % sets)];
    Fp8GemmArgs a;
    a.M = M, a.N = N, a.K = K, a.x_dev = t.xc.as<uint8_t>(), a.ldx = K, a.sx_dev = t.sx.as<float>();
    a.w_dev = t.wc.as<uint8_t>(), a.ldw = K, a.sw_dev = t.sw.as<float>(), a.y_dev = y.get(), a.ldy = N;
    a.out = OutType::kBF16;
    path = ctx.fp8_gemm(a);
  });
  const double bf16_ms = median_ms(3, reps, [&](int i) {
    const Set& t = s[size_t(i % sets)];
    Bf16GemmArgs a;
    a.M = M, a.N = N, a.K = K, a.x_dev = t.xb.as<uint16_t>(), a.ldx = K, a.w_dev = t.wb.as<uint16_t>();
    a.ldw = K, a.y_dev = y.get(), a.ldy = N, a.out = OutType::kBF16;
    ctx.bf16_gemm(a);
  });
  // A Linear of the recipe on F32 activations: quantize them per 1×128 tile, then the FP8 GEMM.
  const double fp8q_ms = median_ms(3, reps, [&](int i) {
    const Set& t = s[size_t(i % sets)];
    quantize_activations(xf.as<float>(), M, K, K, fp8::ScaleMode::kAmax, t.xc.as<uint8_t>(), t.sx.as<float>());
    Fp8GemmArgs a;
    a.M = M, a.N = N, a.K = K, a.x_dev = t.xc.as<uint8_t>(), a.ldx = K, a.sx_dev = t.sx.as<float>();
    a.w_dev = t.wc.as<uint8_t>(), a.ldw = K, a.sw_dev = t.sw.as<float>(), a.y_dev = y.get(), a.ldy = N;
    a.out = OutType::kBF16;
    ctx.fp8_gemm(a);
  });
  return {name, M, N, K, fp8_ms, bf16_ms, fp8q_ms, path_name(path)};
}

// Runs the checks of tests/cuda/test_fp8_cuda.cpp; returns the number of failures.
int run_checks() {
  int failures = 0;
  auto report = [&](bool ok, const std::string& what) {
    std::printf("%s  %s\n", ok ? "PASS" : "FAIL", what.c_str());
    failures += !ok;
  };
  const std::pair<int64_t, int64_t> tiles[] = {{1, 128}, {128, 128}, {128, 1}};
  for (auto mode : {fp8::ScaleMode::kAmax, fp8::ScaleMode::kPow2}) {
    const char* mname = mode == fp8::ScaleMode::kPow2 ? "pow2" : "amax";
    for (const auto& t : tiles) {
      int64_t codes = 0, scales = 0;
      std::string first;
      auto add = [&](const check::QuantMismatch& m) {
        codes += m.codes, scales += m.scales;
        if (first.empty()) first = m.first;
      };
      for (const auto& e : check::edge_cases()) add(check::compare_quantizer(e.x, e.rows, e.cols, t.first, t.second, mode));
      add(check::compare_quantizer(check::random_matrix(512, 7168, 5), 512, 7168, t.first, t.second, mode));
      // 15 tiles of 1×128: the vectorized kernel's last warp gets fewer than its four tiles
      add(check::compare_quantizer(check::random_matrix(5, 384, 6), 5, 384, t.first, t.second, mode));
      report(codes == 0 && scales == 0,
             detail::concat("quantizer ", t.first, "x", t.second, " ", mname, " == CPU (edge cases + 512x7168): ",
                            codes, " codes, ", scales, " scales differ ", first));
    }
  }
  GemmContext ctx;
  struct S { int64_t M, N, K; GemmPath path; OutType out; };
  const S shapes[] = {{128, 256, 512, GemmPath::kAuto, OutType::kF32},
                      {100, 384, 1024, GemmPath::kAuto, OutType::kF32},
                      {256, 2048, 7168, GemmPath::kAuto, OutType::kF32},
                      {256, 7168, 7168, GemmPath::kAuto, OutType::kF32},
                      {100, 7168, 2048, GemmPath::kAuto, OutType::kF32},
                      {37, 130, 208, GemmPath::kAuto, OutType::kF32},
                      {48, 256, 208, GemmPath::kAuto, OutType::kF32},
                      {3, 200, 300, GemmPath::kAuto, OutType::kF32},
                      {256, 512, 1024, GemmPath::kAuto, OutType::kBF16},
                      {256, 2048, 7168, GemmPath::kOwnKernel, OutType::kF32},
                      {100, 384, 1024, GemmPath::kOwnKernel, OutType::kF32}};
  for (const auto& s : shapes) {
    const auto r = check::check_fp8_gemm(ctx, s.M, s.N, s.K, s.path, s.out, uint64_t(s.M + s.N + s.K));
    report(r.quant_mismatch == 0 && r.unwritten == 0 && r.worst <= check::tolerance(r.path),
           detail::concat("fp8 gemm ", s.M, "x", s.N, "x", s.K, s.out == OutType::kBF16 ? " bf16-out" : " f32-out",
                          " via ", path_name(r.path), ": worst err/sum|xw| = ", r.worst, " (bound ",
                          check::tolerance(r.path), ") over ", r.checked,
                          " outputs, unwritten ", r.unwritten, ", quantizer mismatches ", r.quant_mismatch));
  }
  for (GemmPath path : {GemmPath::kAuto, GemmPath::kOwnKernel}) {
    GemmPath ran = path;
    const int64_t wrong = check::nonfinite_mismatches(ctx, path, &ran);
    report(wrong == 0, detail::concat("NaN/Inf tiles through the gemm via ", path_name(ran), ": ", wrong,
                                      " outputs with the wrong NaN-ness"));
  }
  return failures;
}

int run(int argc, char** argv) {
  bool do_check = false, quick = false, quant_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") do_check = true;
    else if (a == "--quick") quick = true;
    else if (a == "--quantizer-only") quant_only = true;  // the two quantizer timings alone (for a profiler)
    else {
      std::fprintf(stderr, "usage: %s [--check] [--quick] [--quantizer-only]\n", argv[0]);
      return 2;
    }
  }
  if (!device_available()) {
    std::puts("bench_fp8_cuda: no CUDA device");
    return do_check ? 1 : 0;
  }
  std::printf("device: %s\n", device_summary().c_str());
  int failures = 0;
  if (do_check) {
    failures = run_checks();
    std::printf("checks: %d failed\n", failures);
  }

  GemmContext ctx;
  const int reps = quick ? 10 : 20;
  struct NK { const char* name; int64_t N, K; };
  const NK nks[] = {{"o_proj-like", 7168, 2048}, {"expert up", 2048, 7168}, {"q_b", 24576, 1536},
                    {"dense down", 7168, 18432}};
  std::vector<int64_t> Ms = {512, 4096, 16384};
  if (quick) Ms = {512};
  if (quant_only) Ms.clear();
  std::vector<Row> rows;
  for (int64_t M : Ms)
    for (const auto& nk : nks) {
      rows.push_back(bench_shape(ctx, nk.name, M, nk.N, nk.K, reps));
      const Row& r = rows.back();
      std::printf("  %-12s M=%-6lld N=%-6lld K=%-6lld fp8 %.3f ms  bf16 %.3f ms\n", r.name.c_str(), (long long)r.M,
                  (long long)r.N, (long long)r.K, r.fp8_ms, r.bf16_ms);
      std::fflush(stdout);
    }

  // Quantizer bandwidth: bytes read (f32) + written (codes + scales).
  struct Q { const char* name; int64_t rows, cols; bool weights; };
  const Q qs[] = {{"activations 1x128", 16384, 7168, false}, {"weights 128x128", 7168, 18432, true}};
  std::vector<std::string> qlines;
  for (const auto& q : qs) {
    DeviceBuffer x(size_t(q.rows * q.cols) * 4), codes(size_t(q.rows * q.cols));
    const int64_t ns = q.weights ? weight_scale_count(q.rows, q.cols) : activation_scale_count(q.rows, q.cols);
    DeviceBuffer sc(size_t(ns) * 4);
    fill_random(x.as<float>(), q.rows, q.cols, 9, 4);
    const double ms = median_ms(3, reps, [&](int) {
      if (q.weights) quantize_weights(x.as<float>(), q.rows, q.cols, q.cols, fp8::ScaleMode::kAmax, codes.as<uint8_t>(), sc.as<float>());
      else quantize_activations(x.as<float>(), q.rows, q.cols, q.cols, fp8::ScaleMode::kAmax, codes.as<uint8_t>(), sc.as<float>());
    });
    const double bytes = double(q.rows * q.cols) * 5.0 + double(ns) * 4.0;
    qlines.push_back(detail::concat(q.name, " ", q.rows, "x", q.cols, ": ", ms, " ms, ", bytes / ms / 1e6, " GB/s"));
  }

  // The own kernel, for scale (not meant to be fast).
  double own_ms = 0.0;
  {
    const int64_t M = 512, N = 2048, K = 7168;
    DeviceBuffer xf(size_t(M * K) * 4), wf(size_t(N * K) * 4), xc(size_t(M * K)), wc(size_t(N * K));
    DeviceBuffer sx(size_t(activation_scale_count(M, K)) * 4), sw(size_t(weight_scale_count(N, K)) * 4);
    DeviceBuffer y(size_t(M * N) * 4);
    fill_random(xf.as<float>(), M, K, 1, 4);
    fill_random(wf.as<float>(), N, K, 2, 1);
    quantize_activations(xf.as<float>(), M, K, K, fp8::ScaleMode::kAmax, xc.as<uint8_t>(), sx.as<float>());
    quantize_weights(wf.as<float>(), N, K, K, fp8::ScaleMode::kAmax, wc.as<uint8_t>(), sw.as<float>());
    Fp8GemmArgs a;
    a.M = M, a.N = N, a.K = K, a.x_dev = xc.as<uint8_t>(), a.ldx = K, a.sx_dev = sx.as<float>();
    a.w_dev = wc.as<uint8_t>(), a.ldw = K, a.sw_dev = sw.as<float>(), a.y_dev = y.get(), a.ldy = N;
    own_ms = median_ms(1, 5, [&](int) { fp8_gemm_simple(a); });
  }

  std::printf("\n== FP8 block-scaled (1x128 activations, 128x128 weights) vs BF16, cuBLASLt, BF16 out ==\n");
  std::printf("%-12s %6s %6s %6s | %9s %9s | %9s %9s | %8s | %9s %8s | %s\n", "shape", "M", "N", "K", "fp8 ms",
              "TFLOP/s", "bf16 ms", "TFLOP/s", "fp8/bf16", "+quant ms", "vs bf16", "fp8 path");
  for (const auto& r : rows) {
    const double flop = 2.0 * double(r.M) * double(r.N) * double(r.K);
    std::printf("%-12s %6lld %6lld %6lld | %9.3f %9.1f | %9.3f %9.1f | %8.2f | %9.3f %8.2f | %s\n", r.name.c_str(),
                (long long)r.M, (long long)r.N, (long long)r.K, r.fp8_ms, flop / r.fp8_ms / 1e9, r.bf16_ms,
                flop / r.bf16_ms / 1e9, r.bf16_ms / r.fp8_ms, r.fp8q_ms, r.bf16_ms / r.fp8q_ms, r.path);
  }
  std::printf("fp8/bf16: BF16 time over FP8 time (speed-up); +quant: the 1x128 activation quantizer (F32 in) and "
              "the FP8 GEMM together, and its speed-up over BF16\n");
  for (const auto& l : qlines) std::printf("quantizer %s\n", l.c_str());
  std::printf("own kernel 512x2048x7168 f32-out: %.3f ms, %.1f TFLOP/s\n", own_ms,
              2.0 * 512 * 2048 * 7168 / own_ms / 1e9);
  if (do_check) std::printf("checks: %s (%d failed)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_fp8_cuda: error: %s\n", e.what());
    return 1;
  }
}
#endif  // DSV3_HAVE_CUDA
