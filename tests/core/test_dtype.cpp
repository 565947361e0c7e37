// Exhaustive checks of the narrow-float codecs: every FP8 code decodes to the value its bit fields define,
// re-encodes to itself, and every rounding boundary (midpoints between neighbours) rounds to even.
#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"

using namespace dsv3;

namespace {
// Value of an (ebits, mbits, bias) code computed independently in double from its fields.
double field_value(uint32_t code, int ebits, int mbits, int bias) {
  int s = (code >> (ebits + mbits)) & 1, e = (code >> mbits) & ((1 << ebits) - 1), m = code & ((1 << mbits) - 1);
  double v = e == 0 ? std::ldexp(double(m) / (1 << mbits), 1 - bias) : std::ldexp(1.0 + double(m) / (1 << mbits), e - bias);
  return s ? -v : v;
}
}  // namespace

TEST(DType, E4M3AllCodes) {
  for (int c = 0; c < 256; ++c) {
    float v = e4m3_to_f32(uint8_t(c));
    if ((c & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(f32_to_e4m3(v) & 0x7f, 0x7f);
      continue;
    }
    EXPECT_EQ(double(v), field_value(c, 4, 3, 7)) << c;
    EXPECT_EQ(f32_to_e4m3(v), c == 0x80 ? 0x80 : c) << c;  // -0 stays -0
    EXPECT_EQ(f32_to_e4m3(v, Fp8Overflow::kNonSaturating), c);
  }
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
}

TEST(DType, E5M2AllCodes) {
  for (int c = 0; c < 256; ++c) {
    float v = e5m2_to_f32(uint8_t(c));
    int e = (c >> 2) & 0x1f;
    if (e == 0x1f) {
      if (c & 3) EXPECT_TRUE(std::isnan(v));
      else EXPECT_TRUE(std::isinf(v));
      if (c & 3) continue;
      EXPECT_EQ(f32_to_e5m2(v, Fp8Overflow::kNonSaturating), c);
      EXPECT_EQ(f32_to_e5m2(v, Fp8Overflow::kSaturate), (c & 0x80) | 0x7b);
      continue;
    }
    EXPECT_EQ(double(v), field_value(c, 5, 2, 15)) << c;
    EXPECT_EQ(f32_to_e5m2(v), c) << c;
  }
  EXPECT_EQ(e5m2_to_f32(0x7b), 57344.0f);
}

// Midpoints between consecutive finite codes round to the even code; a hair either side rounds to the near one.
template <typename Dec, typename Enc>
void check_midpoints(int max_code, Dec dec, Enc enc) {
  for (int c = 0; c < max_code; ++c) {
    double lo = dec(c), hi = dec(c + 1);
    float mid = float((lo + hi) / 2);
    ASSERT_EQ(double(mid), (lo + hi) / 2);  // exactly representable in f32
    int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(enc(mid), even) << "midpoint after code " << c;
    EXPECT_EQ(enc(std::nextafter(mid, -1.0f)), c);
    EXPECT_EQ(enc(std::nextafter(mid, 1000000.0f)), c + 1);
  }
}

TEST(DType, E4M3RoundingBoundaries) {
  check_midpoints(0x7e, [](int c) { return double(e4m3_to_f32(uint8_t(c))); },
                  [](float f) { return int(f32_to_e4m3(f)); });
  // Above the largest finite value: saturate clamps, non-saturating follows PyTorch (NaN once the rounded
  // value exceeds 448, i.e. strictly above the 464 midpoint; 464 itself rounds to even = 448).
  EXPECT_EQ(f32_to_e4m3(464.0f, Fp8Overflow::kNonSaturating), 0x7e);
  EXPECT_EQ(f32_to_e4m3(464.5f, Fp8Overflow::kNonSaturating), 0x7f);
  EXPECT_EQ(f32_to_e4m3(1e9f, Fp8Overflow::kNonSaturating), 0x7f);
  EXPECT_EQ(f32_to_e4m3(INFINITY, Fp8Overflow::kNonSaturating), 0x7f);
  EXPECT_EQ(f32_to_e4m3(1e9f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-1e9f), 0xfe);
  EXPECT_EQ(f32_to_e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(f32_to_e4m3(std::ldexp(1.0f, -10)), 0x00);                       // half of min subnormal -> even (0)
  EXPECT_EQ(f32_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)), 0x01);
  EXPECT_EQ(f32_to_e4m3(1e-30f), 0x00);
}

TEST(DType, E5M2RoundingBoundaries) {
  check_midpoints(0x7b, [](int c) { return double(e5m2_to_f32(uint8_t(c))); },
                  [](float f) { return int(f32_to_e5m2(f)); });
  EXPECT_EQ(f32_to_e5m2(61440.0f, Fp8Overflow::kNonSaturating), 0x7c);  // midpoint 57344|65536 -> even = inf
  EXPECT_EQ(f32_to_e5m2(61439.0f, Fp8Overflow::kNonSaturating), 0x7b);
  EXPECT_EQ(f32_to_e5m2(1e9f), 0x7b);
}

TEST(DType, BF16AndF16) {
  // All 65536 bf16 and f16 codes round-trip (NaNs stay NaN).
  for (uint32_t c = 0; c < 65536; ++c) {
    float b = bf16_to_f32(uint16_t(c));
    if (std::isnan(b)) EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(b))));
    else EXPECT_EQ(f32_to_bf16(b), c);
    float h = f16_to_f32(uint16_t(c));
    if (std::isnan(h)) EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(h))));
    else EXPECT_EQ(f32_to_f16(h), c) << c;
  }
  // Round-to-nearest-even at the bf16 midpoint.
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(f32_to_bf16(bits_f32(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
}

TEST(DType, Names) {
  EXPECT_EQ(dtype_from_name("F8_E4M3"), DType::F8_E4M3);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_THROW(dtype_from_name("F7"), std::exception);
}
