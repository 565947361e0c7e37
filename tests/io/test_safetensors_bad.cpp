// Corrupt and hostile safetensors inputs: each must raise a dsv3::Error that names the file (and the tensor
// when there is one) instead of crashing or returning garbage. Also broken model indexes.
#include <gtest/gtest.h>

#include "io_test_util.h"
#include "io/safetensors.h"

using namespace dsv3;
using namespace dsv3::io;
using namespace dsv3::io::test;

namespace {

// Writes `header` + `data` to a fresh file and expects open() to fail mentioning the path and `needles`.
void expect_bad(const std::string& header, const std::string& data, std::vector<std::string> needles,
                uint64_t length_override = ~0ull) {
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  write_raw_safetensors(path, header, data, length_override);
  needles.push_back(path);
  expect_error([&] { SafetensorsFile::open(path); }, needles);
}

const std::string k24(24, '\x01');

}  // namespace

TEST(SafetensorsBad, ShorterThanEightBytes) {
  TempDir dir;
  const std::string path = dir / "short.safetensors";
  write_bytes(path, std::string("\x05\x00\x00", 3));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "3 bytes"});
  write_bytes(path, "");
  expect_error([&] { SafetensorsFile::open(path); }, {path, "0 bytes"});
}

TEST(SafetensorsBad, MissingFile) {
  TempDir dir;
  expect_error([&] { SafetensorsFile::open(dir / "none.safetensors"); }, {dir / "none.safetensors", "cannot open"});
}

TEST(SafetensorsBad, HeaderLengthPastEndOfFile) {
  expect_bad(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})", k24, {"header length 4096"}, 4096);
}

TEST(SafetensorsBad, HeaderLengthAbsurd) { expect_bad("{}", "", {"limit"}, 1ull << 40); }

TEST(SafetensorsBad, HeaderNotJson) {
  expect_bad(R"({"a":{"dtype":"F32",)", "", {"not valid JSON"});
  expect_bad("\xff\xfe garbage", "", {"not valid JSON"});
}

TEST(SafetensorsBad, DuplicateKey) {
  expect_bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
             R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
             std::string(8, '\0'), {"duplicate key", "\"a\""});
}

TEST(SafetensorsBad, HeaderNotObject) {
  expect_bad("[1, 2, 3]", "", {"not a JSON object"});
  expect_bad("\"hello\"", "", {"not a JSON object"});
}

TEST(SafetensorsBad, EntryMalformed) {
  expect_bad(R"({"w":[1,2]})", "", {"'w'", "not a JSON object"});
  expect_bad(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'), {"'w'", "dtype"});
  expect_bad(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, '\0'), {"'w'", "shape"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[1]}})", std::string(4, '\0'), {"'w'", "data_offsets"});
}

TEST(SafetensorsBad, UnknownDType) {
  expect_bad(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", std::string(16, '\0'),
             {"'w'", "unknown dtype", "F128"});
  expect_bad(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'), {"'w'", "dtype"});
}

TEST(SafetensorsBad, BadShape) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})", k24, {"'w'", "negative"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3.0],"data_offsets":[0,24]}})", k24, {"'w'", "non-integer"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,"3"],"data_offsets":[0,24]}})", k24, {"'w'", "non-integer"});
  expect_bad(R"({"w":{"dtype":"F32","shape":6,"data_offsets":[0,24]}})", k24, {"'w'", "not an array"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,24]}})", k24,
             {"'w'", "overflow"});
  expect_bad(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,24]}})", k24, {"'w'", "overflow"});
}

TEST(SafetensorsBad, BadDataOffsets) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0]}})", k24, {"'w'", "data_offsets"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24,48]}})", k24, {"'w'", "data_offsets"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[24,0]}})", k24, {"'w'", "end < begin"});
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[-1,23]}})", k24, {"'w'", "non-negative"});
}

TEST(SafetensorsBad, ByteSizeMismatch) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(20, '\0'),
             {"'w'", "needs 24"});
  expect_bad(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})", k24, {"'w'", "needs 12"});
}

TEST(SafetensorsBad, OverlappingRanges) {
  expect_bad(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
             R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
             k24, {"'b'", "overlaps", "'a'"});
  // A 0-byte tensor placed inside another tensor's bytes is an overlap too.
  expect_bad(R"({"a":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},)"
             R"("z":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})",
             k24, {"'z'", "overlaps"});
}

TEST(SafetensorsBad, GapBetweenRanges) {
  expect_bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
             k24, {"gap of 8 bytes", "'b'"});
  expect_bad(R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", std::string(16, '\0'),
             {"gap of 8 bytes", "'b'"});
}

TEST(SafetensorsBad, DataSectionLongerThanTensors) {
  expect_bad(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})", k24 + "xyz", {"3 trailing bytes"});
  expect_bad("{}", "x", {"1 trailing bytes"});
}

TEST(SafetensorsBad, TruncatedInDataSection) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  write_safetensors(path, {{"first", make_tensor(DType::F32, {64})}, {"second", make_tensor(DType::BF16, {64})}});
  std::string full = read_bytes(path);
  write_bytes(path, full.substr(0, full.size() - 10));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "'second'", "truncated"});
  // Cut inside the header: the length now runs past the end.
  write_bytes(path, full.substr(0, 20));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header length"});
}

TEST(SafetensorsBad, BadMetadata) {
  expect_bad(R"({"__metadata__":{"a":1}})", "", {"__metadata__", "\"a\""});
  expect_bad(R"({"__metadata__":"x"})", "", {"__metadata__"});
}

TEST(SafetensorsBad, TrailingGarbageAfterHeaderJson) { expect_bad(R"({} x)", "", {"not valid JSON"}); }

// ---- model index ---------------------------------------------------------------------------------------------

namespace {

void write_two_shards(const TempDir& dir) {
  write_safetensors(dir / "s1.safetensors", {{"a", make_tensor(DType::F32, {2})}, {"b", make_tensor(DType::F32, {2})}});
  write_safetensors(dir / "s2.safetensors", {{"c", make_tensor(DType::F32, {2})}});
}

}  // namespace

TEST(SafetensorsBad, IndexPointsAtMissingShard) {
  TempDir dir;
  write_two_shards(dir);
  write_bytes(dir / "model.safetensors.index.json",
              R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s9.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {"s9.safetensors", "does not exist", "'c'"});
}

TEST(SafetensorsBad, IndexNamesTensorTheShardLacks) {
  TempDir dir;
  write_two_shards(dir);
  write_bytes(dir / "model.safetensors.index.json",
              R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors","d":"s2.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {"'d'", "s2.safetensors", "does not contain"});
}

TEST(SafetensorsBad, ShardHoldsUnlistedTensor) {
  TempDir dir;
  write_two_shards(dir);
  write_bytes(dir / "model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors","c":"s2.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {"'b'", "s1.safetensors", "does not list"});
}

TEST(SafetensorsBad, TensorInTwoShards) {
  TempDir dir;
  write_two_shards(dir);
  write_safetensors(dir / "s3.safetensors", {{"a", make_tensor(DType::F32, {2})}});
  write_bytes(dir / "model.safetensors.index.json",
              R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s3.safetensors"}})");
  // s3 (mapped for c) holds a, which s1 already holds.
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {"'a'", "two shards", "s1.safetensors",
                                                                      "s3.safetensors"});
}

TEST(SafetensorsBad, IndexMalformed) {
  TempDir dir;
  write_two_shards(dir);
  const std::string index = dir / "model.safetensors.index.json";
  write_bytes(index, "{not json");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {index, "not valid JSON"});
  write_bytes(index, R"({"metadata":{}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {index, "weight_map"});
  write_bytes(index, R"({"weight_map":{"a":3}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {index, "'a'"});
  write_bytes(index, R"({"weight_map":{"a":"../s1.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); }, {index, "relative path"});
}

TEST(SafetensorsBad, CorruptShardNamesShardAndIndex) {
  TempDir dir;
  write_two_shards(dir);
  write_bytes(dir / "s2.safetensors", "garbage!garbage!");
  write_bytes(dir / "model.safetensors.index.json",
              R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}})");
  expect_error([&] { SafetensorsModel::open(dir.path.string()); },
               {"model.safetensors.index.json", dir / "s2.safetensors"});
}
