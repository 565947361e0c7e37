// Shard loader: a train::BatchSource over a prepared data directory (shard_writer.h has the format).
//
// Open: index.json is read and checked (format, version); every shard of the split is stat'ed (missing or
// wrong size -> dsv3::Error naming the file), mmapped, and — unless disabled — its FNV-1a checksum is
// verified and its ids checked against the vocab size (corrupt -> dsv3::Error naming the file).
//
// Packing: the split's shards, concatenated, are one token stream of N tokens (documents separated by EOS,
// V3_SPEC.md §7: packed, no padding, no cross-document mask). For a row length S, window w is the S tokens
// starting at w·(S−1): consecutive windows share one token, so every adjacent pair (i, i+1) of the stream is
// a training target exactly once per epoch. n_windows = (N−1)/(S−1) (the < S-token tail is unused).
// Shuffle: each epoch visits the windows in a pseudo-random order, a bijection of [0, n_windows) given by a
// keyed Feistel network with cycle walking, keyed by (seed, epoch) — no per-window memory, O(1) per row.
// next(B, S) takes B consecutive positions of that order; at the end of an epoch it continues with epoch+1.
//
// State: {split, seed, epoch, position, seq_len, fingerprint}; restore() refuses state from other data
// (fingerprint) or another split and resumes at exactly the next row. The row length is fixed by the first
// next() (or by restore); a later next() with another S throws.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "train/batch_source.h"

namespace dsv3::data {

struct ShardSourceOptions {
  bool verify_checksums = true;  // hash every shard at open (reads all the data once)
  std::string tokenizer_path;    // if set: refuse data tokenized with another tokenizer.json
};

std::unique_ptr<train::BatchSource> open_batch_source(const std::string& dir, const std::string& split,
                                                      uint64_t seed);
std::unique_ptr<train::BatchSource> open_batch_source(const std::string& dir, const std::string& split,
                                                      uint64_t seed, const ShardSourceOptions& options);

// Tokens in a split according to index.json (no shard is read): lets a caller skip an empty "val" split,
// which open_batch_source refuses.
int64_t split_n_tokens(const std::string& dir, const std::string& split);

// Throws dsv3::Error unless the data in `dir` was tokenized by the tokenizer.json at tokenizer_path (file or
// directory), compared by fingerprint (hash of the tokenizer.json bytes).
void check_tokenizer(const std::string& dir, const std::string& tokenizer_path);

// A summary of a data directory: the parsed index.json after validating every shard of both splits (sizes,
// checksums, id range). Throws dsv3::Error naming the first bad file.
struct DataSummary {
  std::string tokenizer_fingerprint;
  int32_t vocab_size = 0;
  int32_t eos_id = -1;
  int64_t n_tokens_train = 0, n_tokens_val = 0;
  int64_t n_docs_train = 0, n_docs_val = 0;
  int64_t n_shards_train = 0, n_shards_val = 0;
};
DataSummary verify_data_dir(const std::string& dir);

// The window permutation used for shuffling, exposed for tests: a bijection of [0, n) keyed by `key`.
uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key);

}  // namespace dsv3::data
