// BPE model: vocab/merges loading and the merge-rank encoder (see bpe.h).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <queue>

#include "dsv3/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode.h"

namespace dsv3::tok {

// Open-addressing hash table (a, b) -> (rank, merged id). Linear probing, power-of-two capacity, load <= 0.5.
struct BpeModel::MergeTable {
  static constexpr uint64_t kEmpty = ~0ull;
  std::vector<uint64_t> keys;
  std::vector<int32_t> ranks, ids;
  uint64_t mask = 0;
  int shift = 64;

  explicit MergeTable(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    keys.assign(cap, kEmpty);
    ranks.assign(cap, -1);
    ids.assign(cap, -1);
    mask = cap - 1;
    shift = 64 - __builtin_ctzll(cap);
  }
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t slot(uint64_t k) const { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> shift); }
  // Keeps the first (lowest-rank) entry when a pair repeats, like HF (later duplicates are ignored).
  void insert(int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t k = key(a, b);
    for (size_t s = slot(k);; s = (s + 1) & mask) {
      if (keys[s] == k) return;
      if (keys[s] == kEmpty) {
        keys[s] = k, ranks[s] = rank, ids[s] = id;
        return;
      }
    }
  }
  int32_t find(int32_t a, int32_t b, int32_t& id) const {
    uint64_t k = key(a, b);
    for (size_t s = slot(k);; s = (s + 1) & mask) {
      uint64_t ks = keys[s];
      if (ks == k) {
        id = ids[s];
        return ranks[s];
      }
      if (ks == kEmpty) return -1;
    }
  }
};

inline int32_t BpeModel::merge_rank(int32_t a, int32_t b, int32_t& merged) const {
  return merges_->find(a, b, merged);
}

namespace {

std::atomic<uint64_t> g_next_uid{1};

const nlohmann::json& field(const nlohmann::json& j, const char* key) {
  static const nlohmann::json null_json;
  auto it = j.find(key);
  return it == j.end() ? null_json : *it;
}

// ---- Per-thread memo of piece -> ids (direct-mapped: a colliding piece simply replaces the entry). ----
constexpr size_t kCacheEntries = 1 << 15;
constexpr size_t kCacheKeyBytes = 30;
constexpr size_t kCacheMaxIds = 8;
struct CacheEntry {
  uint64_t tag;  // 0 = empty
  uint8_t len;
  uint8_t n_ids;
  char key[kCacheKeyBytes];
  int32_t ids[kCacheMaxIds];
};
struct ThreadCache {
  uint64_t uid = 0;
  std::unique_ptr<CacheEntry[]> entries;
};
constexpr int kCacheSlots = 4;  // models served concurrently by one thread before eviction

CacheEntry* thread_cache(uint64_t uid) {
  thread_local ThreadCache caches[kCacheSlots];
  thread_local int next_victim = 0;
  for (auto& c : caches)
    if (c.uid == uid) return c.entries.get();
  ThreadCache& c = caches[next_victim];
  next_victim = (next_victim + 1) % kCacheSlots;
  if (!c.entries) c.entries = std::make_unique<CacheEntry[]>(kCacheEntries);
  for (size_t i = 0; i < kCacheEntries; ++i) c.entries[i].tag = 0;
  c.uid = uid;
  return c.entries.get();
}

inline uint64_t hash_piece(const char* p, size_t n, bool prefix) {
  uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull) ^ (prefix ? 0x5bd1e995ull : 0);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  std::memcpy(&w, p + i, n - i);
  h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 32;
  return h | 1;
}

}  // namespace

BpeModel BpeModel::from_json(const nlohmann::json& m) {
  DSV3_CHECK(m.is_object(), "tokenizer.json \"model\" must be an object");
  const auto& type = field(m, "type");
  DSV3_CHECK(type.is_null() || type == "BPE", "unsupported model type ", type.dump(),
             " (only BPE is supported)");
  const auto& vocab = field(m, "vocab");
  const auto& merges = field(m, "merges");
  DSV3_CHECK(vocab.is_object(), "BPE model needs a \"vocab\" object");
  DSV3_CHECK(merges.is_array(), "BPE model needs a \"merges\" array");
  const auto& bf = field(m, "byte_fallback");
  DSV3_CHECK(bf.is_null() || bf == false, "BPE byte_fallback=true is not supported");
  const auto& dropout = field(m, "dropout");
  DSV3_CHECK(dropout.is_null() || (dropout.is_number() && dropout.get<double>() == 0.0),
             "BPE dropout is not supported (it makes encoding random)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const auto& v = field(m, k);
    DSV3_CHECK(v.is_null() || v == "", "BPE ", k, " is not supported");
  }

  BpeModel b;
  b.uid_ = g_next_uid.fetch_add(1);
  b.vocab_.reserve(vocab.size() * 2);
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    DSV3_CHECK(it.value().is_number_integer(), "vocab entry \"", it.key(), "\" must map to an integer id");
    int64_t id = it.value().get<int64_t>();
    DSV3_CHECK(id >= 0 && id < (1ll << 30), "vocab id out of range for \"", it.key(), "\": ", id);
    b.vocab_[it.key()] = static_cast<int32_t>(id);
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }
  b.id_to_token_.assign(max_id + 1, std::string());
  b.id_present_.assign(max_id + 1, false);
  for (const auto& [tok, id] : b.vocab_) {
    DSV3_CHECK(!b.id_present_[id], "vocab id ", id, " is used by two tokens (\"", b.id_to_token_[id],
               "\", \"", tok, "\")");
    b.id_to_token_[id] = tok;
    b.id_present_[id] = true;
  }

  auto table = std::make_shared<MergeTable>(merges.size());
  b.merge_list_.reserve(merges.size());
  std::string joined;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& e = merges[r];
    std::string_view left, right;
    std::string tmp;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      DSV3_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, "merge ", r, " \"", s,
                 "\" must be two tokens separated by one space");
      left = std::string_view(s).substr(0, sp);
      right = std::string_view(s).substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      left = e[0].get_ref<const std::string&>();
      right = e[1].get_ref<const std::string&>();
    } else {
      DSV3_FAIL("merge ", r, " must be a \"a b\" string or a [\"a\", \"b\"] pair, got ", e.dump());
    }
    int32_t a = b.token_to_id(left), c = b.token_to_id(right);
    DSV3_CHECK(a >= 0, "merge ", r, ": token \"", left, "\" is not in the vocab");
    DSV3_CHECK(c >= 0, "merge ", r, ": token \"", right, "\" is not in the vocab");
    joined.assign(left);
    joined.append(right);
    int32_t id = b.token_to_id(joined);
    DSV3_CHECK(id >= 0, "merge ", r, ": merged token \"", joined, "\" is not in the vocab");
    table->insert(a, c, static_cast<int32_t>(r), id);
    b.merge_list_.emplace_back(a, c);
  }
  b.merges_ = std::move(table);
  b.n_merges_ = merges.size();

  const auto& unk = field(m, "unk_token");
  if (unk.is_string()) {
    b.unk_token_ = unk.get<std::string>();
    b.unk_id_ = b.token_to_id(b.unk_token_);
    DSV3_CHECK(b.unk_id_ >= 0, "BPE unk_token \"", b.unk_token_, "\" is not in the vocab");
  }
  b.fuse_unk_ = field(m, "fuse_unk").is_boolean() && field(m, "fuse_unk").get<bool>();
  b.ignore_merges_ = field(m, "ignore_merges").is_boolean() && field(m, "ignore_merges").get<bool>();
  for (int v = 0; v < 256; ++v) b.byte_ids_[v] = b.token_to_id(byte_to_unicode(static_cast<uint8_t>(v)));
  return b;
}

nlohmann::json BpeModel::to_json() const {
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t id = 0; id < id_to_token_.size(); ++id)
    if (id_present_[id]) vocab[id_to_token_[id]] = id;
  nlohmann::json merges = nlohmann::json::array();
  for (auto [a, c] : merge_list_) merges.push_back(id_to_token_[a] + " " + id_to_token_[c]);
  nlohmann::json j{{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", fuse_unk_},
                   {"byte_fallback", false},
                   {"vocab", vocab},
                   {"merges", merges}};
  if (unk_id_ >= 0) j["unk_token"] = unk_token_;
  if (ignore_merges_) j["ignore_merges"] = true;
  return j;
}

void BpeModel::set_byte_level(bool on) {
  byte_level_ = on;
}

int32_t BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

// One symbol per byte (byte-level) or per character. Symbols missing from the vocab become unk (fused
// into one when fuse_unk) or are dropped when there is no unk_token, as in HF.
void BpeModel::initial_symbols(Piece piece, std::vector<int32_t>& syms) const {
  syms.clear();
  bool pending_unk = false;
  auto add = [&](int32_t id) {
    if (id >= 0) {
      if (pending_unk) syms.push_back(unk_id_), pending_unk = false;
      syms.push_back(id);
    } else if (unk_id_ >= 0) {
      if (pending_unk && !fuse_unk_) syms.push_back(unk_id_);
      pending_unk = true;
    }
  };
  if (byte_level_) {
    if (piece.prefix_space) add(byte_ids_[' ']);
    for (unsigned char c : piece.text) add(byte_ids_[c]);
  } else {
    if (piece.prefix_space) add(token_to_id(" "));
    auto* p = reinterpret_cast<const unsigned char*>(piece.text.data());
    size_t i = 0, n = piece.text.size();
    while (i < n) {
      char32_t cp;
      int len = utf8_decode(p, n, i, cp);
      if (len == 0) len = 1;  // an invalid byte is a symbol of its own
      add(token_to_id(piece.text.substr(i, len)));
      i += len;
    }
  }
  if (pending_unk) syms.push_back(unk_id_);
}

// Pieces up to this many symbols use merge_small (a linear scan beats a heap there).
constexpr size_t kSmallPiece = 32;

// O(n^2) in the worst case but branch-light: pair ranks live in an array; after a merge only the two
// neighbouring ranks are recomputed.
void BpeModel::merge_small(std::vector<int32_t>& syms) const {
  int32_t ranks[kSmallPiece];  // ranks[i] = rank of (syms[i], syms[i+1]) or INT32_MAX
  int32_t merged[kSmallPiece];
  size_t n = syms.size();
  int32_t* s = syms.data();
  constexpr int32_t kNone = INT32_MAX;
  for (size_t i = 0; i + 1 < n; ++i) {
    int32_t r = merge_rank(s[i], s[i + 1], merged[i]);
    ranks[i] = r < 0 ? kNone : r;
  }
  while (n > 1) {
    size_t best = 0;
    int32_t best_rank = ranks[0];
    for (size_t i = 1; i + 1 < n; ++i)
      if (ranks[i] < best_rank) best_rank = ranks[i], best = i;
    if (best_rank == kNone) break;
    s[best] = merged[best];
    // Remove symbol best+1 and pair slot best+1.
    std::memmove(s + best + 1, s + best + 2, (n - best - 2) * sizeof(int32_t));
    if (best + 2 < n) {
      std::memmove(ranks + best + 1, ranks + best + 2, (n - best - 3) * sizeof(int32_t));
      std::memmove(merged + best + 1, merged + best + 2, (n - best - 3) * sizeof(int32_t));
    }
    --n;
    if (best + 1 < n) {
      int32_t r = merge_rank(s[best], s[best + 1], merged[best]);
      ranks[best] = r < 0 ? kNone : r;
    }
    if (best > 0) {
      int32_t r = merge_rank(s[best - 1], s[best], merged[best - 1]);
      ranks[best - 1] = r < 0 ? kNone : r;
    }
  }
  syms.resize(n);
}

// Heap of candidate merges keyed by (rank << 32 | position), symbols in a linked list over the original
// positions. A popped candidate is stale when its left symbol is gone, it has no right neighbour, or the
// pair there no longer has that rank (ranks identify merge rules uniquely, so an equal rank means the same
// pair). Equal ranks pop leftmost first, as in HF. Scratch buffers are per thread.
void BpeModel::merge_heap(std::vector<int32_t>& syms) const {
  const int32_t n = static_cast<int32_t>(syms.size());
  if (n < 2) return;
  thread_local std::vector<int32_t> next, prev;
  thread_local std::vector<uint64_t> heap;
  next.resize(n);
  prev.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  auto key = [](int32_t rank, int32_t pos) { return (uint64_t(uint32_t(rank)) << 32) | uint32_t(pos); };
  const auto cmp = std::greater<uint64_t>();
  int32_t m;
  for (int32_t i = 0; i + 1 < n; ++i) {
    int32_t r = merge_rank(syms[i], syms[i + 1], m);
    if (r >= 0) heap.push_back(key(r, i));
  }
  std::make_heap(heap.begin(), heap.end(), cmp);
  auto push = [&](int32_t i) {
    int32_t j = next[i];
    if (j < 0) return;
    int32_t r = merge_rank(syms[i], syms[j], m);
    if (r < 0) return;
    heap.push_back(key(r, i));
    std::push_heap(heap.begin(), heap.end(), cmp);
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    uint64_t top = heap.back();
    heap.pop_back();
    int32_t rank = static_cast<int32_t>(top >> 32), i = static_cast<int32_t>(top & 0xFFFFFFFFu);
    int32_t j = next[i];
    if (syms[i] < 0 || j < 0) continue;
    int32_t merged = -1;
    if (merge_rank(syms[i], syms[j], merged) != rank) continue;
    syms[i] = merged;
    syms[j] = -1;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) syms[w++] = syms[i];
  syms.resize(w);
}

void BpeModel::encode_piece(Piece piece, std::vector<int32_t>& out) const {
  const size_t len = piece.text.size();
  if (len == 0 && !piece.prefix_space) return;
  // Fast path: a single byte is a single symbol.
  if (byte_level_ && len == 1 && !piece.prefix_space && unk_id_ < 0) {
    int32_t id = byte_ids_[static_cast<unsigned char>(piece.text[0])];
    if (id >= 0) out.push_back(id);
    return;
  }
  CacheEntry* entry = nullptr;
  uint64_t tag = 0;
  if (len <= kCacheKeyBytes) {
    tag = hash_piece(piece.text.data(), len, piece.prefix_space);
    CacheEntry* cache = thread_cache(uid_);
    entry = &cache[tag & (kCacheEntries - 1)];
    if (entry->tag == tag && entry->len == len && std::memcmp(entry->key, piece.text.data(), len) == 0) {
      out.insert(out.end(), entry->ids, entry->ids + entry->n_ids);
      return;
    }
  }
  thread_local std::vector<int32_t> syms;
  if (ignore_merges_) {
    std::string mapped = byte_level_ ? bytes_to_unicode_string(piece.text) : std::string(piece.text);
    if (piece.prefix_space) mapped.insert(0, byte_level_ ? byte_to_unicode(' ') : std::string(" "));
    int32_t id = token_to_id(mapped);
    if (id >= 0) {
      syms.assign(1, id);
      goto done;
    }
  }
  initial_symbols(piece, syms);
  if (syms.size() <= kSmallPiece)
    merge_small(syms);
  else
    merge_heap(syms);
done:
  out.insert(out.end(), syms.begin(), syms.end());
  if (entry && syms.size() <= kCacheMaxIds) {
    entry->tag = tag;
    entry->len = static_cast<uint8_t>(len);
    std::memcpy(entry->key, piece.text.data(), len);
    entry->n_ids = static_cast<uint8_t>(syms.size());
    std::copy(syms.begin(), syms.end(), entry->ids);
  }
}

std::vector<std::vector<int32_t>> BpeModel::encode_pieces_naive(const std::vector<Piece>& pieces) const {
  // Ranks keyed by token strings, built from the merge list (independent of the id-keyed hash table).
  std::unordered_map<std::string, int32_t> ranks;
  for (size_t r = 0; r < merge_list_.size(); ++r) {
    auto [a, c] = merge_list_[r];
    ranks.emplace(id_to_token_[a] + '\x01' + id_to_token_[c], static_cast<int32_t>(r));
  }
  std::vector<std::vector<int32_t>> result;
  for (const Piece& piece : pieces) {
    std::vector<int32_t>& syms = result.emplace_back();
    if (ignore_merges_) {
      std::string mapped = byte_level_ ? bytes_to_unicode_string(piece.text) : std::string(piece.text);
      if (piece.prefix_space) mapped.insert(0, byte_level_ ? byte_to_unicode(' ') : std::string(" "));
      int32_t id = token_to_id(mapped);
      if (id >= 0) {
        syms.assign(1, id);
        continue;
      }
    }
    initial_symbols(piece, syms);
    for (;;) {
      int32_t best_rank = -1;
      size_t best = 0;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        auto it = ranks.find(id_to_token_[syms[i]] + '\x01' + id_to_token_[syms[i + 1]]);
        if (it != ranks.end() && (best_rank < 0 || it->second < best_rank)) best_rank = it->second, best = i;
      }
      if (best_rank < 0) break;
      syms[best] = token_to_id(id_to_token_[syms[best]] + id_to_token_[syms[best + 1]]);
      syms.erase(syms.begin() + best + 1);
    }
  }
  return result;
}

}  // namespace dsv3::tok
