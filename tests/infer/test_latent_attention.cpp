// latent_attention (infer/latent_attention.h) against a double-precision reference for every head-group width
// it uses (8, 4, 2, 1 heads per work item), a d_c that is not a multiple of 16 (the partial-chunk path) and
// positions that end mid-block; each row's output must not depend on the other rows of the call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/rng.h"
#include "dsv3/error.h"
#include "infer/latent_attention.h"
#include "infer/rowwise_gemm.h"

using namespace dsv3;
using namespace dsv3::infer;

TEST(LatentAttention, MatchesDoubleReferenceForEveryHeadGroup) {
  const int64_t dc = 40, dr = 8, E = dc + dr, max_len = 45;
  for (int64_t H : {16, 4, 6, 3}) {
    KvCacheConfig kc;
    kc.n_layers = 2, kc.kv_lora_rank = dc, kc.qk_rope_head_dim = dr, kc.block_size = 8, kc.max_seqs = 2;
    kc.max_seq_len = max_len, kc.n_blocks = 2 * ((max_len + 7) / 8);
    KvCache cache(kc);
    const int32_t s0 = cache.acquire(), s1 = cache.acquire();
    ASSERT_TRUE(cache.reserve(s0, max_len) && cache.reserve(s1, 30));
    for (int32_t s : {s0, s1})
      for (int64_t p = 0; p < (s == s0 ? max_len : 30); ++p)
        rng_fill_normal(cache.row(s, 1, p), uint64_t(E), 1.0f, 5, uint64_t(s * 1000 + p));

    // Rows: seq 0 at positions 44, 0, 17; seq 1 at 29, 7.
    const std::vector<int32_t> seq = {s0, s0, s0, s1, s1};
    const std::vector<int64_t> pos = {44, 0, 17, 29, 7};
    const int64_t R = int64_t(seq.size());
    std::vector<float> q(size_t(R * H * E)), out(size_t(R * H * dc));
    rng_fill_normal(q.data(), q.size(), 0.5f, 6, uint64_t(H));
    std::vector<float> scratch(size_t(4 * latent_attention_scratch_floats(H, max_len)));
    LatentAttention a;
    a.n_rows = R, a.n_heads = H, a.kv_lora_rank = dc, a.qk_rope_head_dim = dr;
    a.q = q.data(), a.out = out.data(), a.seq = seq.data(), a.pos = pos.data();
    a.cache = &cache, a.layer = 1, a.scale = 0.3f;
    a.scratch = scratch.data(), a.scratch_per_thread = latent_attention_scratch_floats(H, max_len);
    a.scratch_threads = 4;
    latent_attention(a);

    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const float* qh = q.data() + (r * H + h) * E;
        std::vector<double> p(size_t(pos[size_t(r)] + 1));
        double mx = -1e300, sum = 0;
        for (int64_t t = 0; t <= pos[size_t(r)]; ++t) {
          const float* c = cache.row(seq[size_t(r)], 1, t);
          double d = 0;
          for (int64_t k = 0; k < E; ++k) d += double(qh[k]) * double(c[k]);
          p[size_t(t)] = 0.3 * d;
          mx = std::max(mx, p[size_t(t)]);
        }
        for (double& v : p) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j < dc; ++j) {
          double o = 0;
          for (int64_t t = 0; t <= pos[size_t(r)]; ++t) o += p[size_t(t)] / sum * cache.row(seq[size_t(r)], 1, t)[j];
          EXPECT_NEAR(out[size_t((r * H + h) * dc + j)], o, 1e-5 + 1e-5 * std::fabs(o))
              << "H " << H << " row " << r << " head " << h << " j " << j;
        }
      }

    // One row alone gives the same bits as inside the batch.
    for (int64_t r = 0; r < R; ++r) {
      std::vector<float> one(size_t(H * dc));
      LatentAttention b = a;
      b.n_rows = 1, b.q = q.data() + r * H * E, b.out = one.data(), b.seq = seq.data() + r, b.pos = pos.data() + r;
      latent_attention(b);
      EXPECT_EQ(0, std::memcmp(one.data(), out.data() + r * H * dc, one.size() * sizeof(float))) << "H " << H;
    }
  }
}

// The BF16 path (latent_attention_bf16) against a double reference on the same BF16-rounded operands (q and the
// cache's BF16 rows): scores and softmax in double, then the probabilities rounded to BF16 like the kernel.
// The kernel's F32 score accumulation can flip the BF16 rounding of a probability by one unit (2^-8 relative),
// so each element may differ by at most 2^-8 · Σ_t p_t |c_t[j]| (plus 1e-5); an indexing or pairing error is O(1).
// Head groups 8, 4, 2, 1; d_c + d_r = 56 (padded to 64); odd and even prefix lengths ending mid-block.
TEST(LatentAttention, Bf16MatchesDoubleReferenceOnRoundedOperands) {
  if (!latent_attention_bf16_available()) GTEST_SKIP() << "no AVX512-BF16 in this build";
  const int64_t dc = 48, dr = 8, E = dc + dr, max_len = 45;
  for (int64_t H : {16, 4, 6, 3}) {
    KvCacheConfig kc;
    kc.n_layers = 2, kc.kv_lora_rank = dc, kc.qk_rope_head_dim = dr, kc.block_size = 8, kc.max_seqs = 2;
    kc.max_seq_len = max_len, kc.n_blocks = 2 * ((max_len + 7) / 8), kc.dtype = DType::BF16;
    const int64_t Ep = kc.stored_elems();
    ASSERT_EQ(Ep, 64);
    KvCache cache(kc);
    const int32_t s0 = cache.acquire(), s1 = cache.acquire();
    ASSERT_TRUE(cache.reserve(s0, max_len) && cache.reserve(s1, 30));
    for (int32_t s : {s0, s1})
      for (int64_t p = 0; p < (s == s0 ? max_len : 30); ++p) {
        std::vector<float> row(static_cast<size_t>(E));
        rng_fill_normal(row.data(), uint64_t(E), 1.0f, 5, uint64_t(s * 1000 + p));
        round_rows_bf16(1, E, row.data(), E, cache.row_bf16(s, 1, p));
      }
    const std::vector<int32_t> seq = {s0, s0, s0, s1, s1};
    const std::vector<int64_t> pos = {44, 0, 17, 29, 7};
    const int64_t R = int64_t(seq.size());
    std::vector<float> q(size_t(R * H * E)), out(size_t(R * H * dc));
    std::vector<uint16_t> qb(size_t(R * H * Ep));
    rng_fill_normal(q.data(), q.size(), 0.5f, 6, uint64_t(H));
    round_rows_bf16(R * H, E, q.data(), E, qb.data());
    std::vector<float> scratch(size_t(4 * latent_attention_scratch_floats(H, max_len)));
    LatentAttention a;
    a.n_rows = R, a.n_heads = H, a.kv_lora_rank = dc, a.qk_rope_head_dim = dr;
    a.q = q.data(), a.q_bf16 = qb.data(), a.out = out.data(), a.seq = seq.data(), a.pos = pos.data();
    a.cache = &cache, a.layer = 1, a.scale = 0.3f;
    a.scratch = scratch.data(), a.scratch_per_thread = latent_attention_scratch_floats(H, max_len);
    a.scratch_threads = 4;
    latent_attention_bf16(a);

    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const uint16_t* qh = qb.data() + (r * H + h) * Ep;
        const int64_t n = pos[size_t(r)] + 1;
        std::vector<double> p(static_cast<size_t>(n));
        double mx = -1e300, sum = 0;
        for (int64_t t = 0; t < n; ++t) {
          const uint16_t* c = cache.row_bf16(seq[size_t(r)], 1, t);
          double d = 0;
          for (int64_t k = 0; k < E; ++k) d += double(bf16_to_f32(qh[k])) * double(bf16_to_f32(c[k]));
          p[size_t(t)] = 0.3 * d;
          mx = std::max(mx, p[size_t(t)]);
        }
        for (double& v : p) sum += (v = std::exp(v - mx));
        for (int64_t j = 0; j < dc; ++j) {
          double o = 0, bound = 0;
          for (int64_t t = 0; t < n; ++t) {
            const double c = bf16_to_f32(cache.row_bf16(seq[size_t(r)], 1, t)[j]);
            o += double(bf16_to_f32(f32_to_bf16(float(p[size_t(t)] / sum)))) * c;
            bound += p[size_t(t)] / sum * std::fabs(c);
          }
          EXPECT_NEAR(out[size_t((r * H + h) * dc + j)], o, 1e-5 + bound / 256)
              << "H " << H << " row " << r << " head " << h << " j " << j;
        }
      }

    // One row alone gives the same bits as inside the batch.
    for (int64_t r = 0; r < R; ++r) {
      std::vector<float> one(size_t(H * dc));
      LatentAttention b = a;
      b.n_rows = 1, b.q_bf16 = qb.data() + r * H * Ep, b.out = one.data(), b.seq = seq.data() + r;
      b.pos = pos.data() + r, b.scratch_threads = 1;
      latent_attention_bf16(b);
      EXPECT_EQ(0, std::memcmp(one.data(), out.data() + r * H * dc, one.size() * sizeof(float))) << "H " << H;
    }
  }
}

// Each attention refuses the other's cache (the BF16 one reads BF16 rows, the F32 one F32 rows).
TEST(LatentAttention, EachPrecisionRejectsTheOtherCache) {
  if (!latent_attention_bf16_available()) GTEST_SKIP() << "no AVX512-BF16 in this build";
  for (DType dt : {DType::F32, DType::BF16}) {
  KvCacheConfig kc;
  kc.n_layers = 1, kc.kv_lora_rank = 16, kc.qk_rope_head_dim = 8, kc.block_size = 8, kc.max_seqs = 1;
  kc.max_seq_len = 8, kc.n_blocks = 1, kc.dtype = dt;
  KvCache cache(kc);
  const int32_t s = cache.acquire();
  ASSERT_TRUE(cache.reserve(s, 1));
  std::vector<float> q(32), out(16), scratch(8);
  std::vector<uint16_t> qb(32);
  const int32_t seq = s;
  const int64_t pos = 0;
  LatentAttention a;
  a.n_rows = 1, a.n_heads = 1, a.kv_lora_rank = 16, a.qk_rope_head_dim = 8;
  a.q = q.data(), a.q_bf16 = qb.data(), a.out = out.data(), a.seq = &seq, a.pos = &pos, a.cache = &cache;
  a.scratch = scratch.data(), a.scratch_per_thread = 8;
  if (dt == DType::F32)
    EXPECT_THROW(latent_attention_bf16(a), Error);
  else
    EXPECT_THROW(latent_attention(a), Error);
  }
}
