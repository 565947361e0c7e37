// Pre-tokenization: splits normalized text into the pieces that BPE encodes independently, exactly as
// Hugging Face tokenizers does for the tokenizer.json "pre_tokenizer" kinds dsv3 supports:
//   Sequence [ ... ]                      each step is applied to every piece the previous steps produced
//   Split {pattern: {Regex|String}, behavior, invert}
//        behavior: Removed | Isolated | MergedWithPrevious | MergedWithNext | Contiguous
//   ByteLevel {add_prefix_space, use_regex, trim_offsets}
//        use_regex splits with the GPT-2 pattern; add_prefix_space adds a virtual ' ' in front of every piece
//        that does not start with one; the byte -> code point mapping itself happens in the BPE model.
// Regexes run on Oniguruma (the engine HF uses, compiled with the same syntax and options). The DeepSeek-V3
// sequence (3 Splits + ByteLevel without regex) additionally has a hand-written matcher that reproduces the
// three regexes step by step (see docs/tokenizer.md); RegexEngine::kAuto picks it when the JSON is exactly
// that sequence, kOniguruma forces the regex engine (the tests check both give identical pieces).
//
// Invalid UTF-8 (which HF cannot receive, since it takes Rust &str): each invalid byte becomes a piece of
// its own and is not seen by the regexes; valid runs between invalid bytes are pre-tokenized independently.
// Pieces are views into the input, in order; without add_prefix_space they concatenate to the input (minus
// what a Removed behavior drops).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dsv3::tok {

class OnigRegex;

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class RegexEngine { kAuto, kOniguruma };

// One pre-tokenized piece: `text` is a view into the input; `prefix_space` says a ByteLevel add_prefix_space
// step put a virtual ' ' in front of it (so the BPE input is " " + text).
struct Piece {
  std::string_view text;
  bool prefix_space = false;
};

// Minimal non-owning callable reference (no allocation), used for per-piece callbacks on the hot path.
template <typename Sig>
class FunctionRef;
template <typename R, typename... A>
class FunctionRef<R(A...)> {
 public:
  template <typename F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef>) FunctionRef(F&& f)
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),  // NOLINT: implicit by design
        call_([](void* o, A... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(a...); }) {}
  R operator()(A... a) const { return call_(obj_, a...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};
using PieceSink = FunctionRef<void(Piece)>;

class PreTokenizer {
 public:
  PreTokenizer();  // no steps: every segment is one piece
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&);
  PreTokenizer& operator=(const PreTokenizer&);
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // From tokenizer.json's "pre_tokenizer" value (null means none). Throws dsv3::Error on an unknown type or
  // behavior, a missing field or an invalid regex.
  static PreTokenizer from_json(const nlohmann::json& j, RegexEngine engine = RegexEngine::kAuto);
  // The DeepSeek-V3 sequence: Split(\p{N}{1,3}), Split(CJK/kana runs), Split(the big word regex), all
  // Isolated, then ByteLevel(add_prefix_space=false, use_regex=false).
  static PreTokenizer deepseek_v3(RegexEngine engine = RegexEngine::kAuto);

  // Replaces out with the pieces of text (views into text, in order). A virtual prefix space of
  // add_prefix_space is not represented here; use for_each_piece to see it.
  void split(std::string_view text, std::vector<std::string_view>& out) const;
  // Calls sink for every piece, in order.
  void for_each_piece(std::string_view text, PieceSink sink) const;

  nlohmann::json to_json() const;
  // True when the sequence contains a ByteLevel step (the BPE model then works on bytes).
  bool byte_level() const { return byte_level_; }
  // True when the hand-written DeepSeek-V3 matcher is in use.
  bool uses_native_matcher() const { return native_v3_; }

 private:
  struct Step;
  void apply(size_t k, Piece piece, PieceSink sink) const;
  void split_with_step(const Step& st, Piece piece, PieceSink sink) const;

  std::vector<Step> steps_;
  bool byte_level_ = false;
  bool native_v3_ = false;
  bool json_was_sequence_ = true;
  bool json_null_ = true;
};

// The three DeepSeek-V3 Split regexes, verbatim from its tokenizer.json.
extern const char* const kDeepSeekV3DigitsRegex;
extern const char* const kDeepSeekV3CjkRegex;
extern const char* const kDeepSeekV3WordRegex;
// The GPT-2 regex HF's ByteLevel pre-tokenizer applies when use_regex is true.
extern const char* const kByteLevelRegex;

}  // namespace dsv3::tok
