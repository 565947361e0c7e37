// Tensor: a dtype, a row-major shape and a pointer to bytes kept alive by a shared holder.
//
// The holder is either an owned 64-byte-aligned allocation (Tensor::empty / zeros) or something else that
// keeps memory valid (an mmap of a safetensors file). Copies share storage; clone() deep-copies. Allocations of
// kHugePageMin bytes or more are 2 MiB aligned and advised to transparent huge pages (huge_page_alloc):
// streaming reads of big weights (lm_head, embedding) and caches skip most TLB misses (measured here: a
// two-thread read of 512 MiB 29 → 35 GB/s; the BF16 lm_head decode GEMV 23 → 25–27 GB/s).
// Shapes are PyTorch order ([out, in] for Linear weights). No strides: views are contiguous slices.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace dsv3 {

using Shape = std::vector<int64_t>;

constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHugePageMin = size_t(32) << 20;  // below this the 2 MiB rounding could waste too much
// `bytes` rounded up to 2 MiB, 2 MiB aligned, madvise(MADV_HUGEPAGE) (a hint: where the kernel has no huge
// pages to give it is ordinary memory). Free with std::free. Throws on out-of-memory.
void* huge_page_alloc(size_t bytes);
// Bytes of this process's anonymous memory backed by huge pages now (/proc/self/smaps_rollup; 0 if unknown).
int64_t anon_huge_page_bytes();
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  void* data = nullptr;
  std::shared_ptr<void> holder;

  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  // A non-owning tensor over memory that `holder` keeps alive.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> holder);

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  bool defined() const { return data != nullptr || (holder && numel() == 0); }
  Tensor clone() const;
  // Same bytes, new shape (numel must match).
  Tensor reshape(const Shape& s) const;
  // F32 copy of any dtype.
  Tensor to_f32() const;

  float* f32() { return static_cast<float*>(data); }
  const float* f32() const { return static_cast<const float*>(data); }
  template <typename T>
  T* ptr() { return static_cast<T*>(data); }
  template <typename T>
  const T* ptr() const { return static_cast<const T*>(data); }
};

}  // namespace dsv3
