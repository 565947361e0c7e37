// The paged latent KV cache (infer/kv_cache.h): size per token, block accounting, failure without side
// effects, row addressing, and prefix publish/attach/evict with reference counts.
#include <gtest/gtest.h>

#include <set>

#include "dsv3/error.h"
#include "infer/kv_cache.h"

using namespace dsv3;
using namespace dsv3::infer;

namespace {
KvCacheConfig small_cfg(int64_t n_blocks, int64_t max_seqs = 4, int64_t bs = 16) {
  KvCacheConfig k;
  k.n_layers = 3, k.kv_lora_rank = 8, k.qk_rope_head_dim = 4, k.block_size = bs, k.n_blocks = n_blocks;
  k.max_seqs = max_seqs, k.max_seq_len = 256;
  return k;
}
std::vector<int32_t> iota_tokens(int64_t n, int32_t start) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(start + int32_t(i));
  return t;
}
}  // namespace

TEST(KvCache, BytesPerTokenIsLatentPlusRopeKeyPerLayer) {
  ModelConfig c = ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/671b.json");
  KvCacheConfig k = KvCacheConfig::for_model(c, 4096, 4, 4096);
  EXPECT_EQ(k.row_elems(), 576);
  EXPECT_EQ(k.bytes_per_token(), (512 + 64) * 61 * 4);  // F32
  EXPECT_EQ(k.n_blocks, 256);
  EXPECT_EQ(k.total_bytes(), 4096 * (512 + 64) * 61 * 4);
  KvCacheConfig bad = k;
  bad.dtype = DType::F8_E4M3;
  EXPECT_THROW(bad.validate(), Error);
}

// BF16 rows: (kv_lora_rank + qk_rope_head_dim) × layers × 2 bytes per token (padded to a multiple of 32
// elements where that sum is not one), laid out per block like the F32 rows.
TEST(KvCache, Bf16Rows) {
  ModelConfig c = ModelConfig::load(std::string(DSV3_SOURCE_DIR) + "/configs/671b.json");
  KvCacheConfig k = KvCacheConfig::for_model(c, 4096, 4, 4096);
  k.dtype = DType::BF16;
  EXPECT_EQ(k.stored_elems(), 576);
  EXPECT_EQ(k.bytes_per_token(), (512 + 64) * 61 * 2);
  KvCacheConfig s;
  s.n_layers = 2, s.kv_lora_rank = 40, s.qk_rope_head_dim = 8, s.block_size = 4, s.n_blocks = 6, s.max_seqs = 2;
  s.max_seq_len = 12, s.dtype = DType::BF16;
  EXPECT_EQ(s.stored_elems(), 64);
  EXPECT_EQ(s.bytes_per_token(), 64 * 2 * 2);
  KvCache kv(s);
  EXPECT_TRUE(kv.is_bf16());
  const int32_t a = kv.acquire(), b = kv.acquire();
  ASSERT_TRUE(kv.reserve(a, 6) && kv.reserve(b, 9));
  for (int64_t p = 0; p < 9; ++p) {
    const int32_t blk = kv.block_table(b)[size_t(p / 4)];
    EXPECT_EQ(kv.row_bf16(b, 1, p), kv.block_rows_bf16(1, blk) + (p % 4) * 64);
  }
  EXPECT_NE(kv.row_bf16(a, 0, 0), kv.row_bf16(b, 0, 0));
  s.dtype = DType::F32;
  EXPECT_EQ(s.stored_elems(), 48);
  EXPECT_FALSE(KvCache(s).is_bf16());
}

TEST(KvCache, ReserveReleaseAndRows) {
  KvCache kv(small_cfg(5));
  const int32_t a = kv.acquire(), b = kv.acquire();
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_TRUE(kv.reserve(a, 17));  // 2 blocks
  EXPECT_EQ(kv.capacity(a), 32);
  EXPECT_EQ(kv.free_blocks(), 3);
  EXPECT_FALSE(kv.reserve(b, 4 * 16 + 1));  // needs 5
  EXPECT_EQ(kv.capacity(b), 0);             // nothing taken
  EXPECT_EQ(kv.free_blocks(), 3);
  EXPECT_TRUE(kv.reserve(b, 48));
  EXPECT_EQ(kv.free_blocks(), 0);
  EXPECT_THROW(kv.reserve(a, 257), Error);  // over max_seq_len
  // Rows: distinct per (seq, layer, pos), contiguous within a block.
  std::set<const float*> seen;
  for (int32_t s : {a, b})
    for (int64_t l = 0; l < 3; ++l)
      for (int64_t p = 0; p < 32; ++p) EXPECT_TRUE(seen.insert(kv.row(s, l, p)).second);
  EXPECT_EQ(kv.row(a, 1, 5) + 12, kv.row(a, 1, 6));
  EXPECT_EQ(kv.row(a, 2, 16), kv.block_rows(2, kv.block_table(a)[1]));
  kv.set_length(a, 20);
  EXPECT_EQ(kv.length(a), 20);
  kv.release(a);
  EXPECT_EQ(kv.free_blocks(), 2);
  EXPECT_EQ(kv.active_seqs(), 1);
  EXPECT_EQ(kv.acquire(), a);  // slot reused, empty
  EXPECT_EQ(kv.capacity(a), 0);
}

TEST(KvCache, SlotsRunOut) {
  KvCache kv(small_cfg(4, 2));
  EXPECT_GE(kv.acquire(), 0);
  EXPECT_GE(kv.acquire(), 0);
  EXPECT_EQ(kv.acquire(), -1);
}

TEST(KvCache, PrefixPublishAttachAndEvict) {
  KvCache kv(small_cfg(6));
  const std::vector<int32_t> t = iota_tokens(40, 100);
  const int32_t a = kv.acquire();
  ASSERT_TRUE(kv.reserve(a, 40));
  kv.row(a, 0, 0)[0] = 42.0f;
  kv.set_length(a, 40);
  kv.publish_prefix(a, t);  // 2 full blocks published, the third (8 tokens) stays private

  // Same first 35 tokens, then different: 32 tokens (2 blocks) reused, same block ids.
  std::vector<int32_t> u = t;
  u.resize(35);
  u.push_back(7);
  const int32_t b = kv.acquire();
  EXPECT_EQ(kv.attach_prefix(b, u, int64_t(u.size()) - 1), 32);
  EXPECT_EQ(kv.length(b), 32);
  EXPECT_EQ(kv.block_table(b)[0], kv.block_table(a)[0]);
  EXPECT_EQ(kv.block_table(b)[1], kv.block_table(a)[1]);
  EXPECT_EQ(kv.row(b, 0, 0)[0], 42.0f);
  EXPECT_EQ(kv.free_blocks(), 3);
  // max_tokens limits the reuse (the last prompt token must be recomputed).
  const int32_t c = kv.acquire();
  EXPECT_EQ(kv.attach_prefix(c, t, 31), 16);
  kv.release(c);
  // A different first block: no reuse.
  std::vector<int32_t> v = t;
  v[3] = 1;
  const int32_t d = kv.acquire();
  EXPECT_EQ(kv.attach_prefix(d, v, 40), 0);
  kv.release(d);

  kv.release(a);  // shared blocks still held by b; a's private third block is freed
  EXPECT_EQ(kv.free_blocks(), 4);
  EXPECT_EQ(kv.cached_blocks(), 0);
  kv.release(b);  // now the two published blocks are cached (reusable, evictable)
  EXPECT_EQ(kv.cached_blocks(), 2);
  EXPECT_EQ(kv.free_blocks(), 6);

  const int32_t e = kv.acquire();
  EXPECT_EQ(kv.attach_prefix(e, t, 40), 32);
  EXPECT_EQ(kv.cached_blocks(), 0);
  kv.release(e);
  EXPECT_EQ(kv.prefix_hits_tokens(), 32 + 16 + 32);

  // Filling the pool evicts the cached blocks; the prefix is gone afterwards.
  const int32_t f = kv.acquire();
  EXPECT_TRUE(kv.reserve(f, 6 * 16));
  EXPECT_EQ(kv.cached_blocks(), 0);
  kv.release(f);
  const int32_t g = kv.acquire();
  EXPECT_EQ(kv.attach_prefix(g, t, 40), 0);
}
