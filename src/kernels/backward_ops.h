// CPU operators for the backward pass (training): the transposed GEMM for weight gradients and the
// input/weight gradients of the row-wise forward ops in kernels/ops.h (RMSNorm, interleaved RoPE, SwiGLU
// activation, causal softmax), plus the fused softmax cross-entropy used by the losses.
// Shapes are row-major, PyTorch order; strides are row strides in elements. Every op that writes a gradient
// says whether it overwrites or accumulates. Checked by finite differences in tests/train/test_backward_fd.cpp
// and against PyTorch autograd through the whole model in tests/train/test_grad_reference.cpp.
#pragma once
#include <cstdint>

#include "kernels/ops.h"  // gemm_tn (the weight-gradient GEMM) lives with the other GEMMs

namespace dsv3::ops {

// RMSNorm y = w ⊙ x·r, r = (mean(x²) + eps)^-1/2, row by row over T rows of D.
// Input gradient: dx = r·(w ⊙ dy − x·r²·Σ_i(w_i dy_i x_i)/D). Overwrites dx, or adds to it if `accumulate`.
// dx may alias dy (the row is read completely before it is written).
void rmsnorm_backward_input(int64_t T, int64_t D, const float* x, int64_t x_stride, const float* w, const float* dy,
                            int64_t dy_stride, float eps, float* dx, int64_t dx_stride, bool accumulate);
// Weight gradient: dw[i] += Σ_t dy[t,i]·x[t,i]·r_t  (accumulates, summed in f64 per column).
void rmsnorm_backward_weight(int64_t T, int64_t D, const float* x, int64_t x_stride, const float* dy,
                             int64_t dy_stride, float eps, float* dw);

// Transpose of ops::rope_interleaved (same argument meaning), in place: each pair (2j, 2j+1) is rotated by
// −angle and scaled by cs_scale, i.e. dx = cs·R(−θ)·dy.
void rope_interleaved_backward(int64_t T, int64_t n_vec, int64_t d, float* dx, int64_t token_stride,
                               int64_t vec_stride, const int64_t* pos, const double* inv_freq, double cs_scale);

// out = silu(g) ⊙ u backward: dg = dout·u·σ(g)(1 + g(1 − σ(g))), du = dout·silu(g). gate/up [T,I] with row
// stride ld; dgate/dup [T,I] with row stride d_ld (they may alias gate/up: each element is read first).
void silu_mul_backward(int64_t T, int64_t I, const float* gate, const float* up, int64_t ld, const float* dout,
                       int64_t dout_ld, float* dgate, float* dup, int64_t d_ld);

// Softmax backward over rows of probabilities p [S_q, S_kv] (masked entries are 0): in place on dp,
// dp ← scale · p ⊙ (dp − Σ_t p_t dp_t). Causal masking needs no extra care (p = 0 gives 0).
void softmax_backward(int64_t S_q, int64_t S_kv, const float* p, int64_t p_ld, float* dp, int64_t dp_ld, float scale);

// Softmax cross-entropy over T rows of logits [T,V]; target[t] < 0 marks a row that takes no part.
// Returns Σ over valid rows of (logsumexp − logit[target]) in f64.
double cross_entropy_sum(int64_t T, int64_t V, const float* logits, int64_t ld, const int32_t* target);
// dlogits = scale · (softmax(logits) − onehot(target)) for valid rows, 0 for ignored rows (overwrites).
void cross_entropy_backward(int64_t T, int64_t V, const float* logits, int64_t ld, const int32_t* target, float scale,
                            float* dlogits, int64_t d_ld);

}  // namespace dsv3::ops
