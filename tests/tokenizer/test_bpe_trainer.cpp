// BPE training: hand-checked merges on tiny corpora, deterministic tie-breaking, chunked file streaming equal
// to whole-text counting, the word-table cap, error cases, the `dsv3 tokenizer train` CLI, the written
// files' structure against DeepSeek-V3's, and the key test: a dsv3-trained tokenizer loads in Hugging Face
// `tokenizers` (tests/tokenizer/hf/reference.js) and encodes held-out multilingual text to exactly the ids
// dsv3's Tokenizer produces, with exact decode round trips on both sides.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv3/error.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "../temp_dir.h"
#include "tokenizer_test_util.h"

using namespace dsv3::tok;
using nlohmann::json;
namespace fs = std::filesystem;
using dsv3::tok::testing::v3_dir;
using dsv3::tok::testing::read_lines;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

using dsv3::test::TempDir;

BpeTrainerOptions opts(int32_t n_merges, int64_t min_frequency = 1) {
  BpeTrainerOptions o;
  o.vocab_size = bpe_min_vocab_size() + n_merges;
  o.min_frequency = min_frequency;
  return o;
}

// Merges as token strings (raw bytes), "left|right".
std::vector<std::string> merge_strings(const TrainedBpe& m) {
  std::vector<std::string> out;
  for (const auto& [a, b] : m.merges) out.push_back(m.tokens[a] + "|" + m.tokens[b]);
  return out;
}

// Multilingual sentence bank; the training and held-out texts draw different mixes from it (plus text the
// training never saw). Splitmix-style generator, so the corpus is the same on every machine.
const std::vector<std::string> kSentences = {
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, roughly 8,100,000,000 people lived on Earth; 55% in cities.",
    "深度学习模型需要大量的训练数据和计算资源。",
    "東京は日本の首都で、人口は約1400万人です。カタカナとひらがなも使います。",
    "Привет, мир! Как дела? Всё хорошо.",
    "¿Dónde está la biblioteca? Está cerca de la estación.",
    "Größere Modelle benötigen mehr Speicher — aber nicht immer.",
    "مرحبا بالعالم، هذا نص تجريبي.",
    "한국어 문장도 포함됩니다. 감사합니다!",
    "def train(model, data):\n    for batch in data:\n        loss = model(batch)\n        loss.backward()\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
    "emoji: 😀🎉👍🏽 and a family 👨‍👩‍👧 in one line",
    "   indented text\twith tabs\r\nand CRLF line ends\r\n",
    "URLs like https://example.com/path?q=1&r=two#frag should split sensibly.",
    "Numbers: 3.14159, 2.71828, 1e-9, 0x7fff, 1234567890123.",
    "ελληνικά γράμματα και λέξεις",
    "हिन्दी में एक वाक्य।",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
};

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string sentence_mix(uint64_t seed, size_t n_sentences, size_t first, size_t count) {
  std::string out;
  for (size_t i = 0; i < n_sentences; ++i) {
    out += kSentences[first + splitmix(seed) % count];
    out += (splitmix(seed) % 4 == 0) ? "\n\n" : " ";
  }
  return out;
}

// Training corpus: the repository's C++ sources (code), license texts when present (English prose), and
// multilingual sentences.
std::vector<fs::path> training_files(const fs::path& tmp) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(fs::path(DSV3_SOURCE_DIR) / "src"))
    if (e.is_regular_file() && (e.path().extension() == ".cpp" || e.path().extension() == ".h"))
      files.push_back(e.path());
  if (fs::exists("/usr/share/common-licenses"))
    for (const auto& e : fs::directory_iterator("/usr/share/common-licenses"))
      if (e.is_regular_file() && fs::file_size(e.path()) < 200000) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::ofstream(tmp / "multilingual.txt", std::ios::binary)
      << sentence_mix(1, 4000, 0, kSentences.size() - 3);
  files.push_back(tmp / "multilingual.txt");
  return files;
}

// Held-out documents: other sentence mixes (including the three languages left out of training), test
// sources, and edge cases.
std::vector<std::string> held_out_docs() {
  std::vector<std::string> docs;
  for (uint64_t s = 100; s < 140; ++s) docs.push_back(sentence_mix(s, 12, 0, kSentences.size()));
  for (const char* name : {"tests/tokenizer/test_fim.cpp", "tests/tokenizer/test_chat_template.cpp"})
    docs.push_back(read_file(fs::path(DSV3_SOURCE_DIR) / name));
  docs.push_back("");
  docs.push_back(" ");
  docs.push_back("\n\n\n");
  docs.push_back("      leading and trailing spaces      ");
  docs.push_back("1234567890 12 3 4567 ١٢٣ ½ ²");
  docs.push_back("<｜User｜>hello<｜Assistant｜>hi<｜end▁of▁sentence｜>");
  docs.push_back("<｜fim▁begin｜>def f():<｜fim▁hole｜>\n<｜fim▁end｜>");
  docs.push_back("Ünïcödé ßtraße ﬁ ﬂ ǅ Å Å");
  docs.push_back("🏳️‍🌈 🇫🇷 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀𠀁 \u200b\u00a0\u3000end");
  docs.push_back(std::string(3000, 'a') + std::string(500, ' ') + "!!!???...");
  return docs;
}

bool have_command(const char* name) {
  return std::system((std::string("command -v ") + name + " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace

TEST(BpeTrainer, TinyCorpusHandChecked) {
  // Pieces: "ab", " ab", " ab", " abc". Pair counts: (a,b)=4, (' ',a)=3, (b,c)=1.
  // Merge 1: a+b (4). Then (' ',ab)=3, (ab,c)=1. Merge 2: ' '+ab (3). Then (' ab',c)=1: below min 2, stop.
  BpeTrainer t(PreTokenizer::deepseek_v3(), opts(10, 2));
  t.add_text("ab ab ab abc");
  const TrainedBpe m = t.train();
  EXPECT_EQ(merge_strings(m), (std::vector<std::string>{"a|b", " |ab"}));
  EXPECT_EQ(t.stats().n_pieces, 4);
  EXPECT_EQ(t.stats().n_words, 3);
  ASSERT_EQ(m.tokens.size(), size_t(bpe_min_vocab_size() + 2));
  EXPECT_EQ(m.tokens[0], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(m.tokens[1], "<｜end▁of▁sentence｜>");
  EXPECT_EQ(m.tokens[2], "<｜▁pad▁｜>");
  EXPECT_EQ(m.tokens[3], "!");  // bytes ordered by byte-level code point, as in V3
  EXPECT_EQ(m.tokens[259], "ab");
  EXPECT_EQ(m.tokens[260], " ab");
  EXPECT_EQ(m.tokens[261], "<｜fim▁hole｜>");
  EXPECT_EQ(m.tokens.back(), "<｜tool▁sep｜>");

  // With min frequency 1 the third merge happens; vocab_size caps the number of new tokens.
  BpeTrainer t3(PreTokenizer::deepseek_v3(), opts(3));
  t3.add_text("ab ab ab abc");
  EXPECT_EQ(merge_strings(t3.train()), (std::vector<std::string>{"a|b", " |ab", " ab|c"}));
  BpeTrainer t1(PreTokenizer::deepseek_v3(), opts(1));
  t1.add_text("ab ab ab abc");
  EXPECT_EQ(merge_strings(t1.train()), (std::vector<std::string>{"a|b"}));
}

TEST(BpeTrainer, TiesBreakOnByteStrings) {
  // Pieces "ab" and " cd", once each: all pairs have count 1. Ties go to the smallest (left, right) bytes:
  // (' ', c) first (0x20 < 'a'), then (' c', d), then (a, b).
  BpeTrainer t(PreTokenizer::deepseek_v3(), opts(10));
  t.add_text("ab cd");
  EXPECT_EQ(merge_strings(t.train()), (std::vector<std::string>{" |c", " c|d", "a|b"}));
}

TEST(BpeTrainer, RepeatedSymbolsAndWordCounts) {
  // "aaaa" x3 and "aaa" x1 (separate lines). Pair (a,a): 3*3 + 2 = 11 -> "aa"; words become [aa,aa] and
  // [aa,a]; (aa,aa)=3 beats (aa,a)=1.
  BpeTrainer t(PreTokenizer::deepseek_v3(), opts(10, 2));
  t.add_text("aaaa\naaaa\naaaa\naaa");
  EXPECT_EQ(merge_strings(t.train()), (std::vector<std::string>{"a|a", "aa|aa"}));
}

TEST(BpeTrainer, DeterministicAndChunkingInvariant) {
  TempDir tmp;
  const auto files = training_files(tmp.path);
  // Whole files as single add_text calls vs streamed with tiny chunks: identical counts, identical model.
  BpeTrainerOptions o = opts(600);
  BpeTrainer whole(PreTokenizer::deepseek_v3(), o);
  for (const auto& f : files) whole.add_text(read_file(f));
  const std::string a = bpe_tokenizer_json(whole.train());

  o.chunk_bytes = 1024;
  BpeTrainer chunked(PreTokenizer::deepseek_v3(), o);
  for (const auto& f : files) chunked.add_file(f.string());
  const std::string b = bpe_tokenizer_json(chunked.train());
  EXPECT_EQ(whole.stats().n_pieces, chunked.stats().n_pieces);
  EXPECT_EQ(whole.stats().n_words, chunked.stats().n_words);
  EXPECT_EQ(chunked.stats().n_forced_cuts, 0);
  EXPECT_TRUE(a == b) << "chunked training differs from whole-text training";

  BpeTrainer again(PreTokenizer::deepseek_v3(), o);
  for (const auto& f : files) again.add_file(f.string());
  EXPECT_TRUE(bpe_tokenizer_json(again.train()) == b) << "training is not deterministic";
}

TEST(BpeTrainer, ChunkCutsAreExactOnAdversarialText) {
  // Fragments that stress the cut rule: whitespace runs around newlines, CRLF, punctuation before newlines,
  // digits / CJK / marks / NBSP / ideographic space / invalid bytes right after newlines, indentation.
  const std::vector<std::string> frags = {
      "\n",   "\n\n",  "\r\n",   "  \n",     "\n  ",   "\n\t",   " ",    "   ",
      "word", " word", "Wörd",   ".",        "...\n",  "!?\n\n", "123",  "4567",
      "中文", "かな",  "\u0301", "\u00a0",   "\u3000", "\u2028", "\xff", "\xe4\xb8",
      "(x)",  "'s",    "-->",    "\tindent", "😀",      "\v",     "\f"};
  std::string text;
  uint64_t seed = 3;
  for (int i = 0; i < 60000; ++i) text += frags[splitmix(seed) % frags.size()];
  TempDir tmp;
  std::ofstream(tmp.path / "adv.txt", std::ios::binary) << text;
  BpeTrainer whole(PreTokenizer::deepseek_v3(), opts(100));
  whole.add_text(text);
  for (size_t chunk : {size_t(1024), size_t(1500), size_t(4099)}) {
    BpeTrainerOptions o = opts(100);
    o.chunk_bytes = chunk;
    BpeTrainer chunked(PreTokenizer::deepseek_v3(), o);
    chunked.add_file((tmp.path / "adv.txt").string());
    EXPECT_EQ(chunked.stats().n_forced_cuts, 0);
    EXPECT_EQ(chunked.stats().bytes_read, int64_t(text.size()));
    EXPECT_TRUE(chunked.word_counts() == whole.word_counts()) << "chunk " << chunk;
  }
}

TEST(BpeTrainer, ForcedCutOnHugeLine) {
  // A single line longer than 8 chunks has no safe cut: it is cut anyway, counted in n_forced_cuts.
  TempDir tmp;
  std::string line;
  for (int i = 0; i < 3000; ++i) line += "word" + std::to_string(i % 10) + " ";
  std::ofstream(tmp.path / "line.txt", std::ios::binary) << line;
  BpeTrainerOptions o = opts(50);
  o.chunk_bytes = 1024;
  BpeTrainer t(PreTokenizer::deepseek_v3(), o);
  t.add_file((tmp.path / "line.txt").string());
  t.train();
  EXPECT_GT(t.stats().n_forced_cuts, 0);
  EXPECT_EQ(t.stats().bytes_read, int64_t(line.size()));
}

TEST(BpeTrainer, WordTableCapPrunesRarest) {
  BpeTrainerOptions o = opts(20);
  o.max_words = 64;
  BpeTrainer t(PreTokenizer::deepseek_v3(), o);
  std::string text;
  for (int i = 0; i < 2000; ++i) text += " w" + std::to_string(i * 7919 % 100003) + "x the the the";
  // Digits split off by the pre-tokenizer; words like " w" and "x" and " the" stay frequent.
  for (int i = 0; i < 500; ++i)
    text += " uniq" + std::string(1, char('a' + i % 26)) + std::string(1, char('a' + i / 26 % 26));
  t.add_text(text);
  const TrainedBpe m = t.train();
  EXPECT_GT(t.stats().n_words_pruned, 0);
  EXPECT_LE(t.stats().n_words, 64);
  // Frequent words survive the pruning: " the" (6000 times) is learned, " t" + "h" then " th" + "e".
  const auto merges = merge_strings(m);
  EXPECT_NE(std::find(merges.begin(), merges.end(), " th|e"), merges.end());
}

TEST(BpeTrainer, Errors) {
  BpeTrainerOptions small;
  small.vocab_size = 256 + 10;
  try {
    BpeTrainer t(PreTokenizer::deepseek_v3(), small);
    FAIL() << "expected an error";
  } catch (const dsv3::Error& e) {
    EXPECT_NE(std::string(e.what()).find("smaller than the 256 byte tokens"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(BpeTrainer(PreTokenizer::deepseek_v3(), opts(0)));
  BpeTrainer t(PreTokenizer::deepseek_v3(), opts(10));
  try {
    t.add_file("/nonexistent/dir/corpus.txt");
    FAIL() << "expected an error";
  } catch (const dsv3::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/corpus.txt"), std::string::npos) << e.what();
  }
  // No input at all: a valid tokenizer with bytes and specials only.
  const TrainedBpe m = t.train();
  EXPECT_EQ(int32_t(m.tokens.size()), bpe_min_vocab_size());
  EXPECT_THROW(t.train(), dsv3::Error);
}

TEST(BpeTrainer, WrittenFilesHaveV3Structure) {
  TempDir tmp;
  BpeTrainer t(PreTokenizer::deepseek_v3(), opts(200));
  t.add_text(sentence_mix(5, 500, 0, kSentences.size()));
  save_bpe_tokenizer(t.train(), (tmp.path / "tok").string());
  const json ours = json::parse(read_file(tmp.path / "tok" / "tokenizer.json"));
  const json v3 = json::parse(read_file(v3_dir() / "tokenizer.json"));
  for (const char* key :
       {"version", "truncation", "padding", "normalizer", "pre_tokenizer", "post_processor", "decoder"})
    EXPECT_EQ(ours[key], v3[key]) << key;
  for (const auto& [key, value] : v3["model"].items()) {
    if (key == "vocab" || key == "merges") continue;
    EXPECT_EQ(ours["model"][key], value) << "model." << key;
  }
  EXPECT_EQ(ours["model"]["merges"].size(), 200u);
  EXPECT_EQ(ours["model"]["vocab"].size(), 3u + 256u + 200u);
  // Every added token of ours has V3's flags for the same content.
  std::map<std::string, json> v3_added;
  for (const auto& a : v3["added_tokens"]) v3_added[a["content"].get<std::string>()] = a;
  ASSERT_EQ(ours["added_tokens"].size(), 17u);
  for (auto a : ours["added_tokens"]) {
    const std::string content = a["content"];
    ASSERT_TRUE(v3_added.count(content)) << content;
    json b = v3_added[content];
    a.erase("id");
    b.erase("id");
    EXPECT_EQ(a, b) << content;
  }
  const json cfg = json::parse(read_file(tmp.path / "tok" / "tokenizer_config.json"));
  EXPECT_EQ(cfg["chat_template"].get<std::string>(), std::string(kDeepSeekV3ChatTemplate));
  EXPECT_EQ(cfg["add_bos_token"], true);
  EXPECT_EQ(cfg["bos_token"]["content"], "<｜begin▁of▁sentence｜>");

  const Tokenizer tok = Tokenizer::load((tmp.path / "tok").string());
  EXPECT_EQ(tok.vocab_size(), bpe_min_vocab_size() + 200);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 1);
  EXPECT_EQ(tok.token_to_id("<｜fim▁begin｜>"), 3 + 256 + 200 + 1);
  EXPECT_EQ(tok.chat_template(), std::string(kDeepSeekV3ChatTemplate));
}

TEST(BpeTrainer, CliTrainsAndReportsErrors) {
  TempDir tmp;
  const std::string dsv3 = (fs::path(DSV3_BINARY_DIR) / "dsv3").string();
  std::ofstream(tmp.path / "a.txt", std::ios::binary) << sentence_mix(9, 800, 0, kSentences.size());
  const std::string out = (tmp.path / "tok").string();
  std::string cmd = "'" + dsv3 + "' tokenizer train --vocab-size 400 --input '" +
                    (tmp.path / "a.txt").string() + "' --out '" + out + "' > '" +
                    (tmp.path / "stdout").string() + "' 2> '" + (tmp.path / "stderr").string() + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_file(tmp.path / "stderr");
  EXPECT_NE(read_file(tmp.path / "stderr").find("merge: "), std::string::npos);
  EXPECT_NE(read_file(tmp.path / "stdout").find("vocab 400"), std::string::npos)
      << read_file(tmp.path / "stdout");
  EXPECT_EQ(Tokenizer::load(out).vocab_size(), 400);

  cmd = "'" + dsv3 + "' tokenizer train --vocab-size 400 --input /nonexistent.txt --out '" + out + "' 2> '" +
        (tmp.path / "err").string() + "'";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(read_file(tmp.path / "err").find("/nonexistent.txt"), std::string::npos);
  cmd = "'" + dsv3 + "' tokenizer train --vocab-size 100 --input '" + (tmp.path / "a.txt").string() +
        "' --out '" + out + "' 2> '" + (tmp.path / "err").string() + "'";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(read_file(tmp.path / "err").find("smaller than the 256 byte tokens"), std::string::npos);
}

// The key test: HF `tokenizers` loads what dsv3 trained and agrees with dsv3's Tokenizer id for id.
TEST(BpeTrainer, TrainedTokenizerMatchesHuggingFace) {
  if (!have_command("node")) GTEST_SKIP() << "node not installed: the Hugging Face reference cannot run";
  const fs::path src(DSV3_SOURCE_DIR), work = fs::path(DSV3_BINARY_DIR) / "tokenizer-hf-bpe-train";
  fs::create_directories(work);
  for (const char* f : {"package.json", "package-lock.json", "reference.js"})
    fs::copy_file(src / "tests/tokenizer/hf" / f, work / f, fs::copy_options::overwrite_existing);
  if (!fs::exists(work / "node_modules/tokenizers/package.json")) {
    const std::string cmd = "cd '" + work.string() + "' && npm ci --no-audit --no-fund > npm.log 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "npm ci failed in " << work << " (see npm.log there)";
  }

  TempDir tmp;
  BpeTrainerOptions o = opts(3000);
  BpeTrainer trainer(PreTokenizer::deepseek_v3(), o);
  for (const auto& f : training_files(tmp.path)) trainer.add_file(f.string());
  const TrainedBpe model = trainer.train();
  EXPECT_EQ(trainer.stats().vocab_size, o.vocab_size);
  const fs::path dir = work / "trained";
  save_bpe_tokenizer(model, dir.string());
  const Tokenizer tok = Tokenizer::load(dir.string());

  const std::vector<std::string> docs = held_out_docs();
  {
    std::ofstream f(work / "held_out.jsonl", std::ios::binary);
    for (const auto& d : docs) f << json(d).dump() << "\n";
  }
  std::vector<std::vector<int32_t>> ours;
  {
    std::ofstream f(work / "decode_in.jsonl", std::ios::binary);
    for (const auto& d : docs) {
      ours.push_back(tok.encode(d));
      f << json{{"ids", ours.back()}, {"skip", false}}.dump() << "\n";
    }
  }
  const std::string tj = (dir / "tokenizer.json").string();
  json jobs = json::array();
  jobs.push_back({{"kind", "encode"},
                  {"tokenizer", tj},
                  {"corpus", (work / "held_out.jsonl").string()},
                  {"out", (work / "hf_ids.jsonl").string()}});
  jobs.push_back({{"kind", "decode"},
                  {"tokenizer", tj},
                  {"input", (work / "decode_in.jsonl").string()},
                  {"out", (work / "hf_decoded.jsonl").string()}});
  std::ofstream(work / "jobs.json") << jobs.dump(1);
  const std::string cmd = "cd '" + work.string() +
                          "' && RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 node "
                          "reference.js jobs.json > reference.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference.js failed, see " << (work / "reference.log");

  const auto hf_ids = read_lines(work / "hf_ids.jsonl");
  const auto hf_text = read_lines(work / "hf_decoded.jsonl");
  ASSERT_EQ(hf_ids.size(), docs.size());
  ASSERT_EQ(hf_text.size(), docs.size());
  size_t n_tokens = 0, n_bytes = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    const auto theirs = json::parse(hf_ids[i]).get<std::vector<int32_t>>();
    EXPECT_EQ(ours[i], theirs) << "doc " << i << ": " << json(docs[i].substr(0, 200)).dump();
    EXPECT_EQ(tok.decode(ours[i]), docs[i]) << "dsv3 decode round trip, doc " << i;
    EXPECT_EQ(json::parse(hf_text[i]).get<std::string>(), docs[i]) << "HF decode round trip, doc " << i;
    n_tokens += ours[i].size();
    n_bytes += docs[i].size();
  }
  // The merges are used: held-out text (partly in scripts the training never saw) compresses to < 1/2.
  EXPECT_LT(2 * n_tokens, n_bytes) << n_tokens << " tokens for " << n_bytes << " bytes";
}
