// InferWeights (infer/infer_weights.h): a BF16 / FP8 checkpoint written by ModelWeights::save loads into
// resident BF16 / FP8 weights identical to InferWeights::from on the same F32 weights (same logits, bit for
// bit), holding 2 / ~1 bytes per Linear parameter; bad formats are rejected with an error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "dsv3/error.h"
#include "infer/decode.h"
#include "infer/infer_weights.h"
#include "infer_test_util.h"
#include "../temp_dir.h"

using namespace dsv3;
using namespace dsv3::infer;
using dsv3::test::step_logits;

TEST(InferWeights, LoadedCheckpointsMatchConversionBitwise) {
  const ModelWeights& w = test::random_model("tiny");
  const std::vector<int32_t> tokens = test::random_tokens(20, w.cfg.vocab_size, 5);
  test::TempDir dir;
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    const std::string path = dir / std::string(dtype_name(dt));
    w.save(path, dt);
    const InferWeights loaded = InferWeights::load(path);
    const InferWeights converted = InferWeights::from(w, dt);
    EXPECT_EQ(loaded.dtype, dt);
    EXPECT_EQ(loaded.layers[1].o.dtype, dt);
    EXPECT_EQ(loaded.lm_head.dtype, DType::BF16);
    EXPECT_EQ(loaded.embed.dtype, DType::BF16);
    EXPECT_EQ(loaded.resident_bytes(), converted.resident_bytes());
    const auto a = step_logits(loaded, tokens), b = step_logits(converted, tokens);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << dtype_name(dt);
    // Stored F32 can be held as BF16 on request; FP8 held as F32 dequantizes exactly.
    const InferWeights as_f32 = InferWeights::load(path, DType::F32);
    EXPECT_EQ(as_f32.layers[1].o.dtype, DType::F32);
    const Tensor o = loaded.layers[1].o.to_f32();
    EXPECT_EQ(0, std::memcmp(o.data, as_f32.layers[1].o.data.data, o.nbytes()));
  }
  // Bytes per Linear parameter: 2 for BF16, 1 + scales for FP8.
  const InferWeights b = InferWeights::from(w, DType::BF16), f = InferWeights::from(w, DType::F8_E4M3);
  EXPECT_EQ(b.layers[1].o.bytes(), 2.0 * double(b.layers[1].o.N * b.layers[1].o.K));
  EXPECT_LT(f.layers[1].o.bytes(), 1.1 * double(f.layers[1].o.N * f.layers[1].o.K));
}

TEST(InferWeights, RejectsBadFormats) {
  const ModelWeights& w = test::random_model("tiny");
  EXPECT_THROW(InferWeights::from(w, DType::F16), Error);
  test::TempDir dir;
  w.save(dir / "m", DType::BF16);
  EXPECT_THROW(InferWeights::load(dir / "m", DType::I8), Error);
  EXPECT_THROW(InferWeights::load(dir / "missing"), Error);
  const InferWeights q = InferWeights::from(w, DType::F8_E4M3);
  EXPECT_THROW(q.layers[0].kv_b.gemm(1, nullptr, 1, nullptr, 1, 64, 64), Error);  // FP8 slice off a 128 block
}

// Opt-in FP8 lm_head (set_lm_head_format): 128×128 blocks of the values held before; logits equal the F32
// product with the dequantized lm_head up to the BF16 rounding of the final hidden states, and differ from the
// BF16 lm_head's by the FP8 quantization error only.
TEST(InferWeights, Fp8LmHeadOption) {
  const ModelWeights& mw = test::random_model("small");
  const std::vector<int32_t> tokens = test::random_tokens(24, mw.cfg.vocab_size, 9);
  const InferWeights bf = InferWeights::from(mw, DType::F8_E4M3);
  ASSERT_EQ(bf.lm_head.dtype, DType::BF16);
  InferWeights f8 = bf;
  f8.set_lm_head_format(DType::F8_E4M3);
  EXPECT_EQ(f8.lm_head.dtype, DType::F8_E4M3);
  EXPECT_EQ(bf.lm_head.dtype, DType::BF16);  // the copy it came from keeps its own lm_head
  EXPECT_LT(f8.lm_head.bytes(), 0.52 * bf.lm_head.bytes());
  EXPECT_LT(f8.resident_bytes(), bf.resident_bytes());

  // Held values: E4M3 of each 128×128 block (3 mantissa bits: ≤ 2⁻⁴ relative to the value, or below the
  // block's smallest normal step).
  const Tensor wb = bf.lm_head.to_f32(), w8 = f8.lm_head.to_f32();
  int64_t far = 0;
  for (int64_t i = 0; i < wb.numel(); ++i) {
    const float x = wb.f32()[i], y = w8.f32()[i];
    far += std::fabs(x - y) > std::ldexp(std::fabs(x), -4) + 1e-4f;
  }
  EXPECT_EQ(far, 0);
  // Converted 128 rows at a time: the same codes and scales as quantizing the whole matrix at once.
  const QMatrix whole = QMatrix::from_f32(wb, DType::F8_E4M3);
  EXPECT_EQ(0, std::memcmp(whole.data.data, f8.lm_head.data.data, whole.data.nbytes()));
  EXPECT_EQ(0, std::memcmp(whole.scale.data, f8.lm_head.scale.data, whole.scale.nbytes()));

  // F32 lm_head holding the same dequantized values: the FP8 kernel differs only by the activation rounding.
  InferWeights f32_head = f8;
  f32_head.set_lm_head_format(DType::F32);
  EXPECT_EQ(0, std::memcmp(w8.data, f32_head.lm_head.data.data, w8.nbytes()));
  const auto a = step_logits(f8, tokens), b = step_logits(f32_head, tokens), c = step_logits(bf, tokens);
  double d_kernel = 0, d_quant = 0, mx = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d_kernel = std::max(d_kernel, double(std::fabs(a[i] - b[i])));
    d_quant = std::max(d_quant, double(std::fabs(a[i] - c[i])));
    mx = std::max(mx, double(std::fabs(c[i])));
  }
  EXPECT_LT(d_kernel / mx, 1e-2);
  EXPECT_GT(d_quant, 0.0);  // it did change the product
  EXPECT_LT(d_quant / mx, 5e-2);
  std::printf("FP8 lm_head on small: max|d| / max|logit| %.2e vs BF16 lm_head, %.2e vs the F32 product\n",
              d_quant / mx, d_kernel / mx);

  EXPECT_THROW(f8.set_lm_head_format(DType::F16), Error);
  EXPECT_THROW(InferWeights{}.set_lm_head_format(DType::F8_E4M3), Error);
}
