// Paged latent KV cache with reference-counted prefix blocks (see kv_cache.h).
#include "infer/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "dsv3/error.h"

namespace dsv3::infer {

KvCacheConfig KvCacheConfig::for_model(const ModelConfig& c, int64_t token_budget, int64_t max_seqs,
                                       int64_t max_seq_len, int64_t block_size) {
  KvCacheConfig k;
  k.n_layers = c.num_hidden_layers;
  k.kv_lora_rank = c.kv_lora_rank;
  k.qk_rope_head_dim = c.qk_rope_head_dim;
  k.block_size = block_size;
  DSV3_CHECK(block_size > 0, "KV cache block size must be positive, got ", block_size);
  k.n_blocks = (token_budget + block_size - 1) / block_size;
  k.max_seqs = max_seqs;
  k.max_seq_len = max_seq_len;
  k.validate();
  return k;
}

void KvCacheConfig::validate() const {
  DSV3_CHECK(n_layers > 0 && kv_lora_rank > 0 && qk_rope_head_dim >= 0, "KV cache: bad model dimensions (layers ",
             n_layers, ", kv_lora_rank ", kv_lora_rank, ", qk_rope_head_dim ", qk_rope_head_dim, ")");
  DSV3_CHECK(block_size > 0, "KV cache: block_size must be positive, got ", block_size);
  DSV3_CHECK(n_blocks > 0, "KV cache: the token budget must be positive (n_blocks = ", n_blocks, ")");
  DSV3_CHECK(max_seqs > 0, "KV cache: max_seqs must be positive, got ", max_seqs);
  DSV3_CHECK(max_seq_len > 0, "KV cache: max_seq_len must be positive, got ", max_seq_len);
  DSV3_CHECK(n_blocks < (int64_t(1) << 31), "KV cache: too many blocks (", n_blocks, ")");
  DSV3_CHECK(dtype == DType::F32 || dtype == DType::BF16, "KV cache: rows are F32 or BF16, got ",
             dtype_name(dtype));
}

KvCache::KvCache(const KvCacheConfig& cfg) : cfg_(cfg) {
  cfg_.validate();
  if (cfg_.dtype == DType::F32) {
    storage_ = Tensor::zeros({cfg_.n_layers, cfg_.n_blocks, cfg_.block_size, cfg_.row_elems()}, DType::F32);
    base_ = storage_.f32();
  } else {
    bf16_ = Tensor::zeros({cfg_.n_layers, cfg_.n_blocks, cfg_.block_size, cfg_.stored_elems()}, DType::BF16);
    bf16_base_ = bf16_.ptr<uint16_t>();
  }
  seqs_.resize(size_t(cfg_.max_seqs));
  for (Seq& s : seqs_) {
    s.table.reserve(size_t(cfg_.max_blocks_per_seq()));
    s.hash.reserve(size_t(cfg_.max_blocks_per_seq()));
  }
  blocks_.resize(size_t(cfg_.n_blocks));
  free_.reserve(size_t(cfg_.n_blocks));
  for (int64_t b = cfg_.n_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));  // pop order 0, 1, 2, ...
  block_tokens_.assign(size_t(cfg_.n_blocks * cfg_.block_size), -1);
}

const KvCache::Seq& KvCache::seq_ref(int32_t seq) const {
  DSV3_ASSERT(seq >= 0 && seq < int32_t(seqs_.size()) && seqs_[size_t(seq)].in_use);
  return seqs_[size_t(seq)];
}
KvCache::Seq& KvCache::seq_ref(int32_t seq) {
  DSV3_ASSERT(seq >= 0 && seq < int32_t(seqs_.size()) && seqs_[size_t(seq)].in_use);
  return seqs_[size_t(seq)];
}

int32_t KvCache::acquire() {
  for (size_t i = 0; i < seqs_.size(); ++i)
    if (!seqs_[i].in_use) {
      seqs_[i].in_use = true;
      seqs_[i].length = 0;
      seqs_[i].table.clear();
      seqs_[i].hash.clear();
      return int32_t(i);
    }
  return -1;
}

void KvCache::release(int32_t seq) {
  Seq& s = seq_ref(seq);
  for (int32_t b : s.table) drop_ref(b);
  s.table.clear();
  s.hash.clear();
  s.length = 0;
  s.in_use = false;
}

int64_t KvCache::active_seqs() const {
  int64_t n = 0;
  for (const Seq& s : seqs_) n += s.in_use;
  return n;
}

int64_t KvCache::blocks_needed(int32_t seq, int64_t n_tokens) const {
  const Seq& s = seq_ref(seq);
  const int64_t want = (n_tokens + cfg_.block_size - 1) / cfg_.block_size;
  return std::max<int64_t>(0, want - int64_t(s.table.size()));
}

bool KvCache::reserve(int32_t seq, int64_t n_tokens) {
  DSV3_CHECK(n_tokens <= cfg_.max_seq_len, "KV cache: sequence needs ", n_tokens, " tokens, the limit is ",
             cfg_.max_seq_len);
  const int64_t need = blocks_needed(seq, n_tokens);
  if (need == 0) return true;
  if (need > free_blocks()) return false;
  Seq& s = seq_ref(seq);
  for (int64_t i = 0; i < need; ++i) {
    const int32_t b = take_block();
    blocks_[size_t(b)].ref = 1;
    s.table.push_back(b);
  }
  return true;
}

int64_t KvCache::capacity(int32_t seq) const { return int64_t(seq_ref(seq).table.size()) * cfg_.block_size; }
int64_t KvCache::length(int32_t seq) const { return seq_ref(seq).length; }

void KvCache::set_length(int32_t seq, int64_t n) {
  Seq& s = seq_ref(seq);
  DSV3_ASSERT(n >= 0 && n <= int64_t(s.table.size()) * cfg_.block_size);
  s.length = n;
}

float* KvCache::row(int32_t seq, int64_t layer, int64_t pos) {
  const Seq& s = seq_ref(seq);
  DSV3_ASSERT(pos >= 0 && pos < int64_t(s.table.size()) * cfg_.block_size && layer >= 0 && layer < cfg_.n_layers);
  return block_rows(layer, s.table[size_t(pos / cfg_.block_size)]) + (pos % cfg_.block_size) * cfg_.row_elems();
}

const float* KvCache::row(int32_t seq, int64_t layer, int64_t pos) const {
  return const_cast<KvCache*>(this)->row(seq, layer, pos);
}

uint16_t* KvCache::row_bf16(int32_t seq, int64_t layer, int64_t pos) {
  const Seq& s = seq_ref(seq);
  DSV3_ASSERT(bf16_base_ != nullptr && pos >= 0 && pos < int64_t(s.table.size()) * cfg_.block_size &&
              layer >= 0 && layer < cfg_.n_layers);
  return bf16_base_ + ((layer * cfg_.n_blocks + s.table[size_t(pos / cfg_.block_size)]) * cfg_.block_size +
                       pos % cfg_.block_size) * cfg_.stored_elems();
}

const uint16_t* KvCache::row_bf16(int32_t seq, int64_t layer, int64_t pos) const {
  return const_cast<KvCache*>(this)->row_bf16(seq, layer, pos);
}

std::span<const int32_t> KvCache::block_table(int32_t seq) const {
  const Seq& s = seq_ref(seq);
  return {s.table.data(), s.table.size()};
}

// ---- blocks ----

int32_t KvCache::take_block() {
  if (!free_.empty()) {
    const int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  DSV3_ASSERT(lru_head_ >= 0);
  const int32_t b = lru_head_;  // least recently released published block
  lru_remove(b);
  Block& blk = blocks_[size_t(b)];
  auto it = by_hash_.find(blk.hash);
  if (it != by_hash_.end() && it->second == b) by_hash_.erase(it);
  blk.published = false;
  blk.hash = blk.parent = 0;
  return b;
}

void KvCache::drop_ref(int32_t b) {
  Block& blk = blocks_[size_t(b)];
  DSV3_ASSERT(blk.ref > 0);
  if (--blk.ref > 0) return;
  if (blk.published) lru_push(b);
  else free_.push_back(b);
}

void KvCache::lru_push(int32_t b) {
  Block& blk = blocks_[size_t(b)];
  DSV3_ASSERT(!blk.in_lru);
  blk.in_lru = true;
  blk.lru_prev = lru_tail_;
  blk.lru_next = -1;
  if (lru_tail_ >= 0) blocks_[size_t(lru_tail_)].lru_next = b;
  else lru_head_ = b;
  lru_tail_ = b;
  ++lru_size_;
}

void KvCache::lru_remove(int32_t b) {
  Block& blk = blocks_[size_t(b)];
  DSV3_ASSERT(blk.in_lru);
  if (blk.lru_prev >= 0) blocks_[size_t(blk.lru_prev)].lru_next = blk.lru_next;
  else lru_head_ = blk.lru_next;
  if (blk.lru_next >= 0) blocks_[size_t(blk.lru_next)].lru_prev = blk.lru_prev;
  else lru_tail_ = blk.lru_prev;
  blk.in_lru = false;
  blk.lru_prev = blk.lru_next = -1;
  --lru_size_;
}

// ---- prefix reuse ----

uint64_t KvCache::chain_hash(uint64_t parent, const int32_t* tokens) const {
  // splitmix64-style mixing of the parent hash and each token; distinct from 0 (0 = "no parent").
  uint64_t h = parent ^ 0x9E3779B97F4A7C15ull;
  for (int64_t i = 0; i < cfg_.block_size; ++i) {
    h ^= uint64_t(uint32_t(tokens[i])) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
  }
  return h == 0 ? 1 : h;
}

int64_t KvCache::attach_prefix(int32_t seq, std::span<const int32_t> tokens, int64_t max_tokens) {
  Seq& s = seq_ref(seq);
  DSV3_ASSERT(s.table.empty() && s.length == 0);
  const int64_t bs = cfg_.block_size;
  const int64_t n_full = std::min<int64_t>(int64_t(tokens.size()), std::min(max_tokens, cfg_.max_seq_len)) / bs;
  uint64_t parent = 0;
  for (int64_t i = 0; i < n_full; ++i) {
    const int32_t* tk = tokens.data() + i * bs;
    const uint64_t h = chain_hash(parent, tk);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    const int32_t b = it->second;
    Block& blk = blocks_[size_t(b)];
    if (blk.parent != parent ||
        !std::equal(tk, tk + bs, block_tokens_.begin() + int64_t(b) * bs))
      break;  // hash collision: treat as a miss
    if (blk.in_lru) lru_remove(b);
    ++blk.ref;
    s.table.push_back(b);
    s.hash.push_back(h);
    parent = h;
  }
  s.length = int64_t(s.table.size()) * bs;
  prefix_hit_tokens_ += s.length;
  return s.length;
}

void KvCache::publish_prefix(int32_t seq, std::span<const int32_t> tokens) {
  Seq& s = seq_ref(seq);
  const int64_t bs = cfg_.block_size;
  DSV3_ASSERT(int64_t(tokens.size()) >= s.length);
  const int64_t n_full = s.length / bs;
  for (int64_t i = int64_t(s.hash.size()); i < n_full; ++i) {
    const uint64_t parent = i == 0 ? 0 : s.hash[size_t(i - 1)];
    const int32_t* tk = tokens.data() + i * bs;
    const uint64_t h = chain_hash(parent, tk);
    s.hash.push_back(h);
    if (by_hash_.count(h)) continue;  // the same content is already published under another block
    const int32_t b = s.table[size_t(i)];
    Block& blk = blocks_[size_t(b)];
    if (blk.published) continue;
    blk.published = true;
    blk.hash = h;
    blk.parent = parent;
    std::copy(tk, tk + bs, block_tokens_.begin() + int64_t(b) * bs);
    by_hash_.emplace(h, b);
  }
}

}  // namespace dsv3::infer
