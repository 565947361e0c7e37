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
  const int64_t H = a.n_heads, dc = a.kv_lora_rank, dr = a.qk_rope_head_dim, G = latent_attention_head_group(H);
  const int64_t n_groups = H / G, row_elems = dc + dr, bs = cache.config().block_size;
  const int64_t n_items = a.n_rows * n_groups;
  const int64_t max_ctx = a.scratch_per_thread / G;
  DSV3_ASSERT(a.scratch_per_thread >= G);
  double work = 0;
  for (int64_t r = 0; r < a.n_rows; ++r) {
    DSV3_ASSERT(a.pos[r] < max_ctx);  // checked here: nothing may throw inside the parallel region
    work += double(a.pos[r] + 1);
  }
  const bool parallel = n_items > 1 && work * double(H * row_elems) > 1e6 && a.scratch_threads > 1;
  const int threads = int(std::max<int64_t>(1, a.scratch_threads));
#pragma omp parallel for schedule(dynamic, 1) if (parallel) num_threads(threads)
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
    // Softmax per head.
    for (int64_t h = 0; h < G; ++h) {
      float* s = scores + h * max_ctx;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < n_ctx; ++t) {
        s[t] *= a.scale;
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
