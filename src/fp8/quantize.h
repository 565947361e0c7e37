// Fine-grained FP8 (E4M3) quantizers of the DeepSeek-V3 recipe (V3_SPEC.md §8, paper §3.3.2).
//
// One tiled quantizer covers the four tilings of the recipe:
//   activations        1×128   (per token, 128 channels)        quantize_tiles(..., 1, 128, ...)
//   weights            128×128 (per block)                      quantize_tiles(..., 128, 128, ...)
//   activation grads   1×128   (per token, 128 channels)        quantize_tiles(..., 1, 128, ...)
//   cached activations / grads re-tiled for Wgrad: 128×1 (per channel, 128 tokens)  quantize_tiles(..., 128, 1, ...)
// x[rows, cols] (row stride ldx) → codes[rows, cols] (row stride cols) and scales[ceil(rows/tr), ceil(cols/tc)],
// with x ≈ e4m3(code) · scale. Partial tiles at the edges use only their real elements.
//
// Per tile: amax = max |x|; scale = max(amax, kAmaxFloor) / 448 (an f32 division, correctly rounded);
// in ScaleMode::kPow2 (UE8M0, as V3.1) the scale is then rounded UP to the next power of two (an exact power of
// two stays). code = E4M3 round-to-nearest-even of the exact quotient x/scale, saturating at ±448 (the quotient
// is formed in double, which is exact enough to never misplace a tie; no double rounding through f32).
// Non-finite inputs: a tile holding any NaN or ±Inf gets scale = NaN and every code 0x7F (NaN), so the NaN reaches
// every output that uses the tile. This differs from fp8_block_quantize (core/fp8_block.h, checkpoint storage),
// which has no amax floor and gives an all-zero block scale 1.
#pragma once
#include <cstdint>

namespace dsv3::fp8 {

enum class ScaleMode { kAmax, kPow2 };
constexpr float kAmaxFloor = 1e-4f;
constexpr int64_t kTile = 128;

void quantize_tiles(const float* x, int64_t rows, int64_t cols, int64_t ldx, int64_t tile_rows, int64_t tile_cols,
                    ScaleMode mode, uint8_t* codes, float* scales);
// x[r,c] = e4m3(codes[r,c]) · scales[r/tr, c/tc]; out row stride cols.
void dequantize_tiles(const uint8_t* codes, const float* scales, int64_t rows, int64_t cols, int64_t tile_rows,
                      int64_t tile_cols, float* out);
// The tile scale for a given amax (NaN for a non-finite amax).
float tile_scale(float amax, ScaleMode mode);

}  // namespace dsv3::fp8
