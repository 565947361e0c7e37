// Element types and exact scalar conversions.
//
// Every conversion to a narrower float is round-to-nearest-even on the f32 bit pattern (no double
// rounding). FP8 follows the OCP / PyTorch definitions:
//   F8_E4M3 = float8_e4m3fn: bias 7, no infinities, NaN = S.1111.111, max finite 448, min subnormal 2^-9.
//   F8_E5M2 = float8_e5m2:   bias 15, IEEE-like (inf, NaN), max finite 57344, min subnormal 2^-16.
// Out-of-range handling has two modes:
//   Fp8Overflow::kSaturate  finite values clamp to +-max (what a scaled quantizer wants; NaN stays NaN,
//                           +-inf clamps to +-max),
//   Fp8Overflow::kNonSaturating  PyTorch's `tensor.to(float8_*)`: E4M3 values whose rounded magnitude
//                           exceeds 448 (|x| > 464) become NaN and inf becomes NaN; E5M2 overflows to inf.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dsv3 {

enum class DType : uint8_t { F32, F64, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType t);
// Safetensors spelling ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string; throws dsv3::Error on an unknown one.
DType dtype_from_name(std::string_view name);
bool dtype_is_float(DType t);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- BF16 ----
inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN, keep sign
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return uint16_t(u >> 16);
}

// ---- F16 (IEEE binary16) ----
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// ---- FP8 ----
enum class Fp8Overflow { kSaturate, kNonSaturating };
float e4m3_to_f32(uint8_t v);
uint8_t f32_to_e4m3(float f, Fp8Overflow mode = Fp8Overflow::kSaturate);
float e5m2_to_f32(uint8_t v);
uint8_t f32_to_e5m2(float f, Fp8Overflow mode = Fp8Overflow::kSaturate);
constexpr float kE4M3Max = 448.0f;
constexpr float kE5M2Max = 57344.0f;

// Converts n elements of `src` (dtype t) to f32. Works for every float and integer dtype.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);
// Converts n f32 values to dtype t (float dtypes only; FP8 saturates).
void convert_from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace dsv3
