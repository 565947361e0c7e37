// 128x128-block FP8 weight quantizer / dequantizer (see fp8_block.h).
#include "core/fp8_block.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"

namespace dsv3 {

// E4M3 code of the exact quotient w / scale: the quotient is formed in double and rounded once, so no
// double rounding through an f32 intermediate (matches the reference quantizer bit for bit). The double
// quotient is exact enough: an E4M3 tie has at most 5 significant bits, and a quotient of two f32 values that is
// not a tie lies more than 2^-30 (relative) away from one.
uint8_t e4m3_of_quotient(float w, float scale) {
  const double x = double(w) / double(scale);
  if (std::isnan(x)) return 0x7f;
  const double a = std::fabs(x);
  double v;
  if (a >= double(kE4M3Max)) {
    v = kE4M3Max;
  } else if (a == 0.0) {
    v = 0.0;
  } else {
    int e = std::ilogb(a);
    if (e < -6) e = -6;                        // subnormal range shares the quantum 2^-9
    const double quantum = std::ldexp(1.0, e - 3);
    v = std::nearbyint(a / quantum) * quantum;  // exact scaling by a power of two, then RNE
    if (v > kE4M3Max) v = kE4M3Max;
  }
  return f32_to_e4m3(float(std::signbit(x) ? -v : v));
}

void fp8_block_quantize(const float* w, int64_t rows, int64_t cols, int64_t bo, int64_t bi, uint8_t* codes,
                        float* scale_inv) {
  const int64_t nbr = ceil_div(rows, bo), nbc = ceil_div(cols, bi);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t br = 0; br < nbr; ++br)
    for (int64_t bc = 0; bc < nbc; ++bc) {
      const int64_t r0 = br * bo, r1 = std::min(rows, r0 + bo), c0 = bc * bi, c1 = std::min(cols, c0 + bi);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      const float scale = amax > 0.0f ? amax / kE4M3Max : 1.0f;
      scale_inv[br * nbc + bc] = scale;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) codes[r * cols + c] = e4m3_of_quotient(w[r * cols + c], scale);
    }
}

void fp8_block_dequantize(const uint8_t* codes, const float* scale_inv, int64_t rows, int64_t cols, int64_t bo,
                          int64_t bi, float* out) {
  float lut[256];
  for (int c = 0; c < 256; ++c) lut[c] = e4m3_to_f32(uint8_t(c));
  const int64_t nbc = ceil_div(cols, bi);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* srow = scale_inv + (r / bo) * nbc;
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = lut[codes[r * cols + c]] * srow[c / bi];
  }
}

}  // namespace dsv3
