// The one dispatch point of every training Linear GEMM (attention projections, dense MLP, shared and routed
// experts, MTP eh_proj, lm_head): Fprop Y = X·Wᵀ, Dgrad dX = dY·W, Wgrad dW += dYᵀ·X, in the run's precision.
//
//   kF32   oneDNN sgemm on the F32 operands (what the gradient-reference tests pin to PyTorch).
//   kBF16  BF16 operands (RNE), F32 accumulation, F32 outputs and gradients; the F32 master weights are converted
//          once per forward/backward pass (a cache keyed by the weight's storage, see begin_pass) and the
//          activations once per GEMM call.
//   kFP8   the V3 recipe (fp8/fp8_gemm.h): E4M3 operands, activations per 1×128 tile, weights per 128×128 block,
//          Wgrad operands per 128×1 tile along the tokens, FP32 accumulation promoted per 128-wide K block;
//          emulated (quantized inside each call). TrainModel keeps lm_head in BF16 under kFP8.
// Not through here (they stay F32 whatever the precision): the router, the attention core (scores and P·V),
// norms, softmax, embedding.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace dsv3::train {

enum class Precision { kF32, kBF16, kFP8 };
// "f32" | "bf16" | "fp8" → Precision; anything else is an error that lists the choices.
Precision parse_precision(const std::string& s);
const char* precision_name(Precision p);

class Linear {
 public:
  explicit Linear(Precision p = Precision::kF32) : p_(p) {}
  Linear(const Linear&) = delete;
  Linear& operator=(const Linear&) = delete;

  Precision precision() const { return p_; }
  // The weights may have changed (optimizer step, checkpoint restore): converted copies are stale from here on.
  // TrainModel calls it at the start of every forward (the weights stay fixed until that pass's backward ends).
  void begin_pass() { ++generation_; }

  // Y[M,N] = X[M,K]·Wᵀ (+ Y when accumulate), W [N, K].
  void fprop(int64_t M, const float* X, int64_t ldx, const Tensor& W, float* Y, int64_t ldy,
             bool accumulate = false);
  // Y[M, N1+N2] = X·[W1; W2]ᵀ: two weights with the same input (SwiGLU gate | up) in one GEMM.
  void fprop2(int64_t M, const float* X, int64_t ldx, const Tensor& W1, const Tensor& W2, float* Y, int64_t ldy);
  // dX[M,K] = dY[M,N]·W (+ dX when accumulate), W [N, K].
  void dgrad(int64_t M, const float* dY, int64_t lddy, const Tensor& W, float* dX, int64_t lddx,
             bool accumulate = false);
  // dX[M,K] = dY[M, N1+N2]·[W1; W2] (+ dX when accumulate).
  void dgrad2(int64_t M, const float* dY, int64_t lddy, const Tensor& W1, const Tensor& W2, float* dX, int64_t lddx,
              bool accumulate = false);
  // dW[N,K] += dY[M,N]ᵀ·X[M,K].
  void wgrad(int64_t M, const float* dY, int64_t lddy, const float* X, int64_t ldx, Tensor& dW);
  // [dW1; dW2] += dY[M, N1+N2]ᵀ·X[M,K]: the two weights of fprop2 in one GEMM.
  void wgrad2(int64_t M, const float* dY, int64_t lddy, const float* X, int64_t ldx, Tensor& dW1, Tensor& dW2);

 private:
  struct Converted {
    uint64_t generation = 0;
    std::vector<uint16_t> data;
  };
  // BF16 copy of W (or of [W1; W2]) for the current generation.
  const uint16_t* bf16_weight(const Tensor& W1, const Tensor* W2);

  Precision p_;
  uint64_t generation_ = 1;
  std::mutex mu_;
  std::unordered_map<const void*, Converted> single_, pair_;  // keyed by the (first) weight's storage
};

// The F32 Linear used where no engine is given (tests that drive the blocks directly).
Linear& default_linear();

}  // namespace dsv3::train
