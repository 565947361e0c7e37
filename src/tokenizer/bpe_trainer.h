// Byte-level BPE training over the DeepSeek-V3 pre-tokenizer, writing a tokenizer directory that Hugging Face
// `tokenizers` and dsv3::tok::Tokenizer both load (tokenizer.json + tokenizer_config.json, V3's structure).
//
// Algorithm:
//  1. Counting. Text is pre-tokenized with the given PreTokenizer (the product uses
//  PreTokenizer::deepseek_v3)
//     and every piece's bytes are counted in an open-addressing table. Files are streamed in chunks cut only
//     where the V3 pre-tokenizer is guaranteed to have a context-free boundary ("\n", then spaces or tabs,
//     then a non-whitespace character), so a file is counted exactly as if pre-tokenized whole (a line longer
//     than 8 chunks is cut anyway, at a character boundary: BpeTrainStats::n_forced_cuts). The table holds at
//     most `max_words` distinct pieces: when full, the rarest pieces are dropped (smallest counts first,
//     until it is half full); this is the only approximation, reported in BpeTrainStats::n_words_pruned.
//  2. Merging. Symbols start as the 256 bytes. Each step merges the pair with the highest count (summed over
//     words, weighted by word count); ties go to the pair whose (left, right) byte strings sort first. Pair
//     counts are updated incrementally from the words that contain the merged pair (a per-pair list of word
//     indices, cleaned lazily), and a max-heap of (count, pair) with lazy invalidation gives the next pair.
//     Training stops at the target vocabulary, when no pair is left, or when the best count < min_frequency.
//     A merge whose result string already exists (possible: "a"+"bc" after "ab"+"c") is kept as a merge
//     but does not take a vocabulary slot.
// Deterministic: same inputs in the same order and options -> byte-identical output (no hash-order or
// thread-order dependence).
//
// Vocabulary layout (mirrors DeepSeek-V3): 0 BOS `<｜begin▁of▁sentence｜>`, 1 EOS `<｜end▁of▁sentence｜>`,
// 2 pad `<｜▁pad▁｜>`, 3..258 the 256 bytes ordered by their byte-level code point, then merged tokens in
// merge order, then the 14 added tokens (FIM, chat, tool-call) as the last ids. vocab_size counts all of
// them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace dsv3::tok {

struct BpeTrainProgress {
  const char* phase = "";  // "count" or "merge"
  int64_t done = 0;        // bytes read (count) or merges done (merge)
  int64_t total = 0;       // bytes to read, 0 if unknown (count) or merges targeted (merge)
  double elapsed_s = 0.0;  // since the trainer was constructed
};

struct BpeTrainerOptions {
  int32_t vocab_size = 32000;            // total, including bytes and special tokens
  int64_t min_frequency = 2;             // stop when the best pair occurs fewer times than this
  size_t max_words = size_t(4) << 20;    // distinct pieces held while counting (memory bound)
  size_t chunk_bytes = size_t(8) << 20;  // file read granularity
  int64_t progress_every = 1000;         // merges between progress reports
  std::function<void(const BpeTrainProgress&)> on_progress;  // null: silent
};

struct BpeTrainStats {
  int64_t bytes_read = 0;
  int64_t n_pieces = 0;        // pre-token pieces counted
  int64_t n_words = 0;         // distinct pieces at the end of counting
  int64_t n_words_pruned = 0;  // distinct pieces dropped by the max_words cap
  int64_t n_forced_cuts = 0;   // chunk cuts made without a safe boundary (none in ordinary text)
  int64_t n_merges = 0;
  int64_t n_duplicate_merges = 0;  // merges whose result already was a token
  int32_t vocab_size = 0;          // final, may be below the target when the corpus runs out of pairs
  double count_s = 0.0;
  double merge_s = 0.0;
};

// A special / added token of the trained vocabulary (tokenizer.json "added_tokens" entry).
struct BpeAddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;         // HF "special": skipped by decode(skip_special_tokens)
  bool normalized = false;      // HF "normalized" (no effect: the normalizer is empty)
  bool in_model_vocab = false;  // also an entry of model.vocab (BOS/EOS/pad, as in V3)
};

// The trained model, ids final.
struct TrainedBpe {
  std::vector<std::string> tokens;  // [vocab_size] raw bytes of every id (special tokens: their text)
  std::vector<std::pair<int32_t, int32_t>> merges;  // rank order; each pair of ids merges into one token
  std::vector<BpeAddedToken> added_tokens;
  nlohmann::json pre_tokenizer;  // written verbatim into tokenizer.json
};

// The added tokens in id order relative to the layout above: BOS, EOS, pad first (ids 0..2), then the 15 that
// take the last ids. Exposed so tests and tools share one list.
const std::vector<std::pair<std::string_view, bool>>& bpe_leading_special_tokens();  // {content, special}
const std::vector<std::pair<std::string_view, bool>>& bpe_trailing_added_tokens();   // {content, special}
// Smallest valid vocab_size: 3 leading specials + 256 bytes + the trailing added tokens.
int32_t bpe_min_vocab_size();

class BpeTrainer {
 public:
  // Throws dsv3::Error if options.vocab_size < bpe_min_vocab_size() or another option is out of range.
  BpeTrainer(PreTokenizer pre_tokenizer, BpeTrainerOptions options);
  ~BpeTrainer();
  BpeTrainer(const BpeTrainer&) = delete;
  BpeTrainer& operator=(const BpeTrainer&) = delete;

  // Counts one whole document.
  void add_text(std::string_view document);
  // Streams one file (one document) in chunks. Throws dsv3::Error if it cannot be opened or read.
  void add_file(const std::string& path);
  // The counted pieces so far, sorted by bytes (for tests and inspection; copies the table).
  std::vector<std::pair<std::string, uint64_t>> word_counts() const;
  // Runs the merges. Call once, after all input was added.
  TrainedBpe train();

  const BpeTrainStats& stats() const { return stats_; }

 private:
  class WordCounter;
  void count_chunk(std::string_view text);
  void report(const char* phase, int64_t done, int64_t total);

  PreTokenizer pre_tokenizer_;
  BpeTrainerOptions options_;
  BpeTrainStats stats_;
  std::unique_ptr<WordCounter> counter_;  // distinct piece -> count (type private to bpe_trainer.cpp)
  double start_s_ = 0.0;
  bool trained_ = false;
};

// tokenizer.json text for `model` (same structure and key order as DeepSeek-V3's file).
std::string bpe_tokenizer_json(const TrainedBpe& model);
// tokenizer_config.json text: add_bos_token, bos/eos/pad, LlamaTokenizerFast, the V3 chat template.
std::string bpe_tokenizer_config_json();
// Writes both files into `dir` (created if missing) atomically.
void save_bpe_tokenizer(const TrainedBpe& model, const std::string& dir);

}  // namespace dsv3::tok
