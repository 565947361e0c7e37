// Fill-in-the-Middle transforms (see fim.h).
#include "tokenizer/fim.h"

#include <algorithm>

#include "core/rng.h"
#include "dsv3/error.h"
#include "tokenizer/tokenizer.h"

namespace dsv3::tok {

namespace {

// Philox stream reserved for FIM draws; word 0 decides, words 1 and 2 place the cuts.
const uint64_t kFimStream = hash_name("dsv3.data.fim");

// Uniform index in [0, n] from a 32-bit word (multiply-shift; bias < n / 2^32).
size_t draw_index(uint32_t word, size_t n) {
  return size_t((uint64_t(word) * (uint64_t(n) + 1)) >> 32);
}

// Decides and places the cuts as indices into n + 1 boundaries.
FimSplit draw(size_t n, const FimOptions& options, uint64_t doc_index) {
  DSV3_CHECK(options.rate >= 0.0 && options.rate <= 1.0, "FIM rate must be in [0, 1], got ", options.rate);
  DSV3_CHECK(uint64_t(n) < (uint64_t(1) << 32), "FIM: document of ", n, " units is too long (max 2^32 - 1)");
  const auto w = philox4x32(options.seed, kFimStream, doc_index);
  // (w + 0.5) / 2^32 is in (0, 1): rate 0 never applies, rate 1 always does.
  const double u = (double(w[0]) + 0.5) * (1.0 / 4294967296.0);
  FimSplit s;
  if (!(u < options.rate)) return s;
  s.applied = true;
  s.cut_a = draw_index(w[1], n);
  s.cut_b = draw_index(w[2], n);
  if (s.cut_a > s.cut_b) std::swap(s.cut_a, s.cut_b);
  return s;
}

bool is_char_start(char c) {
  return (uint8_t(c) & 0xC0) != 0x80;
}

}  // namespace

FimTokenIds fim_token_ids(const Tokenizer& tokenizer) {
  FimTokenIds ids;
  ids.begin = tokenizer.token_to_id(kFimBegin);
  ids.hole = tokenizer.token_to_id(kFimHole);
  ids.end = tokenizer.token_to_id(kFimEnd);
  DSV3_CHECK(ids.begin >= 0 && ids.hole >= 0 && ids.end >= 0, "tokenizer lacks a FIM token (", kFimBegin, " ",
             kFimHole, " ", kFimEnd, ")");
  return ids;
}

std::string fim_prompt(std::string_view prefix, std::string_view suffix) {
  std::string out;
  out.reserve(prefix.size() + suffix.size() + kFimBegin.size() + kFimHole.size() + kFimEnd.size());
  out += kFimBegin;
  out += prefix;
  out += kFimHole;
  out += suffix;
  out += kFimEnd;
  return out;
}

std::vector<int32_t> fim_prompt_ids(std::span<const int32_t> prefix, std::span<const int32_t> suffix,
                                    const FimTokenIds& ids) {
  std::vector<int32_t> out;
  out.reserve(prefix.size() + suffix.size() + 3);
  out.push_back(ids.begin);
  out.insert(out.end(), prefix.begin(), prefix.end());
  out.push_back(ids.hole);
  out.insert(out.end(), suffix.begin(), suffix.end());
  out.push_back(ids.end);
  return out;
}

FimSplit fim_draw_tokens(size_t n_tokens, const FimOptions& options, uint64_t doc_index) {
  return draw(n_tokens, options, doc_index);
}

FimSplit fim_draw_text(std::string_view doc, const FimOptions& options, uint64_t doc_index) {
  // Character boundaries: offset 0, every later byte that does not continue a UTF-8 sequence, and the end.
  // Invalid UTF-8 still has boundaries (stray continuation bytes join the unit before them), so any byte
  // string is accepted and cutting never splits a valid character.
  size_t n_units = doc.empty() ? 0 : 1;
  for (size_t i = 1; i < doc.size(); ++i) n_units += is_char_start(doc[i]);
  FimSplit s = draw(n_units, options, doc_index);
  if (!s.applied) return s;
  // Walk from boundary `from_boundary` (at byte `from_byte`) to boundary `boundary`.
  auto byte_offset = [&](size_t boundary, size_t from_byte, size_t from_boundary) {
    size_t pos = from_byte;
    for (size_t k = from_boundary; k < boundary; ++k) {
      ++pos;
      while (pos < doc.size() && !is_char_start(doc[pos])) ++pos;
    }
    return pos;
  };
  const size_t a = byte_offset(s.cut_a, 0, 0);
  const size_t b = byte_offset(s.cut_b, a, s.cut_a);
  s.cut_a = a;
  s.cut_b = b;
  return s;
}

std::string fim_transform_text(std::string_view doc, const FimOptions& options, uint64_t doc_index) {
  const FimSplit s = fim_draw_text(doc, options, doc_index);
  if (!s.applied) return std::string(doc);
  std::string out;
  out.reserve(doc.size() + kFimBegin.size() + kFimHole.size() + kFimEnd.size());
  out += kFimBegin;
  out += doc.substr(0, s.cut_a);
  out += kFimHole;
  out += doc.substr(s.cut_b);
  out += kFimEnd;
  out += doc.substr(s.cut_a, s.cut_b - s.cut_a);
  return out;
}

std::vector<int32_t> fim_transform_tokens(std::span<const int32_t> doc, const FimOptions& options,
                                          uint64_t doc_index, const FimTokenIds& ids) {
  const FimSplit s = fim_draw_tokens(doc.size(), options, doc_index);
  if (!s.applied) return {doc.begin(), doc.end()};
  std::vector<int32_t> out;
  out.reserve(doc.size() + 3);
  out.push_back(ids.begin);
  out.insert(out.end(), doc.begin(), doc.begin() + s.cut_a);
  out.push_back(ids.hole);
  out.insert(out.end(), doc.begin() + s.cut_b, doc.end());
  out.push_back(ids.end);
  out.insert(out.end(), doc.begin() + s.cut_a, doc.begin() + s.cut_b);
  return out;
}

std::vector<int32_t> fim_encode(std::string_view doc, const FimOptions& options, uint64_t doc_index,
                                const FimTokenIds& ids, const EncodeFn& encode) {
  const FimSplit s = fim_draw_text(doc, options, doc_index);
  if (!s.applied) return encode(doc);
  const std::vector<int32_t> prefix = encode(doc.substr(0, s.cut_a));
  const std::vector<int32_t> middle = encode(doc.substr(s.cut_a, s.cut_b - s.cut_a));
  const std::vector<int32_t> suffix = encode(doc.substr(s.cut_b));
  std::vector<int32_t> out = fim_prompt_ids(prefix, suffix, ids);
  out.insert(out.end(), middle.begin(), middle.end());
  return out;
}

}  // namespace dsv3::tok
