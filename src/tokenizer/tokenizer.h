// dsv3::tok::Tokenizer: loads a Hugging Face tokenizer.json (+ tokenizer_config.json) and encodes/decodes
// exactly like the `tokenizers` library does for DeepSeek-V3 (checked id for id against it on a mixed
// multilingual corpus, tests/tokenizer/test_tokenizer_hf.cpp).
//
// Encoding pipeline (HF's order):
//   raw text ─► added tokens (normalized=false) ─► normalizer ─► added tokens (normalized=true)
//            ─► pre-tokenizer (pretokenize.h) ─► BPE per piece (bpe.h) ─► ids
// No post-processor runs: encode() is HF's encode(text, add_special_tokens=false), plus an optional BOS.
// Decoding: per id, the added-token content or the vocab string; special tokens dropped when asked; then
// the ByteLevel decoder maps each token's characters back to bytes (a token with any character outside the
// byte alphabet, like "<｜end▁of▁sentence｜>", contributes its own UTF-8 bytes). Unknown ids are skipped.
//
// Differences from HF, by design:
//  * decode() returns the raw bytes; HF returns String::from_utf8_lossy of them. For any ids that
//    encode() produced they are identical (encode/decode round-trips bytes exactly); utf8_lossy() gives
//    HF's string for arbitrary ids.
//  * encode() accepts invalid UTF-8 (HF cannot: it takes Rust &str): every invalid byte becomes a piece of
//    its own, encoded as its single byte token, so decode(encode(x)) == x for any bytes x.
//
// Thread safety: all const methods may run concurrently. The BPE memo is per thread.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace dsv3::tok {

class Tokenizer {
 public:
  // path: a tokenizer.json file, or a directory holding tokenizer.json. tokenizer_config.json next to the
  // tokenizer.json is read when present (BOS/EOS/PAD, add_bos_token, chat_template).
  static Tokenizer load(const std::string& path, RegexEngine engine = RegexEngine::kAuto);
  // From parsed JSON; config may be null.
  static Tokenizer from_json(const nlohmann::json& tokenizer_json, const nlohmann::json& config = nullptr,
                             RegexEngine engine = RegexEngine::kAuto);

  std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const;
  // Appends the ids of text (no BOS) to out.
  void encode_into(std::string_view text, std::vector<int32_t>& out) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 if absent
  std::string id_to_token(int32_t id) const;          // "" if absent
  int32_t vocab_size() const { return vocab_size_; }  // max id + 1 over vocab and added tokens
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos_default() const { return add_bos_default_; }
  bool is_special(int32_t id) const;
  bool has_id(int32_t id) const;  // id is in the vocab or an added token
  const std::string& chat_template() const { return chat_template_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  const std::string& pad_token() const { return pad_token_; }

  // The bytes one id decodes to (empty for an unknown id); decode() concatenates these.
  std::string_view token_bytes(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  const PreTokenizer& pre_tokenizer() const { return pre_; }
  const BpeModel& model() const { return bpe_; }
  const Normalizer& normalizer() const { return norm_; }
  // True when the decoder is ByteLevel (false: HF's no-decoder behaviour, tokens joined by spaces).
  bool byte_level_decoder() const { return byte_level_decoder_; }

 private:
  void encode_segment(std::string_view segment, std::vector<int32_t>& out) const;  // after pass 1
  void encode_pretokenized(std::string_view text, std::vector<int32_t>& out) const;

  Normalizer norm_;
  PreTokenizer pre_;
  BpeModel bpe_;
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int32_t> added_ids_;  // content -> id
  AddedTokenMatcher raw_matcher_;                       // normalized=false tokens
  AddedTokenMatcher normalized_matcher_;                // normalized=true tokens
  std::vector<std::string> id_token_;                   // id -> token string (added first, then vocab)
  std::vector<uint8_t> id_present_;
  std::vector<uint8_t> special_;     // id -> token string is a special added token
  std::string bytes_blob_;           // decoded bytes of every id, concatenated
  std::vector<uint32_t> bytes_off_;  // id -> [off[id], off[id+1]) in bytes_blob_
  bool byte_level_decoder_ = true;
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  bool add_bos_default_ = false;
  std::string bos_token_, eos_token_, pad_token_, chat_template_;
};

// Streaming decoder: push ids one at a time and get back only complete UTF-8 text; a character whose
// bytes are split across tokens is held until its last byte arrives. Bytes that can never form valid UTF-8
// come out as U+FFFD (HF's lossy rule), so every returned string is valid UTF-8, and the concatenation of
// all push() results and flush() equals utf8_lossy(tokenizer.decode(ids, skip_special)).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  // Returns whatever is held back (an incomplete character becomes U+FFFD); pushing may continue.
  std::string flush();

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace dsv3::tok
