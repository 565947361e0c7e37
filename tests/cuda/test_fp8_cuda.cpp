// CUDA FP8 path (src/cuda/fp8_cuda.h) against the CPU recipe: quantizer bit for bit, GEMMs against float64.
// Compiled only when the CUDA target is built (DSV3_HAVE_CUDA); tests that need a device skip without one.
#ifdef DSV3_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "cuda/fp8_cuda.h"
#include "fp8/fp8_gemm.h"
#include "fp8_cuda_checks.h"

namespace dsv3::cuda {
namespace {

using fp8::ScaleMode;

#define DSV3_NEED_GPU() \
  if (!device_available()) GTEST_SKIP() << "no CUDA device"

TEST(Fp8Cuda, QuantizerMatchesCpuOnRandomInput) {
  DSV3_NEED_GPU();
  const int64_t shapes[][2] = {{1, 128}, {3, 300}, {257, 1000}, {512, 7168}};
  for (const auto& s : shapes)
    for (ScaleMode mode : {ScaleMode::kAmax, ScaleMode::kPow2})
      for (const auto& t : {std::pair<int64_t, int64_t>{1, 128}, {128, 128}, {128, 1}}) {
        const auto x = check::random_matrix(s[0], s[1], 11 + uint64_t(s[0]));
        const auto m = check::compare_quantizer(x, s[0], s[1], t.first, t.second, mode);
        EXPECT_TRUE(m.ok()) << s[0] << "x" << s[1] << " tile " << t.first << "x" << t.second << " pow2="
                            << (mode == ScaleMode::kPow2) << ": " << m.codes << " codes, " << m.scales
                            << " scales differ; first: " << m.first;
      }
}

TEST(Fp8Cuda, QuantizerMatchesCpuOnEdgeCases) {
  DSV3_NEED_GPU();
  for (const auto& e : check::edge_cases())
    for (ScaleMode mode : {ScaleMode::kAmax, ScaleMode::kPow2})
      for (const auto& t : {std::pair<int64_t, int64_t>{1, 128}, {128, 128}, {128, 1}, {2, 64}}) {
        const auto m = check::compare_quantizer(e.x, e.rows, e.cols, t.first, t.second, mode);
        EXPECT_TRUE(m.ok()) << e.name << " tile " << t.first << "x" << t.second << " pow2="
                            << (mode == ScaleMode::kPow2) << ": " << m.codes << " codes, " << m.scales
                            << " scales differ; first: " << m.first;
      }
}

// The own kernel does the host reference's arithmetic in the same order: identical bits.
TEST(Fp8Cuda, OwnKernelEqualsCpuReferenceBitForBit) {
  DSV3_NEED_GPU();
  const int64_t shapes[][3] = {{100, 200, 300}, {7, 130, 128}, {33, 256, 1000}};
  for (const auto& s : shapes) {
    const int64_t M = s[0], N = s[1], K = s[2], KB = k_blocks(K), NB = ceil_div(N, fp8::kTile);
    const auto x = check::random_matrix(M, K, 21), w = check::random_matrix(N, K, 22, 2);
    std::vector<uint8_t> xc(size_t(M * K)), wc(size_t(N * K));
    std::vector<float> sx(size_t(M * KB)), swb(size_t(NB * KB)), sb(size_t(KB * N));
    fp8::quantize_tiles(x.data(), M, K, K, 1, fp8::kTile, ScaleMode::kAmax, xc.data(), sx.data());
    fp8::quantize_tiles(w.data(), N, K, K, fp8::kTile, fp8::kTile, ScaleMode::kAmax, wc.data(), swb.data());
    for (int64_t kb = 0; kb < KB; ++kb)
      for (int64_t n = 0; n < N; ++n) sb[size_t(kb * N + n)] = swb[size_t((n / fp8::kTile) * KB + kb)];
    fp8::BlockScaledOperands op;
    op.M = M, op.N = N, op.K = K, op.a = xc.data(), op.lda = K, op.sa = sx.data(), op.b = wc.data(), op.ldb = K;
    op.sb = sb.data();
    std::vector<float> ref(size_t(M * N));
    fp8::block_scaled_gemm_reference(op, ref.data(), N);

    // Device operands in the GEMM layouts.
    std::vector<float> sx_dev(size_t(M * KB)), sw_dev(size_t(weight_scale_count(N, K)), 0.0f);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t kb = 0; kb < KB; ++kb) sx_dev[size_t(kb * M + m)] = sx[size_t(m * KB + kb)];
    for (int64_t nb = 0; nb < NB; ++nb)
      for (int64_t kb = 0; kb < KB; ++kb) sw_dev[size_t(nb * weight_scale_ld(K) + kb)] = swb[size_t(nb * KB + kb)];
    DeviceBuffer dxc(xc.size()), dwc(wc.size()), dsx(sx_dev.size() * 4), dsw(sw_dev.size() * 4), dy(ref.size() * 4);
    dxc.upload(xc.data(), xc.size());
    dwc.upload(wc.data(), wc.size());
    dsx.upload(sx_dev.data(), sx_dev.size() * 4);
    dsw.upload(sw_dev.data(), sw_dev.size() * 4);
    dy.fill_bytes(0xFF);
    Fp8GemmArgs a;
    a.M = M, a.N = N, a.K = K, a.x_dev = dxc.as<uint8_t>(), a.ldx = K, a.sx_dev = dsx.as<float>();
    a.w_dev = dwc.as<uint8_t>(), a.ldw = K, a.sw_dev = dsw.as<float>(), a.y_dev = dy.get(), a.ldy = N;
    fp8_gemm_simple(a);
    std::vector<float> y(ref.size());
    dy.download(y.data(), y.size() * 4);
    int64_t diff = 0;
    for (size_t i = 0; i < y.size(); ++i) diff += f32_bits(y[i]) != f32_bits(ref[i]);
    EXPECT_EQ(diff, 0) << M << "x" << N << "x" << K << ": first y=" << y[0] << " ref=" << ref[0];
  }
}

void expect_gemm(GemmContext& ctx, int64_t M, int64_t N, int64_t K, GemmPath path, OutType out, ScaleMode mode,
                 bool expect_cublas) {
  const auto r = check::check_fp8_gemm(ctx, M, N, K, path, out, uint64_t(M * 31 + N * 7 + K), mode);
  std::printf("  fp8 gemm M=%lld N=%lld K=%lld out=%s pow2=%d via %s: worst |err|/sum|xw| = %.3g over %lld outputs\n",
              (long long)M, (long long)N, (long long)K, out == OutType::kF32 ? "f32" : "bf16", int(mode == ScaleMode::kPow2),
              path_name(r.path), r.worst, (long long)r.checked);
  EXPECT_EQ(r.quant_mismatch, 0) << "GPU quantizer differs from the CPU one";
  EXPECT_EQ(r.unwritten, 0) << "outputs left unwritten";
  EXPECT_LE(r.worst, check::tolerance(r.path)) << M << "x" << N << "x" << K << " via " << path_name(r.path);
  if (expect_cublas) {
    EXPECT_EQ(r.path, GemmPath::kCublasLt) << "aligned shape fell back to the own kernel";
  }
}

TEST(Fp8Cuda, GemmMatchesFloat64) {
  DSV3_NEED_GPU();
  GemmContext ctx;
  struct S { int64_t M, N, K; bool aligned; };
  const S shapes[] = {{128, 256, 512, true}, {100, 384, 1024, true}, {256, 2048, 7168, true},
                      {64, 7168, 2048, true}, {3, 200, 300, false}, {37, 130, 208, false}, {48, 256, 208, false}};
  for (const auto& s : shapes)
    for (GemmPath path : {GemmPath::kAuto, GemmPath::kOwnKernel})
      expect_gemm(ctx, s.M, s.N, s.K, path, OutType::kF32, ScaleMode::kAmax, s.aligned && path == GemmPath::kAuto);
  expect_gemm(ctx, 256, 512, 1024, GemmPath::kAuto, OutType::kBF16, ScaleMode::kAmax, false);
  expect_gemm(ctx, 256, 512, 1024, GemmPath::kAuto, OutType::kF32, ScaleMode::kPow2, false);
  expect_gemm(ctx, 256, 512, 1024, GemmPath::kOwnKernel, OutType::kBF16, ScaleMode::kAmax, false);
}

TEST(Fp8Cuda, GemmCublasLtOnV3Shapes) {
  DSV3_NEED_GPU();
  GemmContext ctx;
  const int64_t shapes[][3] = {{256, 2048, 7168}, {256, 7168, 7168}, {100, 7168, 2048}};
  for (const auto& s : shapes) expect_gemm(ctx, s[0], s[1], s[2], GemmPath::kAuto, OutType::kF32, ScaleMode::kAmax, true);
}

// A NaN or Inf in one activation tile makes that row NaN; in one weight block, those 128 columns.
TEST(Fp8Cuda, GemmPropagatesNonFiniteTiles) {
  DSV3_NEED_GPU();
  GemmContext ctx;
  for (GemmPath path : {GemmPath::kAuto, GemmPath::kOwnKernel}) {
    GemmPath ran = path;
    EXPECT_EQ(check::nonfinite_mismatches(ctx, path, &ran), 0) << "via " << path_name(ran);
  }
}

TEST(Fp8Cuda, BadInputIsRejected) {  // shape checks come before any device work: runs without a GPU too
  QuantizeArgs q;
  q.rows = 4, q.cols = 10, q.ldx = 8;  // ldx < cols
  EXPECT_THROW(quantize_tiles(q), Error);
  q.ldx = 10, q.ldc = 10, q.tile_cols = 0;
  EXPECT_THROW(quantize_tiles(q), Error);
  Fp8GemmArgs a;
  a.M = -1;
  EXPECT_THROW(fp8_gemm_simple(a), Error);
  a.M = 4, a.N = 4, a.K = 256, a.ldx = 128, a.ldw = 256, a.ldy = 4;  // ldx < K
  EXPECT_THROW(fp8_gemm_simple(a), Error);
  a.ldx = 256;  // null pointers
  EXPECT_THROW(fp8_gemm_simple(a), Error);
  EXPECT_THROW(fill_random(nullptr, 2, 2, 1, -1), Error);
}

TEST(Fp8Cuda, ForcedCublasLtOnUnalignedShapeThrows) {
  DSV3_NEED_GPU();
  GemmContext ctx;
  const int64_t M = 4, N = 8, K = 100;  // K not a multiple of 16
  DeviceBuffer xc(size_t(M * K)), wc(size_t(N * K)), sx(size_t(activation_scale_count(M, K)) * 4);
  DeviceBuffer sw(size_t(weight_scale_count(N, K)) * 4), dy(size_t(M * N) * 4);
  Fp8GemmArgs a;
  a.M = M, a.N = N, a.K = K, a.x_dev = xc.as<uint8_t>(), a.ldx = K, a.sx_dev = sx.as<float>();
  a.w_dev = wc.as<uint8_t>(), a.ldw = K, a.sw_dev = sw.as<float>(), a.y_dev = dy.get(), a.ldy = N;
  std::string why;
  EXPECT_FALSE(ctx.cublaslt_supports(a, &why));
  EXPECT_NE(why.find("16-byte"), std::string::npos) << why;
  EXPECT_THROW(ctx.fp8_gemm(a, GemmPath::kCublasLt), Error);
}

}  // namespace
}  // namespace dsv3::cuda
#endif  // DSV3_HAVE_CUDA
