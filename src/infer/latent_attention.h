// Absorbed-MLA attention over the paged latent cache (V3_SPEC.md §4.2), one query row at a time:
//   score_{h,t} = σ · ([q̃_h ; q^R_h] · [c_t ; k^R_t])   for t = 0 .. pos (causal: the row sees its own position),
//   p_h = softmax_t(score_h),   ô_h = Σ_t p_{h,t} c_t  ∈ R^{d_c}.
// W^UK is already folded into q̃ and W^UV is applied by the caller after this sum.
//
// The query of a head is stored as [q̃_h ; q^R_h] (d_c + d_r values), the same layout as a cache row, so a
// score is one dot product of length d_c + d_r. Work is split into (row, group of heads) items; each item runs
// on one thread and walks its sequence's blocks in position order (scores: rowwise GEMM tiles of heads × keys;
// weighted sum: per 16-lane chunk of d_c, one FMA per head per key in key order), so a row's result depends
// only on its own query and its own cached prefix — not on the batch, the thread count or how the prefix
// was chunked.
// Two passes over the cache (scores, then the weighted sum), softmax in f32 with an f64 denominator like
// ops::causal_softmax.
#pragma once
#include <cstdint>

#include "infer/kv_cache.h"

namespace dsv3::infer {

struct LatentAttention {
  int64_t n_rows = 0;
  int64_t n_heads = 0, kv_lora_rank = 0, qk_rope_head_dim = 0;
  const float* q = nullptr;         // [q̃ ; q^R] per head: [n_rows, n_heads, d_c + d_r]
  float* out = nullptr;             // ô [n_rows, n_heads, d_c]
  const int32_t* seq = nullptr;     // [n_rows] cache sequence of each row
  const int64_t* pos = nullptr;     // [n_rows] position of each row (its row is already in the cache)
  const KvCache* cache = nullptr;
  int64_t layer = 0;
  float scale = 1.0f;               // σ
  float* scratch = nullptr;         // scratch_per_thread floats for each of scratch_threads threads
  int64_t scratch_per_thread = 0;   // ≥ latent_attention_scratch_floats(n_heads, max position + 1)
  int64_t scratch_threads = 1;      // threads the region may use
  // BF16 path only (latent_attention_bf16): the queries rounded to BF16, [n_rows, n_heads, stored_elems]
  // (KvCacheConfig::stored_elems() of the BF16 cache, zero-padded).
  const uint16_t* q_bf16 = nullptr;
};

// Heads handled together by one work item (shares each cache row load across them).
int64_t latent_attention_head_group(int64_t n_heads);
int64_t latent_attention_scratch_floats(int64_t n_heads, int64_t max_seq_len);
void latent_attention(const LatentAttention& a);

// The same attention on BF16 operands with F32 accumulation (vdpbf16ps), for prefill speed:
//   score_{h,t} = σ · dot_bf16(q_h, row_t) — q and the BF16 cache rows, one vdpbf16ps chain per
//     (head, key) over the padded row (lane l takes elements 32s + 2l, 32s + 2l + 1, s increasing), then the
//     simd::hsum lane tree;
//   softmax in 16-lane f32 vectors (max, a polynomial exp, the f32 lane sum by the simd::hsum tree), then each
//     probability rounded to BF16;
//   ô_h[j] = Σ_t p_{h,t} c_t[j] in F32 lanes, one vdpbf16ps per pair of keys (t, t+1), pairs in position
//     order (t even; a missing t+1 at the end of the prefix counts as zero).
// Every order depends only on the row's position, so the result is batch- and chunking-invariant like the
// F32 path. Needs a BF16 KV cache (KvCacheConfig::dtype), AVX512-BF16 (latent_attention_bf16_available()),
// d_c a multiple of 16 and an even block_size.
bool latent_attention_bf16_available();
void latent_attention_bf16(const LatentAttention& a);

}  // namespace dsv3::infer
