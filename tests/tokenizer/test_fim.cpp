// FIM (PSM) formatting: token ids from the real DeepSeek-V3 tokenizer, determinism in (seed, doc index), the
// rate extremes, UTF-8-safe cuts, reassembly of prefix + middle + suffix, and the observed rate.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <set>

#include "dsv3/error.h"
#include "tokenizer/fim.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

using namespace dsv3::tok;
namespace fs = std::filesystem;
using dsv3::tok::testing::v3_dir;

namespace {

const Tokenizer& v3() {
  static const Tokenizer t = Tokenizer::load(v3_dir().string());
  return t;
}

// Undo a PSM string: returns prefix + middle + suffix.
std::string reassemble(const std::string& psm) {
  const size_t b = psm.find(kFimBegin), h = psm.find(kFimHole), e = psm.find(kFimEnd);
  EXPECT_EQ(b, 0u);
  EXPECT_NE(h, std::string::npos);
  EXPECT_NE(e, std::string::npos);
  const std::string prefix = psm.substr(kFimBegin.size(), h - kFimBegin.size());
  const std::string suffix = psm.substr(h + kFimHole.size(), e - h - kFimHole.size());
  const std::string middle = psm.substr(e + kFimEnd.size());
  return prefix + middle + suffix;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

const std::string kDoc = "def add(a, b):\n    # 加法 ✓\n    return a + b  # 😀 done\n";

}  // namespace

TEST(Fim, TokenIdsFromRealTokenizer) {
  const FimTokenIds ids = fim_token_ids(v3());
  EXPECT_EQ(ids.begin, 128801);
  EXPECT_EQ(ids.hole, 128800);
  EXPECT_EQ(ids.end, 128802);
  const FimTokenIds defaults;
  EXPECT_EQ(defaults.begin, ids.begin);
  EXPECT_EQ(defaults.hole, ids.hole);
  EXPECT_EQ(defaults.end, ids.end);
  EXPECT_EQ(v3().token_to_id("<｜end▁of▁sentence｜>"), 1);
}

TEST(Fim, PromptEncodesToPsmIds) {
  const std::string prompt = fim_prompt("def f(x):\n    return ", "\n\nprint(f(2))\n");
  EXPECT_EQ(prompt, "<｜fim▁begin｜>def f(x):\n    return <｜fim▁hole｜>\n\nprint(f(2))\n<｜fim▁end｜>");
  const auto ids = v3().encode(prompt, /*add_bos=*/true);
  ASSERT_GE(ids.size(), 5u);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 128801);
  EXPECT_EQ(ids.back(), 128802);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128800), 1);
  // Same ids as joining separately encoded parts.
  const auto pre = v3().encode("def f(x):\n    return ");
  const auto suf = v3().encode("\n\nprint(f(2))\n");
  auto joined = fim_prompt_ids(pre, suf);
  joined.insert(joined.begin(), 0);
  EXPECT_EQ(ids, joined);
}

TEST(Fim, RateZeroAndOne) {
  FimOptions never{0.0, 7}, always{1.0, 7};
  for (uint64_t i = 0; i < 500; ++i) {
    EXPECT_FALSE(fim_draw_text(kDoc, never, i).applied);
    EXPECT_EQ(fim_transform_text(kDoc, never, i), kDoc);
    const FimSplit s = fim_draw_text(kDoc, always, i);
    EXPECT_TRUE(s.applied);
    EXPECT_LE(s.cut_a, s.cut_b);
    EXPECT_LE(s.cut_b, kDoc.size());
  }
  EXPECT_THROW(fim_draw_tokens(3, FimOptions{1.5, 0}, 0), dsv3::Error);
  EXPECT_THROW(fim_draw_tokens(3, FimOptions{-0.1, 0}, 0), dsv3::Error);
}

TEST(Fim, DeterministicInSeedAndIndex) {
  FimOptions o{0.5, 1234};
  int differ_by_seed = 0, differ_by_index = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    const FimSplit a = fim_draw_text(kDoc, o, i), b = fim_draw_text(kDoc, o, i);
    EXPECT_EQ(a.applied, b.applied);
    EXPECT_EQ(a.cut_a, b.cut_a);
    EXPECT_EQ(a.cut_b, b.cut_b);
    EXPECT_EQ(fim_transform_text(kDoc, o, i), fim_transform_text(kDoc, o, i));
    const FimSplit c = fim_draw_text(kDoc, FimOptions{0.5, 1235}, i);
    differ_by_seed += (c.applied != a.applied || c.cut_a != a.cut_a || c.cut_b != a.cut_b);
    const FimSplit d = fim_draw_text(kDoc, o, i + 1000);
    differ_by_index += (d.applied != a.applied || d.cut_a != a.cut_a || d.cut_b != a.cut_b);
  }
  EXPECT_GT(differ_by_seed, 100);
  EXPECT_GT(differ_by_index, 100);
  // Order of evaluation does not matter (counter-based, no hidden state).
  const std::string late = fim_transform_text(kDoc, o, 77);
  for (uint64_t i = 0; i < 50; ++i) fim_transform_text(kDoc, o, i);
  EXPECT_EQ(fim_transform_text(kDoc, o, 77), late);
}

TEST(Fim, ObservedRate) {
  FimOptions o{0.1, 42};
  int applied = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) applied += fim_draw_tokens(100, o, uint64_t(i)).applied;
  EXPECT_NEAR(double(applied) / n, 0.1, 0.01);
}

TEST(Fim, TextReassemblesAndCutsOnCharacters) {
  FimOptions o{1.0, 99};
  std::set<std::pair<size_t, size_t>> distinct;
  for (uint64_t i = 0; i < 300; ++i) {
    const FimSplit s = fim_draw_text(kDoc, o, i);
    distinct.insert({s.cut_a, s.cut_b});
    EXPECT_TRUE(valid_utf8(kDoc.substr(0, s.cut_a)));
    EXPECT_TRUE(valid_utf8(kDoc.substr(s.cut_a, s.cut_b - s.cut_a)));
    EXPECT_TRUE(valid_utf8(kDoc.substr(s.cut_b)));
    const std::string psm = fim_transform_text(kDoc, o, i);
    EXPECT_EQ(reassemble(psm), kDoc);
    EXPECT_EQ(psm, std::string(kFimBegin) + kDoc.substr(0, s.cut_a) + std::string(kFimHole) +
                       kDoc.substr(s.cut_b) + std::string(kFimEnd) + kDoc.substr(s.cut_a, s.cut_b - s.cut_a));
  }
  EXPECT_GT(distinct.size(), 100u);  // cuts spread over the document
  // Empty and one-character documents.
  EXPECT_EQ(fim_transform_text("", o, 0), "<｜fim▁begin｜><｜fim▁hole｜><｜fim▁end｜>");
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(reassemble(fim_transform_text("😀", o, i)), "😀");
  // Invalid UTF-8 is accepted and reassembles.
  const std::string bad =
      "\x80\x80"
      "ab\xff\xfe"
      "c";
  for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(reassemble(fim_transform_text(bad, o, i)), bad);
}

TEST(Fim, TokensReassemble) {
  std::vector<int32_t> doc(57);
  std::iota(doc.begin(), doc.end(), 1000);
  const FimTokenIds ids;
  FimOptions o{1.0, 5};
  for (uint64_t i = 0; i < 200; ++i) {
    const FimSplit s = fim_draw_tokens(doc.size(), o, i);
    const auto out = fim_transform_tokens(doc, o, i, ids);
    ASSERT_EQ(out.size(), doc.size() + 3);
    EXPECT_EQ(out[0], ids.begin);
    const auto h = std::find(out.begin(), out.end(), ids.hole),
               e = std::find(out.begin(), out.end(), ids.end);
    ASSERT_NE(h, out.end());
    ASSERT_NE(e, out.end());
    std::vector<int32_t> back(out.begin() + 1, h);  // prefix
    back.insert(back.end(), e + 1, out.end());      // middle
    back.insert(back.end(), h + 1, e);              // suffix
    EXPECT_EQ(back, doc);
    EXPECT_EQ(size_t(h - out.begin() - 1), s.cut_a);
  }
  EXPECT_EQ(fim_transform_tokens(doc, FimOptions{0.0, 5}, 3, ids), doc);
}

TEST(Fim, EncodeWithRealTokenizer) {
  FimOptions o{1.0, 11};
  const EncodeFn enc = [](std::string_view s) { return v3().encode(s); };
  const FimTokenIds ids = fim_token_ids(v3());
  for (uint64_t i = 0; i < 30; ++i) {
    const FimSplit s = fim_draw_text(kDoc, o, i);
    const auto out = fim_encode(kDoc, o, i, ids, enc);
    // Decoding the PSM ids gives the PSM text.
    EXPECT_EQ(v3().decode(out), fim_transform_text(kDoc, o, i));
    EXPECT_EQ(out[0], 128801);
    (void)s;
  }
  EXPECT_EQ(fim_encode(kDoc, FimOptions{0.0, 0}, 0, ids, enc), v3().encode(kDoc));
}
