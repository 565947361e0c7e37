// The E4M3 code of an exact quotient, in f32 arithmetic only — shared by the CUDA quantizers (device) and a host
// test that pins it to the CPU rule (core/fp8_block.h e4m3_of_quotient, which forms the quotient in double).
//
// Q = x/scale (x finite, scale finite > 0), round to nearest even, saturating at ±448. a = |x| / scale correctly
// rounded (IEEE f32 division: the host's `/`, nvcc's default -prec-div=true). Every E4M3 value and every
// midpoint between two of them is an f32 and rounding is monotonic, so a lies on the same side of each midpoint
// as |Q| — except that it can land exactly ON one that |Q| is not. Then the remainder r = |x| − a·scale, exact in
// one FMA for a correctly rounded quotient (no underflow: midpoints are ≥ 2^-10 and scale ≥ 1e-4/448, so r stays
// far above the bottom of the f32 normal range), says which side |Q| is on; r = 0 means |Q| is the midpoint and
// the tie goes to even. Then: a ≥ 448 → 448; below 2^-6 (E4M3 subnormals) the quantum is 2^-9; above, the f32
// bits give the code after rounding away 20 mantissa bits (a carry into the exponent is the next binade).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DSV3_HOST_DEVICE __host__ __device__
#else
#define DSV3_HOST_DEVICE
#endif

namespace dsv3::cuda {

DSV3_HOST_DEVICE inline uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

DSV3_HOST_DEVICE inline uint8_t e4m3_of_quotient_f32(float x, float scale) {
  const float ax = fabsf(x);
  const float a = ax / scale;
  const float r = fmaf(-a, scale, ax);  // (|Q| − a)·scale, exactly
  uint32_t code;
  if (a >= 448.0f) {
    code = 0x7eu;
  } else if (a < 0x1p-6f) {
    const float t = a * 0x1p9f;  // exact (a power-of-two scaling up)
    const float fl = floorf(t);
    if (t - fl == 0.5f && r != 0.0f) code = uint32_t(fl) + (r > 0.0f ? 1u : 0u);  // a is a midpoint, |Q| is not
    else code = uint32_t(rintf(t));  // 0..8 (8: the smallest normal), ties to even
  } else {
    uint32_t u = f32_bits(a);
    if ((u & 0xfffffu) == 0x80000u && r != 0.0f) u += r > 0.0f ? 0x80000u : 0u;  // off-midpoint |Q|
    else u += 0x7ffffu + ((u >> 20) & 1u);                                        // nearest, ties to even
    code = (u >> 20) - ((127u - 7u) << 3);
  }
  if (f32_bits(x) >> 31) code |= 0x80u;  // the sign of x (also of -0)
  return uint8_t(code);
}

}  // namespace dsv3::cuda
