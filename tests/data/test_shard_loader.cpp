// Shard loader: rows are windows of the packed token stream (each window exactly once per epoch), the shuffle
// is a deterministic per-(seed, epoch) permutation, state()/restore() resumes exactly (also through JSON
// text and across epoch ends), and bad data is refused with dsv3::Error naming the file: flipped byte,
// truncated shard, missing shard, missing index, wrong tokenizer, state from other data.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "data/prepare.h"
#include "data/shard_loader.h"
#include "data_test_util.h"
#include "dsv3/error.h"

using namespace dsv3;
using namespace dsv3::data;
using namespace dsv3::data::test;

namespace {

// A prepared data directory shared by the tests of this file (built once; tests copy it before damaging it).
const std::string& prepared_dir() {
  static const std::string dir = [] {
    const fs::path root = fs::temp_directory_path() / ("dsv3_data_loader_" + std::to_string(::getpid()));
    std::string text;
    for (int i = 0; i < 250; ++i) text += make_doc(uint64_t(i), 11) + "\n\n";
    write_bytes(root / "in" / "corpus.txt", text);
    PrepareOptions o;
    o.tokenizer = tiny_tokenizer_dir();
    o.inputs = {(root / "in").string()};
    o.out_dir = (root / "data").string();
    o.doc_sep = DocSep::kBlankLine;
    o.shard_tokens = 1000;
    o.val_fraction = 0.1;
    o.fim_rate = 0.1;
    o.n_threads = 2;
    prepare_data(o);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("dsv3_data_loader_" + std::to_string(::getpid())), ec);
    });
    return o.out_dir;
  }();
  return dir;
}

std::string copy_prepared(const TempDir& tmp) {
  const std::string dst = tmp / "data";
  fs::copy(prepared_dir(), dst, fs::copy_options::recursive);
  return dst;
}

std::vector<std::vector<int32_t>> take_rows(train::BatchSource& src, int64_t n_batches, int64_t B,
                                            int64_t S) {
  std::vector<std::vector<int32_t>> out;
  std::vector<int32_t> buf;
  for (int64_t k = 0; k < n_batches; ++k) {
    src.next(B, S, buf);
    EXPECT_EQ(int64_t(buf.size()), B * S);
    for (int64_t b = 0; b < B; ++b) out.emplace_back(buf.begin() + b * S, buf.begin() + (b + 1) * S);
  }
  return out;
}

void flip_byte(const fs::path& p, std::streamoff at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.get(c);
  f.seekp(at);
  f.put(char(c ^ 0x40));
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const dsv3::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(DataLoader, PermutationIsABijection) {
  for (uint64_t n : {1ull, 2ull, 3ull, 4ull, 5ull, 7ull, 16ull, 17ull, 100ull, 1000ull, 12345ull}) {
    for (uint64_t key : {0ull, 1ull, 0xdeadbeefull}) {
      std::vector<uint8_t> seen(n, 0);
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t p = permute_index(i, n, key);
        ASSERT_LT(p, n);
        ASSERT_FALSE(seen[p]) << "n " << n << " key " << key;
        seen[p] = 1;
      }
    }
  }
  // Different keys give different orders; the order is not the identity.
  int same = 0, fixed = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same += permute_index(i, 1000, 1) == permute_index(i, 1000, 2);
    fixed += permute_index(i, 1000, 1) == i;
  }
  EXPECT_LT(same, 20);
  EXPECT_LT(fixed, 20);
}

TEST(DataLoader, RowsAreEveryWindowOncePerEpoch) {
  const std::vector<int32_t> stream = read_split(prepared_dir(), "train");
  const int64_t S = 17;
  const uint64_t n_windows = (stream.size() - 1) / (S - 1);
  ASSERT_GT(n_windows, 100u);
  std::multiset<std::vector<int32_t>> want;
  for (uint64_t w = 0; w < n_windows; ++w)
    want.insert(std::vector<int32_t>(stream.begin() + int64_t(w * (S - 1)),
                                     stream.begin() + int64_t(w * (S - 1)) + S));

  auto src = open_batch_source(prepared_dir(), "train", 42);
  // B = 1 so the epoch ends exactly after n_windows rows.
  const auto rows = take_rows(*src, int64_t(n_windows), 1, S);
  EXPECT_EQ(std::multiset<std::vector<int32_t>>(rows.begin(), rows.end()), want);
  EXPECT_EQ(src->state()["epoch"], 0);
  EXPECT_EQ(src->state()["position"], n_windows);
  // Shuffled: the first rows are not the stream's first windows in order.
  int in_order = 0;
  for (int k = 0; k < 10; ++k)
    in_order += rows[size_t(k)] ==
                std::vector<int32_t>(stream.begin() + k * (S - 1), stream.begin() + k * (S - 1) + S);
  EXPECT_LT(in_order, 3);
  // Epoch 1: the same windows in another order.
  const auto rows1 = take_rows(*src, int64_t(n_windows), 1, S);
  EXPECT_EQ(src->state()["epoch"], 1);
  EXPECT_EQ(std::multiset<std::vector<int32_t>>(rows1.begin(), rows1.end()), want);
  EXPECT_NE(rows1, rows);
}

TEST(DataLoader, DeterministicPerSeed) {
  auto a = open_batch_source(prepared_dir(), "train", 7);
  auto b = open_batch_source(prepared_dir(), "train", 7);
  auto c = open_batch_source(prepared_dir(), "train", 8);
  const auto ra = take_rows(*a, 5, 4, 32), rb = take_rows(*b, 5, 4, 32), rc = take_rows(*c, 5, 4, 32);
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rc);
  EXPECT_EQ(a->fingerprint(), c->fingerprint());
  EXPECT_EQ(split_n_tokens(prepared_dir(), "train"),
            read_index(prepared_dir())["splits"]["train"]["n_tokens"]);
  EXPECT_GT(split_n_tokens(prepared_dir(), "val"), 0);  // the seed is not part of the data identity
  auto v = open_batch_source(prepared_dir(), "val", 7);
  EXPECT_NE(v->fingerprint(), a->fingerprint());
  EXPECT_NE(a->fingerprint().find(tokenizer_fingerprint(tiny_tokenizer_dir())), std::string::npos);
}

TEST(DataLoader, ExactResume) {
  const int64_t B = 3, S = 64;
  const uint64_t n_windows =
      uint64_t(read_index(prepared_dir())["splits"]["train"]["n_tokens"].get<int64_t>() - 1) /
      uint64_t(S - 1);
  // Stop at a few points, including right before and after an epoch boundary.
  const int64_t epoch_batches = int64_t(n_windows) / B;
  std::vector<int64_t> stops = {0, 1, 5, epoch_batches - 1, epoch_batches, epoch_batches + 1};
  for (int64_t stop : stops) {
    auto a = open_batch_source(prepared_dir(), "train", 1);
    take_rows(*a, stop, B, S);
    const std::string saved = a->state().dump();  // through text, as a checkpoint would
    const auto want = take_rows(*a, 4, B, S);
    auto b = open_batch_source(prepared_dir(), "train", 999);  // the state's seed wins
    b->restore(nlohmann::json::parse(saved));
    EXPECT_EQ(take_rows(*b, 4, B, S), want) << "resume after " << stop << " batches";
    EXPECT_EQ(b->state(), a->state());
    if (stop == epoch_batches + 1) {
      EXPECT_EQ(a->state()["epoch"], 1);
    }
  }
}

TEST(DataLoader, RestoreRefusesOtherDataOrSplit) {
  auto a = open_batch_source(prepared_dir(), "train", 1);
  auto v = open_batch_source(prepared_dir(), "val", 1);
  std::vector<int32_t> buf;
  a->next(2, 16, buf);
  const nlohmann::json s = a->state();
  EXPECT_NE(error_of([&] { v->restore(s); }).find("cannot resume"), std::string::npos);
  nlohmann::json bad = s;
  bad["split"] = "val";
  EXPECT_THROW(a->restore(bad), dsv3::Error);
  EXPECT_THROW(a->restore(nlohmann::json{{"kind", "something else"}}), dsv3::Error);
  nlohmann::json missing = s;
  missing.erase("position");
  EXPECT_THROW(a->restore(missing), dsv3::Error);
  // Changing the row length mid-stream is refused.
  EXPECT_THROW(a->next(2, 32, buf), dsv3::Error);
  EXPECT_THROW(a->next(0, 16, buf), dsv3::Error);
  // More than the split holds in one row.
  auto small = open_batch_source(prepared_dir(), "val", 1);
  EXPECT_THROW(small->next(1, 100000000, buf), dsv3::Error);
}

TEST(DataLoader, CorruptShardNamesTheFile) {
  TempDir tmp;
  const std::string dir = copy_prepared(tmp);
  flip_byte(fs::path(dir) / "train-00001.bin", 13);
  const std::string msg = error_of([&] { open_batch_source(dir, "train", 0); });
  EXPECT_NE(msg.find("train-00001.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
  EXPECT_THROW(verify_data_dir(dir), dsv3::Error);
  // The val split is intact and still opens.
  EXPECT_NO_THROW(open_batch_source(dir, "val", 0));
  // Without verification it opens (the caller asked for that).
  ShardSourceOptions no_verify;
  no_verify.verify_checksums = false;
  EXPECT_NO_THROW(open_batch_source(dir, "train", 0, no_verify));
}

TEST(DataLoader, TruncatedOrMissingShard) {
  TempDir tmp;
  const std::string dir = copy_prepared(tmp);
  const fs::path shard = fs::path(dir) / "train-00000.bin";
  fs::resize_file(shard, fs::file_size(shard) - 6);
  std::string msg = error_of([&] { open_batch_source(dir, "train", 0); });
  EXPECT_NE(msg.find("train-00000.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  fs::remove(shard);
  msg = error_of([&] { open_batch_source(dir, "train", 0); });
  EXPECT_NE(msg.find("train-00000.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST(DataLoader, MissingOrBadIndex) {
  TempDir tmp;
  const std::string dir = copy_prepared(tmp);
  fs::remove(fs::path(dir) / "index.json");
  std::string msg = error_of([&] { open_batch_source(dir, "train", 0); });
  EXPECT_NE(msg.find("index.json"), std::string::npos) << msg;
  EXPECT_THROW(open_batch_source(tmp / "nowhere", "train", 0), dsv3::Error);
  write_bytes(fs::path(dir) / "index.json", "{\"format\": \"dsv3-token-shards\", \"version\": 99}");
  msg = error_of([&] { open_batch_source(dir, "train", 0); });
  EXPECT_NE(msg.find("version"), std::string::npos) << msg;
  write_bytes(fs::path(dir) / "index.json", "not json");
  EXPECT_THROW(open_batch_source(dir, "train", 0), dsv3::Error);
  EXPECT_THROW(open_batch_source(prepared_dir(), "test", 0), dsv3::Error);
}

TEST(DataLoader, WrongTokenizerIsRefused) {
  TempDir tmp;
  // Another tokenizer: same recipe, other vocabulary size -> other tokenizer.json bytes.
  tok::BpeTrainerOptions o;
  o.vocab_size = tok::bpe_min_vocab_size() + 40;
  o.min_frequency = 1;
  tok::BpeTrainer t(tok::PreTokenizer::deepseek_v3(), o);
  for (int i = 0; i < 50; ++i) t.add_text(make_doc(uint64_t(i), 99));
  tok::save_bpe_tokenizer(t.train(), tmp / "other_tok");

  const std::string msg = error_of([&] { check_tokenizer(prepared_dir(), tmp / "other_tok"); });
  EXPECT_NE(msg.find("another tokenizer"), std::string::npos) << msg;
  ShardSourceOptions opt;
  opt.tokenizer_path = tmp / "other_tok";
  EXPECT_THROW(open_batch_source(prepared_dir(), "train", 0, opt), dsv3::Error);
  opt.tokenizer_path = tiny_tokenizer_dir();
  EXPECT_NO_THROW(open_batch_source(prepared_dir(), "train", 0, opt));
  opt.tokenizer_path = (fs::path(tiny_tokenizer_dir()) / "tokenizer.json").string();  // the file form too
  EXPECT_NO_THROW(open_batch_source(prepared_dir(), "train", 0, opt));
  EXPECT_NO_THROW(check_tokenizer(prepared_dir(), tiny_tokenizer_dir()));
}
