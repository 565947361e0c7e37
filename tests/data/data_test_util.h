// Helpers for the tests/data tests: a self-deleting temp directory, a small BPE tokenizer trained once per
// test binary (DeepSeek-V3 layout: EOS id 1, FIM tokens present), a deterministic multilingual document
// generator, and raw shard readers that bypass the loader.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/shard_writer.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "../temp_dir.h"

namespace dsv3::data::test {

namespace fs = std::filesystem;

using dsv3::test::TempDir;

inline std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_bytes(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << s;
}

inline const std::vector<std::string>& sentence_bank() {
  static const std::vector<std::string> bank = {
      "The quick brown fox jumps over the lazy dog.",
      "In the beginning God created the heaven and the earth.",
      "深度学习模型需要大量的训练数据和计算资源。",
      "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
      "def add(a, b):\n    return a + b",
      "for i in range(10):\n    print(i * i)",
      "Numbers like 3.14159 and 2,718 appear here; so do emoji 🎉 and tabs\tok.",
      "A journey of a thousand miles begins with a single step.",
      "中文和English混合的句子也要处理好。",
      "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y",
  };
  return bank;
}

// Document i: 1..12 sentences from the bank (no blank lines inside), deterministic in (i, salt).
inline std::string make_doc(uint64_t i, uint64_t salt = 0) {
  uint64_t x = i * 0x9E3779B97F4A7C15ULL + salt * 0xD1B54A32D192ED03ULL + 1;
  auto next = [&x] {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
  };
  const auto& bank = sentence_bank();
  const int n = 1 + int(next() % 12);
  std::string doc = "Document " + std::to_string(i) + "-" + std::to_string(salt) + ".";
  for (int k = 0; k < n; ++k) doc += (next() % 3 == 0 ? "\n" : " ") + bank[next() % bank.size()];
  return doc;
}

// A small BPE tokenizer trained on the bank (once per process); its directory path.
inline const std::string& tiny_tokenizer_dir() {
  static const std::string dir = [] {
    const fs::path d = fs::temp_directory_path() / ("dsv3_data_tok_" + std::to_string(::getpid()));
    tok::BpeTrainerOptions o;
    o.vocab_size = tok::bpe_min_vocab_size() + 300;
    o.min_frequency = 1;
    tok::BpeTrainer t(tok::PreTokenizer::deepseek_v3(), o);
    for (int i = 0; i < 200; ++i) t.add_text(make_doc(uint64_t(i), 99));
    tok::save_bpe_tokenizer(t.train(), d.string());
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("dsv3_data_tok_" + std::to_string(::getpid())), ec);
    });
    return d.string();
  }();
  return dir;
}

inline const tok::Tokenizer& tiny_tokenizer() {
  static const tok::Tokenizer t = tok::Tokenizer::load(tiny_tokenizer_dir());
  return t;
}

inline nlohmann::json read_index(const std::string& dir) {
  return nlohmann::json::parse(read_bytes(fs::path(dir) / "index.json"));
}

// The whole token stream of a split, read directly from the shard files listed in index.json.
inline std::vector<int32_t> read_split(const std::string& dir, const std::string& split) {
  std::vector<int32_t> out;
  const nlohmann::json index = read_index(dir);  // (a range-for over a temporary's member would dangle)
  for (const auto& s : index["splits"][split]["shards"]) {
    const std::string bytes = read_bytes(fs::path(dir) / s["file"].get<std::string>());
    const size_t n = bytes.size() / 4;
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, bytes.data(), n * 4);
  }
  return out;
}

// Splits a stream after each EOS into documents (EOS not included).
inline std::vector<std::vector<int32_t>> split_at_eos(const std::vector<int32_t>& stream, int32_t eos) {
  std::vector<std::vector<int32_t>> docs(1);
  for (int32_t t : stream) {
    if (t == eos)
      docs.emplace_back();
    else
      docs.back().push_back(t);
  }
  EXPECT_TRUE(docs.back().empty()) << "stream does not end with EOS";
  docs.pop_back();
  return docs;
}

}  // namespace dsv3::data::test
