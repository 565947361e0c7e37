// Unit tests of the tokenizer core without the Hugging Face reference: BPE merge order against a naive
// implementation, added-token corner cases, the hand-written pre-tokenizer against Oniguruma, invalid
// UTF-8, incremental decoding, special-token skipping, both merges forms, load errors, and the CLI.
// (test_tokenizer_hf.cpp checks everything against the real library.)
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "dsv3/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace fs = std::filesystem;
using dsv3::tok::testing::v3_dir;
using namespace dsv3::tok;
using nlohmann::json;

namespace {

const Tokenizer& v3() {
  static const Tokenizer t = Tokenizer::load(v3_dir().string());
  return t;
}

// A small byte-level tokenizer: the 256 alphabet characters plus the given merges (in rank order).
json toy_json(const std::vector<std::pair<std::string, std::string>>& merges, bool pair_form = false) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_to_unicode(static_cast<uint8_t>(b))] = b;
  json m = json::array();
  for (const auto& [a, c] : merges) {
    std::string joined = a + c;
    if (!vocab.contains(joined)) vocab[joined] = static_cast<int>(vocab.size());
    m.push_back(pair_form ? json::array({a, c}) : json(a + " " + c));
  }
  return json{{"version", "1.0"},
              {"added_tokens", json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}}};
}

std::string write_temp(const std::string& name, const std::string& text) {
  fs::path dir = fs::path(DSV3_BINARY_DIR) / "tokenizer-unit";
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << text;
  return (dir / name).string();
}

std::string random_text(std::mt19937& rng, const std::vector<std::string>& alphabet, int max_len) {
  std::string s;
  int n = 1 + static_cast<int>(rng() % max_len);
  for (int i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
  return s;
}

TEST(TokenizerBpe, MergeRankIsNotGreedyLongestMatch) {
  // "b c" outranks "a b": "abc" becomes [a, bc] although "ab" is a longer prefix.
  Tokenizer t = Tokenizer::from_json(toy_json({{"b", "c"}, {"a", "b"}, {"ab", "c"}}));
  std::vector<int32_t> ids = t.encode("abc");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(t.id_to_token(ids[0]), "a");
  EXPECT_EQ(t.id_to_token(ids[1]), "bc");
  // Equal candidates merge leftmost first: "aaa" with "a a" -> [aa, a].
  Tokenizer t2 = Tokenizer::from_json(toy_json({{"a", "a"}}));
  ids = t2.encode("aaa");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(t2.id_to_token(ids[0]), "aa");
  EXPECT_EQ(t2.id_to_token(ids[1]), "a");
}

TEST(TokenizerBpe, BothMergeFormsAgree) {
  std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "b"}, {"ab", "c"}, {"c", "c"}, {"ab", "ab"}};
  Tokenizer s = Tokenizer::from_json(toy_json(merges, false)),
            p = Tokenizer::from_json(toy_json(merges, true));
  for (const char* text : {"abcabcc", "ababab", "ccc", "abab cc"})
    EXPECT_EQ(s.encode(text), p.encode(text)) << text;
}

TEST(TokenizerBpe, MatchesNaiveReferenceOnRandomPieces) {
  const BpeModel& m = v3().model();
  std::mt19937 rng(123);
  std::vector<std::string> alphabet = {"a",  "e",  "t",  "h",    "n",    " ",   "in", "the",
                                       "中", "文", "の", "\xe4", "\xb8", "0",   "1",  "\n",
                                       "\t", "é",  "ß",  "😀",    "ab",   "ing", "  ", "ー"};
  std::vector<std::string> texts;
  for (int k = 0; k < 400; ++k) texts.push_back(random_text(rng, alphabet, k % 4 == 0 ? 120 : 14));
  texts.push_back(std::string(700, ' '));
  texts.push_back(std::string(333, 'a'));
  std::vector<Piece> pieces;
  for (const auto& s : texts) pieces.push_back(Piece{s, false});
  pieces.push_back(Piece{"hello", true});
  auto naive = m.encode_pieces_naive(pieces);
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::vector<int32_t> fast;
    m.encode_piece(pieces[i], fast);
    EXPECT_EQ(fast, naive[i]) << "piece " << i << " (" << pieces[i].text.size() << " bytes)";
    std::vector<int32_t> again;  // second call is served by the memo for short pieces
    m.encode_piece(pieces[i], again);
    EXPECT_EQ(again, naive[i]);
  }
}

TEST(TokenizerPreTokenize, NativeMatcherEqualsOniguruma) {
  PreTokenizer native = PreTokenizer::deepseek_v3(),
               onig = PreTokenizer::deepseek_v3(RegexEngine::kOniguruma);
  ASSERT_TRUE(native.uses_native_matcher());
  ASSERT_FALSE(onig.uses_native_matcher());
  // Characters of every class the regexes distinguish (all with the same class in both Unicode tables).
  std::vector<std::string> alphabet = {"a",
                                       "Z",
                                       " ",
                                       "  ",
                                       "\t",
                                       "\n",
                                       "\r",
                                       "\r\n",
                                       "1",
                                       "23",
                                       "٣",
                                       "Ⅻ",
                                       "²",
                                       ".",
                                       ",",
                                       "'",
                                       "!",
                                       "$",
                                       "+",
                                       "_",
                                       "-",
                                       "中",
                                       "文",
                                       "の",
                                       "カ",
                                       "゠",
                                       "・",
                                       "ー",
                                       "゛",
                                       "\xe3\x82\x99",
                                       "한",
                                       "ب",
                                       "\xcc\x81",
                                       "\xef\xb8\x8f",
                                       "\xe2\x80\x8d",
                                       "😀",
                                       "\xc2\xa0",
                                       "\xe3\x80\x80",
                                       "\x0b",
                                       "\x01",
                                       "\xe2\x80\xa8",
                                       "(",
                                       "]",
                                       "«",
                                       "€",
                                       "\xf0\x9f\x87\xa8",
                                       "x",
                                       "ing"};
  std::mt19937 rng(99);
  std::vector<std::string_view> a, b;
  for (int k = 0; k < 5000; ++k) {
    std::string s = random_text(rng, alphabet, 24);
    native.split(s, a);
    onig.split(s, b);
    ASSERT_EQ(a, b) << "text " << json(s).dump();
    std::string joined;
    for (auto p : a) joined += p;
    ASSERT_EQ(joined, s);
  }
}

TEST(TokenizerPreTokenize, JsonRoundTripAndErrors) {
  PreTokenizer p = PreTokenizer::deepseek_v3();
  std::ifstream f(v3_dir() / "tokenizer.json");
  json j = json::parse(f);
  json back = p.to_json();
  EXPECT_EQ(back["pretokenizers"].size(), 4u);
  EXPECT_EQ(back["pretokenizers"][2]["pattern"]["Regex"],
            j["pre_tokenizer"]["pretokenizers"][2]["pattern"]["Regex"]);
  EXPECT_TRUE(PreTokenizer::from_json(back).uses_native_matcher());
  EXPECT_THROW(PreTokenizer::from_json(json{{"type", "Whitespace"}}), dsv3::Error);
  EXPECT_THROW(
      PreTokenizer::from_json(json{{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Bogus"}}),
      dsv3::Error);
  EXPECT_THROW(PreTokenizer::from_json(
                   json{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}),
               dsv3::Error);
  EXPECT_THROW(PreTokenizer::from_json(json{{"type", "Split"}, {"behavior", "Isolated"}}), dsv3::Error);
}

TEST(TokenizerEncode, DeepSeekV3Basics) {
  const Tokenizer& t = v3();
  EXPECT_EQ(t.vocab_size(), 128815);
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_EQ(t.pad_id(), 1);
  EXPECT_TRUE(t.add_bos_default());
  EXPECT_EQ(t.bos_token(), "<｜begin▁of▁sentence｜>");
  EXPECT_FALSE(t.chat_template().empty());
  EXPECT_EQ(t.token_to_id("<｜fim▁hole｜>"), 128800);
  EXPECT_EQ(t.token_to_id("no such token"), -1);
  EXPECT_EQ(t.id_to_token(-3), "");
  EXPECT_EQ(t.id_to_token(999999), "");
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(128800));  // fim tokens are added but not special
  EXPECT_EQ(t.encode("Hello world 12345 中文 <｜end▁of▁sentence｜>x"),
            (std::vector<int32_t>{19923, 2058, 223, 6895, 1883, 223, 21134, 223, 1, 90}));
  EXPECT_EQ(t.encode("Hello", true), (std::vector<int32_t>{0, 19923}));
  EXPECT_TRUE(t.encode("").empty());
}

TEST(TokenizerEncode, AddedTokenCornerCases) {
  json j = toy_json({{"a", "b"}});
  int next = 300;
  auto add = [&](const std::string& c, bool sw, bool l, bool r, bool special) {
    j["added_tokens"].push_back({{"id", next++},
                                 {"content", c},
                                 {"single_word", sw},
                                 {"lstrip", l},
                                 {"rstrip", r},
                                 {"normalized", false},
                                 {"special", special}});
  };
  add("<x>", false, false, false, true);
  add("<x><y>", false, false, false, true);  // longest match wins at the same start
  add("[m]", true, true, true, false);       // single word, strips spaces on both sides
  Tokenizer t = Tokenizer::from_json(j);
  int32_t x = t.token_to_id("<x>"), xy = t.token_to_id("<x><y>"), m = t.token_to_id("[m]");
  EXPECT_EQ(t.encode("<x><y>"), (std::vector<int32_t>{xy}));
  EXPECT_EQ(t.encode("<x><x>"), (std::vector<int32_t>{x, x}));
  std::vector<int32_t> ids = t.encode("q  [m]  r");  // lstrip/rstrip swallow the spaces
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], m);
  ids = t.encode("q[m]r");  // not a single word: left to BPE
  EXPECT_EQ(std::count(ids.begin(), ids.end(), m), 0);
  EXPECT_EQ(t.decode(t.encode("a<x>b"), /*skip_special_tokens=*/true), "ab");
  EXPECT_EQ(t.decode(t.encode("a<x>b")), "a<x>b");
}

TEST(TokenizerEncode, InvalidUtf8RoundTripsBytes) {
  const Tokenizer& t = v3();
  std::string bad = "ok \xff\xfe mid \xe4\xb8 end \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80";
  std::vector<int32_t> ids = t.encode(bad);
  EXPECT_EQ(t.decode(ids), bad);
  // Each invalid byte is its own piece: 0xFF encodes as its single byte token.
  std::vector<int32_t> ff = t.encode("\xff");
  ASSERT_EQ(ff.size(), 1u);
  EXPECT_EQ(t.id_to_token(ff[0]), byte_to_unicode(0xFF));
  std::mt19937 rng(5);
  for (int k = 0; k < 2000; ++k) {
    std::string s(1 + rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : "ab \n1中"[rng() % 8]);
    ASSERT_EQ(t.decode(t.encode(s)), s);
  }
}

TEST(TokenizerEncode, ConcurrentCallersAgree) {
  const Tokenizer& t = v3();
  std::mt19937 rng(3);
  std::vector<std::string> alphabet = {"the ", "中文", " 123", "\n", "<｜User｜>", "é", "😀", "  ", "ing", "x"};
  std::vector<std::string> texts;
  for (int k = 0; k < 300; ++k) texts.push_back(random_text(rng, alphabet, 40));
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts) want.push_back(t.encode(s));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] {
      for (int rep = 0; rep < 3; ++rep)
        for (size_t i = 0; i < texts.size(); ++i) bad[w] += t.encode(texts[i]) != want[i];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

TEST(TokenizerDecode, IncrementalHoldsSplitCharacters) {
  const Tokenizer& t = v3();
  auto byte_id = [&](uint8_t b) { return t.token_to_id(byte_to_unicode(b)); };
  IncrementalDecoder d(t);
  EXPECT_EQ(d.push(byte_id(0xE4)), "");
  EXPECT_EQ(d.push(byte_id(0xB8)), "");
  EXPECT_EQ(d.push(byte_id(0xAD)), "中");
  EXPECT_EQ(d.push(t.token_to_id("Hello")), "Hello");
  EXPECT_EQ(d.push(byte_id(0xF0)), "");
  EXPECT_EQ(d.push(byte_id(0x9F)), "");
  EXPECT_EQ(d.push(byte_id(0x41)),
            "\xEF\xBF\xBD"
            "A");  // broken sequence -> U+FFFD, then the ASCII
  EXPECT_EQ(d.push(byte_id(0xE4)), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");  // incomplete at the end
  // Streaming equals whole decoding for real text.
  std::string text =
      "混合 text with emoji 👩🏿‍💻 and ünïcödé <｜end▁of▁sentence｜> done";
  std::vector<int32_t> ids = t.encode(text);
  for (bool skip : {false, true}) {
    IncrementalDecoder inc(t, skip);
    std::string s;
    for (int32_t id : ids) s += inc.push(id);
    s += inc.flush();
    EXPECT_EQ(s, t.decode(ids, skip));
  }
  EXPECT_EQ(t.decode(ids, true), "混合 text with emoji 👩🏿‍💻 and ünïcödé  done");
}

TEST(TokenizerUnicode, LossyMatchesRustRules) {
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\xff"), "\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("\xe4\xb8"), "\xEF\xBF\xBD");  // one maximal subpart
  EXPECT_EQ(utf8_lossy("\xe4\xb8x"), "\xEF\xBF\xBDx");
  EXPECT_EQ(utf8_lossy("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: 3 replacements
  EXPECT_EQ(utf8_lossy("\xf0\x9f\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(utf8_incomplete_tail("ab\xe4\xb8"), 2u);
  EXPECT_EQ(utf8_incomplete_tail("ab\xe4\xb8\xad"), 0u);
  EXPECT_EQ(utf8_incomplete_tail("\xff"), 0u);
  std::string out;
  Normalizer::from_json(json{{"type", "NFKC"}}).normalize("ｆｕｌｌ ①", out);
  EXPECT_EQ(out, "full 1");
  Normalizer::from_json(json{{"type", "NFC"}}).normalize("e\xcc\x81\xff", out);
  EXPECT_EQ(out, "\xc3\xa9\xff");
}

TEST(TokenizerLoad, ErrorsAreClear) {
  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one mentioning \"" << needle << "\"";
    } catch (const dsv3::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([] { Tokenizer::load("/nonexistent/tokenizer.json"); }, "does not exist");
  std::string bad = write_temp("malformed.json", "{\"model\": {\"vocab\": ");
  expect_error([&] { Tokenizer::load(bad); }, "malformed JSON");
  json j = toy_json({{"a", "b"}});
  j["model"]["merges"].push_back("q zz");
  expect_error([&] { Tokenizer::from_json(j); }, "not in the vocab");
  j = toy_json({});
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error([&] { Tokenizer::from_json(j); }, "unsupported pre_tokenizer type");
  j = toy_json({});
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_error([&] { Tokenizer::from_json(j); }, "unsupported normalizer type");
  j = toy_json({});
  j["model"]["type"] = "WordPiece";
  expect_error([&] { Tokenizer::from_json(j); }, "only BPE");
  j = toy_json({});
  j["model"]["merges"] = json::array({"a b c"});
  expect_error([&] { Tokenizer::from_json(j); }, "two tokens");
  j = toy_json({});
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error([&] { Tokenizer::from_json(j); }, "unsupported decoder");
}

// Runs the CLI binary built next to the tests; returns stdout, sets rc.
std::string run_cli(const std::string& args, int& rc) {
  std::string cmd = (fs::path(DSV3_BINARY_DIR) / "dsv3").string() + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  rc = pclose(p);
  return out;
}

TEST(TokenizerCli, TokenizeAndDetokenize) {
  if (!fs::exists(fs::path(DSV3_BINARY_DIR) / "dsv3")) GTEST_SKIP() << "dsv3 binary not built";
  const std::string tk = "--tokenizer '" + v3_dir().string() + "'";
  int rc = 0;
  EXPECT_EQ(run_cli("tokenize " + tk + " --text 'Hello world'", rc), "19923,2058\n");
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(run_cli("tokenize " + tk + " --text 'Hello' --bos --json", rc), "[0, 19923]\n");
  std::string f = write_temp("cli_input.txt", "中文\n<｜User｜>x");
  std::string ids = run_cli("tokenize " + tk + " --file '" + f + "'", rc);
  ASSERT_EQ(rc, 0);
  ids.pop_back();  // newline
  EXPECT_EQ(run_cli("detokenize " + tk + " --ids " + ids, rc), "中文\n<｜User｜>x");
  EXPECT_EQ(run_cli("detokenize " + tk + " --ids 19923,0,2058 --skip-special", rc), "Hello world");
  run_cli("detokenize " + tk + " --ids 19923,9999999", rc);
  EXPECT_NE(rc, 0);
  run_cli("tokenize " + tk, rc);  // neither --text nor --file
  EXPECT_NE(rc, 0);
}

}  // namespace
