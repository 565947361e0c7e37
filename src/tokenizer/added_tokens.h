// Added tokens (tokenizer.json "added_tokens"): strings matched in the text before anything else and
// emitted as their own id. Matching follows HF's AddedVocabulary:
//  * two passes: tokens with normalized=false are matched in the raw text; the remaining text is normalized
//    and tokens with normalized=true are matched (by their normalized content) in each normalized segment;
//  * each pass finds leftmost-longest non-overlapping occurrences (HF uses an Aho-Corasick automaton with
//    MatchKind::LeftmostLongest; here a byte trie walked from each candidate position);
//  * single_word drops a match that has a word character (Rust regex \w) right before or after it;
//    lstrip / rstrip extend the match over the whitespace (Rust \s) before / after it; the bookkeeping of
//    overlapping extensions is HF's (an rstrip extension may swallow the start of the next match).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace dsv3::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

class AddedTokenMatcher {
 public:
  // patterns[k] is matched and reported as tokens[k] (its id; its flags drive lstrip/rstrip/single_word);
  // the first of identical patterns wins.
  void build(std::vector<std::string> patterns, std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // Walks sentence: on_text(segment) for the text between matches (never empty), on_token(id) for matches.
  void split(std::string_view sentence, FunctionRef<void(std::string_view)> on_text,
             FunctionRef<void(int32_t)> on_token) const;

 private:
  // Longest pattern starting at pos: returns its index (or -1) and sets end.
  int longest_at(std::string_view s, size_t pos, size_t& end) const;
  struct Node {
    int32_t terminal = -1;  // pattern index
  };
  std::vector<Node> nodes_{Node{}};
  std::unordered_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> child
  bool first_byte_[256] = {};
  int single_first_byte_ = -1;  // the only first byte, when all patterns share it (-2: several)
  std::vector<AddedToken> tokens_;
};

}  // namespace dsv3::tok
