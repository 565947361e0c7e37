// Absorbed-MLA attention over the paged latent cache (see latent_attention.h).
#include "infer/latent_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>

#include "dsv3/error.h"
#include "infer/rowwise_gemm.h"
#include "infer/simd.h"

namespace dsv3::infer {

namespace {

// ô_h = Σ_t p_{h,t} c_t for the G heads of one item, t increasing (one fused multiply-add per element per key),
// a 16-lane chunk of d_c at a time with the G heads' accumulators in registers (G is a template parameter so
// they stay there).
template <int G>
void weighted_sum(const KvCache& cache, int64_t layer, std::span<const int32_t> table, int64_t n_ctx,
                  const float* scores, int64_t max_ctx, int64_t dc, int64_t row_elems, float* out) {
  const int64_t bs = cache.config().block_size;
  for (int64_t j = 0; j < dc; j += simd::kLanes) {
    const int n = int(std::min<int64_t>(simd::kLanes, dc - j));
    simd::Vec acc[G];
    for (int h = 0; h < G; ++h) acc[h] = simd::zero();
    for (int64_t t0 = 0; t0 < n_ctx; t0 += bs) {
      const float* rows = cache.block_rows(layer, table[size_t(t0 / bs)]) + j;
      const int64_t nt = std::min(bs, n_ctx - t0);
      const float* p = scores + t0;
      if (n == simd::kLanes) {
        for (int64_t t = 0; t < nt; ++t) {
          const simd::Vec c = simd::load(rows + t * row_elems);
          for (int h = 0; h < G; ++h) acc[h] = simd::fma(simd::set1(p[h * max_ctx + t]), c, acc[h]);
        }
      } else {
        for (int64_t t = 0; t < nt; ++t) {
          const simd::Vec c = simd::load_partial(rows + t * row_elems, n);
          for (int h = 0; h < G; ++h) acc[h] = simd::fma(simd::set1(p[h * max_ctx + t]), c, acc[h]);
        }
      }
    }
    for (int h = 0; h < G; ++h) {
      if (n == simd::kLanes) simd::store(out + h * dc + j, acc[h]);
      else simd::store_partial(out + h * dc + j, acc[h], n);
    }
  }
}

// Softmax of each of the `heads` score rows (stride ld, n_ctx used), after scaling by σ: f32 max and exp, f64
// denominator (like ops::causal_softmax).
void softmax_rows(float* scores, int64_t heads, int64_t ld, int64_t n_ctx, float scale) {
  for (int64_t h = 0; h < heads; ++h) {
    float* s = scores + h * ld;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n_ctx; ++t) {
      s[t] *= scale;
      mx = std::max(mx, s[t]);
    }
    double sum = 0.0;
    for (int64_t t = 0; t < n_ctx; ++t) {
      s[t] = std::exp(s[t] - mx);
      sum += s[t];
    }
    const float inv = float(1.0 / sum);
    for (int64_t t = 0; t < n_ctx; ++t) s[t] *= inv;
  }
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__)

inline __m512 dpbf(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

// out[r * ldo + c] = dot_bf16(q_r, k_c) for R heads × C keys over Kp (a multiple of 32) elements.
template <int R, int C>
void score_tile(int64_t Kp, const uint16_t* q, int64_t ldq, const uint16_t* k, int64_t ldk, float* out,
                int64_t ldo) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t e = 0; e < Kp; e += 32) {
    __m512i a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_loadu_si512(q + r * ldq + e);
    for (int c = 0; c < C; ++c) {
      const __m512i b = _mm512_loadu_si512(k + c * ldk + e);
      for (int r = 0; r < R; ++r) acc[r][c] = dpbf(acc[r][c], a[r], b);
    }
  }
  float sums[R * C];
  if constexpr (R * C == 16) {
    simd::Vec all[16];
    for (int i = 0; i < 16; ++i) all[i] = {acc[i / C][i % C]};
    simd::hsum16(all, sums);  // bitwise the same as simd::hsum of each
  } else {
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sums[r * C + c] = simd::hsum({acc[r][c]});
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[r * ldo + c] = sums[r * C + c];
}

// Scores of R heads against the nt keys of one block.
template <int R>
void score_block(int64_t Kp, const uint16_t* q, const uint16_t* keys, int64_t nt, float* out, int64_t ldo) {
  int64_t c = 0;
  for (; c + 4 <= nt; c += 4) score_tile<R, 4>(Kp, q, Kp, keys + c * Kp, Kp, out + c, ldo);
  for (; c < nt; ++c) score_tile<R, 1>(Kp, q, Kp, keys + c * Kp, Kp, out + c, ldo);
}

// e^x for x ≤ 0 (softmax arguments), 16 lanes: x clamped to ≥ −104 (e^x underflows to 0 there), then
// e^x = 2^k · e^f with k = round(x / ln 2) and f = x − k ln 2 (ln 2 split in two parts, |f| ≤ ln 2 / 2), e^f by
// Horner on its Taylor series to f^7 / 7! (truncation below 1e-8 relative). Full-mask instruction forms only
// (GCC 12 warns about the plain ones' undefined pass-through operand once inlined).
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_mask_max_ps(x, 0xFFFF, x, _mm512_set1_ps(-104.0f));
  const __m512 k = _mm512_mask_roundscale_ps(x, 0xFFFF, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  f = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), f);
  constexpr float kInvFact[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
  __m512 e = _mm512_set1_ps(kInvFact[7]);
  for (int i = 6; i >= 0; --i) e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(kInvFact[i]));
  return _mm512_mask_scalef_ps(e, 0xFFFF, e, k);
}

// Softmax of each head's scores (scaled by σ) in 16-lane vectors, the probabilities rounded to bf16 (round to
// nearest even, vcvtne2ps2bf16) and packed in place as pairs: word i of row h = p[2i] | p[2i+1] << 16, with
// p[t] = 0 for t ≥ n_ctx. Max, exp (exp_nonpositive) and the f32 lane sum of the exponentials depend only
// on n_ctx. Word i overwrites float i ≤ 2i only after floats 2i, 2i+1 were read.
void softmax_pack_bf16(float* scores, int64_t heads, int64_t ld, int64_t n_ctx, float scale) {
  const __m512 sc = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  auto mask = [&](int64_t t) { return __mmask16(n_ctx - t >= 16 ? 0xFFFF : (1u << (n_ctx - t)) - 1u); };
  for (int64_t h = 0; h < heads; ++h) {
    float* s = scores + h * ld;
    __m512 mx = ninf;
    for (int64_t t = 0; t < n_ctx; t += 16) {
      const __mmask16 m = mask(t);
      const __m512 x = _mm512_mul_ps(_mm512_mask_loadu_ps(ninf, m, s + t), sc);
      _mm512_mask_storeu_ps(s + t, m, x);
      mx = _mm512_mask_max_ps(mx, 0xFFFF, mx, x);
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, mx);
    float m_all = lanes[0];
    for (int l = 1; l < 16; ++l) m_all = std::max(m_all, lanes[l]);
    const __m512 vmx = _mm512_set1_ps(m_all);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t t = 0; t < n_ctx; t += 16) {
      const __mmask16 m = mask(t);
      const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + t), vmx);
      const __m512 e = _mm512_maskz_mov_ps(m, exp_nonpositive(x));
      _mm512_mask_storeu_ps(s + t, m, e);
      sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / simd::hsum({sum}));
    auto* words = reinterpret_cast<uint32_t*>(s);
    for (int64_t t = 0; t < n_ctx; t += 32) {
      const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(t), s + t), inv);
      const __m512 hi = t + 16 < n_ctx ? _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(t + 16), s + t + 16), inv)
                                       : _mm512_setzero_ps();
      const __m512i packed = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);  // bf16 of lo in the low 16, hi in the high 16
      const int64_t n_words = std::min<int64_t>(16, (n_ctx - t + 1) / 2);
      _mm512_mask_storeu_epi32(words + t / 2, __mmask16(n_words >= 16 ? 0xFFFF : (1u << n_words) - 1u), packed);
    }
  }
}

// ô_h = Σ_t p_{h,t} c_t for the G heads of one item from the packed pairs, 16 columns of d_c at a time.
template <int G>
void weighted_sum_bf16(const KvCache& cache, int64_t layer, std::span<const int32_t> table, int64_t n_ctx,
                       const float* packed, int64_t ld, int64_t dc, float* out) {
  const int64_t bs = cache.config().block_size, E = cache.config().stored_elems();
  const auto* words = reinterpret_cast<const uint32_t*>(packed);
  for (int64_t j = 0; j < dc; j += 16) {
    __m512 acc[G];
    for (int h = 0; h < G; ++h) acc[h] = _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < n_ctx; t0 += bs) {
      const uint16_t* rows = cache.block_rows_bf16(layer, table[size_t(t0 / bs)]) + j;
      const int64_t nt = std::min(bs, n_ctx - t0);
      const uint32_t* w = words + t0 / 2;
      auto widen = [&](int64_t t) {  // 16 bf16 of row t → the low halves of 16 32-bit lanes
        return _mm512_maskz_cvtepu16_epi32(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + t * E)));
      };
      for (int64_t t = 0; t < nt; t += 2) {
        const __m512i c0 = widen(t), c1 = t + 1 < nt ? widen(t + 1) : _mm512_setzero_si512();
        const __m512i b = _mm512_or_si512(c0, _mm512_maskz_slli_epi32(0xFFFF, c1, 16));
        for (int h = 0; h < G; ++h) acc[h] = dpbf(acc[h], _mm512_set1_epi32(int(w[h * ld + t / 2])), b);
      }
    }
    for (int h = 0; h < G; ++h) _mm512_storeu_ps(out + h * dc + j, acc[h]);
  }
}

#endif

// How one call splits: a work item per (row, head group), each thread's scratch holding the group's G score
// rows of max_ctx; a fork only when the scores cover more than ~1e6 multiply-adds. Every row's position is
// checked against the scratch here (nothing may throw inside the parallel region).
struct WorkSplit {
  int64_t G = 1, n_groups = 0, n_items = 0, max_ctx = 0;
  bool parallel = false;
  int threads = 1;
};
WorkSplit split_work(const LatentAttention& a, int64_t elems_per_key) {
  WorkSplit s;
  s.G = latent_attention_head_group(a.n_heads);
  s.n_groups = a.n_heads / s.G;
  s.n_items = a.n_rows * s.n_groups;
  s.max_ctx = a.scratch_per_thread / s.G;
  DSV3_ASSERT(a.scratch_per_thread >= s.G);
  double work = 0;
  for (int64_t r = 0; r < a.n_rows; ++r) {
    DSV3_ASSERT(a.pos[r] < s.max_ctx);
    work += double(a.pos[r] + 1);
  }
  s.parallel = s.n_items > 1 && work * double(a.n_heads * elems_per_key) > 1e6 && a.scratch_threads > 1;
  s.threads = int(std::max<int64_t>(1, a.scratch_threads));
  return s;
}

}  // namespace

int64_t latent_attention_head_group(int64_t n_heads) {
  for (int64_t g : {8, 4, 2})  // at most 8: pass 2 keeps one accumulator register per head
    if (n_heads % g == 0) return g;
  return 1;
}

int64_t latent_attention_scratch_floats(int64_t n_heads, int64_t max_seq_len) {
  return latent_attention_head_group(n_heads) * max_seq_len;
}

void latent_attention(const LatentAttention& a) {
  const KvCache& cache = *a.cache;
  const int64_t H = a.n_heads, dc = a.kv_lora_rank, dr = a.qk_rope_head_dim;
  const int64_t row_elems = dc + dr, bs = cache.config().block_size;
  DSV3_CHECK(!cache.is_bf16(), "F32 latent attention needs a KV cache with F32 rows (this one holds BF16)");
  const WorkSplit ws = split_work(a, row_elems);
  const int64_t G = ws.G, n_groups = ws.n_groups, n_items = ws.n_items, max_ctx = ws.max_ctx;
#pragma omp parallel for schedule(dynamic, 1) if (ws.parallel) num_threads(ws.threads)
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t r = item / n_groups, h0 = (item % n_groups) * G;
    const int64_t n_ctx = a.pos[r] + 1;
    float* scores = a.scratch + int64_t(omp_get_thread_num()) * a.scratch_per_thread;  // [G, max_ctx]
    const std::span<const int32_t> table = cache.block_table(a.seq[r]);
    const float* q = a.q + (r * H + h0) * row_elems;

    // Pass 1: scores, one block of keys at a time: [G, nt] = [q̃ ; q^R] · [c ; k^R]ᵀ.
    for (int64_t t0 = 0; t0 < n_ctx; t0 += bs) {
      GemmNT g;
      g.M = G, g.N = std::min(bs, n_ctx - t0), g.K = row_elems;
      g.A = q, g.lda = row_elems, g.B = cache.block_rows(a.layer, table[size_t(t0 / bs)]), g.ldb = row_elems;
      g.C = scores + t0, g.ldc = max_ctx;
      gemm_nt_rowwise_serial(g);
    }
    softmax_rows(scores, G, max_ctx, n_ctx, a.scale);
    // Pass 2: ô_h = Σ_t p_{h,t} c_t.
    float* out = a.out + (r * H + h0) * dc;
    switch (G) {
      case 8: weighted_sum<8>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, row_elems, out); break;
      case 4: weighted_sum<4>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, row_elems, out); break;
      case 2: weighted_sum<2>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, row_elems, out); break;
      default: weighted_sum<1>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, row_elems, out); break;
    }
  }
}

}  // namespace dsv3::infer

namespace dsv3::infer {

bool latent_attention_bf16_available() {
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
  return true;
#else
  return false;
#endif
}

void latent_attention_bf16(const LatentAttention& a) {
  const KvCache& cache = *a.cache;
  const int64_t H = a.n_heads, dc = a.kv_lora_rank;
  const int64_t bs = cache.config().block_size, Kp = cache.config().stored_elems();
  DSV3_CHECK(latent_attention_bf16_available(), "BF16 latent attention needs a build with AVX512-BF16");
  DSV3_CHECK(cache.is_bf16(), "BF16 latent attention needs a KV cache with BF16 rows");
  DSV3_CHECK(dc % 16 == 0 && bs % 2 == 0, "BF16 latent attention needs kv_lora_rank % 16 == 0 (got ", dc,
             ") and an even KV block size (got ", bs, ")");
  DSV3_ASSERT(a.q_bf16 != nullptr);
  const WorkSplit ws = split_work(a, Kp);
  const int64_t G = ws.G, n_groups = ws.n_groups, n_items = ws.n_items, max_ctx = ws.max_ctx;
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#pragma omp parallel for schedule(dynamic, 1) if (ws.parallel) num_threads(ws.threads)
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t r = item / n_groups, h0 = (item % n_groups) * G;
    const int64_t n_ctx = a.pos[r] + 1;
    float* scores = a.scratch + int64_t(omp_get_thread_num()) * a.scratch_per_thread;  // [G, max_ctx]
    const std::span<const int32_t> table = cache.block_table(a.seq[r]);
    const uint16_t* q = a.q_bf16 + (r * H + h0) * Kp;
    for (int64_t t0 = 0; t0 < n_ctx; t0 += bs) {
      const uint16_t* keys = cache.block_rows_bf16(a.layer, table[size_t(t0 / bs)]);
      const int64_t nt = std::min(bs, n_ctx - t0);
      int64_t h = 0;
      for (; h + 4 <= G; h += 4) score_block<4>(Kp, q + h * Kp, keys, nt, scores + h * max_ctx + t0, max_ctx);
      for (; h + 2 <= G; h += 2) score_block<2>(Kp, q + h * Kp, keys, nt, scores + h * max_ctx + t0, max_ctx);
      for (; h < G; ++h) score_block<1>(Kp, q + h * Kp, keys, nt, scores + h * max_ctx + t0, max_ctx);
    }
    softmax_pack_bf16(scores, G, max_ctx, n_ctx, a.scale);
    float* out = a.out + (r * H + h0) * dc;
    switch (G) {
      case 8: weighted_sum_bf16<8>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, out); break;
      case 4: weighted_sum_bf16<4>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, out); break;
      case 2: weighted_sum_bf16<2>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, out); break;
      default: weighted_sum_bf16<1>(cache, a.layer, table, n_ctx, scores, max_ctx, dc, out); break;
    }
  }
#else
  (void)H, (void)dc, (void)G, (void)n_groups, (void)n_items, (void)max_ctx;
#endif
}

}  // namespace dsv3::infer
