// Token shard writer and format helpers (see shard_writer.h).
#include "data/shard_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "dsv3/error.h"
#include "io/atomic_file.h"

namespace dsv3::data {

static_assert(std::endian::native == std::endian::little, "token shards are little-endian uint32");

namespace fs = std::filesystem;

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::string hash_string(uint64_t h) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string tokenizer_json_path(const std::string& tokenizer_path) {
  if (fs::is_directory(tokenizer_path)) return (fs::path(tokenizer_path) / "tokenizer.json").string();
  return tokenizer_path;
}

std::string tokenizer_fingerprint(const std::string& tokenizer_path) {
  const std::string path = tokenizer_json_path(tokenizer_path);
  std::ifstream f(path, std::ios::binary);
  DSV3_CHECK(f.good(), "cannot read tokenizer file \"", path, "\"");
  uint64_t h = kFnvOffset;
  std::vector<char> buf(size_t(1) << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    h = fnv1a64(buf.data(), size_t(f.gcount()), h);
  }
  DSV3_CHECK(f.eof(), "error reading tokenizer file \"", path, "\"");
  return hash_string(h);
}

nlohmann::json ShardInfo::to_json() const {
  return {{"file", file},
          {"n_tokens", n_tokens},
          {"n_docs", n_docs},
          {"bytes", n_tokens * 4},
          {"checksum", checksum}};
}

ShardInfo ShardInfo::from_json(const nlohmann::json& j) {
  ShardInfo s;
  try {
    s.file = j.at("file").get<std::string>();
    s.n_tokens = j.at("n_tokens").get<int64_t>();
    s.n_docs = j.at("n_docs").get<int64_t>();
    s.checksum = j.at("checksum").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    DSV3_FAIL("malformed shard entry in index.json (", e.what(), "): ", j.dump());
  }
  DSV3_CHECK(!s.file.empty() && s.file.find('/') == std::string::npos && s.file != "." && s.file != "..",
             "index.json: bad shard file name \"", s.file, "\"");
  DSV3_CHECK(s.n_tokens >= 0 && s.n_docs >= 0, "index.json: negative counts for shard ", s.file);
  return s;
}

ShardWriter::ShardWriter(std::string dir, std::string split, int64_t shard_tokens)
    : dir_(std::move(dir)), split_(std::move(split)), shard_tokens_(shard_tokens) {
  DSV3_CHECK(shard_tokens_ > 0, "shard size must be positive, got ", shard_tokens_);
}

ShardWriter::~ShardWriter() {
  if (file_) {
    std::fclose(file_);
    std::error_code ec;
    fs::remove(tmp_path_, ec);
  }
}

void ShardWriter::open_shard() {
  char name[64];
  std::snprintf(name, sizeof name, "%s-%05zu.bin", split_.c_str(), shards_.size());
  current_ = ShardInfo{};
  current_.file = name;
  final_path_ = (fs::path(dir_) / name).string();
  tmp_path_ = final_path_ + ".tmp." + std::to_string(::getpid());
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  DSV3_CHECK(file_ != nullptr, "cannot create \"", tmp_path_, "\": ", std::strerror(errno));
  hash_ = kFnvOffset;
}

void ShardWriter::close_shard() {
  const std::string what = final_path_;
  bool ok = std::fflush(file_) == 0;
  int err = errno;
  if (ok) {
    ok = ::fsync(::fileno(file_)) == 0;
    err = errno;
  }
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (ok && std::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::error_code ec;
    fs::remove(tmp_path_, ec);
    DSV3_FAIL("cannot finish shard \"", what, "\": ", std::strerror(err));
  }
  current_.checksum = hash_string(hash_);
  shards_.push_back(current_);
}

void ShardWriter::add_document(std::span<const int32_t> tokens) {
  DSV3_CHECK(!finished_, "ShardWriter: add_document after finish");
  if (!file_) open_shard();
  buf_.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    DSV3_CHECK(tokens[i] >= 0, "negative token id ", tokens[i], " in a document");
    buf_[i] = uint32_t(tokens[i]);
  }
  const size_t bytes = buf_.size() * sizeof(uint32_t);
  io::fwrite_checked(file_, buf_.data(), bytes, tmp_path_);
  hash_ = fnv1a64(buf_.data(), bytes, hash_);
  current_.n_tokens += int64_t(tokens.size());
  current_.n_docs += 1;
  n_tokens_ += int64_t(tokens.size());
  n_docs_ += 1;
  if (current_.n_tokens >= shard_tokens_) close_shard();
}

std::vector<ShardInfo> ShardWriter::finish() {
  if (!finished_ && file_) close_shard();
  finished_ = true;
  return shards_;
}

}  // namespace dsv3::data
