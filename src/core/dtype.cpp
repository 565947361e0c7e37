// Exact scalar conversions between f32 and the narrow float formats (see dtype.h for the rules).
#include "core/dtype.h"

#include <cmath>

#include "dsv3/error.h"

namespace dsv3 {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::F8_E4M3: case DType::F8_E5M2: case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F8_E5M2: return "F8_E5M2";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

DType dtype_from_name(std::string_view n) {
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::F8_E4M3, DType::F8_E5M2, DType::I64,
                  DType::I32, DType::I16, DType::I8, DType::U8, DType::BOOL})
    if (dtype_name(t) == n) return t;
  DSV3_FAIL("unsupported dtype \"", n, "\"");
}

bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3 ||
         t == DType::F8_E5M2;
}

namespace {

// Magnitude code of |a| (finite, non-NaN) in a format with `mbits` mantissa bits and exponent bias `bias`,
// round-to-nearest-even, without any overflow handling: a result above the format's largest finite code
// means the value overflowed (the caller decides saturate / inf / NaN).
uint32_t round_magnitude(float a, int mbits, int bias) {
  const uint32_t u = f32_bits(a) & 0x7fffffffu;
  const int exp32 = int(u >> 23);
  if (exp32 == 0) return 0;  // f32 zero/subnormal: far below half the smallest subnormal of every target
  const uint32_t full = (1u << 23) | (u & 0x7fffffu);
  const int te = exp32 - 127 + bias;  // biased target exponent
  int shift = 23 - mbits;
  if (te < 1) shift += 1 - te;  // subnormal in the target format
  if (shift > 31) return 0;
  uint32_t q = full >> shift;
  const uint32_t rem = full & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  if (te < 1) return q;  // q == 1<<mbits is exactly the smallest normal code
  return (uint32_t(te) << mbits) + q - (1u << mbits);
}

float decode(uint32_t code, int ebits, int mbits, int bias) {
  const uint32_t sign = code >> (ebits + mbits);
  const uint32_t e = (code >> mbits) & ((1u << ebits) - 1u);
  const uint32_t m = code & ((1u << mbits) - 1u);
  float v = e == 0 ? std::ldexp(float(m), 1 - bias - mbits) : std::ldexp(float((1u << mbits) | m), int(e) - bias - mbits);
  return sign ? -v : v;
}

}  // namespace

float f16_to_f32(uint16_t h) {
  const uint32_t e = (h >> 10) & 0x1f;
  if (e == 0x1f) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    return bits_f32(sign | 0x7f800000u | (uint32_t(h & 0x3ff) << 13));
  }
  return decode(h, 5, 10, 15);
}

uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  if ((u & 0x7fffffffu) > 0x7f800000u) return sign | 0x7e00;  // NaN
  if ((u & 0x7fffffffu) == 0x7f800000u) return sign | 0x7c00;
  uint32_t m = round_magnitude(f, 10, 15);
  if (m > 0x7bff) m = 0x7c00;  // overflow -> inf
  return sign | uint16_t(m);
}

float e4m3_to_f32(uint8_t v) {
  if ((v & 0x7f) == 0x7f) return std::nanf("");
  return decode(v, 4, 3, 7);
}

uint8_t f32_to_e4m3(float f, Fp8Overflow mode) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80);
  if ((u & 0x7fffffffu) > 0x7f800000u) return sign | 0x7f;
  const bool inf = (u & 0x7fffffffu) == 0x7f800000u;
  uint32_t m = inf ? 0x100 : round_magnitude(f, 3, 7);
  if (m > 0x7e) m = mode == Fp8Overflow::kSaturate ? 0x7e : 0x7f;
  return sign | uint8_t(m);
}

float e5m2_to_f32(uint8_t v) {
  const uint32_t e = (v >> 2) & 0x1f;
  if (e == 0x1f) {
    if (v & 3) return std::nanf("");
    return (v & 0x80) ? -INFINITY : INFINITY;
  }
  return decode(v, 5, 2, 15);
}

uint8_t f32_to_e5m2(float f, Fp8Overflow mode) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = uint8_t((u >> 24) & 0x80);
  if ((u & 0x7fffffffu) > 0x7f800000u) return sign | 0x7f;
  const bool inf = (u & 0x7fffffffu) == 0x7f800000u;
  uint32_t m = inf ? 0x100 : round_magnitude(f, 2, 15);
  if (m > 0x7b) m = mode == Fp8Overflow::kSaturate ? 0x7b : 0x7c;
  return sign | uint8_t(m);
}

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  if (n == 0) return;
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F64: { auto s = static_cast<const double*>(src); for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]); return; }
    case DType::BF16: { auto s = static_cast<const uint16_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]); return; }
    case DType::F16: { auto s = static_cast<const uint16_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]); return; }
    case DType::F8_E4M3: {
      float lut[256];
      for (int c = 0; c < 256; ++c) lut[c] = e4m3_to_f32(uint8_t(c));
      auto s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = lut[s[i]];
      return;
    }
    case DType::F8_E5M2: { auto s = static_cast<const uint8_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = e5m2_to_f32(s[i]); return; }
    case DType::I64: { auto s = static_cast<const int64_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]); return; }
    case DType::I32: { auto s = static_cast<const int32_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]); return; }
    case DType::I16: { auto s = static_cast<const int16_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]); return; }
    case DType::I8: { auto s = static_cast<const int8_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]); return; }
    case DType::U8: case DType::BOOL: { auto s = static_cast<const uint8_t*>(src); for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]); return; }
  }
}

void convert_from_f32(DType t, const float* src, void* dst, size_t n) {
  if (n == 0) return;
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F64: { auto d = static_cast<double*>(dst); for (size_t i = 0; i < n; ++i) d[i] = src[i]; return; }
    case DType::BF16: { auto d = static_cast<uint16_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]); return; }
    case DType::F16: { auto d = static_cast<uint16_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]); return; }
    case DType::F8_E4M3: { auto d = static_cast<uint8_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_e4m3(src[i]); return; }
    case DType::F8_E5M2: { auto d = static_cast<uint8_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_e5m2(src[i]); return; }
    default: DSV3_FAIL("convert_from_f32: ", dtype_name(t), " is not a float dtype");
  }
}

}  // namespace dsv3
