// Helpers shared by the tests/io tests: a self-deleting temp directory, tensors filled with the deterministic
// value formula that tests/io/safetensors_check.py also knows, raw file writers for corrupt inputs, and a
// runner for the independent Python (json + numpy) checker.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dsv3/error.h"
#include "../temp_dir.h"

namespace dsv3::io::test {

inline const std::vector<DType> kAllDTypes = {DType::BOOL, DType::U8,      DType::I8,     DType::I16,
                                              DType::I32,  DType::I64,     DType::F16,    DType::BF16,
                                              DType::F32,  DType::F64,     DType::F8_E4M3, DType::F8_E5M2};

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
using dsv3::test::TempDir;

// Value of flat element i for a dtype (the formula in safetensors_check.py).
inline double formula(DType t, int64_t i) {
  if (t == DType::BOOL) return i % 3 == 0 ? 1.0 : 0.0;
  if (t == DType::U8) return double((7 * i) % 251);
  double v = double((7 * i) % 17 - 8);
  return dtype_is_float(t) ? v / 4 : v;
}

inline Tensor make_tensor(DType t, const Shape& shape) {
  Tensor out = Tensor::empty(shape, t);
  const int64_t n = out.numel();
  std::vector<float> f(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) f[size_t(i)] = float(formula(t, i));
  switch (t) {
    case DType::BOOL:
    case DType::U8:
      for (int64_t i = 0; i < n; ++i) out.ptr<uint8_t>()[i] = uint8_t(f[size_t(i)]);
      break;
    case DType::I8: for (int64_t i = 0; i < n; ++i) out.ptr<int8_t>()[i] = int8_t(f[size_t(i)]); break;
    case DType::I16: for (int64_t i = 0; i < n; ++i) out.ptr<int16_t>()[i] = int16_t(f[size_t(i)]); break;
    case DType::I32: for (int64_t i = 0; i < n; ++i) out.ptr<int32_t>()[i] = int32_t(f[size_t(i)]); break;
    case DType::I64: for (int64_t i = 0; i < n; ++i) out.ptr<int64_t>()[i] = int64_t(f[size_t(i)]); break;
    default:
      if (n > 0) convert_from_f32(t, f.data(), out.data, size_t(n));
  }
  return out;
}

// Checks dtype, shape and every value against the formula.
inline void expect_formula(const Tensor& t, DType dtype, const Shape& shape, const std::string& what) {
  ASSERT_EQ(t.dtype, dtype) << what;
  ASSERT_EQ(t.shape, shape) << what;
  if (t.numel() == 0) return;
  Tensor f = t.to_f32();
  for (int64_t i = 0; i < t.numel(); ++i)
    ASSERT_EQ(double(f.f32()[i]), formula(dtype, i)) << what << " element " << i;
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A raw safetensors file: 8-byte length (the true header length unless overridden), header text, data.
inline void write_raw_safetensors(const std::string& path, const std::string& header, const std::string& data,
                                  uint64_t length_override = ~0ull) {
  uint64_t n = length_override == ~0ull ? header.size() : length_override;
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char((n >> (8 * i)) & 0xff);
  write_bytes(path, bytes + header + data);
}

// Runs fn, expecting a dsv3::Error whose message contains every one of `needles`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing \"" << n << "\" in: " << msg;
    return;
  }
  ADD_FAILURE() << "expected dsv3::Error mentioning \"" << (needles.empty() ? "" : needles[0]) << "\"";
}

inline bool python_numpy_available() {
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

// Runs tests/io/safetensors_check.py with `args`; returns its exit status and appends its output to `out`.
inline int run_checker(const std::string& args, std::string& out) {
  std::string cmd = std::string("/usr/bin/python3 ") + DSV3_SOURCE_DIR + "/tests/io/safetensors_check.py " + args +
                    " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 512> buf{};
  while (std::fgets(buf.data(), int(buf.size()), p)) out += buf.data();
  int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace dsv3::io::test
