// `data prepare`: document splitting, the prepare -> shards round trip (plain documents decode exactly, FIM
// documents carry the three FIM tokens and reassemble to the original), identical output for any thread
// count, a content-keyed val split that is disjoint and stable when the corpus changes, the FIM rate, the
// index.json contents, and the CLI end to end. Uses a tiny BPE tokenizer trained in-process, plus the real
// DeepSeek-V3 tokenizer when ../shared/data/deepseek-v3 is present.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>

#include "data/prepare.h"
#include "data/shard_loader.h"
#include "data_test_util.h"
#include "dsv3/error.h"
#include "tokenizer/fim.h"

using namespace dsv3;
using namespace dsv3::data;
using namespace dsv3::data::test;

namespace {

// Writes docs into n_files files joined by blank lines (for DocSep::kBlankLine).
std::vector<std::string> write_corpus(const TempDir& tmp, const std::vector<std::string>& docs, int n_files,
                                      const std::string& sub = "in") {
  std::vector<std::string> texts(static_cast<size_t>(n_files));
  for (size_t i = 0; i < docs.size(); ++i) {
    std::string& t = texts[i * size_t(n_files) / docs.size()];
    t += (t.empty() ? "" : "\n\n") + docs[i];
  }
  std::vector<std::string> paths;
  for (int f = 0; f < n_files; ++f) {
    char name[32];
    std::snprintf(name, sizeof name, "part-%03d.txt", f);
    paths.push_back(tmp / (sub + "/" + name));
    write_bytes(paths.back(), texts[size_t(f)] + "\n");
  }
  return paths;
}

std::vector<std::string> make_docs(int n, uint64_t salt = 0) {
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) docs.push_back(make_doc(uint64_t(i), salt));
  return docs;
}

PrepareOptions base_options(const TempDir& tmp, const std::string& out = "out") {
  PrepareOptions o;
  o.tokenizer = tiny_tokenizer_dir();
  o.inputs = {tmp / "in"};
  o.out_dir = tmp / out;
  o.doc_sep = DocSep::kBlankLine;
  o.shard_tokens = 700;
  o.n_threads = 2;
  return o;
}

int count(const std::vector<int32_t>& v, int32_t x) {
  return int(std::count(v.begin(), v.end(), x));
}

}  // namespace

TEST(DataPrepare, SplitDocuments) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(split_documents("a\nb\n", DocSep::kFile), V({"a\nb\n"}));
  EXPECT_EQ(split_documents("", DocSep::kFile), V{});
  EXPECT_EQ(split_documents("a\n\n b \n\t\nc\r\n", DocSep::kLine), V({"a", " b ", "c\r"}));
  EXPECT_EQ(split_documents("\n\npara one\nline two\n  \n\n\npara two\n", DocSep::kBlankLine),
            V({"para one\nline two", "para two"}));
  EXPECT_EQ(split_documents("x\n \t\ny", DocSep::kBlankLine), V({"x", "y"}));
  EXPECT_EQ(split_documents("\n \n", DocSep::kBlankLine), V{});
  EXPECT_EQ(parse_doc_sep("blank-line"), DocSep::kBlankLine);
  EXPECT_THROW(parse_doc_sep("para"), dsv3::Error);
}

TEST(DataPrepare, RoundTripWithFim) {
  TempDir tmp;
  const std::vector<std::string> docs = make_docs(300);
  write_corpus(tmp, docs, 7);
  PrepareOptions o = base_options(tmp);
  o.fim_rate = 0.3;
  o.val_fraction = 0.1;
  o.seed = 5;
  const PrepareStats st = prepare_data(o);
  EXPECT_EQ(st.n_files, 7);
  EXPECT_EQ(st.n_docs, 300);
  EXPECT_EQ(st.n_docs_train + st.n_docs_val, 300);
  EXPECT_GT(st.n_docs_val, 5);
  EXPECT_GT(st.n_docs_fim, 40);
  EXPECT_GT(st.n_shards_train, 2);

  const tok::Tokenizer& tk = tiny_tokenizer();
  const tok::FimTokenIds fim = tok::fim_token_ids(tk);
  const int32_t eos = tk.eos_id();
  std::map<std::string, std::vector<std::vector<int32_t>>> got;
  for (const std::string split : {"train", "val"})
    got[split] = split_at_eos(read_split(o.out_dir, split), eos);
  std::map<std::string, size_t> next;
  int n_fim = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string split = is_val_document(docs[i], o.seed, o.val_fraction) ? "val" : "train";
    ASSERT_LT(next[split], got[split].size()) << "missing doc " << i;
    const std::vector<int32_t>& ids = got[split][next[split]++];
    const bool want_fim = tok::fim_draw_text(docs[i], {o.fim_rate, o.seed}, i).applied;
    if (!want_fim) {
      EXPECT_EQ(ids, tk.encode(docs[i])) << "doc " << i;
      EXPECT_EQ(tk.decode(ids), docs[i]);
      continue;
    }
    ++n_fim;
    // <fim_begin> prefix <fim_hole> suffix <fim_end> middle
    ASSERT_EQ(count(ids, fim.begin), 1) << "doc " << i;
    ASSERT_EQ(count(ids, fim.hole), 1);
    ASSERT_EQ(count(ids, fim.end), 1);
    ASSERT_EQ(ids[0], fim.begin);
    const auto hole = std::find(ids.begin(), ids.end(), fim.hole);
    const auto end = std::find(ids.begin(), ids.end(), fim.end);
    ASSERT_LT(hole, end);
    const std::string prefix = tk.decode(std::vector<int32_t>(ids.begin() + 1, hole));
    const std::string suffix = tk.decode(std::vector<int32_t>(hole + 1, end));
    const std::string middle = tk.decode(std::vector<int32_t>(end + 1, ids.end()));
    EXPECT_EQ(prefix + middle + suffix, docs[i]) << "doc " << i;
  }
  EXPECT_EQ(next["train"], got["train"].size());
  EXPECT_EQ(next["val"], got["val"].size());
  EXPECT_EQ(n_fim, st.n_docs_fim);

  // index.json contents.
  const nlohmann::json idx = read_index(o.out_dir);
  EXPECT_EQ(idx["format"], "dsv3-token-shards");
  EXPECT_EQ(idx["version"], 1);
  EXPECT_EQ(idx["tokenizer"]["fingerprint"], tokenizer_fingerprint(tiny_tokenizer_dir()));
  EXPECT_EQ(idx["tokenizer"]["eos_id"], eos);
  EXPECT_EQ(idx["tokenizer"]["vocab_size"], tk.vocab_size());
  EXPECT_EQ(idx["splits"]["train"]["n_docs"], st.n_docs_train);
  EXPECT_EQ(idx["splits"]["val"]["n_tokens"], st.n_tokens_val);
  int64_t sum = 0;
  for (const auto& s : idx["splits"]["train"]["shards"]) {
    sum += s["n_tokens"].get<int64_t>();
    const std::string bytes = read_bytes(fs::path(o.out_dir) / s["file"].get<std::string>());
    EXPECT_EQ(int64_t(bytes.size()), s["bytes"].get<int64_t>());
    EXPECT_EQ(hash_string(fnv1a64(bytes.data(), bytes.size())), s["checksum"]);
  }
  EXPECT_EQ(sum, st.n_tokens_train);
  // Tokenizer copied beside the shards: same fingerprint.
  EXPECT_EQ(tokenizer_fingerprint(o.out_dir), tokenizer_fingerprint(tiny_tokenizer_dir()));
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "tokenizer_config.json"));
  EXPECT_NO_THROW(check_tokenizer(o.out_dir, tiny_tokenizer_dir()));
  EXPECT_NO_THROW(verify_data_dir(o.out_dir));
}

TEST(DataPrepare, SameBytesForAnyThreadCount) {
  TempDir tmp;
  write_corpus(tmp, make_docs(400, 3), 9);
  std::vector<std::string> outs;
  for (int threads : {1, 3, 8}) {
    PrepareOptions o = base_options(tmp, "out" + std::to_string(threads));
    o.n_threads = threads;
    o.fim_rate = 0.2;
    o.batch_bytes = threads == 1 ? (int64_t(1) << 30) : 2000;  // one batch vs many small ones
    prepare_data(o);
    outs.push_back(o.out_dir);
  }
  for (size_t k = 1; k < outs.size(); ++k) {
    EXPECT_EQ(read_bytes(fs::path(outs[0]) / "index.json"), read_bytes(fs::path(outs[k]) / "index.json"));
    for (const auto& e : fs::directory_iterator(outs[0])) {
      const std::string name = e.path().filename().string();
      EXPECT_EQ(read_bytes(e.path()), read_bytes(fs::path(outs[k]) / name)) << name;
    }
  }
}

TEST(DataPrepare, ValSplitDisjointStableAndSized) {
  TempDir tmp;
  const std::vector<std::string> docs = make_docs(600, 7);
  write_corpus(tmp, docs, 5, "in");
  PrepareOptions o = base_options(tmp, "a");
  o.fim_rate = 0.0;
  o.val_fraction = 0.2;
  const PrepareStats st = prepare_data(o);
  EXPECT_GT(st.n_docs_val, 600 * 0.2 * 0.6);
  EXPECT_LT(st.n_docs_val, 600 * 0.2 * 1.4);

  const tok::Tokenizer& tk = tiny_tokenizer();
  auto decoded = [&](const std::string& dir, const std::string& split) {
    std::set<std::string> out;
    for (const auto& ids : split_at_eos(read_split(dir, split), tk.eos_id())) out.insert(tk.decode(ids));
    return out;
  };
  const std::set<std::string> train_a = decoded(o.out_dir, "train"), val_a = decoded(o.out_dir, "val");
  EXPECT_EQ(int64_t(val_a.size()), st.n_docs_val);
  for (const std::string& d : val_a) EXPECT_FALSE(train_a.count(d)) << "in both splits: " << d;
  EXPECT_EQ(train_a.size() + val_a.size(), docs.size());

  // A changed corpus: new documents, the old ones in another order and other files. Old val docs stay val.
  std::vector<std::string> docs2 = make_docs(200, 8);
  for (auto it = docs.rbegin(); it != docs.rend(); ++it) docs2.push_back(*it);
  write_corpus(tmp, docs2, 3, "in2");
  PrepareOptions o2 = base_options(tmp, "b");
  o2.inputs = {tmp / "in2"};
  o2.fim_rate = 0.0;
  o2.val_fraction = 0.2;
  prepare_data(o2);
  const std::set<std::string> val_b = decoded(o2.out_dir, "val"), train_b = decoded(o2.out_dir, "train");
  for (const std::string& d : val_a) EXPECT_TRUE(val_b.count(d)) << "left val: " << d;
  for (const std::string& d : train_a) EXPECT_TRUE(train_b.count(d)) << "left train: " << d;

  // A different seed gives a different split.
  PrepareOptions o3 = base_options(tmp, "c");
  o3.fim_rate = 0.0;
  o3.val_fraction = 0.2;
  o3.seed = 1;
  prepare_data(o3);
  EXPECT_NE(decoded(o3.out_dir, "val"), val_a);
}

TEST(DataPrepare, FimRateMatchesOverManyDocs) {
  TempDir tmp;
  std::string text;
  for (int i = 0; i < 3000; ++i) text += "line " + std::to_string(i) + " of the fim test\n";
  write_bytes(tmp.path / "in" / "lines.txt", text);
  PrepareOptions o = base_options(tmp);
  o.doc_sep = DocSep::kLine;
  o.fim_rate = 0.1;
  o.val_fraction = 0.0;
  o.shard_tokens = int64_t(1) << 20;
  const PrepareStats st = prepare_data(o);
  EXPECT_EQ(st.n_docs, 3000);
  EXPECT_EQ(st.n_docs_val, 0);
  // Binomial(3000, 0.1): mean 300, sd 16.4; a 4.5-sigma band.
  EXPECT_GT(st.n_docs_fim, 226);
  EXPECT_LT(st.n_docs_fim, 374);
  const std::vector<int32_t> stream = read_split(o.out_dir, "train");
  const tok::FimTokenIds fim = tok::fim_token_ids(tiny_tokenizer());
  EXPECT_EQ(count(stream, fim.begin), st.n_docs_fim);
  EXPECT_EQ(count(stream, fim.end), st.n_docs_fim);
  EXPECT_EQ(count(stream, tiny_tokenizer().eos_id()), 3000);
  EXPECT_EQ(read_index(o.out_dir)["fim"]["n_docs"], st.n_docs_fim);

  // Rate 0: no FIM token anywhere.
  PrepareOptions z = o;
  z.out_dir = tmp / "zero";
  z.fim_rate = 0.0;
  EXPECT_EQ(prepare_data(z).n_docs_fim, 0);
  EXPECT_EQ(count(read_split(z.out_dir, "train"), fim.begin), 0);
}

TEST(DataPrepare, RerunReplacesOutputAndRemovesStaleShards) {
  TempDir tmp;
  write_corpus(tmp, make_docs(300), 4);
  PrepareOptions o = base_options(tmp);
  o.shard_tokens = 300;
  const PrepareStats a = prepare_data(o);
  ASSERT_GT(a.n_shards_train, 3);
  o.shard_tokens = int64_t(1) << 20;
  const PrepareStats b = prepare_data(o);
  EXPECT_EQ(b.n_shards_train, 1);
  EXPECT_TRUE(fs::exists(fs::path(o.out_dir) / "train-00000.bin"));
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "train-00001.bin"));
  EXPECT_EQ(a.n_tokens_train, b.n_tokens_train);
  EXPECT_NO_THROW(verify_data_dir(o.out_dir));
}

TEST(DataPrepare, InputErrors) {
  TempDir tmp;
  PrepareOptions o = base_options(tmp);
  o.inputs = {tmp / "nope"};
  EXPECT_THROW(prepare_data(o), dsv3::Error);
  fs::create_directories(tmp.path / "empty");
  o.inputs = {tmp / "empty"};
  EXPECT_THROW(prepare_data(o), dsv3::Error);
  write_bytes(tmp.path / "blank" / "a.txt", "\n\n  \n");
  o.inputs = {tmp / "blank"};
  EXPECT_THROW(prepare_data(o), dsv3::Error);
  write_corpus(tmp, make_docs(10), 1);
  o.inputs = {tmp / "in"};
  o.fim_rate = 1.5;
  EXPECT_THROW(prepare_data(o), dsv3::Error);
  o.fim_rate = 0.1;
  o.tokenizer = tmp / "no_tokenizer";
  EXPECT_THROW(prepare_data(o), dsv3::Error);
}

TEST(DataPrepare, InputOrderIsSortedAndHiddenFilesSkipped) {
  TempDir tmp;
  write_bytes(tmp.path / "d" / "b.txt", "b");
  write_bytes(tmp.path / "d" / "a" / "z.txt", "z");
  write_bytes(tmp.path / "d" / ".hidden.txt", "h");
  write_bytes(tmp.path / "d" / ".git" / "x.txt", "x");
  write_bytes(tmp.path / "c.txt", "c");
  const auto files = list_input_files({tmp / "c.txt", tmp / "d"});
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(fs::path(files[0]).filename(), "c.txt");
  EXPECT_EQ(fs::path(files[1]).filename(), "z.txt");
  EXPECT_EQ(fs::path(files[2]).filename(), "b.txt");
}

TEST(DataPrepare, DeepSeekV3TokenizerFimIds) {
  const fs::path v3 = fs::path(DSV3_SOURCE_DIR) / ".." / "shared" / "data" / "deepseek-v3";
  if (!fs::exists(v3 / "tokenizer.json")) GTEST_SKIP() << "no DeepSeek-V3 tokenizer at " << v3;
  TempDir tmp;
  const std::vector<std::string> docs = make_docs(20);
  write_corpus(tmp, docs, 2);
  PrepareOptions o = base_options(tmp);
  o.tokenizer = v3.string();
  o.fim_rate = 1.0;
  o.val_fraction = 0.0;
  prepare_data(o);
  const std::vector<int32_t> stream = read_split(o.out_dir, "train");
  EXPECT_EQ(count(stream, 1), 20);       // EOS <｜end▁of▁sentence｜>
  EXPECT_EQ(count(stream, 128801), 20);  // <｜fim▁begin｜>
  EXPECT_EQ(count(stream, 128800), 20);  // <｜fim▁hole｜>
  EXPECT_EQ(count(stream, 128802), 20);  // <｜fim▁end｜>
  EXPECT_EQ(stream[0], 128801);
  EXPECT_EQ(read_index(o.out_dir)["tokenizer"]["eos_id"], 1);
  EXPECT_EQ(count(stream, 0), 0);  // no BOS unless asked
  EXPECT_EQ(read_index(o.out_dir)["documents"]["bos_before_each"], false);

  // With BOS: every document (FIM ones too) starts with BOS right after the previous document's EOS.
  o.bos = true;
  prepare_data(o);
  const std::vector<int32_t> with_bos = read_split(o.out_dir, "train");
  EXPECT_EQ(with_bos.size(), stream.size() + 20);
  EXPECT_EQ(count(with_bos, 0), 20);
  EXPECT_EQ(with_bos[0], 0);
  EXPECT_EQ(with_bos[1], 128801);
  for (size_t i = 0; i + 1 < with_bos.size(); ++i) {
    if (with_bos[i] == 1) {
      EXPECT_EQ(with_bos[i + 1], 0) << "document after position " << i;
    }
  }
  EXPECT_EQ(read_index(o.out_dir)["documents"]["bos_before_each"], true);
  // The tiny tokenizer's data is refused against V3's tokenizer and vice versa.
  EXPECT_THROW(check_tokenizer(o.out_dir, tiny_tokenizer_dir()), dsv3::Error);
}

TEST(DataPrepare, Cli) {
  TempDir tmp;
  write_corpus(tmp, make_docs(50), 2);
  const std::string bin = std::string(DSV3_BINARY_DIR) + "/dsv3";
  const std::string out = tmp / "cli_out";
  const std::string cmd =
      bin + " data prepare --tokenizer " + tiny_tokenizer_dir() + " --input " + (tmp / "in") + " --out " +
      out + " --doc-sep blank-line --threads 2 --seed 3 --quiet > " + (tmp / "stdout.txt") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_bytes(tmp / "stdout.txt");
  EXPECT_NE(read_bytes(tmp / "stdout.txt").find("50 docs"), std::string::npos)
      << read_bytes(tmp / "stdout.txt");
  EXPECT_EQ(read_index(out)["seed"], 3);
  EXPECT_EQ(read_index(out)["documents"]["bos_before_each"], true);  // --bos auto: the tokenizer adds BOS
  // A --bos value outside auto|on|off is refused, naming the option.
  const std::string bad_bos = bin + " data prepare --tokenizer " + tiny_tokenizer_dir() + " --input " +
                              (tmp / "in") + " --out " + (tmp / "bad_bos") + " --bos maybe --quiet > " +
                              (tmp / "bad_bos.txt") + " 2>&1";
  EXPECT_NE(std::system(bad_bos.c_str()), 0);
  EXPECT_NE(read_bytes(tmp / "bad_bos.txt").find("--bos"), std::string::npos) << read_bytes(tmp / "bad_bos.txt");
  const std::string check = bin + " data check --dir " + out + " --tokenizer " + tiny_tokenizer_dir() +
                            " > " + (tmp / "check.txt") + " 2>&1";
  EXPECT_EQ(std::system(check.c_str()), 0) << read_bytes(tmp / "check.txt");
  // Corrupt a shard: check fails and names it.
  {
    std::fstream f(fs::path(out) / "train-00000.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5);
    f.put('\x7f');
  }
  EXPECT_NE(std::system(check.c_str()), 0);
  EXPECT_NE(read_bytes(tmp / "check.txt").find("train-00000.bin"), std::string::npos)
      << read_bytes(tmp / "check.txt");
}
