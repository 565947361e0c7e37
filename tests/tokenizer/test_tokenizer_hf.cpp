// The tokenizer against the real Hugging Face `tokenizers` library (its Node binding, pinned in
// tests/tokenizer/hf/package.json). Once per test process, the fixture:
//   1. copies tests/tokenizer/hf/ to BUILD/tokenizer-hf and runs `npm ci` there if node_modules is missing
//      (under a lock; the generated files below go to a per-process BUILD/tokenizer-hf/run-<pid>/);
//   2. generates the multilingual corpus with scripts/make-tokenizer-corpus.py (~6 MB, deterministic);
//   3. writes variant tokenizer.json files (merges as pairs, added tokens with lstrip/rstrip/single_word,
//      NFKC, every Split behavior with and without invert, ByteLevel with regex and prefix space, ...);
//   4. runs tests/tokenizer/hf/reference.js once over all encode and decode jobs.
// The tests then require identical ids document by document (first mismatch reported with context),
// byte-exact decode(encode(x)) == x, and decode == HF's decode (after HF's lossy UTF-8 step).
// Skips only when `node` is not installed; any other failure (npm, python, a mismatch) is a failure.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace fs = std::filesystem;
using dsv3::tok::testing::v3_dir;
using dsv3::tok::testing::read_lines;
using dsv3::tok::RegexEngine;
using dsv3::tok::Tokenizer;
using nlohmann::json;

namespace {

std::string escape(std::string_view s, size_t max = 160) {
  std::string out = json(std::string(s.substr(0, max))).dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > max) out += "...";
  return out;
}

std::string ids_str(const std::vector<int32_t>& v, size_t from, size_t to) {
  std::string s;
  for (size_t i = from; i < std::min(to, v.size()); ++i) {
    if (i > from) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

// True when doc has a code point that the system Oniguruma classifies differently from the Oniguruma
// inside HF tokenizers (characters assigned in Unicode versions newer than the system's tables).
bool has_unicode_version_gap(std::string_view doc) {
  const uint8_t* ours = dsv3::tok::char_class_table();
  const uint8_t* sys = dsv3::tok::onig_char_class_table();
  auto* p = reinterpret_cast<const unsigned char*>(doc.data());
  for (size_t i = 0; i < doc.size();) {
    char32_t cp;
    int len = dsv3::tok::utf8_decode(p, doc.size(), i, cp);
    if (len == 0) return true;
    if (ours[cp] != sys[cp]) return true;
    i += len;
  }
  return false;
}

// Strings aimed at the corners of the pre-tokenizer, added tokens and normalizers.
std::vector<std::string> edge_strings() {
  std::vector<std::string> v = {
      "",
      " ",
      "  ",
      "\n",
      " \n",
      "\n ",
      "a  b",
      "a   b",
      "a \n b",
      "a\t\tb",
      "x  ",
      "x\n\n",
      " \r\n x",
      "\r\n\r\n",
      "hello world",
      " hello",
      "hello  ",
      "Hello,World!",
      "don't",
      "it's",
      "I'M",
      ".com .net",
      "..com",
      "?!abc",
      "$HOME",
      "a_b_c",
      "__init__",
      "1",
      "12",
      "123",
      "1234",
      "12345678901",
      "１２３４",
      "٣٤٥٦",
      "Ⅻ",
      "x²³",
      "中文",
      "中文abc",
      "abc中文",
      "日本語のテキスト",
      "カタカナー・゠",
      "ゝゞヽヾ",
      "한국어 텍스트",
      "مرحبا بالعالم",
      "e\xcc\x81",
      " \xcc\x81",
      "\xcc\x81" "abc",
      "1\xcc\x81",
      "a\xe2\x80\x8d"
      "b",
      "\xe2\x80\x8d\xe2\x80\x8d",
      "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9",
      "\xe2\x9d\xa4\xef\xb8\x8f",
      "1\xef\xb8\x8f\xe2\x83\xa3",
      "\xc2\xa0x",
      "x\xc2\xa0",
      "\xe3\x80\x80\xe3\x80\x80y",
      "\x0b\x0c",
      "\t\n\t",
      " \t \n",
      "<｜end▁of▁sentence｜>",
      "a<｜end▁of▁sentence｜>b",
      "<｜User｜>hi<｜Assistant｜>",
      "<｜fim▁hole｜>",
      "<｜end▁of▁sentence",
      "<<｜User｜>>",
      "<mask>",
      "a <mask> b",
      "a<mask>b",
      " <mask> ",
      "<mask>,<mask>",
      "hello there",
      "say hello",
      "ohello",
      "hello\t\tworld",
      "\n\nfoo\n\n",
      "foo bar foo",
      "xfoo foo_",
      "ｆｕｌｌ width",
      "ﬁne ﬂow",
      "Å Å",
      "①②",
      "㍿",
      "Ｈｅｌｌｏ",
      "ー",
      "！？",
      "。、",
      "a,b;c:d",
      "(x)[y]{z}",
      "\"quoted\"",
      "'single'",
      "x+=1;",
      "#!/bin/sh",
      "-- flag",
      "a--b",
      "!!!",
      "x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x",
      std::string(300, ' ') + "z",
      std::string(257, 'a'),
      std::string(100, '9'),
      std::string(40, '\n'),
  };
  std::mt19937 rng(7);
  const char* alphabet[] = {"a",          "b",     " ",        "\n", "1",    "中", "ー",
                            "<mask>",     "hello", "\xcc\x81", ",",  "!",    "\t", "\xf0\x9f\x98\x80",
                            "<｜User｜>", "foo",   "ｆ",       "'s", "\r\n", "x"};
  for (int k = 0; k < 200; ++k) {
    std::string s;
    int n = 1 + rng() % 12;
    for (int i = 0; i < n; ++i) s += alphabet[rng() % (sizeof(alphabet) / sizeof(alphabet[0]))];
    v.push_back(s);
  }
  return v;
}

struct Variant {
  std::string name;
  json tokenizer;
};

// Variant tokenizer.json files derived from DeepSeek-V3's.
std::vector<Variant> make_variants(const json& base) {
  std::vector<Variant> out;
  auto with_pre = [&](const std::string& name, const json& pre) {
    json t = base;
    t["pre_tokenizer"] = pre;
    out.push_back({name, t});
  };
  const json bytelevel = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  {
    json t = base;
    for (auto& m : t["model"]["merges"]) {
      std::string s = m;
      size_t sp = s.find(' ');
      m = json::array({s.substr(0, sp), s.substr(sp + 1)});
    }
    out.push_back({"merges_pairs", t});
  }
  {
    json t = base;
    int next = 128815;
    auto add = [&](const std::string& c, bool sw, bool l, bool r, bool norm, bool special) {
      t["added_tokens"].push_back({{"id", next++},
                                   {"content", c},
                                   {"single_word", sw},
                                   {"lstrip", l},
                                   {"rstrip", r},
                                   {"normalized", norm},
                                   {"special", special}});
    };
    add("<mask>", true, true, true, false, true);
    add("hello", false, true, false, true, false);
    add("foo", true, false, false, true, false);
    add("\n\n", false, false, true, false, false);
    add("there", false, false, true, true, false);
    add("\xc4\xa0world", false, false, false, true, false);  // "Ġworld": decodes through the byte alphabet
    add("<｜User｜>hi", false, false, false, false, true);   // longer than an existing token
    out.push_back({"added_flags", t});
  }
  {
    json t = base;
    t["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFKC"}}})}};
    t["added_tokens"].push_back({{"id", 128815},
                                 {"content", "ｆｕｌｌ"},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", true},
                                 {"special", false}});
    out.push_back({"nfkc", t});
    json t2 = base;
    t2["normalizer"] = {{"type", "NFC"}};
    out.push_back({"nfc", t2});
  }
  for (const char* beh : {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"})
    for (bool inv : {false, true})
      with_pre(std::string("split_") + beh + (inv ? "_invert" : ""),
               {{"type", "Sequence"},
                {"pretokenizers", json::array({{{"type", "Split"},
                                                {"pattern", {{"Regex", "\\p{P}+|\\s"}}},
                                                {"behavior", beh},
                                                {"invert", inv}},
                                               bytelevel})}});
  with_pre("split_string", {{"type", "Sequence"},
                            {"pretokenizers", json::array({{{"type", "Split"},
                                                            {"pattern", {{"String", "o"}}},
                                                            {"behavior", "MergedWithNext"},
                                                            {"invert", false}},
                                                           bytelevel})}});
  with_pre(
      "split_empty_matches",
      {{"type", "Sequence"},
       {"pretokenizers",
        json::array(
            {{{"type", "Split"}, {"pattern", {{"Regex", "x*"}}}, {"behavior", "Isolated"}, {"invert", false}},
             bytelevel})}});
  with_pre("bytelevel_gpt2",
           {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}});
  {
    json pre = base["pre_tokenizer"];
    pre["pretokenizers"][3]["add_prefix_space"] = true;
    with_pre("v3_prefix_space", pre);
  }
  with_pre("no_pretokenizer", nullptr);
  {
    json t = base;
    t["model"]["ignore_merges"] = true;
    out.push_back({"ignore_merges", t});
    json t2 = base;
    t2["decoder"] = nullptr;
    out.push_back({"no_decoder", t2});
  }
  return out;
}

// Random id sequences for decode: byte tokens that split characters, specials, unknown ids.
std::vector<std::pair<std::vector<int32_t>, bool>> decode_cases(int32_t vocab_size) {
  std::mt19937 rng(11);
  std::vector<std::pair<std::vector<int32_t>, bool>> cases;
  for (int k = 0; k < 300; ++k) {
    std::vector<int32_t> ids;
    int n = 1 + rng() % 20;
    for (int i = 0; i < n; ++i) {
      int r = rng() % 10;
      if (r < 5)
        ids.push_back(rng() % vocab_size);
      else if (r < 7)
        ids.push_back(rng() % 300);  // single bytes: split and invalid UTF-8
      else if (r < 9)
        ids.push_back(r == 7 ? rng() % 3 : 128000 + rng() % 830);  // special / added / beyond
      else
        ids.push_back(vocab_size + rng() % 10);  // unknown
    }
    cases.push_back({ids, k % 2 == 1});
  }
  return cases;
}

class TokenizerHf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("command -v node >/dev/null 2>&1") != 0) {
      skip_ = true;
      return;
    }
    // The node package (shared by every test process, installed once under a lock) lives in BUILD/tokenizer-hf;
    // each process writes its corpus, jobs and reference ids into its own run-<pid>/ so that CTest can run
    // these tests in parallel.
    const fs::path src(DSV3_SOURCE_DIR), pkg = fs::path(DSV3_BINARY_DIR) / "tokenizer-hf";
    const fs::path work = pkg / ("run-" + std::to_string(::getpid()));
    fs::create_directories(work / "variants");
    {
      const std::string lock = (pkg / "npm.lock").string();
      std::string cmd = "flock '" + lock + "' /bin/sh -c 'cd \"" + pkg.string() + "\" && for f in package.json " +
                        "package-lock.json reference.js; do cp \"" + (src / "tests/tokenizer/hf").string() +
                        "/$f\" .; done && { test -f node_modules/tokenizers/package.json || npm ci --no-audit " +
                        "--no-fund > npm.log 2>&1; }'";
      if (std::system(cmd.c_str()) != 0) {
        setup_error_ = "npm ci failed in " + pkg.string() + " (see npm.log there)";
        return;
      }
    }
    std::string cmd = "python3 '" + (src / "scripts/make-tokenizer-corpus.py").string() + "' '" +
                      (work / "corpus.jsonl").string() + "' --mb 6 > '" + (work / "corpus.log").string() +
                      "' 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      setup_error_ = "corpus generation failed: " + cmd;
      return;
    }
    for (const std::string& l : read_lines(work / "corpus.jsonl"))
      docs_.push_back(json::parse(l).get<std::string>());
    // Small corpus for the variants: the edge strings plus every 25th document.
    variant_docs_ = edge_strings();
    for (size_t i = 0; i < docs_.size(); i += 25) variant_docs_.push_back(docs_[i]);
    {
      std::ofstream f(work / "variant_corpus.jsonl", std::ios::binary);
      for (const auto& d : variant_docs_) f << json(d).dump() << "\n";
    }
    const fs::path v3 = v3_dir() / "tokenizer.json";
    std::ifstream vf(v3);
    json base = json::parse(vf);
    variants_ = make_variants(base);
    json jobs = json::array();
    jobs.push_back({{"kind", "encode"},
                    {"tokenizer", v3.string()},
                    {"corpus", (work / "corpus.jsonl").string()},
                    {"out", (work / "hf_ids.jsonl").string()}});
    for (const Variant& v : variants_) {
      fs::path tj = work / "variants" / (v.name + ".json");
      std::ofstream(tj, std::ios::binary) << v.tokenizer.dump();
      jobs.push_back({{"kind", "encode"},
                      {"tokenizer", tj.string()},
                      {"corpus", (work / "variant_corpus.jsonl").string()},
                      {"out", (work / "variants" / (v.name + ".ids.jsonl")).string()}});
    }
    // Decode jobs: V3, added-token variant, no-decoder variant.
    {
      std::ofstream f(work / "decode_in.jsonl", std::ios::binary);
      for (const auto& [ids, skip] : decode_cases(128815))
        f << json{{"ids", ids}, {"skip", skip}}.dump() << "\n";
    }
    for (const std::string name : {"v3", "added_flags", "no_decoder"}) {
      fs::path tj = name == "v3" ? v3 : work / "variants" / (name + ".json");
      jobs.push_back({{"kind", "decode"},
                      {"tokenizer", tj.string()},
                      {"input", (work / "decode_in.jsonl").string()},
                      {"out", (work / ("decode_" + name + ".jsonl")).string()}});
    }
    std::ofstream(work / "jobs.json") << jobs.dump(1);
    cmd = "cd '" + pkg.string() +
          "' && RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 node reference.js '" +
          (work / "jobs.json").string() + "' > '" + (work / "reference.log").string() + "' 2>&1";
    auto t0 = std::chrono::steady_clock::now();
    if (std::system(cmd.c_str()) != 0) {
      setup_error_ = "reference.js failed (see " + (work / "reference.log").string() + ")";
      return;
    }
    std::printf("[ hf ref   ] node reference ran in %.1f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    work_ = work;
  }

  static void TearDownTestSuite() {
    if (!work_.empty()) fs::remove_all(work_);
  }

  void SetUp() override {
    if (skip_) GTEST_SKIP() << "node is not installed: the Hugging Face reference cannot run";
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }

  // Compares our ids with HF's for every document; reports the first mismatches with context.
  // skip_unicode_gap: leave out documents with code points whose class differs between the system
  // Oniguruma and HF's (only meaningful for the Oniguruma engine, which uses the system tables).
  static void expect_same_ids(const Tokenizer& tok, const std::vector<std::string>& docs,
                              const fs::path& hf_path, const std::string& label,
                              bool skip_unicode_gap = false) {
    std::vector<std::string> lines = read_lines(hf_path);
    ASSERT_EQ(lines.size(), docs.size()) << label << ": reference output has the wrong number of lines";
    size_t bad = 0, n_ids = 0, skipped = 0;
    for (size_t d = 0; d < docs.size(); ++d) {
      if (skip_unicode_gap && has_unicode_version_gap(docs[d])) {
        ++skipped;
        continue;
      }
      std::vector<int32_t> want = json::parse(lines[d]).get<std::vector<int32_t>>();
      std::vector<int32_t> got = tok.encode(docs[d]);
      n_ids += want.size();
      if (got == want) continue;
      if (++bad > 3) continue;
      size_t k = 0;
      while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
      size_t byte_pos = 0;
      for (size_t i = 0; i < k; ++i) byte_pos += tok.token_bytes(want[i]).size();
      std::vector<std::string_view> pieces;
      size_t lo = byte_pos > 40 ? byte_pos - 40 : 0;
      ADD_FAILURE() << label << ": document " << d << " differs at token " << k << " (byte " << byte_pos
                    << ")\n"
                    << "  text near there: " << escape(std::string_view(docs[d]).substr(lo), 120) << "\n"
                    << "  hf  : ..." << ids_str(want, k > 3 ? k - 3 : 0, k + 6) << "\n"
                    << "  dsv3: ..." << ids_str(got, k > 3 ? k - 3 : 0, k + 6) << "\n"
                    << "  hf token " << (k < want.size() ? escape(tok.id_to_token(want[k])) : "<end>")
                    << " vs dsv3 token " << (k < got.size() ? escape(tok.id_to_token(got[k])) : "<end>");
    }
    EXPECT_EQ(bad, 0u) << label << ": " << bad << " of " << docs.size() << " documents differ";
    std::printf(
        "[ hf ref   ] %s: %zu documents (%zu left out: newer Unicode than the system tables), %zu ids, "
        "%zu mismatching documents\n",
        label.c_str(), docs.size() - skipped, skipped, n_ids, bad);
    if (skip_unicode_gap) {
      EXPECT_LT(skipped, docs.size() / 2) << "too few documents left to compare";
    }
  }

  static inline bool skip_ = false;
  static inline std::string setup_error_;
  static inline fs::path work_;
  static inline std::vector<std::string> docs_, variant_docs_;
  static inline std::vector<Variant> variants_;
};

TEST_F(TokenizerHf, CorpusIdsMatchNativeMatcher) {
  Tokenizer tok = Tokenizer::load(v3_dir().string());
  ASSERT_TRUE(tok.pre_tokenizer().uses_native_matcher());
  expect_same_ids(tok, docs_, work_ / "hf_ids.jsonl", "deepseek-v3 (hand-written matcher)");
}

TEST_F(TokenizerHf, CorpusIdsMatchOniguruma) {
  Tokenizer tok = Tokenizer::load(v3_dir().string(), RegexEngine::kOniguruma);
  ASSERT_FALSE(tok.pre_tokenizer().uses_native_matcher());
  expect_same_ids(tok, docs_, work_ / "hf_ids.jsonl", "deepseek-v3 (oniguruma)", /*skip_unicode_gap=*/true);
}

TEST_F(TokenizerHf, CorpusRoundTripsBytes) {
  Tokenizer tok = Tokenizer::load(v3_dir().string());
  size_t bad = 0;
  for (size_t d = 0; d < docs_.size(); ++d) {
    std::string back = tok.decode(tok.encode(docs_[d]));
    if (back != docs_[d] && ++bad <= 3) {
      ADD_FAILURE() << "document " << d << " does not round-trip";
    }
  }
  EXPECT_EQ(bad, 0u);
}

TEST_F(TokenizerHf, VariantsMatch) {
  for (const Variant& v : variants_) {
    SCOPED_TRACE(v.name);
    Tokenizer tok = Tokenizer::from_json(v.tokenizer);
    // Variants other than the exact V3 sequence run on the system Oniguruma.
    expect_same_ids(tok, variant_docs_, work_ / "variants" / (v.name + ".ids.jsonl"), "variant " + v.name,
                    !tok.pre_tokenizer().uses_native_matcher());
  }
}

TEST_F(TokenizerHf, DecodeMatches) {
  auto cases = decode_cases(128815);
  for (const std::string name : {"v3", "added_flags", "no_decoder"}) {
    SCOPED_TRACE(name);
    Tokenizer tok =
        name == "v3"
            ? Tokenizer::load(v3_dir().string())
            : Tokenizer::from_json(json::parse(std::ifstream(work_ / "variants" / (name + ".json"))));
    std::vector<std::string> lines = read_lines(work_ / ("decode_" + name + ".jsonl"));
    ASSERT_EQ(lines.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto& [ids, skip] = cases[i];
      std::string want = json::parse(lines[i]).get<std::string>();
      std::string got = dsv3::tok::utf8_lossy(tok.decode(ids, skip));
      EXPECT_EQ(got, want) << "case " << i << " ids " << ids_str(ids, 0, ids.size()) << " skip=" << skip;
      // The streaming decoder yields the same text.
      dsv3::tok::IncrementalDecoder inc(tok, skip);
      std::string streamed;
      for (int32_t id : ids) streamed += inc.push(id);
      streamed += inc.flush();
      EXPECT_EQ(streamed, want) << "incremental, case " << i;
    }
  }
}

}  // namespace
