// Token shards: the on-disk format of prepared training data, and its writer (V3_SPEC.md §7 "Data").
//
// A data directory holds
//   train-00000.bin, train-00001.bin, ...   raw little-endian uint32 token ids, no header; every document's
//   val-00000.bin, ...                      tokens are followed by one EOS; a shard ends on a document end
//   index.json                              format version, tokenizer fingerprint, vocab size, EOS id, and
//   per
//                                           shard: file, n_tokens, n_docs, bytes, checksum (FNV-1a 64 of the
//                                           bytes)
//   tokenizer.json, tokenizer_config.json   copies of the tokenizer that produced the ids
// The stream of a split is its shards concatenated in index order. index.json is written last, so a directory
// with an index is complete; shards are written to a temp name and renamed into place when finished.
//
// Not here: how documents are found and tokenized (prepare.h), reading and packing (shard_loader.h).
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::data {

inline constexpr std::string_view kIndexFormat = "dsv3-token-shards";
inline constexpr int kIndexVersion = 1;
inline constexpr std::string_view kIndexFile = "index.json";

// FNV-1a 64-bit, streamable: h = fnv1a64(more, fnv1a64(first)) hashes first+more.
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnvOffset);
// "fnv1a64:0123456789abcdef" — the form stored in index.json.
std::string hash_string(uint64_t h);

// The tokenizer.json file of a tokenizer path (the file itself, or DIR/tokenizer.json).
std::string tokenizer_json_path(const std::string& tokenizer_path);
// hash_string(fnv1a64(bytes of tokenizer.json)). Throws dsv3::Error if it cannot be read.
std::string tokenizer_fingerprint(const std::string& tokenizer_path);

// One finished shard, as recorded in index.json.
struct ShardInfo {
  std::string file;  // name inside the data directory, e.g. "train-00000.bin"
  int64_t n_tokens = 0;
  int64_t n_docs = 0;
  std::string checksum;  // hash_string(fnv1a64(file bytes))
  nlohmann::json to_json() const;
  static ShardInfo from_json(const nlohmann::json& j);  // throws dsv3::Error on a malformed entry
};

// Writes one split ("train" or "val") as a sequence of shards of about `shard_tokens` tokens each. Documents
// are never split across shards (a shard may exceed the target by one document). Not thread-safe.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, int64_t shard_tokens);
  ~ShardWriter();  // an unfinished shard's temp file is removed
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends one document's tokens (the caller includes the trailing EOS). Ids must be >= 0.
  void add_document(std::span<const int32_t> tokens);
  // Closes the open shard (if any) and returns every shard written.
  std::vector<ShardInfo> finish();

  int64_t n_tokens() const { return n_tokens_; }
  int64_t n_docs() const { return n_docs_; }

 private:
  void open_shard();
  void close_shard();

  std::string dir_, split_;
  int64_t shard_tokens_;
  std::vector<ShardInfo> shards_;
  std::FILE* file_ = nullptr;  // the open shard's temp file
  std::string tmp_path_, final_path_;
  ShardInfo current_;
  uint64_t hash_ = kFnvOffset;
  std::vector<uint32_t> buf_;  // conversion buffer
  int64_t n_tokens_ = 0, n_docs_ = 0;
  bool finished_ = false;
};

}  // namespace dsv3::data
