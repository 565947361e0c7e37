// Tensor storage helpers (see tensor.h).
#include "core/tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "dsv3/error.h"

namespace dsv3 {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

void* huge_page_alloc(size_t bytes) {
  const size_t n = std::max(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage);
  void* p = std::aligned_alloc(kHugePage, n);
  DSV3_CHECK(p != nullptr, "out of memory allocating ", n, " bytes");
  ::madvise(p, n, MADV_HUGEPAGE);  // a hint; failure (no THP in this kernel) leaves ordinary pages
  return p;
}

int64_t anon_huge_page_bytes() {
  FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (!f) return 0;
  char line[256];
  long long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "AnonHugePages: %lld kB", &kb) == 1) break;
  std::fclose(f);
  return int64_t(kb) * 1024;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) DSV3_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  size_t bytes = std::max<size_t>(64, (t.nbytes() + 63) / 64 * 64);
  void* p = bytes >= kHugePageMin ? huge_page_alloc(bytes) : std::aligned_alloc(64, bytes);
  DSV3_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes for shape ", shape_str(shape));
  t.data = p;
  t.holder = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data, 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> holder) {
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.data = data;
  t.holder = std::move(holder);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape, dtype);
  if (nbytes()) std::memcpy(t.data, data, nbytes());
  return t;
}

Tensor Tensor::reshape(const Shape& s) const {
  DSV3_CHECK(shape_numel(s) == numel(), "cannot reshape ", shape_str(shape), " to ", shape_str(s));
  Tensor t = *this;
  t.shape = s;
  return t;
}

Tensor Tensor::to_f32() const {
  Tensor t = empty(shape, DType::F32);
  convert_to_f32(dtype, data, t.f32(), size_t(numel()));
  return t;
}

}  // namespace dsv3
