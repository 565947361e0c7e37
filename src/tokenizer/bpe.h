// The BPE model of tokenizer.json ("model": {"type": "BPE", "vocab", "merges", ...}) and its encoder.
//
// Encoding one pre-tokenized piece follows HF's merge-rank algorithm: start from one symbol per character
// (per byte, mapped through the GPT-2 alphabet, when the pre-tokenizer has a ByteLevel step), then
// repeatedly merge the adjacent pair whose merge has the lowest rank (leftmost first among equal ranks)
// until no adjacent pair has a merge. It is not greedy longest-match. Short pieces use an array scan,
// long ones a heap; both are checked against encode_pieces_naive() in the tests. Results for short pieces
// are memoized in a bounded per-thread cache (direct-mapped, so its memory is fixed).
//
// Supported fields: vocab, merges (either "a b" strings or ["a", "b"] pairs), unk_token, fuse_unk,
// ignore_merges, byte_fallback (false only), dropout (null/0 only), continuing_subword_prefix and
// end_of_word_suffix (null/empty only). A merge whose parts or result are missing from the vocab is a
// dsv3::Error, as in HF.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace dsv3::tok {

class BpeModel {
 public:
  static BpeModel from_json(const nlohmann::json& model);

  // byte_level: pieces are raw bytes whose symbols are the GPT-2 alphabet characters (set by Tokenizer when
  // the pre-tokenizer has a ByteLevel step). Otherwise the piece's UTF-8 characters are the symbols.
  void set_byte_level(bool on);
  bool byte_level() const { return byte_level_; }

  // Appends the ids of one piece.
  void encode_piece(Piece piece, std::vector<int32_t>& out) const;
  // The same results with the textbook algorithm (rescan every pair by token strings after each merge);
  // for tests. Slow: builds its own rank map on every call, so pass many pieces at once.
  std::vector<std::vector<int32_t>> encode_pieces_naive(const std::vector<Piece>& pieces) const;

  int32_t token_to_id(std::string_view token) const;  // -1 if absent
  const std::string* id_to_token(int32_t id) const;   // nullptr if absent
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
  int32_t n_vocab() const { return static_cast<int32_t>(vocab_.size()); }  // entries, not max id + 1
  size_t n_merges() const { return n_merges_; }
  nlohmann::json to_json() const;

 private:
  struct MergeTable;
  void initial_symbols(Piece piece, std::vector<int32_t>& syms) const;
  void merge_small(std::vector<int32_t>& syms) const;
  void merge_heap(std::vector<int32_t>& syms) const;
  // Looks up the merge of (a, b): returns rank (or -1) and sets merged id.
  inline int32_t merge_rank(int32_t a, int32_t b, int32_t& merged) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" holes for unused ids
  std::vector<bool> id_present_;
  std::shared_ptr<const MergeTable> merges_;
  std::vector<std::pair<int32_t, int32_t>> merge_list_;  // rank -> (a, b), for to_json
  size_t n_merges_ = 0;
  int32_t byte_ids_[256];  // byte -> id of its alphabet character (-1 if absent)
  bool byte_level_ = false;
  int32_t unk_id_ = -1;
  std::string unk_token_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  uint64_t uid_ = 0;  // identifies this model's contents for the per-thread cache
};

}  // namespace dsv3::tok
