// Block-scaled FP8 (E4M3) weights in the DeepSeek-V3 checkpoint convention (V3_SPEC.md §6.2):
// W[i,j] = e4m3(codes[i,j]) · scale_inv[i / bo, j / bi]; scale_inv has shape [ceil(rows/bo), ceil(cols/bi)].
// Quantizer: per block (partial edge blocks use only their real elements) scale = amax/448, code = RNE(w/scale)
// saturating to ±448, where the quotient w/scale is rounded once from its exact (double) value. An all-zero block gets scale 1 (codes are 0 whatever the scale).
#pragma once
#include <cstdint>

namespace dsv3 {

void fp8_block_quantize(const float* w, int64_t rows, int64_t cols, int64_t bo, int64_t bi, uint8_t* codes,
                        float* scale_inv);
void fp8_block_dequantize(const uint8_t* codes, const float* scale_inv, int64_t rows, int64_t cols, int64_t bo,
                          int64_t bi, float* out);
// E4M3 code (saturating, RNE) of the exact quotient w / scale; NaN gives 0x7F.
uint8_t e4m3_of_quotient(float w, float scale);
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace dsv3
