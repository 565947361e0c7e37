// The tiled E4M3 quantizer (src/fp8/quantize.h) against the independent PyTorch reference (reference/fp8_ref.py):
// codes and scales bit for bit on random, zero, tiny/subnormal, midpoint, saturating, huge and non-finite inputs
// with partial tiles, for the tile shapes 1×128 (activations and activation gradients), 128×128 (weights) and
// 128×1 (the Wgrad re-tiling), in both scale modes. Plus the rules that the fixtures cannot show by themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../model/fixtures.h"
#include "core/dtype.h"
#include "core/fp8_block.h"
#include "dsv3/error.h"
#include "fp8/quantize.h"
#include "io/safetensors.h"

using namespace dsv3;
using namespace dsv3::fp8;

namespace {
std::string fp8_fixtures() {
  static const std::string dir = test::generate_fixtures("fp8_ref.py", "fp8");
  return dir;
}
bool same_bits(float a, float b) { return f32_bits(a) == f32_bits(b) || (std::isnan(a) && std::isnan(b)); }
}  // namespace

TEST(Fp8Quantize, MatchesReferenceBitExact) {
  const std::string root = fp8_fixtures();
  ASSERT_FALSE(root.empty()) << "reference/fp8_ref.py failed; see " << DSV3_BINARY_DIR << "/fixtures/fp8.log";
  auto st = io::SafetensorsModel::open(root + "/quant.safetensors");
  int n_checked = 0;
  for (const char* name : {"random", "zeros", "tiny", "midpoints", "big", "saturate", "nonfinite", "edge_1x1"}) {
    const Tensor x = st.get(std::string(name) + ".x");
    const int64_t R = x.dim(0), C = x.dim(1);
    for (auto [tr, tc] : {std::pair<int64_t, int64_t>{1, 128}, {128, 128}, {128, 1}})
      for (ScaleMode mode : {ScaleMode::kAmax, ScaleMode::kPow2}) {
        const std::string key = std::string(name) + "." + std::to_string(tr) + "x" + std::to_string(tc) +
                                (mode == ScaleMode::kAmax ? ".amax" : ".pow2");
        SCOPED_TRACE(key);
        const Tensor want_codes = st.get(key + ".codes"), want_scales = st.get(key + ".scales");
        const int64_t nt = ceil_div(R, tr) * ceil_div(C, tc);
        ASSERT_EQ(want_scales.numel(), nt);
        std::vector<uint8_t> codes(size_t(R * C), 0xAA);
        std::vector<float> scales(size_t(nt), -1.0f);
        quantize_tiles(x.f32(), R, C, C, tr, tc, mode, codes.data(), scales.data());
        int64_t bad_codes = 0, bad_scales = 0;
        for (int64_t i = 0; i < R * C; ++i) bad_codes += codes[i] != want_codes.ptr<uint8_t>()[i];
        for (int64_t i = 0; i < nt; ++i) bad_scales += !same_bits(scales[i], want_scales.f32()[i]);
        EXPECT_EQ(bad_codes, 0);
        EXPECT_EQ(bad_scales, 0);
        ++n_checked;
      }
  }
  EXPECT_EQ(n_checked, 48);
}

// Properties the fixtures rely on, checked directly (so a reference bug cannot hide them).
TEST(Fp8Quantize, Rules) {
  // amax floor and pow2 rounding up
  EXPECT_EQ(tile_scale(0.0f, ScaleMode::kAmax), kAmaxFloor / 448.0f);
  EXPECT_EQ(tile_scale(448.0f, ScaleMode::kAmax), 1.0f);
  EXPECT_EQ(tile_scale(448.0f, ScaleMode::kPow2), 1.0f);
  EXPECT_EQ(tile_scale(449.0f, ScaleMode::kPow2), 2.0f);
  EXPECT_EQ(tile_scale(100.0f, ScaleMode::kPow2), 0.25f);
  EXPECT_TRUE(std::isnan(tile_scale(INFINITY, ScaleMode::kAmax)));
  // Midpoints between E4M3 values round to the even code; 448·(1+1/32) saturates to 448.
  const float x[6] = {448.0f, 1.0625f, 1.1875f, 3.0f / 1024.0f, -464.0f / 1.0f, 0.0f};
  uint8_t c[6];
  float s;
  quantize_tiles(x, 1, 5, 5, 1, 128, ScaleMode::kAmax, c, &s);
  EXPECT_EQ(s, 464.0f / 448.0f);  // amax 464
  const float y[4] = {448.0f, 1.0625f, 1.1875f, 3.0f / 1024.0f};
  quantize_tiles(y, 1, 4, 4, 1, 128, ScaleMode::kAmax, c, &s);
  EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(c[0], 0x7E);
  EXPECT_EQ(c[1], 0x38);  // 1.0625 -> 1.0 (mantissa 0 even)
  EXPECT_EQ(c[2], 0x3A);  // 1.1875 -> 1.25 (mantissa 2 even)
  EXPECT_EQ(c[3], 0x02);  // 1.5 · 2^-9 -> 2 · 2^-9
  // A NaN or Inf poisons its tile only.
  std::vector<float> z(256, 1.0f);
  z[3] = NAN;
  z[200] = -INFINITY;
  std::vector<uint8_t> zc(256);
  float zs[2];
  quantize_tiles(z.data(), 2, 128, 128, 1, 128, ScaleMode::kAmax, zc.data(), zs);
  EXPECT_TRUE(std::isnan(zs[0]) && std::isnan(zs[1]));
  for (int i = 0; i < 256; ++i) ASSERT_EQ(zc[i], 0x7F) << i;
  z[200] = 1.0f;
  quantize_tiles(z.data(), 2, 128, 128, 1, 128, ScaleMode::kAmax, zc.data(), zs);
  EXPECT_EQ(zs[1], 1.0f / 448.0f);
  EXPECT_EQ(zc[200], 0x7E);
  // Row stride larger than the row and dequantization.
  std::vector<float> w(3 * 10);
  for (int i = 0; i < 30; ++i) w[i] = float(i) - 14.5f;
  std::vector<uint8_t> wc(3 * 7);
  float ws[3];
  quantize_tiles(w.data(), 3, 7, 10, 1, 128, ScaleMode::kPow2, wc.data(), ws);
  std::vector<float> back(21);
  dequantize_tiles(wc.data(), ws, 3, 7, 1, 128, back.data());
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 7; ++j) EXPECT_NEAR(back[r * 7 + j], w[r * 10 + j], std::fabs(w[r * 10 + j]) / 16) << r;
}

TEST(Fp8Quantize, BadArguments) {
  float x = 1.0f, s;
  uint8_t c;
  EXPECT_THROW(quantize_tiles(&x, 1, 1, 1, 0, 128, ScaleMode::kAmax, &c, &s), Error);
  EXPECT_THROW(quantize_tiles(&x, 1, 2, 1, 1, 128, ScaleMode::kAmax, &c, &s), Error);  // ldx < cols
  EXPECT_THROW(quantize_tiles(&x, -1, 1, 1, 1, 128, ScaleMode::kAmax, &c, &s), Error);
}

// Every code equals the scalar exact-quotient rounding (core/fp8_block.h) with the tile's scale, over values
// spread across 2^-40 .. 2^40 (subnormal quotients, ties after scaling, saturation) and every tile shape.
TEST(Fp8Quantize, CodesAreExactQuotientRounding) {
  const int64_t R = 300, C = 260;
  std::vector<float> x(size_t(R * C));
  uint32_t st = 12345;
  for (auto& v : x) {
    st = st * 1664525u + 1013904223u;
    const int e = int(st >> 24) % 81 - 40;
    st = st * 1664525u + 1013904223u;
    v = std::ldexp(1.0f + float(st >> 9) / 8388608.0f, e) * ((st & 1) ? -1.0f : 1.0f);
  }
  for (auto [tr, tc] : {std::pair<int64_t, int64_t>{1, 128}, {128, 128}, {128, 1}, {3, 5}})
    for (ScaleMode mode : {ScaleMode::kAmax, ScaleMode::kPow2}) {
      std::vector<uint8_t> codes(x.size());
      std::vector<float> scales(size_t(ceil_div(R, tr) * ceil_div(C, tc)));
      quantize_tiles(x.data(), R, C, C, tr, tc, mode, codes.data(), scales.data());
      int64_t bad = 0;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c)
          bad += codes[r * C + c] != e4m3_of_quotient(x[r * C + c], scales[(r / tr) * ceil_div(C, tc) + c / tc]);
      EXPECT_EQ(bad, 0) << tr << "x" << tc;
    }
}
