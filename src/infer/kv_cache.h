// KvCache: the paged latent KV cache of absorbed MLA (V3_SPEC.md §4.2). Per token per main-model layer it
// holds exactly the normalised KV latent c_t (kv_lora_rank values) followed by the roped shared key k^R_t
// (qk_rope_head_dim values) — nothing else: 576 values for the 671B config, vs 40960 for materialised
// per-head K/V. The MTP layer's cache is a separate KvCache (one layer) when speculative decoding lands.
//
// Paging: storage is sized once from a token budget and cut into blocks of `block_size` tokens. A
// sequence owns a block table (block ids in position order, capacity fixed at ceil(max_seq_len/block_size)
// when the cache is built); blocks come from a free list. Layout: [layer][block][token in block][d_c + d_r],
// so a block id is valid in every layer and one block's rows are contiguous per layer.
//
// Prefix reuse: a full block whose tokens are known can be published under a hash of (all tokens up to and
// including it). A later sequence whose prompt starts with the same tokens attaches those blocks (reference
// counted, read-only: writes only ever go to positions ≥ length, which live in the sequence's own blocks).
// Released published blocks stay cached until their space is needed (least recently released evicted first).
// Exactness rests on the engine's row-independent kernels: a token's cached row is bitwise the same however
// its prompt was chunked or batched, so a reused block holds exactly what recomputing would have produced.
//
// Not thread-safe: the engine's owner thread is the only user. No allocation after construction except in
// the prefix-hash map.
#pragma once
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "dsv3/error.h"
#include "model/config.h"

namespace dsv3::infer {

struct KvCacheConfig {
  int64_t n_layers = 0;          // main-model layers
  int64_t kv_lora_rank = 0;      // d_c
  int64_t qk_rope_head_dim = 0;  // d_r
  int64_t block_size = 16;       // tokens per block
  int64_t n_blocks = 0;          // blocks in the pool
  int64_t max_seqs = 1;          // sequence slots
  int64_t max_seq_len = 0;       // tokens per sequence at most (its block-table length × block_size ≥ this)
  // Element type of the rows: F32 (read by the F32 latent attention), or BF16 (round to nearest even of the
  // F32 row, read by the BF16 latent attention of latent_attention.h; half the bytes).
  DType dtype = DType::F32;

  int64_t row_elems() const { return kv_lora_rank + qk_rope_head_dim; }
  // Elements a row occupies: row_elems(), and for BF16 rows that rounded up to a multiple of 32 (one vdpbf16ps
  // step; the padding is zero). 576 = 512 + 64 for the 671B config and 288 for `medium` need no padding.
  int64_t stored_elems() const { return dtype == DType::BF16 ? (row_elems() + 31) / 32 * 32 : row_elems(); }
  // (kv_lora_rank + qk_rope_head_dim) × n_layers × dtype size (with BF16 row padding, if any).
  int64_t bytes_per_token() const { return stored_elems() * int64_t(dtype_size(dtype)) * n_layers; }
  int64_t token_capacity() const { return n_blocks * block_size; }
  int64_t total_bytes() const { return token_capacity() * bytes_per_token(); }
  int64_t max_blocks_per_seq() const { return (max_seq_len + block_size - 1) / block_size; }

  // A cache for the main layers of `c` holding at least `token_budget` tokens in all.
  static KvCacheConfig for_model(const ModelConfig& c, int64_t token_budget, int64_t max_seqs, int64_t max_seq_len,
                                 int64_t block_size = 16);
  void validate() const;
};

class KvCache {
 public:
  explicit KvCache(const KvCacheConfig& cfg);
  const KvCacheConfig& config() const { return cfg_; }

  // ---- sequences ----
  int32_t acquire();                 // a free sequence slot (length 0, no blocks), or -1 if all are taken
  void release(int32_t seq);         // returns its blocks; the slot becomes free
  // Grows the block table so the sequence can hold n_tokens. False (and nothing changes) when the pool is out
  // of blocks; throws when n_tokens exceeds max_seq_len.
  bool reserve(int32_t seq, int64_t n_tokens);
  int64_t blocks_needed(int32_t seq, int64_t n_tokens) const;  // new blocks reserve() would take
  int64_t capacity(int32_t seq) const;  // tokens the sequence's blocks can hold
  int64_t length(int32_t seq) const;    // tokens whose rows are written (positions 0 .. length-1)
  void set_length(int32_t seq, int64_t n);
  bool in_use(int32_t seq) const { return seqs_[size_t(seq)].in_use; }

  // ---- rows ----
  // Row of (seq, layer, pos): [d_c] normalised latent then [d_r] roped k^R. pos < capacity(seq).
  // F32 caches: row() / block_rows(); BF16 caches: row_bf16() / block_rows_bf16() (stored_elems() per row).
  bool is_bf16() const { return cfg_.dtype == DType::BF16; }
  float* row(int32_t seq, int64_t layer, int64_t pos);
  const float* row(int32_t seq, int64_t layer, int64_t pos) const;
  // The block_size rows of one block in one layer: [block_size, d_c + d_r].
  const float* block_rows(int64_t layer, int32_t block) const {
    DSV3_ASSERT(base_ != nullptr);
    return base_ + ((layer * cfg_.n_blocks + block) * cfg_.block_size) * cfg_.row_elems();
  }
  float* block_rows(int64_t layer, int32_t block) {
    DSV3_ASSERT(base_ != nullptr);
    return base_ + ((layer * cfg_.n_blocks + block) * cfg_.block_size) * cfg_.row_elems();
  }
  uint16_t* row_bf16(int32_t seq, int64_t layer, int64_t pos);
  const uint16_t* row_bf16(int32_t seq, int64_t layer, int64_t pos) const;
  const uint16_t* block_rows_bf16(int64_t layer, int32_t block) const {
    DSV3_ASSERT(bf16_base_ != nullptr);
    return bf16_base_ + ((layer * cfg_.n_blocks + block) * cfg_.block_size) * cfg_.stored_elems();
  }
  std::span<const int32_t> block_table(int32_t seq) const;

  // ---- prefix reuse ----
  // For an empty sequence: attaches the longest run of published blocks that matches tokens[0 ..) and
  // covers at most max_tokens tokens; sets length to the tokens reused and returns it (a multiple of
  // block_size).
  int64_t attach_prefix(int32_t seq, std::span<const int32_t> tokens, int64_t max_tokens);
  // Publishes the sequence's full blocks; tokens[0 .. length) are the tokens written so far.
  void publish_prefix(int32_t seq, std::span<const int32_t> tokens);

  // ---- accounting ----
  int64_t free_blocks() const { return int64_t(free_.size()) + lru_size_; }  // allocatable now
  int64_t cached_blocks() const { return lru_size_; }  // published, unreferenced, reusable until evicted
  int64_t used_blocks() const { return cfg_.n_blocks - free_blocks(); }
  int64_t active_seqs() const;
  int64_t prefix_hits_tokens() const { return prefix_hit_tokens_; }  // tokens served by attach_prefix in all

 private:
  struct Seq {
    bool in_use = false;
    int64_t length = 0;
    std::vector<int32_t> table;   // capacity max_blocks_per_seq, reserved up front
    std::vector<uint64_t> hash;   // chain hash of each full block published or attached so far
  };
  struct Block {
    int32_t ref = 0;
    bool published = false;
    uint64_t hash = 0, parent = 0;
    int32_t lru_prev = -1, lru_next = -1;  // evictable list (published, ref 0)
    bool in_lru = false;
  };
  const Seq& seq_ref(int32_t seq) const;
  Seq& seq_ref(int32_t seq);
  int32_t take_block();  // from the free list, else evicts the least recently released cached block
  void drop_ref(int32_t b);
  void lru_push(int32_t b);
  void lru_remove(int32_t b);
  uint64_t chain_hash(uint64_t parent, const int32_t* tokens) const;

  KvCacheConfig cfg_;
  Tensor storage_;  // F32: [n_layers, n_blocks, block_size, d_c + d_r]
  float* base_ = nullptr;
  Tensor bf16_;  // BF16: [n_layers, n_blocks, block_size, stored_elems]
  uint16_t* bf16_base_ = nullptr;
  std::vector<Seq> seqs_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;         // stack of free block ids
  std::vector<int32_t> block_tokens_;  // [n_blocks, block_size] tokens of published blocks (hash check)
  std::unordered_map<uint64_t, int32_t> by_hash_;
  int32_t lru_head_ = -1, lru_tail_ = -1;
  int64_t lru_size_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace dsv3::infer
