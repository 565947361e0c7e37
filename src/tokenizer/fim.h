// Fill-in-the-Middle (FIM) formatting in DeepSeek-V3's PSM order (V3 paper section 4.1; V3_SPEC section 7):
//   <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜> middle [<｜end▁of▁sentence｜>]
//
// Two uses:
//  * inference: fim_prompt(prefix, suffix) is the prompt for "fill the hole" (the server's /v1/completions
//    with `suffix`); the model then generates the middle and stops at EOS.
//  * training data: a document-level transform applied before packing, at rate 0.1 in V3. Whether a document
//    is transformed and where it is cut are functions of (seed, doc_index) only (Philox counter-based draws),
//    so any shard, rank or resume order gives the same data. Text is cut on UTF-8 character boundaries, token
//    sequences on token boundaries.
//
// EOS: the transforms return the document body only (no BOS/EOS); the packer appends EOS to every document,
// FIM-transformed or not, which yields `... <｜fim▁end｜> middle <｜end▁of▁sentence｜>` as in the paper.
// Not here: the random splitting of merged punctuation/line-break tokens (spec section 7), packing.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv3::tok {

class Tokenizer;

inline constexpr std::string_view kFimBegin = "<｜fim▁begin｜>";
inline constexpr std::string_view kFimHole = "<｜fim▁hole｜>";
inline constexpr std::string_view kFimEnd = "<｜fim▁end｜>";

// Ids of the three FIM tokens. Defaults are DeepSeek-V3's; fim_token_ids(tokenizer) reads any tokenizer's.
struct FimTokenIds {
  int32_t begin = 128801;
  int32_t hole = 128800;
  int32_t end = 128802;
};
// Looks the FIM tokens up by string; throws dsv3::Error if the tokenizer lacks one.
FimTokenIds fim_token_ids(const Tokenizer& tokenizer);

// Inference prompt: `<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>` (encode it with add_bos = true).
std::string fim_prompt(std::string_view prefix, std::string_view suffix);
std::vector<int32_t> fim_prompt_ids(std::span<const int32_t> prefix, std::span<const int32_t> suffix,
                                    const FimTokenIds& ids = {});

struct FimOptions {
  double rate = 0.1;  // probability a document is transformed, in [0, 1]
  uint64_t seed = 0;  // with the document index, the only inputs of the draws
};

// Where a document is cut: prefix = [0, cut_a), middle = [cut_a, cut_b), suffix = [cut_b, size).
// Offsets are bytes for text, token positions for ids. applied == false: leave the document alone.
struct FimSplit {
  bool applied = false;
  size_t cut_a = 0;
  size_t cut_b = 0;
};

// The draws. Two cut points uniform over the n + 1 boundaries of a document of n characters (tokens), sorted;
// either part may be empty. Deterministic in (options.seed, doc_index, document length / char layout).
FimSplit fim_draw_text(std::string_view doc, const FimOptions& options, uint64_t doc_index);
FimSplit fim_draw_tokens(size_t n_tokens, const FimOptions& options, uint64_t doc_index);

// PSM text with the FIM token strings inline, or `doc` unchanged when not applied.
std::string fim_transform_text(std::string_view doc, const FimOptions& options, uint64_t doc_index);
// PSM over token ids (cut on token boundaries), or a copy of `doc` when not applied.
std::vector<int32_t> fim_transform_tokens(std::span<const int32_t> doc, const FimOptions& options,
                                          uint64_t doc_index, const FimTokenIds& ids = {});

// The data pipeline's preferred form: cut the text on character boundaries, encode prefix, middle and suffix
// separately (so FIM token strings inside the document stay plain text), and join with the FIM ids.
// Not applied: encode(doc). `encode` turns text into ids without BOS/EOS.
using EncodeFn = std::function<std::vector<int32_t>(std::string_view)>;
std::vector<int32_t> fim_encode(std::string_view doc, const FimOptions& options, uint64_t doc_index,
                                const FimTokenIds& ids, const EncodeFn& encode);

}  // namespace dsv3::tok
