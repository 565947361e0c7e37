// Shard loader: mmap, validation, packing into rows, per-epoch shuffle, resumable cursor (see
// shard_loader.h).
#include "data/shard_loader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/shard_writer.h"
#include "dsv3/error.h"

namespace dsv3::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Read-only mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  MappedFile(const std::string& path, uint64_t expected_bytes) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    DSV3_CHECK(fd >= 0, "data shard \"", path, "\" cannot be opened: ", std::strerror(errno));
    struct stat sb {};
    if (::fstat(fd, &sb) != 0) {
      int err = errno;
      ::close(fd);
      DSV3_FAIL("data shard \"", path, "\" cannot be stat'ed: ", std::strerror(err));
    }
    size_ = uint64_t(sb.st_size);
    if (size_ != expected_bytes) {
      ::close(fd);
      DSV3_FAIL("data shard \"", path, "\" has ", size_, " bytes but index.json says ", expected_bytes,
                size_ < expected_bytes ? " (truncated)" : " (extra bytes)");
    }
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      int err = errno;
      ::close(fd);
      DSV3_CHECK(p != MAP_FAILED, "mmap of data shard \"", path, "\" failed: ", std::strerror(err));
      data_ = p;
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint32_t* tokens() const { return static_cast<const uint32_t*>(data_); }
  uint64_t bytes() const { return size_; }

 private:
  std::string path_;
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

json load_index(const std::string& dir) {
  const fs::path path = fs::path(dir) / std::string(kIndexFile);
  DSV3_CHECK(fs::is_regular_file(path), "data directory \"", dir, "\" has no ", kIndexFile,
             " (not prepared, or `dsv3 data prepare` did not finish)");
  std::ifstream f(path, std::ios::binary);
  DSV3_CHECK(f.good(), "cannot read \"", path.string(), "\"");
  json j;
  try {
    j = json::parse(f);
  } catch (const json::exception& e) {
    DSV3_FAIL("\"", path.string(), "\" is not valid JSON: ", e.what());
  }
  DSV3_CHECK(j.is_object() && j.value("format", "") == kIndexFormat, "\"", path.string(),
             "\" is not a dsv3 token-shard index (format \"", kIndexFormat, "\")");
  const int version = j.value("version", -1);
  DSV3_CHECK(version == kIndexVersion, "\"", path.string(), "\" has format version ", version,
             ", this build reads ", kIndexVersion);
  DSV3_CHECK(j.value("dtype", "") == "uint32", "\"", path.string(), "\": unsupported dtype");
  DSV3_CHECK(j.contains("tokenizer") && j["tokenizer"].contains("fingerprint") && j.contains("splits"), "\"",
             path.string(), "\" lacks the tokenizer or splits section");
  return j;
}

std::vector<ShardInfo> split_shards(const json& index, const std::string& dir, const std::string& split) {
  DSV3_CHECK(split == "train" || split == "val", "unknown data split \"", split,
             "\" (expected train or val)");
  DSV3_CHECK(index["splits"].contains(split), "index.json in \"", dir, "\" has no \"", split, "\" split");
  std::vector<ShardInfo> shards;
  try {
    for (const json& s : index["splits"][split].at("shards")) shards.push_back(ShardInfo::from_json(s));
  } catch (const json::exception& e) {
    DSV3_FAIL("index.json in \"", dir, "\": malformed \"", split, "\" split: ", e.what());
  }
  return shards;
}

// Checksum and id range of a mapped shard.
void verify_shard(const MappedFile& m, const ShardInfo& info, const std::string& path, int32_t vocab_size) {
  const uint64_t h = fnv1a64(m.tokens(), m.bytes());
  DSV3_CHECK(hash_string(h) == info.checksum, "data shard \"", path, "\" is corrupt: checksum ",
             hash_string(h), " but index.json says ", info.checksum);
  if (vocab_size > 0) {
    uint32_t max_id = 0;
    for (int64_t i = 0; i < info.n_tokens; ++i) max_id = std::max(max_id, m.tokens()[i]);
    DSV3_CHECK(info.n_tokens == 0 || max_id < uint32_t(vocab_size), "data shard \"", path,
               "\" holds token id ", max_id, " >= vocab size ", vocab_size);
  }
}

class ShardSource final : public train::BatchSource {
 public:
  ShardSource(const std::string& dir, const std::string& split, uint64_t seed, const ShardSourceOptions& opt)
      : split_(split), seed_(seed) {
    const json index = load_index(dir);
    if (!opt.tokenizer_path.empty()) check_tokenizer(dir, opt.tokenizer_path);
    const int32_t vocab_size = index["tokenizer"].value("vocab_size", 0);
    const std::vector<ShardInfo> infos = split_shards(index, dir, split);
    uint64_t data_hash = kFnvOffset;
    for (const ShardInfo& info : infos) {
      const std::string path = (fs::path(dir) / info.file).string();
      DSV3_CHECK(fs::exists(path), "data shard \"", path, "\" listed in index.json is missing");
      auto m = std::make_unique<MappedFile>(path, uint64_t(info.n_tokens) * 4);
      if (opt.verify_checksums) verify_shard(*m, info, path, vocab_size);
      starts_.push_back(n_tokens_);
      n_tokens_ += uint64_t(info.n_tokens);
      maps_.push_back(std::move(m));
      const std::string rec = info.file + ":" + info.checksum + ":" + std::to_string(info.n_tokens) + ";";
      data_hash = fnv1a64(rec.data(), rec.size(), data_hash);
    }
    fingerprint_ = "tokenizer=" + index["tokenizer"]["fingerprint"].get<std::string>() + " " + split + "=" +
                   hash_string(data_hash) + " n_tokens=" + std::to_string(n_tokens_) +
                   " n_shards=" + std::to_string(infos.size());
    DSV3_CHECK(n_tokens_ > 0, "the \"", split, "\" split of \"", dir, "\" has no tokens");
  }

  void next(int64_t B, int64_t S, std::vector<int32_t>& tokens) override {
    DSV3_CHECK(B >= 1 && S >= 2, "batch shape must have B >= 1 and S >= 2, got B=", B, " S=", S);
    if (seq_len_ == 0) seq_len_ = S;
    DSV3_CHECK(S == seq_len_, "sequence length changed from ", seq_len_, " to ", S,
               " in the middle of a data source (open a new one)");
    const uint64_t n_windows = (n_tokens_ - 1) / uint64_t(S - 1);
    DSV3_CHECK(n_tokens_ >= uint64_t(S) && n_windows >= 1, "the \"", split_, "\" split has ", n_tokens_,
               " tokens, fewer than one row of ", S);
    tokens.resize(size_t(B * S));
    for (int64_t b = 0; b < B; ++b) {
      if (position_ >= n_windows) {
        ++epoch_;
        position_ = 0;
      }
      const uint64_t w = permute_index(position_, n_windows, epoch_key(epoch_));
      copy_tokens(w * uint64_t(S - 1), uint64_t(S), tokens.data() + b * S);
      ++position_;
    }
  }

  json state() const override {
    return {{"kind", "dsv3.data.shards"},
            {"split", split_},
            {"seed", seed_},
            {"epoch", epoch_},
            {"position", position_},
            {"seq_len", seq_len_},
            {"fingerprint", fingerprint_}};
  }

  void restore(const json& s) override {
    try {
      DSV3_CHECK(s.value("kind", "") == "dsv3.data.shards",
                 "data state is not from the shard loader: ", s.dump());
      DSV3_CHECK(s.at("fingerprint").get<std::string>() == fingerprint_,
                 "cannot resume: the data differs from the run's data\n  run:  ",
                 s.at("fingerprint").get<std::string>(), "\n  here: ", fingerprint_);
      DSV3_CHECK(s.at("split").get<std::string>() == split_, "cannot resume: state is for split \"",
                 s.at("split").get<std::string>(), "\", this source reads \"", split_, "\"");
      seed_ = s.at("seed").get<uint64_t>();
      epoch_ = s.at("epoch").get<uint64_t>();
      position_ = s.at("position").get<uint64_t>();
      seq_len_ = s.at("seq_len").get<int64_t>();
    } catch (const json::exception& e) {
      DSV3_FAIL("malformed data loader state (", e.what(), "): ", s.dump());
    }
  }

  std::string fingerprint() const override { return fingerprint_; }

 private:
  uint64_t epoch_key(uint64_t epoch) const {
    return splitmix64(seed_ ^ splitmix64(epoch + 0x5851F42D4C957F2DULL));
  }

  // Copies stream tokens [start, start + n) into out (as int32), across shard boundaries.
  void copy_tokens(uint64_t start, uint64_t n, int32_t* out) const {
    size_t s = size_t(std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin()) - 1;
    while (n > 0) {
      const uint64_t shard_n = maps_[s]->bytes() / 4;
      const uint64_t off = start - starts_[s];
      if (off >= shard_n) {  // empty shard or the end of this one
        ++s;
        continue;
      }
      const uint64_t take = std::min(n, shard_n - off);
      const uint32_t* src = maps_[s]->tokens() + off;
      for (uint64_t i = 0; i < take; ++i) out[i] = int32_t(src[i]);
      out += take;
      start += take;
      n -= take;
      ++s;
    }
  }

  std::string split_;
  uint64_t seed_;
  std::vector<std::unique_ptr<MappedFile>> maps_;
  std::vector<uint64_t> starts_;  // [n_shards] first stream position of each shard
  uint64_t n_tokens_ = 0;
  std::string fingerprint_;
  uint64_t epoch_ = 0, position_ = 0;
  int64_t seq_len_ = 0;  // 0 until the first next()
};

}  // namespace

uint64_t permute_index(uint64_t i, uint64_t n, uint64_t key) {
  DSV3_CHECK(i < n, "permute_index: ", i, " out of [0, ", n, ")");
  if (n <= 1) return 0;
  int bits = 64 - std::countl_zero(n - 1);  // 2^bits >= n
  if (bits < 2) bits = 2;
  const int half = (bits + 1) / 2;
  const uint64_t mask = (uint64_t(1) << half) - 1;
  auto encrypt = [&](uint64_t x) {
    uint64_t l = x >> half, r = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = splitmix64(r ^ (key + round * 0x9E3779B97F4A7C15ULL)) & mask;
      const uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    return (l << half) | r;
  };
  // Cycle walking: a bijection of [0, 2^(2·half)) restricted to [0, n) by re-encrypting until inside.
  uint64_t y = encrypt(i);
  while (y >= n) y = encrypt(y);
  return y;
}

std::unique_ptr<train::BatchSource> open_batch_source(const std::string& dir, const std::string& split,
                                                      uint64_t seed) {
  return open_batch_source(dir, split, seed, ShardSourceOptions{});
}

std::unique_ptr<train::BatchSource> open_batch_source(const std::string& dir, const std::string& split,
                                                      uint64_t seed, const ShardSourceOptions& options) {
  return std::make_unique<ShardSource>(dir, split, seed, options);
}

int64_t split_n_tokens(const std::string& dir, const std::string& split) {
  int64_t n = 0;
  for (const ShardInfo& s : split_shards(load_index(dir), dir, split)) n += s.n_tokens;
  return n;
}

void check_tokenizer(const std::string& dir, const std::string& tokenizer_path) {
  const json index = load_index(dir);
  const std::string want = index["tokenizer"]["fingerprint"].get<std::string>();
  const std::string have = tokenizer_fingerprint(tokenizer_path);
  DSV3_CHECK(want == have, "data in \"", dir, "\" was tokenized with another tokenizer: index.json has ",
             want, ", but \"", tokenizer_json_path(tokenizer_path), "\" is ", have,
             " (re-run `dsv3 data prepare` with this tokenizer)");
}

DataSummary verify_data_dir(const std::string& dir) {
  const json index = load_index(dir);
  DataSummary s;
  s.tokenizer_fingerprint = index["tokenizer"]["fingerprint"].get<std::string>();
  s.vocab_size = index["tokenizer"].value("vocab_size", 0);
  s.eos_id = index["tokenizer"].value("eos_id", -1);
  for (const std::string split : {"train", "val"}) {
    int64_t n_tokens = 0, n_docs = 0, n_shards = 0;
    for (const ShardInfo& info : split_shards(index, dir, split)) {
      const std::string path = (fs::path(dir) / info.file).string();
      DSV3_CHECK(fs::exists(path), "data shard \"", path, "\" listed in index.json is missing");
      MappedFile m(path, uint64_t(info.n_tokens) * 4);
      verify_shard(m, info, path, s.vocab_size);
      n_tokens += info.n_tokens;
      n_docs += info.n_docs;
      ++n_shards;
    }
    (split == "train" ? s.n_tokens_train : s.n_tokens_val) = n_tokens;
    (split == "train" ? s.n_docs_train : s.n_docs_val) = n_docs;
    (split == "train" ? s.n_shards_train : s.n_shards_val) = n_shards;
  }
  return s;
}

}  // namespace dsv3::data
