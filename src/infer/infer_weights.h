// InferWeights: the parameters of the main layers as the inference kernels read them. Linear weights stay in
// their resident format — F32, BF16 (2 bytes/param) or FP8 E4M3 codes (1 byte/param) with their 128×128
// weight_scale_inv blocks — and are multiplied in that format by rowwise_gemm (no dequantized copy). Norms,
// the router and its bias are F32 (the router decides expert selection; it is small). The embedding and
// lm_head keep BF16 when the checkpoint has them in BF16 (FP8 checkpoints store them in BF16 too).
//
// Two derived per-layer matrices serve the absorbed MLA (decode.h): W^UK transposed per head, and kv_b as read
// by the o_h = ô_h W^UV_hᵀ products. They are BF16 when kv_b is BF16, F32 when it is F32; an FP8 kv_b keeps its
// codes for them and they are multiplied as the F32 values the codes stand for (QMatrix::fp8_as_f32: per-head
// row slices do not align with 128-row scale blocks, so the BF16 kernel's block promotion does not apply) —
// bitwise what a dequantized F32 copy gives, at a quarter of the bytes. W^UK transposed gets its own scale grid
// when every 128×128 block of it comes from one block of kv_b (else an F32 copy).
//
// Sources: a checkpoint directory (load: keeps the stored format, or converts to `want`), or F32 ModelWeights
// (from: F32 shares their storage; BF16 / FP8 give exactly what loading ModelWeights::save(dir, BF16 / F8_E4M3)
// gives: Linear weights rounded / quantized, the other tensors BF16-rounded, the router bias as is).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "infer/rowwise_gemm.h"
#include "model/weights.h"

namespace dsv3::infer {

// A Linear weight [N, K] in its resident format.
struct QMatrix {
  DType dtype = DType::F32;  // F32, BF16 or F8_E4M3
  int64_t N = 0, K = 0;
  Tensor data;   // [N, K] of dtype
  Tensor scale;  // F8_E4M3: weight_scale_inv [ceil(N/128), ceil(K/128)], F32
  // F8_E4M3: multiplied as the F32 values it stands for (GemmNT::fp8_as_f32: the F32 kernel's results, 1 byte
  // per weight read); row slices may then start anywhere.
  bool fp8_as_f32 = false;

  bool defined() const { return N > 0; }
  double bytes() const { return double(data.nbytes()) + (scale.defined() ? double(scale.nbytes()) : 0.0); }
  // C[M, n] (= or +=) A[M, K] · W[row0 : row0+n, :]ᵀ (n = -1: all rows). FP8 needs row0 % 128 == 0.
  GemmNT gemm(int64_t M, const float* A, int64_t lda, float* C, int64_t ldc, int64_t row0 = 0, int64_t n = -1) const;
  Tensor to_f32() const;  // the values it represents (exact)

  static QMatrix from_f32(const Tensor& w, DType dtype);  // F32: shares storage; BF16: rounded; FP8: quantized
};

struct InferMlp {
  QMatrix gate, up, down;
};

struct InferLayer {
  int64_t index = 0;
  bool moe = false;
  Tensor attn_norm, ffn_norm, q_a_norm, kv_a_norm;  // F32
  QMatrix q_a, q_b, q, kv_a, kv_b, o;
  QMatrix w_uk_t;  // [H·d_c, d_n]: per head W^UK_hᵀ (BF16, F32, or FP8 as F32)
  QMatrix kv_b_abs;  // kv_b for the W^UV_h slices (the same storage as kv_b; FP8: as F32)
  InferMlp mlp;      // dense layers
  QMatrix router;    // F32 [N_r, D]
  Tensor router_bias;
  std::vector<InferMlp> experts;
  bool has_shared = false;
  InferMlp shared;
};

struct InferWeights {
  ModelConfig cfg;
  DType dtype = DType::F32;  // format of the Linear weights
  Tensor embed;              // [V, D] F32 or BF16
  Tensor final_norm;         // [D] F32
  QMatrix lm_head;           // F32 or BF16
  std::vector<InferLayer> layers;  // main layers only

  // Keeps each tensor in its stored format (F16/F64 become F32) unless `want` says F32, BF16 or F8_E4M3.
  static InferWeights load(const std::string& dir, std::optional<DType> want = std::nullopt);
  static InferWeights from(const ModelWeights& w, DType dtype);
  // The F32 values `from(w, dtype)` holds, as ModelWeights (for references: the full forward on the same
  // rounded / quantized weights).
  static ModelWeights resident_values(const ModelWeights& w, DType dtype);

  // Re-holds lm_head in `dtype` (F32, BF16 or F8_E4M3 in 128×128 blocks) from the values it holds now. Opt-in
  // (`--lm-head fp8`): the V3 FP8 format keeps lm_head in BF16, where it is most of an FP8 decode step's bytes.
  void set_lm_head_format(DType dtype);

  double resident_bytes() const;  // every parameter as held (including the derived absorbed matrices)

};

}  // namespace dsv3::infer
