// Training Linear GEMMs in the run's precision (see linear.h).
#include "train/linear.h"

#include "dsv3/error.h"
#include "fp8/fp8_gemm.h"
#include "kernels/ops.h"

namespace dsv3::train {

Precision parse_precision(const std::string& s) {
  if (s == "f32") return Precision::kF32;
  if (s == "bf16") return Precision::kBF16;
  if (s == "fp8") return Precision::kFP8;
  DSV3_FAIL("unknown training precision '", s, "' (expected f32, bf16 or fp8)");
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kF32: return "f32";
    case Precision::kBF16: return "bf16";
    case Precision::kFP8: return "fp8";
  }
  return "?";
}

Linear& default_linear() {
  static Linear f32(Precision::kF32);
  return f32;
}

const uint16_t* Linear::bf16_weight(const Tensor& W1, const Tensor* W2) {
  DSV3_CHECK(W1.dtype == DType::F32 && W1.shape.size() == 2, "Linear: weight must be a 2-D F32 tensor, got ",
             shape_str(W1.shape));
  const int64_t K = W1.dim(1), N1 = W1.dim(0), N2 = W2 ? W2->dim(0) : 0;
  if (W2) DSV3_CHECK(W2->dim(1) == K, "Linear: paired weights ", shape_str(W1.shape), " and ", shape_str(W2->shape),
                     " differ in their input width");
  std::lock_guard<std::mutex> lock(mu_);
  Converted& c = (W2 ? pair_ : single_)[W1.data];
  if (c.generation != generation_) {
    c.data.resize(size_t((N1 + N2) * K));
    ops::to_bf16(N1, K, W1.f32(), K, c.data.data(), K);
    if (W2) ops::to_bf16(N2, K, W2->f32(), K, c.data.data() + N1 * K, K);
    c.generation = generation_;
  }
  return c.data.data();
}

namespace {

thread_local std::vector<uint16_t> t_x16, t_y16;

const uint16_t* act_bf16(std::vector<uint16_t>& buf, int64_t R, int64_t C, const float* src, int64_t ld) {
  buf.resize(size_t(R * C));
  ops::to_bf16(R, C, src, ld, buf.data(), C);
  return buf.data();
}

}  // namespace

void Linear::fprop(int64_t M, const float* X, int64_t ldx, const Tensor& W, float* Y, int64_t ldy, bool accumulate) {
  const int64_t N = W.dim(0), K = W.dim(1);
  if (M == 0) return;
  if (p_ == Precision::kF32) return ops::gemm_nt(M, N, K, X, ldx, W.f32(), K, Y, ldy, 1.0f, accumulate ? 1.0f : 0.0f);
  if (p_ == Precision::kFP8) return fp8::linear_fprop(M, N, K, X, ldx, W.f32(), K, Y, ldy, accumulate ? 1.0f : 0.0f);
  const uint16_t* w = bf16_weight(W, nullptr);
  const uint16_t* x = act_bf16(t_x16, M, K, X, ldx);
  ops::gemm_bf16(false, true, M, N, K, x, K, w, K, Y, ldy, accumulate ? 1.0f : 0.0f);
}

void Linear::fprop2(int64_t M, const float* X, int64_t ldx, const Tensor& W1, const Tensor& W2, float* Y,
                    int64_t ldy) {
  const int64_t N1 = W1.dim(0), N2 = W2.dim(0), K = W1.dim(1);
  if (M == 0) return;
  if (p_ == Precision::kF32) {
    ops::gemm_nt(M, N1, K, X, ldx, W1.f32(), K, Y, ldy);
    ops::gemm_nt(M, N2, K, X, ldx, W2.f32(), K, Y + N1, ldy);
    return;
  }
  if (p_ == Precision::kFP8) {
    fp8::linear_fprop(M, N1, K, X, ldx, W1.f32(), K, Y, ldy);
    fp8::linear_fprop(M, N2, K, X, ldx, W2.f32(), K, Y + N1, ldy);
    return;
  }
  const uint16_t* w = bf16_weight(W1, &W2);
  const uint16_t* x = act_bf16(t_x16, M, K, X, ldx);
  ops::gemm_bf16(false, true, M, N1 + N2, K, x, K, w, K, Y, ldy, 0.0f);
}

void Linear::dgrad(int64_t M, const float* dY, int64_t lddy, const Tensor& W, float* dX, int64_t lddx,
                   bool accumulate) {
  const int64_t N = W.dim(0), K = W.dim(1);
  if (M == 0) return;
  if (p_ == Precision::kF32)
    return ops::gemm_nn(M, K, N, dY, lddy, W.f32(), K, dX, lddx, 1.0f, accumulate ? 1.0f : 0.0f);
  if (p_ == Precision::kFP8)
    return fp8::linear_dgrad(M, N, K, dY, lddy, W.f32(), K, dX, lddx, accumulate ? 1.0f : 0.0f);
  const uint16_t* w = bf16_weight(W, nullptr);
  const uint16_t* dy = act_bf16(t_y16, M, N, dY, lddy);
  ops::gemm_bf16(false, false, M, K, N, dy, N, w, K, dX, lddx, accumulate ? 1.0f : 0.0f);
}

void Linear::dgrad2(int64_t M, const float* dY, int64_t lddy, const Tensor& W1, const Tensor& W2, float* dX,
                    int64_t lddx, bool accumulate) {
  const int64_t N1 = W1.dim(0), N2 = W2.dim(0), K = W1.dim(1);
  if (M == 0) return;
  if (p_ == Precision::kF32) {
    ops::gemm_nn(M, K, N1, dY, lddy, W1.f32(), K, dX, lddx, 1.0f, accumulate ? 1.0f : 0.0f);
    ops::gemm_nn(M, K, N2, dY + N1, lddy, W2.f32(), K, dX, lddx, 1.0f, 1.0f);
    return;
  }
  if (p_ == Precision::kFP8) {
    fp8::linear_dgrad(M, N1, K, dY, lddy, W1.f32(), K, dX, lddx, accumulate ? 1.0f : 0.0f);
    fp8::linear_dgrad(M, N2, K, dY + N1, lddy, W2.f32(), K, dX, lddx, 1.0f);
    return;
  }
  const uint16_t* w = bf16_weight(W1, &W2);
  const uint16_t* dy = act_bf16(t_y16, M, N1 + N2, dY, lddy);
  ops::gemm_bf16(false, false, M, K, N1 + N2, dy, N1 + N2, w, K, dX, lddx, accumulate ? 1.0f : 0.0f);
}

void Linear::wgrad(int64_t M, const float* dY, int64_t lddy, const float* X, int64_t ldx, Tensor& dW) {
  const int64_t N = dW.dim(0), K = dW.dim(1);
  if (M == 0) return;
  if (p_ == Precision::kF32) return ops::gemm_tn(N, K, M, dY, lddy, X, ldx, dW.f32(), K, 1.0f, 1.0f);
  if (p_ == Precision::kFP8) return fp8::linear_wgrad(M, N, K, dY, lddy, X, ldx, dW.f32(), K, 1.0f);
  const uint16_t* dy = act_bf16(t_y16, M, N, dY, lddy);
  const uint16_t* x = act_bf16(t_x16, M, K, X, ldx);
  ops::gemm_bf16(true, false, N, K, M, dy, N, x, K, dW.f32(), K, 1.0f);
}

void Linear::wgrad2(int64_t M, const float* dY, int64_t lddy, const float* X, int64_t ldx, Tensor& dW1, Tensor& dW2) {
  const int64_t N1 = dW1.dim(0), N2 = dW2.dim(0), K = dW1.dim(1);
  if (M == 0) return;
  if (p_ == Precision::kF32) {
    ops::gemm_tn(N1, K, M, dY, lddy, X, ldx, dW1.f32(), K, 1.0f, 1.0f);
    ops::gemm_tn(N2, K, M, dY + N1, lddy, X, ldx, dW2.f32(), K, 1.0f, 1.0f);
    return;
  }
  if (p_ == Precision::kFP8) {
    fp8::linear_wgrad(M, N1, K, dY, lddy, X, ldx, dW1.f32(), K, 1.0f);
    fp8::linear_wgrad(M, N2, K, dY + N1, lddy, X, ldx, dW2.f32(), K, 1.0f);
    return;
  }
  // One GEMM into a scratch [N1+N2, K], then added into the two gradients.
  thread_local std::vector<float> tmp;
  tmp.resize(size_t((N1 + N2) * K));
  const uint16_t* dy = act_bf16(t_y16, M, N1 + N2, dY, lddy);
  const uint16_t* x = act_bf16(t_x16, M, K, X, ldx);
  ops::gemm_bf16(true, false, N1 + N2, K, M, dy, N1 + N2, x, K, tmp.data(), K, 0.0f);
  float* g1 = dW1.f32();
  float* g2 = dW2.f32();
  const float* t = tmp.data();  // (tmp is thread_local: the OpenMP workers must not name it)
  const int64_t n1 = N1 * K, n2 = N2 * K;
#pragma omp parallel for schedule(static) if (n1 + n2 > 65536)
  for (int64_t i = 0; i < n1 + n2; ++i) {
    if (i < n1) g1[i] += t[i];
    else g2[i - n1] += t[i];
  }
}

}  // namespace dsv3::train
