// Safetensors round trips (every dtype, 0-byte and scalar tensors, metadata, zero-copy views), sharded model
// directories read back through the index, and the independent json+numpy check of the format in both
// directions (tests/io/safetensors_check.py). Corrupt-input tests live in test_safetensors_bad.cpp.
#include <gtest/gtest.h>

#include "io_test_util.h"
#include "io/safetensors.h"

using namespace dsv3;
using namespace dsv3::io;
using namespace dsv3::io::test;

namespace {

Shape shape_for(DType t) {
  switch (dtype_size(t)) {
    case 1: return {3, 7};
    case 2: return {5, 3};
    case 4: return {2, 3, 4};
    default: return {9};
  }
}

std::vector<std::pair<std::string, Tensor>> all_dtype_tensors() {
  std::vector<std::pair<std::string, Tensor>> ts;
  for (DType t : kAllDTypes) ts.emplace_back("t." + std::string(dtype_name(t)), make_tensor(t, shape_for(t)));
  ts.emplace_back("scalar", make_tensor(DType::F32, {}));
  ts.emplace_back("empty", make_tensor(DType::BF16, {0, 3}));
  return ts;
}

}  // namespace

TEST(Safetensors, RoundTripEveryDType) {
  TempDir dir;
  const std::string path = dir / "all.safetensors";
  auto ts = all_dtype_tensors();
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "caf\xc3\xa9"}});

  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    EXPECT_EQ(f->tensors()[i].name, ts[i].first) << "header order must be the write order";
    EXPECT_EQ(f->tensors()[i].file, path);
    Tensor got = f->get(ts[i].first);
    expect_formula(got, ts[i].second.dtype, ts[i].second.shape, ts[i].first);
  }
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "caf\xc3\xa9");
  EXPECT_EQ(f->data_offset() % 8, 0u) << "header must be padded to a multiple of 8";
  EXPECT_EQ(f->find("nope"), nullptr);
  const TensorInfo* e = f->find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->begin, e->end);
  // Raw layout: the padding is spaces.
  std::string raw = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(raw[size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
  size_t close = raw.rfind('}', 8 + n - 1);
  for (size_t i = close + 1; i < 8 + n; ++i) EXPECT_EQ(raw[i], ' ');
}

TEST(Safetensors, ViewsAreZeroCopyAndOutliveTheFile) {
  TempDir dir;
  const std::string path = dir / "v.safetensors";
  write_safetensors(path, {{"a", make_tensor(DType::F32, {4, 4})}, {"b", make_tensor(DType::I64, {3})}});
  Tensor a, b;
  {
    auto f = SafetensorsFile::open(path);
    a = f->get("a");
    b = f->get("b");
    EXPECT_EQ(a.data, f->get("a").data) << "same mapping, no copy";
  }  // the SafetensorsFile is gone; the views keep the mapping alive
  std::filesystem::remove(path);
  expect_formula(a, DType::F32, {4, 4}, "a");
  expect_formula(b, DType::I64, {3}, "b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % 4, 0u);
}

TEST(Safetensors, MisalignedTensorIsCopiedAligned) {
  // A U8 tensor of 3 bytes before an F32 one: the F32 data sits at an odd offset. get() must still work.
  TempDir dir;
  const std::string path = dir / "m.safetensors";
  write_safetensors(path, {{"u", make_tensor(DType::U8, {3})}, {"f", make_tensor(DType::F32, {5})}});
  auto f = SafetensorsFile::open(path);
  Tensor t = f->get("f");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 4, 0u);
  expect_formula(t, DType::F32, {5}, "f");
}

TEST(Safetensors, EmptyFileAndOverwrite) {
  TempDir dir;
  const std::string path = dir / "e.safetensors";
  write_safetensors(path, {});
  EXPECT_TRUE(SafetensorsFile::open(path)->tensors().empty());
  write_safetensors(path, {{"x", make_tensor(DType::F16, {2})}});  // replaces atomically
  EXPECT_EQ(SafetensorsFile::open(path)->tensors().size(), 1u);
}

TEST(Safetensors, WriterRejectsBadNames) {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  Tensor t = make_tensor(DType::F32, {2});
  expect_error([&] { write_safetensors(path, {{"a", t}, {"a", t}}); }, {path, "duplicate", "'a'"});
  expect_error([&] { write_safetensors(path, {{"__metadata__", t}}); }, {path, "__metadata__"});
  expect_error([&] { write_safetensors(path, {{"", t}}); }, {path, "empty"});
  expect_error([&] { write_safetensors(path, {{"bad\xff", t}}); }, {path, "UTF-8"});
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(SafetensorsModel, ShardedWriteReadsBackThroughIndex) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> ts;
  for (int i = 0; i < 7; ++i) ts.emplace_back("model.layers." + std::to_string(i) + ".w", make_tensor(DType::F32, {8, 8}));
  ts.emplace_back("big", make_tensor(DType::BF16, {40, 40}));  // 3200 bytes, larger than a shard
  ts.emplace_back("zero", make_tensor(DType::F32, {0}));
  write_bytes(dir / "notes.txt", "keep me");
  write_bytes(dir / "model-1-of-2.safetensors", "not ours");
  write_safetensors_model(dir.path.string(), ts, /*max_shard_bytes=*/600, {{"dsv3_version", "1"}});

  // 256-byte tensors, 2 per 600-byte shard -> 4 shards for 7, then "big" alone, "zero" joins it.
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  ASSERT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  for (int i = 1; i <= 5; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-00005.safetensors", i);
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << name;
    auto f = SafetensorsFile::open(dir / name);
    EXPECT_EQ(f->metadata().at("format"), "pt");
    EXPECT_EQ(f->metadata().at("dsv3_version"), "1");
    uint64_t bytes = 0;
    for (const auto& t : f->tensors()) bytes += t.nbytes();
    EXPECT_TRUE(bytes <= 600 || f->tensors().size() <= 2) << name;
  }
  std::string index = read_bytes(dir / "model.safetensors.index.json");
  EXPECT_NE(index.find("\"total_size\": " + std::to_string(7 * 256 + 3200)), std::string::npos) << index;

  SafetensorsModel m = SafetensorsModel::open(dir.path.string());
  EXPECT_EQ(m.size(), ts.size());
  EXPECT_EQ(m.files().size(), 5u);
  std::vector<std::string> names = m.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const auto& [name, t] : ts) {
    ASSERT_TRUE(m.has(name));
    expect_formula(m.get(name), t.dtype, t.shape, name);
    EXPECT_EQ(m.info(name).shape, t.shape);
  }
  EXPECT_EQ(m.info("big").file, dir / "model-00005-of-00005.safetensors");
  EXPECT_EQ(m.metadata().at("dsv3_version"), "1");

  // Re-writing as one file removes the index and the shards; the directory stays consistent.
  write_safetensors_model(dir.path.string(), ts);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model-00001-of-00005.safetensors"));
  SafetensorsModel single = SafetensorsModel::open(dir.path.string());
  EXPECT_EQ(single.files().size(), 1u);
  expect_formula(single.get("big"), DType::BF16, {40, 40}, "big");
  // And back to shards: the stale single file goes.
  write_safetensors_model(dir.path.string(), ts, 1000);
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  EXPECT_EQ(SafetensorsModel::open(dir.path.string()).size(), ts.size());
  EXPECT_EQ(read_bytes(dir / "notes.txt"), "keep me") << "only weight files of our layouts are removed";
  EXPECT_EQ(read_bytes(dir / "model-1-of-2.safetensors"), "not ours");
}

TEST(SafetensorsModel, OpensSingleFilePathAndReportsMissingTensors) {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  write_safetensors(path, {{"a", make_tensor(DType::F32, {2})}});
  SafetensorsModel m = SafetensorsModel::open(path);
  EXPECT_TRUE(m.has("a"));
  EXPECT_FALSE(m.has("b"));
  expect_error([&] { m.get("model.norm.weight"); }, {"model.norm.weight", path});
  expect_error([&] { m.info("model.norm.weight"); }, {"model.norm.weight"});
  expect_error([&] { SafetensorsFile::open(path)->get("zz"); }, {"zz", path});
  expect_error([&] { SafetensorsModel::open(dir / "nothing_here"); }, {"nothing_here", "does not exist"});
  TempDir empty;
  expect_error([&] { SafetensorsModel::open(empty.path.string()); }, {empty.path.string(), "model.safetensors"});
}

TEST(Safetensors, PythonReadsOurFile) {
  if (!python_numpy_available()) GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  TempDir dir;
  const std::string path = dir / "ours.safetensors";
  write_safetensors(path, all_dtype_tensors(), {{"format", "pt"}, {"k", "v"}});
  std::string out;
  EXPECT_EQ(run_checker("check " + path, out), 0) << out;
  EXPECT_NE(out.find("OK 14 tensors"), std::string::npos) << out;
  EXPECT_NE(out.find("\"k\": \"v\""), std::string::npos) << out;
}

TEST(Safetensors, WeReadPythonFile) {
  if (!python_numpy_available()) GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  TempDir dir;
  const std::string path = dir / "py.safetensors";
  std::string out;
  ASSERT_EQ(run_checker("write " + path, out), 0) << out;
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 14u);
  EXPECT_EQ(f->metadata().at("writer"), "numpy");
  const std::map<DType, Shape> shapes = {
      {DType::BOOL, {7}},     {DType::U8, {300}},     {DType::I8, {4, 5}},    {DType::I16, {3, 2, 2}},
      {DType::I32, {17}},     {DType::I64, {2, 3}},   {DType::F16, {9}},      {DType::BF16, {3, 5}},
      {DType::F32, {2, 3, 4}}, {DType::F64, {5}},     {DType::F8_E4M3, {2, 17}}, {DType::F8_E5M2, {17}}};
  for (const auto& [dt, shape] : shapes) {
    std::string name(dtype_name(dt));
    for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    expect_formula(f->get("t." + name), dt, shape, name);
  }
  expect_formula(f->get("scalar"), DType::F32, {}, "scalar");
  expect_formula(f->get("empty"), DType::BF16, {0, 3}, "empty");
}
