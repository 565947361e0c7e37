// .npy round trips for every supported dtype, files written by NumPy read here and ours read by NumPy,
// and malformed files (bad magic, bad header dict, unsupported dtype, size mismatch) rejected by name.
#include <gtest/gtest.h>

#include "io_test_util.h"
#include "io/npy.h"

using namespace dsv3;
using namespace dsv3::io;
using namespace dsv3::io::test;

namespace {

// A v1.0 .npy file with the given header dict text (padded to 64 bytes) and data bytes.
std::string npy_bytes(const std::string& dict, const std::string& data) {
  std::string h = dict;
  size_t total = (10 + h.size() + 1 + 63) / 64 * 64;
  h.append(total - 10 - h.size() - 1, ' ');
  h += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char(h.size() & 0xff);
  out += char(h.size() >> 8);
  return out + h + data;
}

}  // namespace

TEST(Npy, RoundTripEveryDType) {
  TempDir dir;
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::BOOL}) {
    for (const Shape& shape : {Shape{2, 3, 5}, Shape{7}, Shape{}, Shape{0, 4}}) {
      const std::string path = dir / ("x_" + std::string(dtype_name(t)) + ".npy");
      write_npy(path, make_tensor(t, shape));
      EXPECT_EQ(std::filesystem::file_size(path) - make_tensor(t, shape).nbytes(), 128u)
          << "header padded to 64 bytes";
      expect_formula(read_npy(path), t, shape, path + " " + shape_str(shape));
    }
  }
}

TEST(Npy, RefusesFp8) {
  TempDir dir;
  expect_error([&] { write_npy(dir / "f8.npy", make_tensor(DType::F8_E4M3, {2})); }, {"f8.npy", "F8_E4M3"});
}

TEST(Npy, NumpyReadsOurFiles) {
  if (!python_numpy_available()) GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  TempDir dir;
  const std::vector<std::pair<DType, std::string>> cases = {
      {DType::F32, "float32"}, {DType::F64, "float64"}, {DType::F16, "float16"}, {DType::I64, "int64"},
      {DType::I32, "int32"},   {DType::I8, "int8"},     {DType::U8, "uint8"},    {DType::BOOL, "bool"}};
  for (const auto& [t, np_name] : cases) {
    const std::string path = dir / (np_name + ".npy");
    write_npy(path, make_tensor(t, {3, 4, 2}));
    std::string out;
    EXPECT_EQ(run_checker("npy_check " + path + " " + np_name, out), 0) << np_name << ": " << out;
    EXPECT_NE(out.find("OK shape [3, 4, 2]"), std::string::npos) << out;
  }
  std::string out;
  write_npy(dir / "s.npy", make_tensor(DType::F32, {}));
  EXPECT_EQ(run_checker("npy_check " + (dir / "s.npy") + " float32", out), 0) << out;
  EXPECT_NE(out.find("OK shape []"), std::string::npos) << out;
}

TEST(Npy, WeReadNumpyFiles) {
  if (!python_numpy_available()) GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  TempDir dir;
  std::string out;
  ASSERT_EQ(run_checker("npy_write " + dir.path.string(), out), 0) << out;
  expect_formula(read_npy(dir / "a.npy"), DType::F32, {2, 3, 4}, "a");
  expect_formula(read_npy(dir / "b.npy"), DType::I64, {5}, "b");
  Tensor c = read_npy(dir / "c.npy");
  EXPECT_EQ(c.dtype, DType::BOOL);
  EXPECT_EQ(c.shape, Shape{});
  EXPECT_EQ(c.ptr<uint8_t>()[0], 1);
  expect_error([&] { read_npy(dir / "f.npy"); }, {"f.npy", "Fortran"});
}

TEST(Npy, AcceptsHandWrittenVariants) {
  TempDir dir;
  const std::string path = dir / "v.npy";
  std::string data(12, '\0');
  data[0] = 1;
  // Double quotes, no trailing comma, keys in another order, Python 2 long suffix.
  write_bytes(path, npy_bytes(R"({"shape": (3L,), "fortran_order": False, "descr": "<i4"})", data));
  Tensor t = read_npy(path);
  EXPECT_EQ(t.dtype, DType::I32);
  EXPECT_EQ(t.shape, Shape{3});
  EXPECT_EQ(t.ptr<int32_t>()[0], 1);
}

TEST(Npy, MalformedFiles) {
  TempDir dir;
  const std::string path = dir / "bad.npy";
  const std::string f24(24, '\0');
  auto bad = [&](const std::string& bytes, std::vector<std::string> needles) {
    write_bytes(path, bytes);
    needles.push_back(path);
    expect_error([&] { read_npy(path); }, needles);
  };
  bad("\x93NUM", {"too short"});
  bad(std::string("\x93NUMPZ\x01\x00\x10\x00", 10) + std::string(16, ' '), {"bad magic"});
  bad(std::string("\x93NUMPY\x09\x00\x10\x00", 10) + std::string(16, ' '), {"version 9"});
  bad(std::string("\x93NUMPY\x01\x00\xff\x00", 10) + "{}", {"header length 255"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f24.substr(0, 20)), {"needs 24"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f24 + "xx"), {"needs 24"});
  bad(npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", f24), {"unsupported dtype '>f4'"});
  bad(npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }", f24), {"unsupported dtype '<c8'"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False}", f24), {"missing"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", f24), {"malformed header"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", f24), {"True or False"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", f24), {"'extra'"});
  bad(npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", f24), {"repeated"});
  bad(npy_bytes("['descr', '<f4']", f24), {"expected '{'"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3) junk", f24), {"malformed header"});
  bad(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", f24), {"too large"});
  expect_error([&] { read_npy(dir / "missing.npy"); }, {"missing.npy", "cannot open"});
}
