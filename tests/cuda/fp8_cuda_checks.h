// Checks of the CUDA FP8 path against the CPU recipe (src/fp8/), shared by tests/cuda/test_fp8_cuda.cpp and the
// stand-alone bench/bench_fp8_cuda.cpp (which runs them on a GPU machine without GoogleTest).
//   compare_quantizer: GPU tile quantizer vs fp8::quantize_tiles, codes and scale bits.
//   check_fp8_gemm:    a GPU block-scaled GEMM vs a float64 sum over the dequantized CPU-quantized operands,
//                      error per output measured relative to Σ_k |x_k·w_k| (the scale of the rounding errors).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/fp8_block.h"
#include "cuda/fp8_cuda.h"
#include "dsv3/error.h"
#include "fp8/fp8_gemm.h"
#include "fp8/quantize.h"

namespace dsv3::cuda::check {

// Error bounds per output, relative to Σ_k |x_k·w_k|.
// Own kernel: F32 sums of at most 128 exact products per block, then one promotion per block.
constexpr double kOwnKernelTol = 1e-5;
// cuBLASLt on Hopper: the FP8 tensor-core instructions accumulate with a reduced significand inside each
// 128-wide block (the effect the recipe's per-block promotion bounds; paper §3.3.2). Measured worst on an H200
// with cuBLASLt 13.1: 2.8e-4 at K = 512, 2.7e-5 at K = 7168 (the inputs' block magnitudes differ by up to 2^6,
// so a scale read from the wrong block moves outputs by far more).
constexpr double kCublasLtTol = 0x1p-10;
inline double tolerance(GemmPath p) { return p == GemmPath::kCublasLt ? kCublasLtTol : kOwnKernelTol; }

// Rows of normal values with per-row magnitudes 2^[-spread, spread]; with `blocks`, also a magnitude
// 2^[-3, 3] per 128×128 block, so that every block scale differs (a misplaced scale then shows).
inline std::vector<float> random_matrix(int64_t rows, int64_t cols, uint64_t seed, int spread = 6,
                                        bool blocks = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> ed(-spread, spread);
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::ldexp(1.0f, ed(rng));
    for (int64_t c = 0; c < cols; ++c) {
      const int be = blocks ? int((r / 128 * 5 + c / 128 * 3 + seed) % 7) - 3 : 0;
      x[size_t(r * cols + c)] = std::ldexp(nd(rng) * mag, be);
    }
  }
  return x;
}

// Named edge-case matrices for the quantizer.
struct EdgeCase {
  std::string name;
  int64_t rows, cols;
  std::vector<float> x;
};
inline std::vector<EdgeCase> edge_cases() {
  std::vector<EdgeCase> out;
  std::mt19937_64 rng(7);
  auto add = [&](std::string name, int64_t rows, int64_t cols, auto f) {
    EdgeCase e{std::move(name), rows, cols, std::vector<float>(size_t(rows * cols))};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) e.x[size_t(r * cols + c)] = f(r, c);
    out.push_back(std::move(e));
  };
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> id(-31, 31), sh(-12, 2);
  add("random partial tiles 3x300", 3, 300, [&](int64_t, int64_t) { return nd(rng); });
  add("random partial tiles 260x390", 260, 390, [&](int64_t r, int64_t) { return nd(rng) * float(r % 7 + 1); });
  add("zeros", 130, 260, [](int64_t, int64_t) { return 0.0f; });
  add("signed zeros and tiny", 129, 257, [&](int64_t r, int64_t c) {
    const float v[] = {0.0f, -0.0f, 1e-30f, -1e-38f, 1e-42f, -1e-45f, 3e-5f, -9.9e-5f};
    return v[(r * 3 + c) % 8];
  });
  // Few significant bits and amax = 448·2^-4 in every row: scale 2^-4 exactly, so quotients hit E4M3 ties.
  add("ties", 200, 384, [&](int64_t, int64_t c) {
    return c % 128 == 5 ? 28.0f : float(id(rng)) * std::ldexp(1.0f, sh(rng));
  });
  add("saturating", 140, 300, [&](int64_t r, int64_t c) {
    const float big[] = {3.4028235e38f, -3.3e38f, 448.0f, -464.0f, 1e30f, 65504.0f, 2.5e-3f, -7.0f};
    return (r + c) % 5 == 0 ? big[(r + 2 * c) % 8] : nd(rng) * 1e20f;
  });
  add("NaN and Inf tiles", 260, 300, [&](int64_t r, int64_t c) {
    if (r == 1 && c == 5) return std::numeric_limits<float>::quiet_NaN();
    if (r == 2 && c == 200) return std::numeric_limits<float>::infinity();
    if (r == 150 && c == 3) return -std::numeric_limits<float>::infinity();
    if (r == 259 && c == 299) return -std::numeric_limits<float>::quiet_NaN();
    return nd(rng);
  });
  return out;
}

struct QuantMismatch {
  int64_t codes = 0, scales = 0;
  std::string first;  // the first mismatch, for the message
  bool ok() const { return codes == 0 && scales == 0; }
};

// GPU quantize_tiles vs fp8::quantize_tiles on x [rows, cols] (row stride cols), scales in the CPU's layout.
inline QuantMismatch compare_quantizer(const std::vector<float>& x, int64_t rows, int64_t cols, int64_t tile_rows,
                                       int64_t tile_cols, fp8::ScaleMode mode) {
  const int64_t ntr = ceil_div(rows, tile_rows), ntc = ceil_div(cols, tile_cols);
  std::vector<uint8_t> cpu_codes(size_t(rows * cols)), gpu_codes(size_t(rows * cols));
  std::vector<float> cpu_scales(size_t(ntr * ntc)), gpu_scales(size_t(ntr * ntc));
  fp8::quantize_tiles(x.data(), rows, cols, cols, tile_rows, tile_cols, mode, cpu_codes.data(), cpu_scales.data());

  DeviceBuffer dx(x.size() * 4), dc(gpu_codes.size()), ds(gpu_scales.size() * 4);
  dx.upload(x.data(), x.size() * 4);
  dc.fill_bytes(0xAB);
  ds.fill_bytes(0xFF);
  QuantizeArgs q;
  q.x_dev = dx.as<float>(), q.rows = rows, q.cols = cols, q.ldx = cols, q.tile_rows = tile_rows;
  q.tile_cols = tile_cols, q.mode = mode, q.codes_dev = dc.as<uint8_t>(), q.ldc = cols;
  q.scales_dev = ds.as<float>(), q.layout = ScaleLayout{ntc, 1};
  quantize_tiles(q);
  dc.download(gpu_codes.data(), gpu_codes.size());
  ds.download(gpu_scales.data(), gpu_scales.size() * 4);

  QuantMismatch m;
  for (size_t i = 0; i < gpu_codes.size(); ++i)
    if (gpu_codes[i] != cpu_codes[i]) {
      if (m.codes++ == 0)
        m.first = detail::concat("code [", int64_t(i) / cols, ",", int64_t(i) % cols, "] x=", x[i], " gpu=0x",
                                 std::hex, int(gpu_codes[i]), " cpu=0x", int(cpu_codes[i]));
    }
  for (size_t i = 0; i < gpu_scales.size(); ++i)
    if (f32_bits(gpu_scales[i]) != f32_bits(cpu_scales[i])) {
      if (m.scales++ == 0 && m.first.empty())
        m.first = detail::concat("scale #", i, " gpu=", gpu_scales[i], " cpu=", cpu_scales[i]);
    }
  return m;
}

struct GemmCheck {
  GemmPath path = GemmPath::kAuto;
  double worst = 0.0;           // max over checked outputs of |y - ref| / Σ|x·w| (BF16: less half an ulp of ref)
  int64_t checked = 0;          // outputs compared with the float64 reference
  int64_t unwritten = 0;        // outputs still holding the NaN poison (inputs are finite)
  int64_t quant_mismatch = 0;   // GPU vs CPU quantizer differences on the operands
};

// Decoded values of all 256 E4M3 codes.
inline const std::vector<double>& e4m3_table() {
  static const std::vector<double> t = [] {
    std::vector<double> v(256);
    for (int c = 0; c < 256; ++c) v[size_t(c)] = e4m3_to_f32(uint8_t(c));
    return v;
  }();
  return t;
}

inline float output_value(const std::vector<uint8_t>& y, int64_t i, OutType out) {
  if (out == OutType::kF32) {
    float v;
    std::memcpy(&v, y.data() + i * 4, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, y.data() + i * 2, 2);
  return bf16_to_f32(h);
}

// Quantizes random X [M, K], W [N, K] on the GPU (checking the codes against the CPU quantizer), runs the GEMM
// through `path` into a NaN-poisoned Y, checks that every output was written, and compares outputs with the
// float64 reference: all of them when M·N·K ≤ 2^26, else a random sample of about 2^26/K plus the corners.
inline GemmCheck check_fp8_gemm(GemmContext& ctx, int64_t M, int64_t N, int64_t K, GemmPath path, OutType out,
                                uint64_t seed, fp8::ScaleMode mode = fp8::ScaleMode::kAmax) {
  const std::vector<float> x = random_matrix(M, K, seed, 6, true), w = random_matrix(N, K, seed + 1, 2, true);
  const int64_t KB = k_blocks(K), NB = ceil_div(N, fp8::kTile), swld = weight_scale_ld(K);
  DeviceBuffer dx(x.size() * 4), dw(w.size() * 4), xc(size_t(M * K)), wc(size_t(N * K));
  DeviceBuffer sx(size_t(activation_scale_count(M, K)) * 4), sw(size_t(weight_scale_count(N, K)) * 4);
  const size_t out_size = out == OutType::kF32 ? 4 : 2;
  DeviceBuffer dy(size_t(M * N) * out_size);
  dx.upload(x.data(), x.size() * 4);
  dw.upload(w.data(), w.size() * 4);
  quantize_activations(dx.as<float>(), M, K, K, mode, xc.as<uint8_t>(), sx.as<float>());
  quantize_weights(dw.as<float>(), N, K, K, mode, wc.as<uint8_t>(), sw.as<float>());

  GemmCheck res;
  // The operands' codes and scales, GPU-made, vs the CPU quantizer.
  std::vector<uint8_t> xcodes(size_t(M * K)), wcodes(size_t(N * K)), cx(xcodes.size()), cw(wcodes.size());
  std::vector<float> sxv(size_t(M * KB)), swv(size_t(NB * swld)), csx(size_t(M * KB)), csw(size_t(NB * KB));
  xc.download(xcodes.data(), xcodes.size());
  wc.download(wcodes.data(), wcodes.size());
  sx.download(sxv.data(), sxv.size() * 4);
  sw.download(swv.data(), swv.size() * 4);
  fp8::quantize_tiles(x.data(), M, K, K, 1, fp8::kTile, mode, cx.data(), csx.data());
  fp8::quantize_tiles(w.data(), N, K, K, fp8::kTile, fp8::kTile, mode, cw.data(), csw.data());
  for (size_t i = 0; i < cx.size(); ++i) res.quant_mismatch += cx[i] != xcodes[i];
  for (size_t i = 0; i < cw.size(); ++i) res.quant_mismatch += cw[i] != wcodes[i];
  for (int64_t m = 0; m < M; ++m)
    for (int64_t kb = 0; kb < KB; ++kb) res.quant_mismatch += f32_bits(csx[size_t(m * KB + kb)]) != f32_bits(sxv[size_t(kb * M + m)]);
  for (int64_t nb = 0; nb < NB; ++nb)
    for (int64_t kb = 0; kb < KB; ++kb) res.quant_mismatch += f32_bits(csw[size_t(nb * KB + kb)]) != f32_bits(swv[size_t(nb * swld + kb)]);

  dy.fill_bytes(0xFF);  // NaN in F32 and BF16
  Fp8GemmArgs a;
  a.M = M, a.N = N, a.K = K, a.x_dev = xc.as<uint8_t>(), a.ldx = K, a.sx_dev = sx.as<float>();
  a.w_dev = wc.as<uint8_t>(), a.ldw = K, a.sw_dev = sw.as<float>(), a.y_dev = dy.get(), a.ldy = N, a.out = out;
  res.path = ctx.fp8_gemm(a, path);
  std::vector<uint8_t> y(dy.bytes());
  dy.download(y.data(), y.size());
  for (int64_t i = 0; i < M * N; ++i) res.unwritten += std::isnan(output_value(y, i, out));

  const auto& dec = e4m3_table();
  auto compare = [&](int64_t m, int64_t n) {
    double ref = 0.0, mag = 0.0;
    for (int64_t kb = 0; kb < KB; ++kb) {
      const double s = double(csx[size_t(m * KB + kb)]) * double(csw[size_t((n / fp8::kTile) * KB + kb)]);
      double part = 0.0, part_mag = 0.0;
      for (int64_t k = kb * fp8::kTile; k < std::min(K, (kb + 1) * fp8::kTile); ++k) {
        const double p = dec[cx[size_t(m * K + k)]] * dec[cw[size_t(n * K + k)]];
        part += p;
        part_mag += std::fabs(p);
      }
      ref += part * s;
      mag += part_mag * s;
    }
    const double v = output_value(y, m * N + n, out);
    const double slack = out == OutType::kBF16 ? std::ldexp(std::fabs(ref), -8) : 0.0;  // half a BF16 ulp
    const double err = std::max(0.0, std::fabs(v - ref) - slack) / std::max(mag, 1e-300);
    res.worst = std::isnan(v) ? std::numeric_limits<double>::infinity() : std::max(res.worst, err);
    ++res.checked;
  };
  if (M * N * K <= (int64_t(1) << 26)) {
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) compare(m, n);
  } else {
    std::mt19937_64 rng(seed + 2);
    const int64_t samples = std::max<int64_t>(64, (int64_t(1) << 26) / K);
    compare(0, 0);
    compare(M - 1, N - 1);
    for (int64_t i = 0; i < samples; ++i) compare(int64_t(rng() % uint64_t(M)), int64_t(rng() % uint64_t(N)));
  }
  return res;
}

// A NaN in activation row 5 (one 1×128 tile) and an Inf in weight row 130 (block nb = 1): the GEMM must give
// NaN exactly in row 5 and in columns 128..255, finite values elsewhere. Returns the number of outputs that
// disagree; `ran` receives the path taken.
inline int64_t nonfinite_mismatches(GemmContext& ctx, GemmPath path, GemmPath* ran) {
  const int64_t M = 64, N = 384, K = 512;
  auto x = random_matrix(M, K, 31), w = random_matrix(N, K, 32, 2);
  x[size_t(5 * K + 200)] = std::numeric_limits<float>::quiet_NaN();
  w[size_t(130 * K + 7)] = std::numeric_limits<float>::infinity();
  DeviceBuffer dx(x.size() * 4), dw(w.size() * 4), xc(size_t(M * K)), wc(size_t(N * K)), dy(size_t(M * N) * 4);
  DeviceBuffer sx(size_t(activation_scale_count(M, K)) * 4), sw(size_t(weight_scale_count(N, K)) * 4);
  dx.upload(x.data(), x.size() * 4);
  dw.upload(w.data(), w.size() * 4);
  quantize_activations(dx.as<float>(), M, K, K, fp8::ScaleMode::kAmax, xc.as<uint8_t>(), sx.as<float>());
  quantize_weights(dw.as<float>(), N, K, K, fp8::ScaleMode::kAmax, wc.as<uint8_t>(), sw.as<float>());
  dy.fill_bytes(0xFF);
  Fp8GemmArgs a;
  a.M = M, a.N = N, a.K = K, a.x_dev = xc.as<uint8_t>(), a.ldx = K, a.sx_dev = sx.as<float>();
  a.w_dev = wc.as<uint8_t>(), a.ldw = K, a.sw_dev = sw.as<float>(), a.y_dev = dy.get(), a.ldy = N;
  *ran = ctx.fp8_gemm(a, path);
  std::vector<float> y(size_t(M * N));
  dy.download(y.data(), y.size() * 4);
  int64_t wrong = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) wrong += std::isnan(y[size_t(m * N + n)]) != (m == 5 || (n >= 128 && n < 256));
  return wrong;
}

}  // namespace dsv3::cuda::check
