// Byte-level BPE training (see bpe_trainer.h for the algorithm and the vocabulary layout).
#include "tokenizer/bpe_trainer.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <unordered_map>

#include "dsv3/error.h"
#include "io/atomic_file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/fim.h"

namespace dsv3::tok {

namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// 64-bit hash of a short byte string: 8-byte words folded with multiply-rotate, splitmix64 finalizer.
// Fixed constants, so table layout (and nothing else) depends on it.
uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t(s.size()) * 0xC2B2AE3D27D4EB4Full);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t k;
    std::memcpy(&k, s.data() + i, 8);
    h ^= k * 0xBF58476D1CE4E5B9ull;
    h = ((h << 31) | (h >> 33)) * 0x94D049BB133111EBull;
  }
  uint64_t tail = 0;
  for (size_t j = 0; i + j < s.size(); ++j) tail |= uint64_t(uint8_t(s[i + j])) << (8 * j);
  h ^= tail * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

// Special tokens, V3's strings and flags. Leading: ids 0..2, also in model.vocab. Trailing: the last ids.
const std::vector<std::pair<std::string_view, bool>> kLeading = {
    {kBosToken, true}, {kEosToken, true}, {kPadToken, true}};
const std::vector<std::pair<std::string_view, bool>> kTrailing = {
    {kFimHole, false},        {kFimBegin, false},         {kFimEnd, false},         {kUserToken, false},
    {kAssistantToken, false}, {kToolCallsBegin, false},   {kToolCallsEnd, false},   {kToolCallBegin, false},
    {kToolCallEnd, false},    {kToolOutputsBegin, false}, {kToolOutputsEnd, false}, {kToolOutputBegin, false},
    {kToolOutputEnd, false},  {kToolSep, false}};

enum class CharKind { kNewline, kSpace, kOther, kIncomplete };

// Classifies the character starting at text[i] and sets `len` to its byte length. kSpace: Unicode
// White_Space other than \r \n, plus the ASCII separators 0x1C-0x1F and the zero-width/BOM characters (to
// stay on the safe side whatever a regex engine calls \s). kIncomplete: invalid or cut off by the buffer end.
CharKind classify(std::string_view text, size_t i, size_t& len) {
  const uint8_t c = uint8_t(text[i]);
  len = 1;
  if (c == '\n' || c == '\r') return CharKind::kNewline;
  if (c < 0x80)
    return (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) ? CharKind::kSpace
                                                                              : CharKind::kOther;
  uint32_t cp = 0;
  if ((c >> 5) == 0x6) {
    cp = c & 0x1F, len = 2;
  } else if ((c >> 4) == 0xE) {
    cp = c & 0x0F, len = 3;
  } else if ((c >> 3) == 0x1E) {
    cp = c & 0x07, len = 4;
  } else {
    return CharKind::kIncomplete;
  }
  if (i + len > text.size()) return CharKind::kIncomplete;
  for (size_t k = 1; k < len; ++k) {
    const uint8_t cc = uint8_t(text[i + k]);
    if ((cc & 0xC0) != 0x80) return CharKind::kIncomplete;
    cp = (cp << 6) | (cc & 0x3F);
  }
  const bool space = cp == 0x85 || cp == 0xA0 || cp == 0x1680 || cp == 0x180E ||
                     (cp >= 0x2000 && cp <= 0x200D) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
                     cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
  return space ? CharKind::kSpace : CharKind::kOther;
}

// A cut at `i` is safe when text[i-1] == '\n' and text[i..] is optional whitespace without \r or \n followed
// by a complete non-whitespace character. Then, in the V3 pre-tokenizer, the whitespace run holding that '\n'
// ends its piece at its last newline, i.e. at i (\s*[\r\n]+ wins there; a letter run never starts with a
// newline; a punctuation run takes trailing newlines only up to i), and matching restarts at i on the same
// text whether or not the bytes before i are present. So counting [0, i) and [i, end) separately gives the
// pieces of counting the whole.
bool is_safe_cut(std::string_view text, size_t i) {
  if (i == 0 || i >= text.size() || text[i - 1] != '\n') return false;
  size_t len = 0;
  for (size_t j = i; j < text.size(); j += len) {
    switch (classify(text, j, len)) {
      case CharKind::kOther:
        return true;
      case CharKind::kSpace:
        continue;
      case CharKind::kNewline:
      case CharKind::kIncomplete:
        return false;
    }
  }
  return false;
}

// Code point of a byte's byte-level character (U+0021..U+0143), used to order the 256 byte tokens as V3 does.
uint32_t byte_level_code_point(uint8_t b) {
  const std::string& u = byte_to_unicode(b);
  if (u.size() == 1) return uint8_t(u[0]);
  DSV3_ASSERT(u.size() == 2);
  return (uint32_t(uint8_t(u[0]) & 0x1F) << 6) | (uint8_t(u[1]) & 0x3F);
}

}  // namespace

const std::vector<std::pair<std::string_view, bool>>& bpe_leading_special_tokens() {
  return kLeading;
}
const std::vector<std::pair<std::string_view, bool>>& bpe_trailing_added_tokens() {
  return kTrailing;
}
int32_t bpe_min_vocab_size() {
  return int32_t(kLeading.size() + 256 + kTrailing.size());
}

// ---- counting ---------------------------------------------------------------------------------------------

// Distinct piece -> count, open addressing with linear probing (load <= 1/2), bytes in one arena. At most
// max_words entries: past that, prune() drops the rarest. 16 bytes per slot + the piece bytes.
class BpeTrainer::WordCounter {
 public:
  explicit WordCounter(size_t max_words) : max_words_(max_words) { rehash(size_t(1) << 16); }

  void add(std::string_view piece, uint64_t n = 1) {
    DSV3_CHECK(piece.size() < (uint64_t(1) << 32), "pre-token piece of ", piece.size(), " bytes is too long");
    size_t i = hash_bytes(piece) & mask_;
    while (true) {
      Slot& s = slots_[i];
      if (s.count == 0) break;
      if (s.length == piece.size() &&
          std::memcmp(arena_.data() + s.offset, piece.data(), piece.size()) == 0) {
        s.count += n;
        return;
      }
      i = (i + 1) & mask_;
    }
    DSV3_CHECK(arena_.size() + piece.size() < (uint64_t(1) << 32),
               "BPE word table exceeds 4 GiB of piece bytes; lower --max-words");
    slots_[i] = Slot{n, uint32_t(arena_.size()), uint32_t(piece.size())};
    arena_.append(piece);
    ++size_;
    if (size_ > max_words_) {
      prune();
    } else if (2 * size_ > slots_.size()) {
      rehash(slots_.size() * 2);
    }
  }

  size_t size() const { return size_; }
  int64_t pruned() const { return pruned_; }

  template <typename F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.count != 0) f(std::string_view(arena_.data() + s.offset, s.length), s.count);
  }

 private:
  struct Slot {
    uint64_t count;  // 0: empty
    uint32_t offset;
    uint32_t length;
  };

  // Rebuilds the table with `capacity` slots (a power of two), dropping entries with count <= drop_at_most.
  void rebuild(size_t capacity, uint64_t drop_at_most) {
    std::vector<Slot> old = std::move(slots_);
    std::string old_arena = std::move(arena_);
    slots_.assign(capacity, Slot{0, 0, 0});
    mask_ = capacity - 1;
    arena_.clear();
    arena_.reserve(old_arena.size());
    size_ = 0;
    for (const Slot& s : old) {
      if (s.count == 0) continue;
      if (s.count <= drop_at_most) {
        ++pruned_;
        continue;
      }
      std::string_view piece(old_arena.data() + s.offset, s.length);
      size_t i = hash_bytes(piece) & mask_;
      while (slots_[i].count != 0) i = (i + 1) & mask_;
      slots_[i] = Slot{s.count, uint32_t(arena_.size()), s.length};
      arena_.append(piece);
      ++size_;
    }
  }
  void rehash(size_t capacity) { rebuild(capacity, 0); }

  // Keeps only pieces counted more often than the (max_words/2)-th largest count. Depends on the table's
  // content only (not on hash order), so training stays deterministic.
  void prune() {
    std::vector<uint64_t> counts;
    counts.reserve(size_);
    for (const Slot& s : slots_)
      if (s.count != 0) counts.push_back(s.count);
    const size_t keep = std::max<size_t>(1, max_words_ / 2);
    std::nth_element(counts.begin(), counts.begin() + (keep - 1), counts.end(), std::greater<>());
    rebuild(slots_.size(), counts[keep - 1]);
  }

  size_t max_words_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
  std::string arena_;
  int64_t pruned_ = 0;
};

BpeTrainer::BpeTrainer(PreTokenizer pre_tokenizer, BpeTrainerOptions options)
    : pre_tokenizer_(std::move(pre_tokenizer)), options_(std::move(options)) {
  DSV3_CHECK(options_.vocab_size >= bpe_min_vocab_size(), "vocab size ", options_.vocab_size,
             " is smaller than the 256 byte tokens + ", kLeading.size() + kTrailing.size(),
             " special tokens (minimum ", bpe_min_vocab_size(), ")");
  DSV3_CHECK(options_.min_frequency >= 0, "min frequency must be >= 0, got ", options_.min_frequency);
  DSV3_CHECK(options_.max_words >= 2, "max words must be >= 2, got ", options_.max_words);
  DSV3_CHECK(options_.chunk_bytes >= 1024, "chunk bytes must be >= 1024, got ", options_.chunk_bytes);
  DSV3_CHECK(pre_tokenizer_.byte_level(), "BPE training needs a byte-level pre-tokenizer");
  counter_ = std::make_unique<WordCounter>(options_.max_words);
  start_s_ = now_s();
}

BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::report(const char* phase, int64_t done, int64_t total) {
  if (options_.on_progress) options_.on_progress(BpeTrainProgress{phase, done, total, now_s() - start_s_});
}

void BpeTrainer::count_chunk(std::string_view text) {
  WordCounter& counter = *counter_;
  int64_t n_pieces = 0;
  std::string with_space;
  pre_tokenizer_.for_each_piece(text, [&](Piece p) {
    ++n_pieces;
    if (!p.prefix_space) {
      counter.add(p.text);
    } else {
      with_space.assign(1, ' ');
      with_space.append(p.text);
      counter.add(with_space);
    }
  });
  stats_.n_pieces += n_pieces;
  stats_.bytes_read += int64_t(text.size());
}

std::vector<std::pair<std::string, uint64_t>> BpeTrainer::word_counts() const {
  DSV3_CHECK(!trained_, "BpeTrainer: word_counts after train()");
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(counter_->size());
  counter_->for_each([&](std::string_view piece, uint64_t n) { out.emplace_back(std::string(piece), n); });
  std::sort(out.begin(), out.end());
  return out;
}

void BpeTrainer::add_text(std::string_view document) {
  DSV3_CHECK(!trained_, "BpeTrainer: add_text after train()");
  count_chunk(document);
}

void BpeTrainer::add_file(const std::string& path) {
  DSV3_CHECK(!trained_, "BpeTrainer: add_file after train()");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  DSV3_CHECK(f != nullptr, "cannot open training input \"", path, "\": ", std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, &std::fclose);
  const size_t chunk = options_.chunk_bytes;
  const size_t max_carry = 8 * chunk;  // past this without a safe cut, cut anyway (n_forced_cuts)
  std::string buf;
  buf.reserve(2 * chunk);
  while (true) {
    const size_t old = buf.size();
    buf.resize(old + chunk);
    const size_t got = std::fread(buf.data() + old, 1, chunk, f);
    buf.resize(old + got);
    DSV3_CHECK(!std::ferror(f), "read error on training input \"", path, "\": ", std::strerror(errno));
    if (got == 0) break;  // end of file: the rest is counted below
    // Last safe cut in the new data (or in the carried part, if none is new).
    size_t cut = 0;
    for (size_t i = buf.size() - 1; i > 0; --i) {
      if (is_safe_cut(buf, i)) {
        cut = i;
        break;
      }
    }
    if (cut == 0 && buf.size() >= max_carry) {
      // No safe boundary in max_carry bytes (one huge line): cut at the last UTF-8 character start.
      cut = buf.size() - 1;
      while (cut > 0 && (uint8_t(buf[cut]) & 0xC0) == 0x80) --cut;
      if (cut == 0) cut = buf.size();
      ++stats_.n_forced_cuts;
    }
    if (cut == 0) continue;
    count_chunk(std::string_view(buf).substr(0, cut));
    buf.erase(0, cut);
    report("count", stats_.bytes_read, 0);
  }
  if (!buf.empty()) count_chunk(buf);
  report("count", stats_.bytes_read, 0);
}

// ---- merging ----------------------------------------------------------------------------------------------

namespace {

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}
inline int32_t key_left(uint64_t k) {
  return int32_t(k >> 32);
}
inline int32_t key_right(uint64_t k) {
  return int32_t(uint32_t(k));
}

struct PairState {
  int64_t count = 0;
  std::vector<uint32_t> words;  // words that contain (or once contained) the pair; may hold stale entries
};

struct HeapEntry {
  int64_t count;
  uint64_t key;
};

// Flat word storage: word w's symbols are sym[begin[w], begin[w] + len[w]); merges only shrink words.
struct Words {
  std::vector<int32_t> sym;
  std::vector<uint64_t> begin;
  std::vector<uint32_t> len;
  std::vector<int64_t> count;
};

}  // namespace

TrainedBpe BpeTrainer::train() {
  DSV3_CHECK(!trained_, "BpeTrainer::train called twice");
  trained_ = true;
  const double t_count_end = now_s();
  stats_.count_s = t_count_end - start_s_;
  stats_.n_words = int64_t(counter_->size());
  stats_.n_words_pruned = counter_->pruned();

  // Words of >= 2 bytes (single bytes have no pairs). Their order does not affect the result.
  Words words;
  counter_->for_each([&](std::string_view piece, uint64_t n) {
    if (piece.size() < 2) return;
    words.begin.push_back(words.sym.size());
    words.len.push_back(uint32_t(piece.size()));
    words.count.push_back(int64_t(n));
    for (char c : piece) words.sym.push_back(int32_t(uint8_t(c)));
  });
  counter_.reset();  // the table is no longer needed

  // Symbols: 0..255 are the bytes; merges append. token_id maps bytes -> symbol to detect repeated results.
  std::vector<std::string> sym_bytes(256);
  std::unordered_map<std::string, int32_t> token_id;
  for (int b = 0; b < 256; ++b) {
    sym_bytes[b] = std::string(1, char(b));
    token_id.emplace(sym_bytes[b], b);
  }

  std::unordered_map<uint64_t, PairState> pairs;
  for (uint32_t w = 0; w < words.len.size(); ++w) {
    const int32_t* s = words.sym.data() + words.begin[w];
    for (uint32_t i = 0; i + 1 < words.len[w]; ++i) {
      PairState& p = pairs[pair_key(s[i], s[i + 1])];
      p.count += words.count[w];
      if (p.words.empty() || p.words.back() != w) p.words.push_back(w);
    }
  }

  // Max-heap order: higher count first; ties: smaller (left bytes, right bytes) first.
  auto before = [&](const HeapEntry& x, const HeapEntry& y) {  // true when x pops after y
    if (x.count != y.count) return x.count < y.count;
    const std::string& xl = sym_bytes[key_left(x.key)];
    const std::string& yl = sym_bytes[key_left(y.key)];
    if (xl != yl) return xl > yl;
    return sym_bytes[key_right(x.key)] > sym_bytes[key_right(y.key)];
  };
  std::vector<HeapEntry> heap;
  heap.reserve(pairs.size());
  for (const auto& [key, p] : pairs) heap.push_back({p.count, key});
  std::make_heap(heap.begin(), heap.end(), before);

  const int64_t target_new = int64_t(options_.vocab_size) - bpe_min_vocab_size();
  int64_t n_new = 0;
  std::vector<std::pair<int32_t, int32_t>> merges;  // symbol ids
  std::vector<std::pair<uint64_t, int64_t>> deltas;
  const int64_t min_count = std::max<int64_t>(1, options_.min_frequency);
  report("merge", 0, target_new);

  while (n_new < target_new && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), before);
    const HeapEntry top = heap.back();
    heap.pop_back();
    auto it = pairs.find(top.key);
    const int64_t current = it == pairs.end() ? 0 : it->second.count;
    if (current != top.count) {
      // Stale entry. A higher current count has its own (newer) entry; a lower one needs one now.
      if (current > 0 && current < top.count) {
        heap.push_back({current, top.key});
        std::push_heap(heap.begin(), heap.end(), before);
      }
      continue;
    }
    if (top.count < min_count) break;

    const int32_t a = key_left(top.key), b = key_right(top.key);
    std::string merged = sym_bytes[a] + sym_bytes[b];
    int32_t c;
    auto found = token_id.find(merged);
    if (found != token_id.end()) {
      c = found->second;
      ++stats_.n_duplicate_merges;
    } else {
      c = int32_t(sym_bytes.size());
      token_id.emplace(merged, c);
      sym_bytes.push_back(std::move(merged));
      ++n_new;
    }
    merges.emplace_back(a, b);

    std::vector<uint32_t> affected = std::move(it->second.words);
    it->second.words.clear();
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    deltas.clear();
    for (uint32_t w : affected) {
      int32_t* s = words.sym.data() + words.begin[w];
      const uint32_t len = words.len[w];
      bool has = false;
      for (uint32_t i = 0; i + 1 < len && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;  // stale list entry
      const int64_t n = words.count[w];
      for (uint32_t i = 0; i + 1 < len; ++i) deltas.emplace_back(pair_key(s[i], s[i + 1]), -n);
      uint32_t j = 0;
      for (uint32_t i = 0; i < len; ++i) {
        if (i + 1 < len && s[i] == a && s[i + 1] == b) {
          s[j++] = c;
          ++i;
        } else {
          s[j++] = s[i];
        }
      }
      words.len[w] = j;
      for (uint32_t i = 0; i + 1 < j; ++i) {
        const uint64_t k = pair_key(s[i], s[i + 1]);
        deltas.emplace_back(k, n);
        if (s[i] == c || s[i + 1] == c) {
          std::vector<uint32_t>& list = pairs[k].words;
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
    }
    // Apply the net change per pair; pairs that gained get a fresh heap entry.
    std::sort(deltas.begin(), deltas.end());
    for (size_t i = 0; i < deltas.size();) {
      const uint64_t k = deltas[i].first;
      int64_t d = 0;
      for (; i < deltas.size() && deltas[i].first == k; ++i) d += deltas[i].second;
      if (d == 0) continue;
      auto pit = pairs.find(k);
      if (pit == pairs.end()) pit = pairs.emplace(k, PairState{}).first;
      pit->second.count += d;
      DSV3_ASSERT(pit->second.count >= 0);
      if (pit->second.count == 0) {
        pairs.erase(pit);
      } else if (d > 0) {
        heap.push_back({pit->second.count, k});
        std::push_heap(heap.begin(), heap.end(), before);
      }
    }
    DSV3_ASSERT(pairs.find(top.key) == pairs.end() || pairs.find(top.key)->second.count == 0);
    pairs.erase(top.key);
    if (options_.progress_every > 0 && int64_t(merges.size()) % options_.progress_every == 0)
      report("merge", n_new, target_new);
  }
  stats_.n_merges = int64_t(merges.size());
  report("merge", n_new, target_new);

  // Final ids: leading specials, bytes ordered by byte-level code point, merged tokens, trailing added
  // tokens.
  TrainedBpe model;
  std::vector<int32_t> final_id(sym_bytes.size(), -1);
  for (const auto& [content, special] : kLeading) {
    model.added_tokens.push_back({int32_t(model.tokens.size()), std::string(content), special, false, true});
    model.tokens.emplace_back(content);
  }
  std::vector<int> byte_order(256);
  for (int i = 0; i < 256; ++i) byte_order[i] = i;
  std::sort(byte_order.begin(), byte_order.end(), [](int x, int y) {
    return byte_level_code_point(uint8_t(x)) < byte_level_code_point(uint8_t(y));
  });
  for (int byte : byte_order) {
    final_id[byte] = int32_t(model.tokens.size());
    model.tokens.push_back(sym_bytes[byte]);
  }
  for (size_t sid = 256; sid < sym_bytes.size(); ++sid) {
    final_id[sid] = int32_t(model.tokens.size());
    model.tokens.push_back(sym_bytes[sid]);
  }
  for (const auto& [content, special] : kTrailing) {
    model.added_tokens.push_back({int32_t(model.tokens.size()), std::string(content), special, true, false});
    model.tokens.emplace_back(content);
  }
  model.merges.reserve(merges.size());
  for (const auto& [x, y] : merges) model.merges.emplace_back(final_id[x], final_id[y]);
  model.pre_tokenizer = pre_tokenizer_.to_json();
  stats_.vocab_size = int32_t(model.tokens.size());
  stats_.merge_s = now_s() - t_count_end;
  return model;
}

// ---- writing ----------------------------------------------------------------------------------------------

namespace {

std::string json_string(std::string_view s) {
  return nlohmann::json(std::string(s)).dump();
}

}  // namespace

std::string bpe_tokenizer_json(const TrainedBpe& model) {
  std::string out;
  out.reserve(model.tokens.size() * 24 + model.merges.size() * 24 + 4096);
  out += "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  for (size_t i = 0; i < model.added_tokens.size(); ++i) {
    const BpeAddedToken& t = model.added_tokens[i];
    out += i ? ",\n    " : "\n    ";
    out += "{\"id\": " + std::to_string(t.id) + ", \"content\": " + json_string(t.content) +
           ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": " +
           (t.normalized ? "true" : "false") + ", \"special\": " + (t.special ? "true" : "false") + "}";
  }
  out += "\n  ],\n  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": []},\n  \"pre_tokenizer\": ";
  out += model.pre_tokenizer.dump();
  out +=
      ",\n  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": "
      "false, "
      "\"use_regex\": true},\n  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, "
      "\"trim_offsets\": true, \"use_regex\": true},\n  \"model\": {\n    \"type\": \"BPE\",\n    "
      "\"dropout\": null,"
      "\n    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": "
      "null,\n"
      "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {";
  // model.vocab: every id except the trailing added tokens, tokens in the byte-level alphabet.
  std::vector<std::string> vocab_text(model.tokens.size());
  std::vector<bool> in_vocab(model.tokens.size(), true), is_added(model.tokens.size(), false);
  for (const BpeAddedToken& t : model.added_tokens) {
    is_added[t.id] = true;
    in_vocab[t.id] = t.in_model_vocab;
  }
  bool first = true;
  for (size_t id = 0; id < model.tokens.size(); ++id) {
    vocab_text[id] = is_added[id] ? model.tokens[id] : bytes_to_unicode_string(model.tokens[id]);
    if (!in_vocab[id]) continue;
    out += first ? "\n      " : ",\n      ";
    first = false;
    out += json_string(vocab_text[id]);
    out += ": ";
    out += std::to_string(id);
  }
  out += "\n    },\n    \"merges\": [";
  for (size_t i = 0; i < model.merges.size(); ++i) {
    out += i ? ",\n      " : "\n      ";
    out += json_string(vocab_text[model.merges[i].first] + " " + vocab_text[model.merges[i].second]);
  }
  out += "\n    ]\n  }\n}\n";
  return out;
}

std::string bpe_tokenizer_config_json() {
  auto added = [](std::string_view content) {
    nlohmann::ordered_json t;
    t["__type"] = "AddedToken";
    t["content"] = std::string(content);
    t["lstrip"] = false;
    t["normalized"] = true;
    t["rstrip"] = false;
    t["single_word"] = false;
    return t;
  };
  nlohmann::ordered_json j;
  j["add_bos_token"] = true;
  j["add_eos_token"] = false;
  j["bos_token"] = added(kBosToken);
  j["clean_up_tokenization_spaces"] = false;
  j["eos_token"] = added(kEosToken);
  j["legacy"] = true;
  j["model_max_length"] = 131072;
  j["pad_token"] = added(kEosToken);  // as in DeepSeek-V3's tokenizer_config.json
  j["sp_model_kwargs"] = nlohmann::ordered_json::object();
  j["unk_token"] = nullptr;
  j["tokenizer_class"] = "LlamaTokenizerFast";
  j["chat_template"] = std::string(kDeepSeekV3ChatTemplate);
  return j.dump(2) + "\n";
}

void save_bpe_tokenizer(const TrainedBpe& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  DSV3_CHECK(!ec, "cannot create tokenizer directory \"", dir, "\": ", ec.message());
  const std::filesystem::path base(dir);
  io::atomic_write_file((base / "tokenizer.json").string(), bpe_tokenizer_json(model));
  io::atomic_write_file((base / "tokenizer_config.json").string(), bpe_tokenizer_config_json());
}

}  // namespace dsv3::tok
